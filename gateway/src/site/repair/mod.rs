//! The repair driver: runs the sans-IO Merkle anti-entropy of [`crate::repair`] between live
//! gateways.
//!
//! - Both sides work on a [`SnapshotReplica`]: an in-memory copy of one partition, loaded on
//!   request ([`RepairLoad`]: the host pages `Command::WanDump` through the router). What a
//!   session applies to the copy is also pushed into the real partition ([`RepairPush`]: the
//!   host sends `Command::WanApply`, one request per partition in flight, retried), the same
//!   reconcile the copy used. Writes landing during a session are fine: every step is a
//!   reconcile, and a partition marked again meanwhile is repaired again.
//! - [`TargetRepair`] (one per target site) initiates; [`SourceRepair`] (one per source site)
//!   answers; [`RepairShared`] owns what both need: loads and push queues.
//! - Pacing: each side's messages on a link go through a [`Pacer`](crate::bootstrap::Pacer)
//!   at `bootstrap_bytes_per_sec_max` (sessions take turns), so a bootstrap — a repair where
//!   every range differs — runs at the configured rate beside the live stream. A session's
//!   reply timeout counts from its last message that actually left (or answer that came),
//!   never while its requests wait for tokens.
//!
//! Snapshot loads are not paced: they are local reads in bounded pages that interleave with
//! live requests at the partition, and a responder's load runs under the initiator's reply
//! timeout (pacing it would fail every session on a partition larger than timeout × rate).
mod initiator;
mod responder;
mod shared;
mod snapshot;

pub use initiator::TargetRepair;
pub use responder::SourceRepair;
pub use shared::{LoadOwner, RepairLoad, RepairPush, RepairShared, link_pacer, value_len};
pub use snapshot::{DumpEntries, SnapshotReplica};
