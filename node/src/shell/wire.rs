//! What the shell sends between nodes, one message per transport frame:
//! `magic (4 bytes) | format version (u16 LE) | postcard body`, like `cluster::codec`. Each
//! channel has its own magic, so a frame that lands on the wrong channel is refused, and a
//! reader refuses an unknown version instead of misreading another release's bytes.
//!
//! - Control: Raft messages, heartbeats, map proposals sent to the Raft leader;
//! - Replication: one partition's [`ReplicationMessage`];
//! - Forward: client requests for a partition's primary, and their answers: one per frame
//!   (`Request`, `Answer`, `Redirect`) or many per frame (`Requests`, `Answers`), which a
//!   [`BatchFrame`] builds one item at a time.
//!
//! `Command` has no serde (the core stays free of wire concerns); it travels as [`WireCommand`].
use crate::cluster::{Heartbeat, MapCommand};
use crate::core::{
    Command, CommandResult, Expiry, ReplicationMessage, RequestId, RequestOutcome, SetCondition,
    TtlUnit,
};
use bytes::{Buf, Bytes};
use postcard::ser_flavors::Flavor;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tern_conflict::Versioned;

/// The only format version this build writes and reads. 2: counters count per (site, data
/// lineage) and replication messages carry the primary's lineage. 3: version vectors count
/// per (site, data lineage) too. A node of an older build gets a clear version error instead
/// of misreading them.
pub const WIRE_VERSION: u16 = 3;
const HEADER_BYTES: usize = 6;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireKind {
    Control,
    Replication,
    Forward,
}

impl WireKind {
    const fn magic(self) -> [u8; 4] {
        match self {
            Self::Control => *b"TCTL",
            Self::Replication => *b"TREP",
            Self::Forward => *b"TFWD",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("decode {kind:?} frame: too short ({len} bytes)")]
    Truncated { kind: WireKind, len: usize },
    #[error("decode {kind:?} frame: wrong magic {found:?}")]
    BadMagic { kind: WireKind, found: [u8; 4] },
    #[error(
        "decode {kind:?} frame: format version {found} is not supported (this build reads {WIRE_VERSION})"
    )]
    UnsupportedVersion { kind: WireKind, found: u16 },
    #[error("decode {kind:?} frame: {reason}")]
    Body { kind: WireKind, reason: String },
    #[error("encode {kind:?} frame: {reason}")]
    Encode { kind: WireKind, reason: String },
}

/// Control channel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ControlMessage {
    /// A Raft message of the map's group (protobuf bytes, as `RaftGroup` produces them).
    Raft(Bytes),
    Heartbeat(Heartbeat),
    /// A map command for the Raft leader to propose (sent by a follower).
    Propose(MapCommand),
}

/// Replication channel: one message between replicas of `partition`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationFrame {
    pub partition: u16,
    pub message: ReplicationMessage,
}

/// Forward channel. `attempt` numbers the origin's tries of one request id: only the answer to
/// the current attempt counts (a late answer to an abandoned one is ignored).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForwardMessage {
    Request {
        id: RequestId,
        attempt: u32,
        partition: u16,
        commands: Vec<WireCommand>,
    },
    /// The request's results. Travels as a `RequestOutcome` (seq unused) so that the serde of
    /// command results lives in one place (`core::replica::messages`).
    Answer {
        attempt: u32,
        outcome: RequestOutcome,
    },
    /// Not executed, or executed by a primary that was deposed before confirming it: retry the
    /// same id at `primary` once the map is at `epoch`.
    Redirect {
        id: RequestId,
        attempt: u32,
        epoch: u64,
        primary: Option<u64>,
    },
    // New variants go last: postcard encodes the variant index, so this keeps the encodings
    // above unchanged and a node of this release still reads one-request frames.
    /// Many requests for the receiver's partitions (from one origin, to one primary node).
    Requests(Vec<ForwardRequest>),
    /// Answers and redirects to requests that came in `Requests` frames, as they became ready.
    Answers(Vec<ForwardReply>),
}

/// Variant indexes of [`ForwardMessage`] as postcard writes them (a varint, one byte here).
const REQUEST_TAG: u8 = 0;
const REQUESTS_TAG: u8 = 3;
const ANSWERS_TAG: u8 = 4;

/// One request of a [`ForwardMessage::Requests`] frame: the fields of `ForwardMessage::Request`,
/// in the same order, so one item alone encodes exactly like that message's body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardRequest {
    pub id: RequestId,
    pub attempt: u32,
    pub partition: u16,
    pub commands: Vec<WireCommand>,
}

