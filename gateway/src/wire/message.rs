//! The messages gateways exchange, one per frame. Each message kind has its own payload struct,
//! encoded with postcard; the kind byte lives in the frame header, outside the payload.
//!
//! # Evolving the protocol
//!
//! postcard is not self-describing, so the payload of an existing kind never changes: a new
//! field means a new kind (or a new format version). New kinds are added without touching old
//! ones; an old peer rejects an unknown kind with [`WireError::UnknownKind`](super::WireError),
//! so a sender only uses kinds introduced at or below the `protocol_version` agreed in
//! [`Hello`]/[`HelloAck`]. Numbers 5–8 are Merkle anti-entropy (which is also how a new or
//! wiped site is bootstrapped); 9–11 were a separate snapshot protocol that no release ever
//! sent, removed: never reuse them. 12–15 are reserved.
use super::sync::{DigestReply, DigestRequest, RangeEntries, RangeRequest, SYNC_PROTOCOL_VERSION};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tern_conflict::{SiteId, Versioned};
use tern_node::core::keyspace::PartitionId;

/// Protocol version this build speaks (semantics of the message kinds). 3: a counter's entries
/// are keyed by (site, data lineage) (`tern_conflict::Writer`), which changes how every
/// record holding a counter encodes. 4: so are version vectors, in every record.
pub const PROTOCOL_VERSION: u16 = 4;
/// Oldest protocol version this build still accepts from a peer: 4, since versions from an
/// older peer would not decode. A site upgrades while its peers' backlogs to it wait on disk.
pub const PROTOCOL_VERSION_MIN: u16 = 4;

/// The kind byte of a frame. Values are part of the wire format: never renumber.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageKind {
    Hello = 1,
    HelloAck = 2,
    Batch = 3,
    Ack = 4,
    DigestRequest = 5,
    DigestReply = 6,
    RangeRequest = 7,
    RangeEntries = 8,
    // 9–11: retired (an unused snapshot protocol); a frame of these kinds is an unknown kind.
}

impl MessageKind {
    pub const ALL: [MessageKind; 8] = [
        MessageKind::Hello,
        MessageKind::HelloAck,
        MessageKind::Batch,
        MessageKind::Ack,
        MessageKind::DigestRequest,
        MessageKind::DigestReply,
        MessageKind::RangeRequest,
        MessageKind::RangeEntries,
    ];

    pub fn from_byte(byte: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| *kind as u8 == byte)
    }

    /// The protocol version that introduced this kind: send it only on links whose agreed
    /// version is at least this.
    pub fn introduced_in(self) -> u16 {
        if (self as u8) < MessageKind::DigestRequest as u8 {
            1
        } else {
            SYNC_PROTOCOL_VERSION
        }
    }
}

/// First message of a connection, from the delegator (source) to the sink (target).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The sending (source) site. The shell checks it against the TLS peer certificate.
    pub site: SiteId,
    /// The site the sender believes it reached: catches misrouted connections.
    pub target: SiteId,
    /// Highest protocol version the sender speaks.
    pub protocol_version: u16,
}

/// The sink's answer to [`Hello`]: the agreed protocol version and where the sink stands, so the
/// delegator can drop what is already applied and notice what it can no longer resend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloAck {
    /// The answering (target) site.
    pub site: SiteId,
    /// `min(sender's, ours)`; both sides speak it from here on.
    pub protocol_version: u16,
    /// Per partition, the highest contiguous sequence number applied from this source.
    pub cursors: Vec<(PartitionId, u64)>,
}

/// Committed records shipped from `source` to one target site.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    pub source: SiteId,
    /// Increases by one per batch sent by this delegator (informational: acks are cursors).
    pub batch_id: u64,
    /// Per partition in sequence order; partitions interleave in commit order.
    pub records: Vec<WanRecord>,
}

/// The sink's acknowledgement: everything up to each cursor is applied at the target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The source site whose stream is acknowledged.
    pub source: SiteId,
    /// The latest batch received when the ack was formed, if any.
    pub batch_id: Option<u64>,
    /// Per partition, the highest contiguous applied sequence number. Only partitions that
    /// changed (or were resent) since the previous ack are listed.
    pub cursors: Vec<(PartitionId, u64)>,
}

/// One committed change on its way to another site.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WanRecord {
    /// The site where the write was committed. Never shipped back to it.
    pub origin: SiteId,
    pub partition: PartitionId,
    /// The sequence number of the previous record of this partition on this source → target
    /// stream (0 before the first). Records whose origin is the target are filtered out of the
    /// stream, so sequence numbers may skip; `prev_seq` lets the sink tell such a skip from a
    /// lost record. Assigned by the delegator.
    pub prev_seq: u64,
    /// Position in the *source* site's change log of `partition` (which, for a relayed record,
    /// is not the origin's).
    pub seq: u64,
    pub key: Bytes,
    /// The entry's full new state, so applying it twice is harmless.
    pub entry: Versioned,
    /// The origin's wall-clock time at commit (unix ms), for lag measurement.
    pub committed_at_ms: u64,
}

/// Any message, tagged by kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Hello(Hello),
    HelloAck(HelloAck),
    Batch(Batch),
    Ack(Ack),
    DigestRequest(DigestRequest),
    DigestReply(DigestReply),
    RangeRequest(RangeRequest),
    RangeEntries(RangeEntries),
}

impl Message {
    pub fn kind(&self) -> MessageKind {
        match self {
            Message::Hello(_) => MessageKind::Hello,
            Message::HelloAck(_) => MessageKind::HelloAck,
            Message::Batch(_) => MessageKind::Batch,
            Message::Ack(_) => MessageKind::Ack,
            Message::DigestRequest(_) => MessageKind::DigestRequest,
            Message::DigestReply(_) => MessageKind::DigestReply,
            Message::RangeRequest(_) => MessageKind::RangeRequest,
            Message::RangeEntries(_) => MessageKind::RangeEntries,
        }
    }
}
