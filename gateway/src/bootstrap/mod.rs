//! Bootstrap: a new or wiped site catches up from a peer while live traffic flows.
//!
//! ```text
//!  target                                   source (shell)
//!  BootstrapTarget::new ── SnapshotRequest ─▶ for each partition p: seq_p = core.last_seq();
//!                                             delegator(target).start_after_snapshot(p, seq_p);
//!                                             feed the delegator from seq_p on;
//!                                             BootstrapSource::new(.., [(p, seq_p)], ..)
//!  apply (reconcile) ◀──── SnapshotChunk ──── each partition in scan order, bounded chunks,
//!  SnapshotAck ──────────────────────────────▶ token bucket (bootstrap_bytes_per_sec_max)
//!  apply (sink)     ◀──── Batch(seq > seq_p) ─ the live stream, as for any target
//! ```
//!
//! Why nothing is missed: every change after `seq_p` travels in the live stream; every change
//! up to `seq_p` is in the partition when its chunks are read (a chunk read later may hold a
//! newer version: harmless, it is also in the stream). Why nothing goes back or conflicts
//! falsely: the target applies chunks and stream records with the same reconcile rule, so the
//! order they arrive in does not matter and the resolver only sees real concurrency. So the
//! target need not be empty, and a repair session afterwards (issue: "anti-entropy on
//! bootstrap") brings what only the target held back to the source.
mod rate;
mod source;
mod target;

#[cfg(test)]
mod tests;

pub use rate::TokenBucket;
pub use source::BootstrapSource;
pub use target::BootstrapTarget;

use tern_node::core::keyspace::PartitionId;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BootstrapError {
    #[error("bootstrap message for session {got} reached session {expected}")]
    WrongSession { expected: u64, got: u64 },
    #[error("{0} is not part of this bootstrap")]
    UnknownPartition(PartitionId),
    #[error("bootstrap needs the replica of {expected}, was given {got}")]
    WrongReplica {
        expected: PartitionId,
        got: PartitionId,
    },
    #[error("snapshot chunk of {partition} covers an invalid range {from}..{to}")]
    BadChunk {
        partition: PartitionId,
        from: u64,
        to: u64,
    },
    #[error("target acknowledged {partition} through {through}, beyond {sent} sent")]
    AckBeyondSent {
        partition: PartitionId,
        through: u64,
        sent: u64,
    },
}

/// What a [`BootstrapSource`] did so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceProgress {
    pub started_at_ms: u64,
    pub chunks_sent: u64,
    pub entries_sent: u64,
    /// Encoded frame bytes of the chunks (what the rate limit counts).
    pub bytes_sent: u64,
    pub last_sent_at_ms: Option<u64>,
    pub partitions_done: u64,
    /// When the target acknowledged the last chunk of the last partition.
    pub done_at_ms: Option<u64>,
}

/// What a [`BootstrapTarget`] did so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TargetProgress {
    pub chunks_applied: u64,
    pub chunks_duplicate: u64,
    pub chunks_out_of_order: u64,
    pub entries_applied: u64,
    /// Applied entries that changed the local replica.
    pub entries_changed: u64,
    /// Applied entries concurrent with the local version (settled by the resolver).
    pub conflicts: u64,
    pub partitions_done: u64,
}