/// One item of a [`ForwardMessage::Answers`] frame: `Answer` or `Redirect`, as above.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForwardReply {
    Answer {
        attempt: u32,
        outcome: RequestOutcome,
    },
    Redirect {
        id: RequestId,
        attempt: u32,
        epoch: u64,
        primary: Option<u64>,
    },
}

impl ForwardReply {
    pub fn answer(id: RequestId, attempt: u32, results: Vec<CommandResult>) -> Self {
        Self::Answer {
            attempt,
            outcome: RequestOutcome {
                id,
                seq: 0,
                results,
            },
        }
    }
}

/// Encodes like a [`ForwardRequest`] but borrows the commands: the origin writes a request
/// straight from the router's `Command`s, without building (and cloning into) `WireCommand`s.
#[derive(Debug, Serialize)]
pub struct ForwardRequestRef<'a> {
    pub id: RequestId,
    pub attempt: u32,
    pub partition: u16,
    pub commands: CommandsRef<'a>,
}

/// A slice of commands that serializes as a `Vec<WireCommand>`.
#[derive(Clone, Copy, Debug)]
pub struct CommandsRef<'a>(pub &'a [Command]);

impl Serialize for CommandsRef<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(WireCommandRef::from))
    }
}

impl ForwardMessage {
    pub fn answer(id: RequestId, attempt: u32, results: Vec<CommandResult>) -> Self {
        Self::Answer {
            attempt,
            outcome: RequestOutcome {
                id,
                seq: 0,
                results,
            },
        }
    }
}

pub fn encode<T: Serialize>(kind: WireKind, value: &T) -> Result<Bytes, WireError> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(&kind.magic());
    out.extend_from_slice(&WIRE_VERSION.to_le_bytes());
    append(kind, value, &mut out)?;
    Ok(Bytes::from(out))
}

/// Appends `value`'s postcard encoding to `out`; on error `out` is left as it was.
fn append<T: Serialize + ?Sized>(
    kind: WireKind,
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), WireError> {
    let mark = out.len();
    postcard::serialize_with_flavor(value, AppendTo(out)).map_err(|e| {
        out.truncate(mark);
        WireError::Encode {
            kind,
            reason: e.to_string(),
        }
    })
}

/// postcard output straight into a caller's `Vec` (its `to_io` writes byte by byte through
/// `io::Write`; this copies slices).
struct AppendTo<'a>(&'a mut Vec<u8>);

impl Flavor for AppendTo<'_> {
    type Output = ();

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Room kept at the front of a [`BatchFrame`] for the envelope, the variant index (1 byte) and
/// the item count (a varint of at most 5 bytes for a `u32`), written once the count is known.
const BATCH_PREFIX_BYTES: usize = HEADER_BYTES + 1 + 5;

/// A Forward frame of many items (`Requests` or `Answers`) written one item at a time, so a
/// sender encodes each item once, straight into the frame, and never holds the items.
///
/// Items go after a reserved prefix; [`BatchFrame::finish`] writes envelope, variant and count
/// right before them. A frame with a single request finishes as a plain `Request` (its body is
/// the same bytes), which any release reads.
#[derive(Debug)]
pub struct BatchFrame {
    buf: Vec<u8>,
    items: u32,
    tag: u8,
}

impl BatchFrame {
    /// Multi-item frames are closed once their items pass this many bytes, so one frame never
    /// holds up the stream (or the receiver's decode) for long; a single item may be larger.
    pub const SOFT_BYTES_MAX: usize = 64 * 1024;

    pub fn requests() -> Self {
        Self::new(REQUESTS_TAG)
    }

    pub fn answers() -> Self {
        Self::new(ANSWERS_TAG)
    }

    fn new(tag: u8) -> Self {
        let mut buf = Vec::with_capacity(512);
        buf.resize(BATCH_PREFIX_BYTES, 0);
        Self { buf, items: 0, tag }
    }

    pub fn is_empty(&self) -> bool {
        self.items == 0
    }

    pub fn len(&self) -> usize {
        self.items as usize
    }

    /// Appends `item` (a [`ForwardRequestRef`] or [`ForwardRequest`] to a `requests()` frame, a
    /// [`ForwardReply`] to an `answers()` one). When the items would pass
    /// [`Self::SOFT_BYTES_MAX`], `item` starts a new frame and the full one is returned, to be
    /// sent first.
    pub fn push<T: Serialize>(&mut self, item: &T) -> Result<Option<BatchFrame>, WireError> {
        let mark = self.buf.len();
        append(WireKind::Forward, item, &mut self.buf)?;
        let full = self.buf.len() - BATCH_PREFIX_BYTES > Self::SOFT_BYTES_MAX;
        if full && self.items > 0 {
            let mut next = Self::new(self.tag);
            next.buf.extend_from_slice(&self.buf[mark..]);
            next.items = 1;
            self.buf.truncate(mark);
            return Ok(Some(std::mem::replace(self, next)));
        }
        // A frame has fewer items than the `u32` count can say: each takes several bytes.
        self.items += 1;
        Ok(None)
    }

