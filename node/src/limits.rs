//! Every limit of a node, in one place. Names end in their unit.
//!
//! Defaults are chosen for a production node; each is configurable (`[limits]` in tern.toml,
//! `TERN_LIMITS__<NAME>` in the environment). Exceeding one gives the client a clear error and
//! loses nothing already acknowledged.
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
            tombstone_retention_ms: 24 * 60 * 60 * 1000,
            expiry_sweep_keys_max: 1000,
            scan_count_max: 10_000,
            hlc_offset_ms_max: 500,
            ttl_ms_max: 100 * 365 * 24 * 60 * 60 * 1000,
        }
    }
}
