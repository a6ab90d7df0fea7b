//! The vocabulary the replica core speaks with its shell: who is who, what comes in (requests,
//! map facts) and what goes out besides replication messages (responses, redirects, proposals).
use crate::core::command::{Command, CommandResult};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// A node's identity as the replica core sees it (the cluster's `NodeId(u64)`; the lead unifies
/// the two). Kept as a plain alias so the core does not depend on the cluster module.
pub type ReplicaId = u64;

/// Identifies one client request end to end: the node that accepted it from the client and that
/// node's counter. A forwarder retries with the same id, which is what makes retries safe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId {
    pub origin: ReplicaId,
    pub counter: u64,
}

/// A batch of single-key commands for one partition, executed in order as one unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub id: RequestId,
    pub commands: Vec<Command>,
}

/// The partition map's facts about this partition, as the shell reads them from the map. The
/// replica's role follows from them: `Primary` if `primary` is this node, `Backup` if this node
/// is one of `replicas`, `Idle` otherwise.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AssignmentFacts {
    pub epoch: u64,
    pub primary: Option<ReplicaId>,
    /// Every replica of the partition: the primary and its backups, in sync or not.
    pub replicas: BTreeSet<ReplicaId>,
    /// Backups that hold every acknowledged write (never contains the primary).
    pub in_sync: BTreeSet<ReplicaId>,
    /// A graceful move of the primary to this in-sync backup is in progress.
    pub handover: Option<ReplicaId>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Primary,
    Backup,
    Idle,
}

/// A change to the partition map this replica asks the controller to commit. Each names the
/// epoch it expects, so a stale one is rejected by the map instead of applied out of context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapProposal {
    /// `remove` stopped acknowledging; until the map drops it from `in_sync`, this primary keeps
    /// every response that waits on it.
    ShrinkInSync { epoch: u64, remove: ReplicaId },
    /// `node` holds everything up to the primary's latest seq and follows the stream.
    CaughtUp { epoch: u64, node: ReplicaId },
    /// Draining finished: every executed request is acknowledged; `to` holds `last_seq`.
    CompleteHandover {
        epoch: u64,
        to: ReplicaId,
        last_seq: u64,
    },
}

/// A request this replica will not answer: the sender should retry it (same id) at `primary`
/// once its map shows an epoch of at least `epoch`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    pub id: RequestId,
    /// The epoch this replica knows; a retry needs a map at least this new.
    pub epoch: u64,
    /// Where the partition's primary is, if known.
    pub primary: Option<ReplicaId>,
    /// `Some`: the commands were never executed here (queued during a handover, or refused
    /// because this replica is not primary), so they can be forwarded as they are. `None`: they
    /// were executed here but never confirmed (this primary was deposed); the originator retries
    /// from its own copy, and the request dedup table makes the retry safe.
    pub commands: Option<Vec<Command>>,
}

/// A released answer: every command's result, in order.
pub type Answer = (RequestId, Vec<CommandResult>);

/// Limits of partition replication; names end in their unit. To be folded into
/// `crate::limits::Limits`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicationLimits {
    /// An in-sync backup that makes no acknowledgement progress for this long, while the primary
    /// waits on it, is proposed for removal from the in-sync set.
    pub backup_ack_timeout_ms: u64,
    /// Without acknowledgement progress for this long, the primary resends from the backup's
    /// last acknowledged position (covers lost messages and reconnects).
    pub replicate_retransmit_ms: u64,
    /// A map proposal that has not taken effect is proposed again after this long (a proposal
    /// can be lost when the Raft leader changes; every proposal is idempotent).
    pub map_proposal_retry_ms: u64,
    /// Most bytes of change records in one `Replicate` to a backup.
    pub replicate_batch_bytes_max: usize,
    /// Most bytes sent to one backup and not yet acknowledged (pipelining window).
    pub replicate_inflight_bytes_max: usize,
    /// Most bytes of entries in one snapshot chunk or one catch-up `Replicate` to a backup that
    /// is not in sync.
    pub catchup_batch_bytes_max: usize,
    /// Requests whose answers are remembered (FIFO) so a retried request gets its original
    /// answer instead of executing twice.
    pub dedup_requests_max: usize,
    /// Requests queued while a handover drains; more are redirected at once.
    pub handover_queue_requests_max: usize,
    /// Epoch boundaries remembered in the replica's log history; older ones are forgotten and a
    /// backup that diverged before them catches up by snapshot.
    pub epoch_history_entries_max: usize,
}

impl Default for ReplicationLimits {
    fn default() -> Self {
        Self {
            backup_ack_timeout_ms: 300,
            replicate_retransmit_ms: 100,
            map_proposal_retry_ms: 1000,
            replicate_batch_bytes_max: 256 * 1024,
            replicate_inflight_bytes_max: 4 * 1024 * 1024,
            catchup_batch_bytes_max: 1024 * 1024,
            dedup_requests_max: 10_000,
            handover_queue_requests_max: 10_000,
            epoch_history_entries_max: 64,
        }
    }
}