    /// The frame to send.
    pub fn finish(self) -> Bytes {
        let Self {
            mut buf,
            items,
            tag,
        } = self;
        let mut count = [0u8; 5];
        let count = varint_u32(items, &mut count);
        let (tag, count) = if tag == REQUESTS_TAG && items == 1 {
            (REQUEST_TAG, &[][..])
        } else {
            (tag, count)
        };
        let start = BATCH_PREFIX_BYTES - HEADER_BYTES - 1 - count.len();
        let mut at = start;
        for part in [
            &WireKind::Forward.magic()[..],
            &WIRE_VERSION.to_le_bytes(),
            &[tag],
            count,
        ] {
            buf[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        let mut frame = Bytes::from(buf);
        frame.advance(start);
        frame
    }
}

/// `value` as postcard's varint: 7 bits per byte, low first, high bit = more follow.
fn varint_u32(mut value: u32, out: &mut [u8; 5]) -> &[u8] {
    let mut len = 0;
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out[len] = byte;
            return &out[..=len];
        }
        out[len] = byte | 0x80;
        len += 1;
    }
}

pub fn decode<T: DeserializeOwned>(kind: WireKind, bytes: &[u8]) -> Result<T, WireError> {
    let Some((header, body)) = bytes.split_first_chunk::<HEADER_BYTES>() else {
        return Err(WireError::Truncated {
            kind,
            len: bytes.len(),
        });
    };
    let [m0, m1, m2, m3, v0, v1] = *header;
    let magic = [m0, m1, m2, m3];
    if magic != kind.magic() {
        return Err(WireError::BadMagic { kind, found: magic });
    }
    let version = u16::from_le_bytes([v0, v1]);
    if version != WIRE_VERSION {
        return Err(WireError::UnsupportedVersion {
            kind,
            found: version,
        });
    }
    postcard::from_bytes(body).map_err(|e| WireError::Body {
        kind,
        reason: e.to_string(),
    })
}

/// `Command` on the wire: a mirror with serde, converted both ways without loss.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireCommand {
    Get {
        key: Bytes,
    },
    Set {
        key: Bytes,
        value: Bytes,
        condition: WireCondition,
        expiry: Option<WireExpiry>,
        get: bool,
    },
    Del {
        key: Bytes,
    },
    Exists {
        key: Bytes,
    },
    IncrBy {
        key: Bytes,
        delta: i64,
    },
    Expire {
        key: Bytes,
        expiry: WireExpiry,
    },
    Ttl {
        key: Bytes,
        millis: bool,
    },
    Scan {
        from: u64,
        count: u64,
        pattern: Option<Bytes>,
    },
    DbSize,
    FlushAll,
    // New variants go last: postcard encodes the variant index, so this keeps the encodings
    // above unchanged.
    WanApply {
        key: Bytes,
        entry: Versioned,
        resolver: Option<String>,
    },
    WanChanges {
        after_seq: u64,
        records_max: u32,
        bytes_max: u32,
    },
    WanDump {
        from_position: u64,
        entries_max: u32,
        bytes_max: u32,
    },
    /// `WanChanges` with a hold (`hold_ms > 0`). A variant of its own rather than a new field of
    /// `WanChanges`, so a read without a hold keeps the previous release's encoding (a node of
    /// that release refuses a held read as an unknown command instead of dropping the hold).
    WanChangesHeld {
        after_seq: u64,
        records_max: u32,
        bytes_max: u32,
        hold_ms: u32,
    },
    ExpiringKeys,
}

