//! Merkle anti-entropy: find and repair what differs between two sites' copies of a partition,
//! exchanging work in proportion to the difference.
//!
//! - [`digest`]: what a digest covers (each entry's view at the session's `as_of_ms`, so
//!   expiry and tombstone purging cannot make converged sites differ) and SHA-256 hashing.
//! - [`tree`]: [`DigestTree`], per partition, over the 48-bit scan-position space:
//!   `2^repair_leaf_bits` leaf buckets, `2^repair_fanout_bits` children per inner node.
//! - [`RepairSession`]: the initiator (one partition, one peer).
//! - [`RepairResponder`]: the answering side, for any number of sessions and peers.
//! - [`Replica`]: what both need from a partition; [`CoreReplica`] over the node's
//!   `PartitionCore`.
//!
//! # A session
//!
//! ```text
//!  initiator                                        responder
//!  DigestRequest(level 0, [root], our root) ──────▶  same root? ── in_sync ──▶ done (2 messages)
//!                                 ◀────────────────  DigestReply(children of the root)
//!  DigestRequest(level 1, differing nodes) ───────▶  (one request per level carries many nodes)
//!                                 ◀────────────────  DigestReply(their children) … down to the leaves
//!  RangeRequest(differing leaf ranges,
//!               all our entries in them) ─────────▶  apply ours (reconcile)
//!                                 ◀────────────────  RangeEntries(theirs that differ from ours, after
//!  apply theirs (reconcile)                           the merge) … done
//! ```
//!
//! Both sides end with the merge of both copies (the resolver only sees real concurrency;
//! reconcile never moves a version back). Triggers (after an overflow, on bootstrap,
//! periodically) are the shell's: it starts a [`RepairSession`] with [`DigestParams::new`] and
//! routes messages by `(peer, session, partition)`.
mod digest;
mod entries;
mod replica;
mod responder;
mod session;
mod tree;

#[cfg(test)]
pub(crate) mod test_support;
#[cfg(test)]
mod tests;

pub use digest::{View, entry_digest, view};
pub use replica::{ApplyEffect, CoreReplica, Replica};
pub use responder::{RepairResponder, ResponderStats};
pub use session::RepairSession;
pub use tree::{DigestTree, LEAF_BITS_MAX, POSITION_BITS, TreeShape};

pub(crate) use entries::MESSAGE_OVERHEAD_BYTES;

use crate::limits::GatewayLimits;
use crate::wire::{Digest, DigestParams, Message};

impl DigestParams {
    /// Parameters for a session starting at `as_of_ms` (the initiator's clock), with the
    /// node's `tombstone_retention_ms` and the tree shape from `limits`.
    pub fn new(as_of_ms: u64, tombstone_retention_ms: u64, limits: &GatewayLimits) -> Self {
        Self {
            as_of_ms,
            tombstone_retention_ms,
            leaf_bits: limits.repair_leaf_bits,
            fanout_bits: limits.repair_fanout_bits,
        }
    }
}

/// Why a session failed. The driver retries later; nothing was half-applied in a way that
/// matters (every apply is a reconcile).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RepairError {
    #[error(
        "digest tree shape leaf_bits {leaf_bits} / fanout_bits {fanout_bits} is invalid (need \
         1 <= fanout <= 8 dividing leaf bits <= {LEAF_BITS_MAX})"
    )]
    BadShape { leaf_bits: u8, fanout_bits: u8 },
    #[error("repair protocol violation: {0}")]
    Protocol(String),
    #[error("repair peer did not answer within {waited_ms} ms")]
    TimedOut { waited_ms: u64 },
    #[error("link to the repair peer went down")]
    Disconnected,
}

/// Where a session stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepairStatus {
    Running,
    /// Every differing range was exchanged (or there was none).
    Done,
    Failed(RepairError),
}

/// What a session did so far (initiator side).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepairProgress {
    pub messages_sent: u64,
    pub messages_received: u64,
    /// Encoded frame bytes.
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub digest_requests: u64,
    /// Peer digests compared with ours.
    pub digests_compared: u64,
    pub leaves_differing: u64,
    pub range_requests: u64,
    /// Position ranges exchanged (adjacent differing leaves count once).
    pub ranges_compared: u64,
    pub entries_sent: u64,
    pub entries_received: u64,
    /// Received entries that changed the local replica.
    pub entries_changed: u64,
    /// Received entries that met a concurrent local version (settled by the resolver).
    pub conflicts: u64,
    /// Duplicate or stray answers, ignored.
    pub unexpected_answers: u64,
}

/// Encoded frame size of `message`.
pub(crate) fn message_bytes(message: &Message) -> u64 {
    crate::wire::frame::encoded_len(message) as u64
}

/// How many nodes one digest request may ask for, so the answer (`fanout` digests per node)
/// stays within `bytes_max`.
pub(crate) fn nodes_per_request(bytes_max: usize, fanout: u64) -> usize {
    let per_node = fanout as usize * std::mem::size_of::<Digest>() + 10;
    (bytes_max.saturating_sub(MESSAGE_OVERHEAD_BYTES) / per_node).max(1)
}
