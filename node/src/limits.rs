//! Every limit of a node, in one place. Names end in their unit.
//!
//! Defaults are chosen for a production node; each is configurable (`[limits]` in tern.toml,
//! `TERN_LIMITS__<NAME>` in the environment). Exceeding one gives the client a clear error and
//! loses nothing already acknowledged.
//!
//! Replication and forwarding limits live here too (not under `[cluster]`): a standalone node
//! runs the very same replica core and router, as a one-node site.
use crate::core::ReplicationLimits;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest RESP request frame (a whole command with its arguments).
    pub frame_bytes_max: usize,
    /// Largest value a client may store (SET, MSET values).
    pub value_bytes_max: usize,
    /// Largest key.
    pub key_bytes_max: usize,
    /// Most arguments in one command, command name included.
    pub args_per_command_max: usize,
    /// Most concurrent client connections; one more is refused with an error.
    pub connections_max: usize,
    /// Most commands taken from one connection's read buffer before replies are written, so one
    /// pipelining client cannot starve the others.
    pub pipeline_commands_max: usize,
    /// Most unanswered requests queued at one partition actor before callers see backpressure.
    pub partition_mailbox_messages_max: usize,
    /// Bytes of change records (keys + values + overhead) each partition retains for backups and
    /// the gateway to read; older records are dropped and readers behind them must resync from a
    /// snapshot. A node retains up to this times its partition count.
    pub change_log_bytes_max: usize,
    /// Longest a WAN gateway's read of a change log may hold it (`overflow = "block_writes"`:
    /// local writes that would drop records the gateway has not read are refused while the hold
    /// lasts). The gateway renews it on every read, so this only bounds how long a gateway that
    /// died keeps writes blocked. 0 disables holds: writes are never refused for the WAN.
    pub wan_hold_ms_max: u64,
    /// Cap on what this node's partition copies (primaries and backups) may cost, counted as
    /// keys, values and a fixed per-entry overhead (`core::stored_bytes`; the process's RSS is
    /// about this plus fixed buffers: change logs, dedup tables, connections). At the cap,
    /// primaries refuse client writes that store a value (`-OOM`, like Redis's `maxmemory` with
    /// `noeviction`); reads, deletes and EXPIRE still run, and replicated or remote records are
    /// always applied (refusing them would break the copies). 0: no cap, unless the node runs
    /// in a container with a memory limit, where it defaults to half of that limit.
    pub data_bytes_max: usize,
    /// How long a delete's tombstone is kept so a concurrent remote write cannot resurrect it.
    pub tombstone_retention_ms: u64,
    /// Most expired keys one expiry sweep removes from a partition (bounds a tick's latency).
    pub expiry_sweep_keys_max: usize,
    /// Largest COUNT a SCAN call may ask for.
    pub scan_count_max: usize,
    /// Greatest offset a remote HLC timestamp may run ahead of local physical time.
    pub hlc_offset_ms_max: u64,
    /// Longest TTL a client may set (EXPIRE/PEXPIRE/SET EX/PX), about 100 years like Redis's
    /// practical bound; larger values are refused instead of overflowing.
    pub ttl_ms_max: u64,

    // --- partition replication (see `core::replica`) ---
    /// An in-sync backup that makes no acknowledgement progress for this long, while the primary
    /// waits on it, is proposed for removal from the in-sync set.
    pub backup_ack_timeout_ms: u64,
    /// Without acknowledgement progress for this long, the primary resends from the backup's
    /// last acknowledged position (lost messages, reconnects).
    pub replicate_retransmit_ms: u64,
    /// A replica's map proposal that has not taken effect is proposed again after this long.
    pub map_proposal_retry_ms: u64,
    /// Most bytes of change records in one replication message to an in-sync backup.
    pub replicate_batch_bytes_max: usize,
    /// Most bytes sent to one backup and not yet acknowledged (pipelining window).
    pub replicate_inflight_bytes_max: usize,
    /// Most bytes of one snapshot chunk or catch-up message to a backup that is not in sync.
    pub catchup_batch_bytes_max: usize,
    /// Write requests whose answers each partition remembers, so a retried request gets its
    /// original answer instead of executing twice.
    pub dedup_requests_max: usize,
    /// Requests a primary queues while it hands the partition over; more are redirected.
    pub handover_queue_requests_max: usize,
    /// Epoch boundaries remembered in a replica's log history.
    pub epoch_history_entries_max: usize,

    // --- request forwarding (any node accepts any command) ---
    /// How long a request may wait for a reachable primary (failover, redirects, lost
    /// connections) before the client gets `-TRYAGAIN`.
    pub forward_retry_ms_max: u64,
    /// An attempt sent to another node that is not answered within this long is sent again
    /// (same request id: the primary's dedup table makes the retry safe).
    pub forward_attempt_timeout_ms: u64,
    /// Pause before retrying after a redirect, when the map has not moved yet.
    pub forward_backoff_ms: u64,
    /// Most requests this node has forwarded to other nodes and not yet seen answered (each
    /// holds its commands and a waiter in memory). At the cap a new forwarded request waits,
    /// and its client connection with it, until one in flight ends; if none does within its
    /// `forward_retry_ms_max`, the client gets `-TRYAGAIN`. Nothing in flight is dropped.
    pub forward_requests_pending_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            frame_bytes_max: 64 * 1024 * 1024,
            value_bytes_max: 16 * 1024 * 1024,
            key_bytes_max: 64 * 1024,
            args_per_command_max: 1024 * 1024,
            connections_max: 10_000,
            pipeline_commands_max: 1024,
            partition_mailbox_messages_max: 4096,
            change_log_bytes_max: 1024 * 1024,
            wan_hold_ms_max: 60_000,
            data_bytes_max: 0,
            tombstone_retention_ms: 24 * 60 * 60 * 1000,
            expiry_sweep_keys_max: 1000,
            scan_count_max: 10_000,
            hlc_offset_ms_max: 500,
            ttl_ms_max: 100 * 365 * 24 * 60 * 60 * 1000,
            backup_ack_timeout_ms: 300,
            replicate_retransmit_ms: 100,
            map_proposal_retry_ms: 1000,
            replicate_batch_bytes_max: 256 * 1024,
            replicate_inflight_bytes_max: 4 * 1024 * 1024,
            catchup_batch_bytes_max: 1024 * 1024,
            dedup_requests_max: 10_000,
            handover_queue_requests_max: 10_000,
            epoch_history_entries_max: 64,
            forward_retry_ms_max: 5000,
            forward_attempt_timeout_ms: 1000,
            forward_backoff_ms: 20,
            forward_requests_pending_max: 100_000,
        }
    }
}

impl Limits {
    /// The replica core's view of these limits.
    pub fn replication(&self) -> ReplicationLimits {
        ReplicationLimits {
            backup_ack_timeout_ms: self.backup_ack_timeout_ms,
            replicate_retransmit_ms: self.replicate_retransmit_ms,
            map_proposal_retry_ms: self.map_proposal_retry_ms,
            replicate_batch_bytes_max: self.replicate_batch_bytes_max,
            replicate_inflight_bytes_max: self.replicate_inflight_bytes_max,
            catchup_batch_bytes_max: self.catchup_batch_bytes_max,
            dedup_requests_max: self.dedup_requests_max,
            handover_queue_requests_max: self.handover_queue_requests_max,
            epoch_history_entries_max: self.epoch_history_entries_max,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replication_defaults_match_the_core_defaults() {
        assert_eq!(
            Limits::default().replication(),
            ReplicationLimits::default()
        );
    }
}