/// [`WireCommand`] borrowing its data: the same variants, fields and types in the same order, so
/// it encodes to the same bytes (a test checks every variant) without cloning a key or value.
#[derive(Serialize)]
enum WireCommandRef<'a> {
    Get {
        key: &'a Bytes,
    },
    Set {
        key: &'a Bytes,
        value: &'a Bytes,
        condition: WireCondition,
        expiry: Option<WireExpiry>,
        get: bool,
    },
    Del {
        key: &'a Bytes,
    },
    Exists {
        key: &'a Bytes,
    },
    IncrBy {
        key: &'a Bytes,
        delta: i64,
    },
    Expire {
        key: &'a Bytes,
        expiry: WireExpiry,
    },
    Ttl {
        key: &'a Bytes,
        millis: bool,
    },
    Scan {
        from: u64,
        count: u64,
        pattern: Option<&'a Bytes>,
    },
    DbSize,
    FlushAll,
    WanApply {
        key: &'a Bytes,
        entry: &'a Versioned,
        resolver: Option<&'a str>,
    },
    WanChanges {
        after_seq: u64,
        records_max: u32,
        bytes_max: u32,
    },
    WanDump {
        from_position: u64,
        entries_max: u32,
        bytes_max: u32,
    },
    WanChangesHeld {
        after_seq: u64,
        records_max: u32,
        bytes_max: u32,
        hold_ms: u32,
    },
    ExpiringKeys,
}

impl From<SetCondition> for WireCondition {
    fn from(condition: SetCondition) -> Self {
        match condition {
            SetCondition::Always => Self::Always,
            SetCondition::IfAbsent => Self::IfAbsent,
            SetCondition::IfPresent => Self::IfPresent,
        }
    }
}

