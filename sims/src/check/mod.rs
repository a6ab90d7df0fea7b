//! Oracles. Each checker returns a typed [`Violation`] whose message says exactly what broke,
//! where, and with which values, so a failing seed can be read without a debugger.
//!
//! - [`model`]: the reference model of Redis string/counter semantics, TTLs included;
//! - [`linearizability`]: per-key WGL search over the client-observed history;
//! - [`core_audit`]: structural invariants of a partition core (change log, versions, purges);
//! - [`site`]: invariants of a replicated site (one primary per epoch, fencing, acknowledged
//!   writes held across failover, versions, dedup, Raft agreement, availability after a heal);
//! - [`convergence`]: multi-site WAN replication (phantoms, duplicate applies, versions,
//!   convergence, lost updates).
pub mod convergence;
pub mod core_audit;
pub mod linearizability;
pub mod model;
pub mod site;

use tern_node::core::PartitionId;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error(
        "at node time {now_ms}: {command} answered {actual} but the reference model expects {expected}"
    )]
    WrongResult {
        now_ms: u64,
        command: String,
        actual: String,
        expected: String,
    },
    #[error(
        "at node time {now_ms} (after {cause}): key {key} is {actual} in the core but {expected} in the model"
    )]
    StateDiverged {
        now_ms: u64,
        cause: String,
        key: String,
        actual: String,
        expected: String,
    },
    #[error(
        "at node time {now_ms} (after a tick): {partition} reports {core} live keys but the model holds {model}"
    )]
    LiveCountDiffers {
        now_ms: u64,
        partition: PartitionId,
        core: usize,
        model: usize,
    },
    #[error("{partition}: change log went from seq {previous} to {got} after {cause} (expected {expected})", expected = previous + 1)]
    SeqGap {
        partition: PartitionId,
        previous: u64,
        got: u64,
        cause: String,
    },
    #[error("{partition}: cannot read the change log after {cause}: {detail}")]
    LogUnreadable {
        partition: PartitionId,
        cause: String,
        detail: String,
    },
    #[error("{partition} seq {seq}: record for {key} holds {record} but the core holds {current}")]
    RecordDiffers {
        partition: PartitionId,
        seq: u64,
        key: String,
        record: String,
        current: String,
    },
    #[error("{partition}: {cause} changed {key} but produced no change record")]
    MissingRecord {
        partition: PartitionId,
        key: String,
        cause: String,
    },
    #[error(
        "{partition} seq {seq}: unexpected change record for {key} after {cause}, which changed no visible state of it"
    )]
    UnexpectedRecord {
        partition: PartitionId,
        seq: u64,
        key: String,
        cause: String,
    },
    #[error("key {key}: version did not advance at seq {seq}: {before} then {after}")]
    VersionRegressed {
        key: String,
        seq: u64,
        before: String,
        after: String,
    },
    #[error("key {key}: at node time {now_ms} the stored entry {detail}")]
    EntryChanged {
        key: String,
        now_ms: u64,
        detail: String,
    },
    #[error("scan at node time {now_ms}: {detail}")]
    ScanBroken { now_ms: u64, detail: String },
    #[error("key {key}: history of {ops} operations is not linearizable: {detail}")]
    NotLinearizable {
        key: String,
        ops: usize,
        detail: String,
    },
    #[error("run stalled: {detail}")]
    Stalled { detail: String },
    #[error(transparent)]
    Wan(#[from] convergence::WanViolation),
    #[error("{0}")]
    Site(#[from] site::SiteViolation),
}

/// A key as text for messages: UTF-8 (lossy) in quotes.
pub fn show_key(key: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(key))
}
