//! Messages of Merkle anti-entropy (kinds 5–8), introduced in protocol version 2. A sender uses them only on links whose agreed version is at least
//! [`SYNC_PROTOCOL_VERSION`].
//!
//! Repair (see `repair/`): the initiator asks for digests level by level, descending only into
//! differing subtrees (`DigestRequest` → `DigestReply`), then sends its entries of the
//! differing leaves and asks for the responder's (`RangeRequest` → `RangeEntries`). A new or
//! wiped site is bootstrapped by the same sessions (every range differs), paced by
//! [`crate::bootstrap`].
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tern_conflict::Versioned;
use tern_node::core::keyspace::PartitionId;

/// The protocol version that introduced kinds 5–8.
pub const SYNC_PROTOCOL_VERSION: u16 = 2;

/// A SHA-256 digest (32 bytes on the wire, no length prefix).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The digest of an empty subtree (no entries): all zeros, so sparse trees stay cheap.
    pub const EMPTY: Digest = Digest([0; 32]);
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for byte in &self.0[..6] {
            write!(f, "{byte:02x}")?;
        }
        f.write_str("…")
    }
}

/// How both sides of a repair session build their digest trees: the same shape, and entries
/// judged at the same moment (so expiry cannot make converged sites differ).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestParams {
    /// Expiry is evaluated at this time (the initiator's clock when the session started).
    pub as_of_ms: u64,
    /// How long a tombstone is kept: a value expired at `t` counts as a tombstone until
    /// `t + tombstone_retention_ms`, then as absent, like a swept one.
    pub tombstone_retention_ms: u64,
    pub leaf_bits: u8,
    pub fanout_bits: u8,
}

/// One stored entry (tombstones included) as repair and bootstrap exchange it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncEntry {
    pub key: Bytes,
    pub entry: Versioned,
}

/// Positions `from..to` of the 48-bit scan-position space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PositionRange {
    pub from: u64,
    pub to: u64,
}

/// Kind 5, initiator → responder: the children's digests of `nodes` at `level`, please.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestRequest {
    pub session: u64,
    pub partition: PartitionId,
    pub params: DigestParams,
    /// Level of `nodes` (0 is the root).
    pub level: u8,
    /// Node indices at `level`, ascending.
    pub nodes: Vec<u64>,
    /// With the root request: the initiator's root digest, so an in-sync responder answers
    /// at once.
    pub root: Option<Digest>,
}

/// Kind 6, responder → initiator: for each requested node, its `2^fanout_bits` children's
/// digests in order (or `in_sync` when the root matched).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestReply {
    pub session: u64,
    pub partition: PartitionId,
    /// Level of `nodes` (the children are one level below).
    pub level: u8,
    pub nodes: Vec<u64>,
    pub hashes: Vec<Digest>,
    /// The initiator's root equals the responder's: nothing to repair.
    pub in_sync: bool,
}

/// Kind 7, initiator → responder: the initiator's entries in `ranges` (all of them), to apply;
/// answer with your entries in the same ranges that differ from these.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeRequest {
    pub session: u64,
    pub partition: PartitionId,
    pub params: DigestParams,
    /// Numbers the answer ([`RangeEntries::request`]).
    pub request: u32,
    /// Ascending, disjoint.
    pub ranges: Vec<PositionRange>,
    /// The initiator's entries in `ranges`, in scan order.
    pub entries: Vec<SyncEntry>,
    /// The initiator has nothing more to ask: the responder may forget the session.
    pub last: bool,
}

/// Kind 8, responder → initiator: entries answering [`RangeRequest`] `request`, in chunks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeEntries {
    pub session: u64,
    pub partition: PartitionId,
    pub request: u32,
    pub entries: Vec<SyncEntry>,
    /// The last chunk of the answer.
    pub done: bool,
}