impl<'a> From<&'a Command> for WireCommandRef<'a> {
    fn from(command: &'a Command) -> Self {
        match command {
            Command::Get { key } => Self::Get { key },
            Command::Set {
                key,
                value,
                condition,
                expiry,
                get,
            } => Self::Set {
                key,
                value,
                condition: (*condition).into(),
                expiry: expiry.map(WireExpiry::from),
                get: *get,
            },
            Command::Del { key } => Self::Del { key },
            Command::Exists { key } => Self::Exists { key },
            Command::IncrBy { key, delta } => Self::IncrBy { key, delta: *delta },
            Command::Expire { key, expiry } => Self::Expire {
                key,
                expiry: (*expiry).into(),
            },
            Command::Ttl { key, unit } => Self::Ttl {
                key,
                millis: *unit == TtlUnit::Milliseconds,
            },
            Command::Scan {
                from,
                count,
                pattern,
            } => Self::Scan {
                from: *from,
                count: *count as u64,
                pattern: pattern.as_ref(),
            },
            Command::DbSize => Self::DbSize,
            Command::ExpiringKeys => Self::ExpiringKeys,
            Command::FlushAll => Self::FlushAll,
            Command::WanApply {
                key,
                entry,
                resolver,
            } => Self::WanApply {
                key,
                entry,
                resolver: resolver.as_deref(),
            },
            Command::WanChanges {
                after_seq,
                records_max,
                bytes_max,
                hold_ms: 0,
            } => Self::WanChanges {
                after_seq: *after_seq,
                records_max: *records_max,
                bytes_max: *bytes_max,
            },
            Command::WanChanges {
                after_seq,
                records_max,
                bytes_max,
                hold_ms,
            } => Self::WanChangesHeld {
                after_seq: *after_seq,
                records_max: *records_max,
                bytes_max: *bytes_max,
                hold_ms: *hold_ms,
            },
            Command::WanDump {
                from_position,
                entries_max,
                bytes_max,
            } => Self::WanDump {
                from_position: *from_position,
                entries_max: *entries_max,
                bytes_max: *bytes_max,
            },
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireCondition {
    Always,
    IfAbsent,
    IfPresent,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireExpiry {
    InMs(i64),
    AtMs(i64),
    Keep,
}

impl From<Expiry> for WireExpiry {
    fn from(e: Expiry) -> Self {
        match e {
            Expiry::InMs(ms) => Self::InMs(ms),
            Expiry::AtMs(ms) => Self::AtMs(ms),
            Expiry::Keep => Self::Keep,
        }
    }
}

impl From<WireExpiry> for Expiry {
    fn from(e: WireExpiry) -> Self {
        match e {
            WireExpiry::InMs(ms) => Self::InMs(ms),
            WireExpiry::AtMs(ms) => Self::AtMs(ms),
            WireExpiry::Keep => Self::Keep,
        }
    }
}

/// The owned encoding the borrowed [`WireCommandRef`] must match byte for byte (tests compare
/// the two); senders encode through the borrowed one.
#[cfg(test)]
impl From<&Command> for WireCommand {
    fn from(command: &Command) -> Self {
        match command {
            Command::Get { key } => Self::Get { key: key.clone() },
            Command::Set {
                key,
                value,
                condition,
                expiry,
                get,
            } => Self::Set {
                key: key.clone(),
                value: value.clone(),
                condition: match condition {
                    SetCondition::Always => WireCondition::Always,
                    SetCondition::IfAbsent => WireCondition::IfAbsent,
                    SetCondition::IfPresent => WireCondition::IfPresent,
                },
                expiry: expiry.map(WireExpiry::from),
                get: *get,
            },
            Command::Del { key } => Self::Del { key: key.clone() },
            Command::Exists { key } => Self::Exists { key: key.clone() },
            Command::IncrBy { key, delta } => Self::IncrBy {
                key: key.clone(),
                delta: *delta,
            },
            Command::Expire { key, expiry } => Self::Expire {
                key: key.clone(),
                expiry: (*expiry).into(),
            },
            Command::Ttl { key, unit } => Self::Ttl {
                key: key.clone(),
                millis: *unit == TtlUnit::Milliseconds,
            },
            Command::Scan {
                from,
                count,
                pattern,
            } => Self::Scan {
                from: *from,
                count: *count as u64,
                pattern: pattern.clone(),
            },
            Command::DbSize => Self::DbSize,
            Command::ExpiringKeys => Self::ExpiringKeys,
            Command::FlushAll => Self::FlushAll,
            Command::WanApply {
                key,
                entry,
                resolver,
            } => Self::WanApply {
                key: key.clone(),
                entry: entry.clone(),
                resolver: resolver.clone(),
            },
            Command::WanChanges {
                after_seq,
                records_max,
                bytes_max,
                hold_ms: 0,
            } => Self::WanChanges {
                after_seq: *after_seq,
                records_max: *records_max,
                bytes_max: *bytes_max,
            },
            Command::WanChanges {
                after_seq,
                records_max,
                bytes_max,
                hold_ms,
            } => Self::WanChangesHeld {
                after_seq: *after_seq,
                records_max: *records_max,
                bytes_max: *bytes_max,
                hold_ms: *hold_ms,
            },
            Command::WanDump {
                from_position,
                entries_max,
                bytes_max,
            } => Self::WanDump {
                from_position: *from_position,
                entries_max: *entries_max,
                bytes_max: *bytes_max,
            },
        }
    }
}

impl From<WireCommand> for Command {
    fn from(command: WireCommand) -> Self {
        match command {
            WireCommand::Get { key } => Self::Get { key },
            WireCommand::Set {
                key,
                value,
                condition,
                expiry,
                get,
            } => Self::Set {
                key,
                value,
                condition: match condition {
                    WireCondition::Always => SetCondition::Always,
                    WireCondition::IfAbsent => SetCondition::IfAbsent,
                    WireCondition::IfPresent => SetCondition::IfPresent,
                },
                expiry: expiry.map(Expiry::from),
                get,
            },
            WireCommand::Del { key } => Self::Del { key },
            WireCommand::Exists { key } => Self::Exists { key },
            WireCommand::IncrBy { key, delta } => Self::IncrBy { key, delta },
            WireCommand::Expire { key, expiry } => Self::Expire {
                key,
                expiry: expiry.into(),
            },
            WireCommand::Ttl { key, millis } => Self::Ttl {
                key,
                unit: if millis {
                    TtlUnit::Milliseconds
                } else {
                    TtlUnit::Seconds
                },
            },
            WireCommand::Scan {
                from,
                count,
                pattern,
            } => Self::Scan {
                from,
                // The sender's count came from a `usize`; a 32-bit reader saturates.
                count: usize::try_from(count).unwrap_or(usize::MAX),
                pattern,
            },
            WireCommand::DbSize => Self::DbSize,
            WireCommand::ExpiringKeys => Self::ExpiringKeys,
            WireCommand::FlushAll => Self::FlushAll,
            WireCommand::WanApply {
                key,
                entry,
                resolver,
            } => Self::WanApply {
                key,
                entry,
                resolver,
            },
            WireCommand::WanChanges {
                after_seq,
                records_max,
                bytes_max,
            } => Self::WanChanges {
                after_seq,
                records_max,
                bytes_max,
                hold_ms: 0,
            },
            WireCommand::WanChangesHeld {
                after_seq,
                records_max,
                bytes_max,
                hold_ms,
            } => Self::WanChanges {
                after_seq,
                records_max,
                bytes_max,
                hold_ms,
            },
            WireCommand::WanDump {
                from_position,
                entries_max,
                bytes_max,
            } => Self::WanDump {
                from_position,
                entries_max,
                bytes_max,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::NodeId;
    use crate::core::{
        ChangeRecord, CommandError, PartitionId, Response, WanChangesPage, WanDumpPage,
    };
    use tern_conflict::{HlcTimestamp, PnCounter, SiteId, Value, Version};

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    /// An entry with a counter value, a two-site version vector and an expiry: every part of a
    /// `Versioned` that must travel.
    fn remote_entry() -> Versioned {
        let mut counter = PnCounter::new();
        counter.add(SiteId(2), -5).expect("no overflow");
        let first = Version::first(SiteId(2), HlcTimestamp::new(1_000, 3));
        Versioned {
            value: Value::Counter(counter),
            version: first.successor(SiteId(9), HlcTimestamp::new(2_000, 0)),
            expires_at_ms: Some(99),
        }
    }

    #[test]
    fn existing_command_tags_keep_their_encoding() {
        // postcard writes the variant index first: the WAN commands were appended after
        // FlushAll (9), so a node of the previous release still decodes every older command.
        let tags = [
            (WireCommand::DbSize, 8u8),
            (WireCommand::FlushAll, 9),
            (
                WireCommand::from(&Command::WanApply {
                    key: b(""),
                    entry: remote_entry(),
                    resolver: None,
                }),
                10,
            ),
            (
                WireCommand::WanChanges {
                    after_seq: 0,
                    records_max: 0,
                    bytes_max: 0,
                },
                11,
            ),
            (
                WireCommand::WanDump {
                    from_position: 0,
                    entries_max: 0,
                    bytes_max: 0,
                },
                12,
            ),
            (
                WireCommand::from(&Command::WanChanges {
                    after_seq: 0,
                    records_max: 0,
                    bytes_max: 0,
                    hold_ms: 0,
                }),
                11,
            ),
            (
                WireCommand::from(&Command::WanChanges {
                    after_seq: 0,
                    records_max: 0,
                    bytes_max: 0,
                    hold_ms: 1,
                }),
                13,
            ),
            (WireCommand::ExpiringKeys, 14),
        ];
        for (command, tag) in tags {
            let bytes = postcard::to_allocvec(&command).expect("encode");
            assert_eq!(bytes.first(), Some(&tag), "{command:?}");
        }
    }

    /// One of each command and option.
    fn every_command() -> Vec<Command> {
        vec![
            Command::Get { key: b("k") },
            Command::Set {
                key: b("k"),
                value: b("v"),
                condition: SetCondition::IfAbsent,
                expiry: Some(Expiry::InMs(5)),
                get: true,
            },
            Command::Set {
                key: b("k"),
                value: b("v"),
                condition: SetCondition::IfPresent,
                expiry: Some(Expiry::Keep),
                get: false,
            },
            Command::Set {
                key: b("k"),
                value: b(""),
                condition: SetCondition::Always,
                expiry: Some(Expiry::AtMs(-1)),
                get: false,
            },
            Command::Del { key: b("k") },
            Command::Exists { key: b("k") },
            Command::IncrBy {
                key: b("k"),
                delta: i64::MIN,
            },
            Command::Expire {
                key: b("k"),
                expiry: Expiry::InMs(-3),
            },
            Command::Ttl {
                key: b("k"),
                unit: TtlUnit::Seconds,
            },
            Command::Ttl {
                key: b("k"),
                unit: TtlUnit::Milliseconds,
            },
            Command::Scan {
                from: 9,
                count: 10,
                pattern: Some(b("a*")),
            },
            Command::DbSize,
            Command::ExpiringKeys,
            Command::FlushAll,
            Command::WanApply {
                key: b("k"),
                entry: remote_entry(),
                resolver: None,
            },
            Command::WanApply {
                key: b("c"),
                entry: remote_entry(),
                resolver: Some("counter-merge".to_owned()),
            },
            Command::WanChanges {
                after_seq: u64::MAX,
                records_max: 7,
                bytes_max: u32::MAX,
                hold_ms: 0,
            },
            Command::WanChanges {
                after_seq: 3,
                records_max: 7,
                bytes_max: 9,
                hold_ms: u32::MAX,
            },
            Command::WanDump {
                from_position: (1 << 48) - 1,
                entries_max: 3,
                bytes_max: u32::MAX,
            },
        ]
    }

    #[test]
    fn every_command_survives_the_wire() {
        let commands = every_command();
        let id = RequestId {
            origin: 3,
            counter: 1 << 40,
        };
        let message = ForwardMessage::Request {
            id,
            attempt: 2,
            partition: 7,
            commands: commands.iter().map(WireCommand::from).collect(),
        };
        let bytes = encode(WireKind::Forward, &message).expect("encode");
        let ForwardMessage::Request {
            commands: back,
            attempt: 2,
            partition: 7,
            ..
        } = decode::<ForwardMessage>(WireKind::Forward, &bytes).expect("decode")
        else {
            panic!("not the request sent");
        };
        let back: Vec<Command> = back.into_iter().map(Command::from).collect();
        assert_eq!(back, commands);

        let results = vec![
            Ok(Response::Int(4)),
            Err(CommandError::WrongType),
            Err(CommandError::WanBacklogFull),
            Ok(Response::WanApplied {
                changed: true,
                conflict: false,
                clock_rejected: true,
            }),
            Ok(Response::WanChanges(WanChangesPage {
                records: vec![ChangeRecord {
                    partition: PartitionId(5),
                    seq: 12,
                    key: b("k"),
                    entry: remote_entry(),
                }],
                last_seq: 40,
            })),
            Ok(Response::WanChanges(WanChangesPage {
                records: Vec::new(),
                last_seq: 0,
            })),
            Ok(Response::WanDump(WanDumpPage {
                entries: vec![(77, b("k"), remote_entry())],
                next: Some(78),
            })),
            Ok(Response::WanDump(WanDumpPage {
                entries: Vec::new(),
                next: None,
            })),
        ];
        let answer = ForwardMessage::answer(id, 2, results);
        let bytes = encode(WireKind::Forward, &answer).expect("encode");
        assert_eq!(decode(WireKind::Forward, &bytes), Ok(answer));

        let node = NodeId::new(2).expect("non-zero");
        let heartbeat = ControlMessage::Heartbeat(Heartbeat {
            from: node,
            incarnation: 3,
            map_version: 9,
        });
        let bytes = encode(WireKind::Control, &heartbeat).expect("encode");
        assert_eq!(decode(WireKind::Control, &bytes), Ok(heartbeat));
    }

    #[test]
    fn foreign_frames_are_refused_with_a_reason() {
        let bytes = encode(WireKind::Control, &ControlMessage::Raft(b("x"))).expect("encode");
        assert!(matches!(
            decode::<ForwardMessage>(WireKind::Forward, &bytes),
            Err(WireError::BadMagic { .. })
        ));
        let mut future = bytes.to_vec();
        future[4] = 7;
        let err = decode::<ControlMessage>(WireKind::Control, &future).expect_err("v7");
        assert!(
            err.to_string()
                .contains("format version 7 is not supported")
        );
        assert!(matches!(
            decode::<ControlMessage>(WireKind::Control, b"TC"),
            Err(WireError::Truncated { len: 2, .. })
        ));
        assert!(matches!(
            decode::<ControlMessage>(WireKind::Control, &bytes[..HEADER_BYTES]),
            Err(WireError::Body { .. })
        ));
    }

    fn request(counter: u64, attempt: u32, partition: u16, commands: &[Command]) -> ForwardRequest {
        ForwardRequest {
            id: RequestId { origin: 3, counter },
            attempt,
            partition,
            commands: commands.iter().map(WireCommand::from).collect(),
        }
    }

    fn pushed<T: Serialize>(mut frame: BatchFrame, items: &[T]) -> BatchFrame {
        for item in items {
            assert!(
                frame.push(item).expect("encode").is_none(),
                "split too early"
            );
        }
        frame
    }

    #[test]
    fn borrowed_commands_encode_like_wire_commands() {
        for command in every_command() {
            assert_eq!(
                postcard::to_allocvec(&WireCommandRef::from(&command)).expect("encode"),
                postcard::to_allocvec(&WireCommand::from(&command)).expect("encode"),
                "{command:?}"
            );
        }
    }

    #[test]
    fn forward_message_tags_keep_their_encoding() {
        // Older releases read tags 0-2; the batch variants were appended.
        let id = RequestId {
            origin: 1,
            counter: 2,
        };
        let tags = [
            (ForwardMessage::answer(id, 1, Vec::new()), 1u8),
            (
                ForwardMessage::Redirect {
                    id,
                    attempt: 1,
                    epoch: 2,
                    primary: None,
                },
                2,
            ),
            (ForwardMessage::Requests(Vec::new()), REQUESTS_TAG),
            (ForwardMessage::Answers(Vec::new()), ANSWERS_TAG),
        ];
        for (message, tag) in tags {
            let bytes = encode(WireKind::Forward, &message).expect("encode");
            assert_eq!(bytes.get(HEADER_BYTES), Some(&tag), "{message:?}");
        }
        let single = ForwardMessage::Request {
            id,
            attempt: 1,
            partition: 0,
            commands: Vec::new(),
        };
        let bytes = encode(WireKind::Forward, &single).expect("encode");
        assert_eq!(bytes.get(HEADER_BYTES), Some(&REQUEST_TAG));
    }

    /// Frames built item by item are byte for byte the messages they stand for, from a single
    /// request (sent as a plain `Request`) to counts whose varint takes two bytes.
    #[test]
    fn batch_frames_are_the_messages_they_stand_for() {
        let commands = every_command();
        for count in [1usize, 2, 3, 127, 128, 300] {
            let requests: Vec<ForwardRequest> = (0..count)
                .map(|i| {
                    let some = &commands[i % commands.len()..][..1];
                    request(i as u64, 1 + i as u32 % 3, (i % 7) as u16, some)
                })
                .collect();
            let borrowed: Vec<ForwardRequestRef<'_>> = (0..count)
                .map(|i| ForwardRequestRef {
                    id: requests[i].id,
                    attempt: requests[i].attempt,
                    partition: requests[i].partition,
                    commands: CommandsRef(&commands[i % commands.len()..][..1]),
                })
                .collect();
            let expected = match requests.as_slice() {
                [one] => ForwardMessage::Request {
                    id: one.id,
                    attempt: one.attempt,
                    partition: one.partition,
                    commands: one.commands.clone(),
                },
                _ => ForwardMessage::Requests(requests.clone()),
            };
            let expected_bytes = encode(WireKind::Forward, &expected).expect("encode");
            for frame in [
                pushed(BatchFrame::requests(), &requests).finish(),
                pushed(BatchFrame::requests(), &borrowed).finish(),
            ] {
                assert_eq!(frame, expected_bytes, "{count} requests");
                assert_eq!(decode(WireKind::Forward, &frame), Ok(expected.clone()));
            }

            let replies: Vec<ForwardReply> = requests
                .iter()
                .map(|r| match r.id.counter % 2 {
                    0 => ForwardReply::answer(r.id, r.attempt, vec![Ok(Response::Int(7))]),
                    _ => ForwardReply::Redirect {
                        id: r.id,
                        attempt: r.attempt,
                        epoch: 9,
                        primary: Some(2),
                    },
                })
                .collect();
            let frame = pushed(BatchFrame::answers(), &replies).finish();
            let expected = ForwardMessage::Answers(replies);
            assert_eq!(frame, encode(WireKind::Forward, &expected).expect("encode"));
            assert_eq!(decode(WireKind::Forward, &frame), Ok(expected));
        }
    }

    /// A frame closes once its items pass the soft size: what was in it is handed back whole,
    /// the item that did not fit starts the next frame, and one large item travels alone.
    #[test]
    fn batch_frames_split_past_the_soft_size() {
        let value = Bytes::from(vec![b'x'; 10_000]);
        let set = |n: u64, value: &Bytes| {
            request(
                n,
                1,
                0,
                &[Command::Set {
                    key: b("k"),
                    value: value.clone(),
                    condition: SetCondition::Always,
                    expiry: None,
                    get: false,
                }],
            )
        };
        let mut frame = BatchFrame::requests();
        let mut sent: Vec<Vec<ForwardRequest>> = Vec::new();
        let mut open = Vec::new();
        let huge = Bytes::from(vec![b'y'; 3 * BatchFrame::SOFT_BYTES_MAX]);
        let items: Vec<ForwardRequest> = (0..20)
            .map(|n| set(n, if n == 13 { &huge } else { &value }))
            .collect();
        for item in &items {
            if let Some(full) = frame.push(item).expect("encode") {
                let bytes = full.finish();
                assert!(
                    bytes.len() <= BatchFrame::SOFT_BYTES_MAX + BATCH_PREFIX_BYTES
                        || open.len() == 1,
                    "a frame of {} items has {} bytes",
                    open.len(),
                    bytes.len()
                );
                let items = match decode(WireKind::Forward, &bytes).expect("decode") {
                    ForwardMessage::Requests(items) => items,
                    ForwardMessage::Request {
                        id,
                        attempt,
                        partition,
                        commands,
                    } => vec![ForwardRequest {
                        id,
                        attempt,
                        partition,
                        commands,
                    }],
                    other => panic!("not requests: {other:?}"),
                };
                assert_eq!(items, std::mem::take(&mut open));
                sent.push(items);
            }
            open.push(item.clone());
        }
        assert_eq!(frame.len(), open.len());
        sent.push(open);
        // Six 10 kB requests fill 64 KiB; the huge one goes alone, and order is kept.
        let sizes: Vec<usize> = sent.iter().map(Vec::len).collect();
        assert_eq!(sizes, [6, 6, 1, 1, 6]);
        assert_eq!(sent.concat(), items);
    }

    #[test]
    fn varints_match_postcard() {
        for value in [0u32, 1, 127, 128, 300, 16_383, 16_384, u32::MAX] {
            let mut out = [0u8; 5];
            assert_eq!(
                varint_u32(value, &mut out),
                postcard::to_allocvec(&(value as usize)).expect("encode"),
                "{value}"
            );
        }
    }
}
