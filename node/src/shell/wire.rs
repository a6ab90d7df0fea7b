//! What the shell sends between nodes, one message per transport frame:
//! `magic (4 bytes) | format version (u16 LE) | postcard body`, like `cluster::codec`. Each
//! channel has its own magic, so a frame that lands on the wrong channel is refused, and a
//! reader refuses an unknown version instead of misreading another release's bytes.
//!
//! - Control: Raft messages, heartbeats, map proposals sent to the Raft leader;
//! - Replication: one partition's [`ReplicationMessage`];
//! - Forward: a client request for a partition's primary, and its answer.
//!
//! `Command` has no serde (the core stays free of wire concerns); it travels as [`WireCommand`].
use crate::cluster::{Heartbeat, MapCommand};
use crate::core::{
    Command, CommandResult, Expiry, ReplicationMessage, RequestId, RequestOutcome, SetCondition,
    TtlUnit,
};
use bytes::Bytes;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tern_conflict::Versioned;

/// The only format version this build writes and reads.
pub const WIRE_VERSION: u16 = 1;
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
    postcard::to_io(value, &mut out).map_err(|e| WireError::Encode {
        kind,
        reason: e.to_string(),
    })?;
    Ok(Bytes::from(out))
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
            Command::FlushAll => Self::FlushAll,
            Command::WanApply { key, entry } => Self::WanApply {
                key: key.clone(),
                entry: entry.clone(),
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
            WireCommand::FlushAll => Self::FlushAll,
            WireCommand::WanApply { key, entry } => Self::WanApply { key, entry },
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
        ];
        for (command, tag) in tags {
            let bytes = postcard::to_allocvec(&command).expect("encode");
            assert_eq!(bytes.first(), Some(&tag), "{command:?}");
        }
    }

    #[test]
    fn every_command_survives_the_wire() {
        let commands = vec![
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
            Command::FlushAll,
            Command::WanApply {
                key: b("k"),
                entry: remote_entry(),
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
        ];
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
}
