//! What replicas of one partition say to each other. Serializable (the transport frames them
//! with postcard); command results travel through a mirror type because `CommandError` holds a
//! `&'static str`.
use super::types::RequestId;
use crate::core::command::CommandResult;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tern_conflict::Versioned;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicationMessage {
    /// Primary → backup: change records following `prev_seq` (possibly none: a probe, or a
    /// barrier that proves the backup still follows this epoch).
    Replicate(Replicate),
    /// Backup → primary: the backup's log matches the primary's up to `matched_seq`.
    Ack {
        epoch: u64,
        round: u64,
        matched_seq: u64,
    },
    /// Backup → primary: the message did not attach to the backup's log (a gap, or a history
    /// that diverged); the backup's log ends at `last_seq`, written in epoch `last_epoch`.
    Nack {
        epoch: u64,
        round: u64,
        last_seq: u64,
        last_epoch: Option<u64>,
    },
    /// Primary → backup: part of a snapshot taken at `seq`.
    SnapshotChunk(SnapshotChunk),
    /// Backup → primary: chunk `index` of the snapshot at `seq` arrived (not the last one: the
    /// last is answered with `Ack { matched_seq: seq }` once installed).
    ChunkAck {
        epoch: u64,
        round: u64,
        seq: u64,
        index: u32,
    },
    /// Answer to a message from an older epoch: the sender is deposed.
    Fenced { epoch: u64 },
}

impl ReplicationMessage {
    pub fn epoch(&self) -> u64 {
        match self {
            Self::Replicate(r) => r.epoch,
            Self::SnapshotChunk(c) => c.epoch,
            Self::Ack { epoch, .. }
            | Self::Nack { epoch, .. }
            | Self::ChunkAck { epoch, .. }
            | Self::Fenced { epoch } => *epoch,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replicate {
    pub epoch: u64,
    /// The primary's barrier round; echoed in the answer.
    pub round: u64,
    /// The primary's clock when it sent this: a promoted backup never evaluates expiry at an
    /// earlier time than its old primary already did.
    pub now_ms: u64,
    pub prev_seq: u64,
    /// The epoch that wrote `prev_seq` in the primary's log (seq 0, the empty log, is epoch 0).
    pub prev_epoch: u64,
    pub records: Vec<ReplicatedRecord>,
    /// Answers of the write requests whose last change is among `records` (request dedup).
    pub outcomes: Vec<RequestOutcome>,
    /// The primary's data lineage (`PartitionCore::lineage`), mirrored by the backup.
    pub lineage: Option<u64>,
}

/// One change record as replicated: the entry's full new state at `seq`, and the epoch whose
/// primary wrote it (so replicas can tell whether their logs match).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicatedRecord {
    pub seq: u64,
    pub epoch: u64,
    pub key: Bytes,
    pub entry: Versioned,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotChunk {
    pub epoch: u64,
    pub round: u64,
    pub now_ms: u64,
    /// The snapshot holds the state after this seq...
    pub seq: u64,
    /// ...which was written in this epoch.
    pub seq_epoch: u64,
    /// 0, 1, 2, ...: a backup starts over at 0 and ignores chunks out of order.
    pub index: u32,
    pub entries: Vec<(Bytes, Versioned)>,
    pub outcomes: Vec<RequestOutcome>,
    pub last: bool,
    /// The primary's data lineage, mirrored by the backup that installs the snapshot.
    pub lineage: Option<u64>,
}

/// A write request's answer, remembered (and replicated) so a retry gets it again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestOutcome {
    pub id: RequestId,
    /// The partition's last seq after the request executed.
    pub seq: u64,
    #[serde(with = "wire_results")]
    pub results: Vec<CommandResult>,
}

/// Serde for `Vec<CommandResult>` through a mirror of `Response`/`CommandError`.
mod wire_results {
    use crate::core::change_log::ChangeRecord;
    use crate::core::command::{
        CommandError, CommandResult, Response, WanChangesPage, WanDumpPage,
    };
    use crate::core::keyspace::PartitionId;
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use tern_conflict::Versioned;

    #[derive(Serialize, Deserialize)]
    enum WireResult {
        Ok,
        Value(Option<Bytes>),
        Int(i64),
        ScanPage {
            keys: Vec<Bytes>,
            next: Option<u64>,
        },
        WrongType,
        NotAnInteger,
        Overflow,
        InvalidExpireSet,
        InvalidExpire,
        ValueTooLarge {
            len: usize,
            max: usize,
        },
        KeyTooLarge {
            len: usize,
            max: usize,
        },
        // New variants go last: postcard encodes the variant index, so this keeps the
        // encodings above unchanged.
        WanApplied {
            changed: bool,
            conflict: bool,
            clock_rejected: bool,
        },
        WanChanges {
            records: Vec<WireChangeRecord>,
            last_seq: u64,
        },
        WanDump {
            entries: Vec<(u64, Bytes, Versioned)>,
            next: Option<u64>,
        },
        WanBacklogFull,
        OutOfMemory,
        UnknownResolver {
            name: String,
        },
    }

    /// `ChangeRecord` on the wire (the core type carries no serde).
    #[derive(Serialize, Deserialize)]
    struct WireChangeRecord {
        partition: PartitionId,
        seq: u64,
        key: Bytes,
        entry: Versioned,
    }

    fn to_wire(result: &CommandResult) -> WireResult {
        match result {
            Ok(Response::Ok) => WireResult::Ok,
            Ok(Response::Value(v)) => WireResult::Value(v.clone()),
            Ok(Response::Int(i)) => WireResult::Int(*i),
            Ok(Response::ScanPage { keys, next }) => WireResult::ScanPage {
                keys: keys.clone(),
                next: *next,
            },
            Ok(Response::WanApplied {
                changed,
                conflict,
                clock_rejected,
            }) => WireResult::WanApplied {
                changed: *changed,
                conflict: *conflict,
                clock_rejected: *clock_rejected,
            },
            Ok(Response::WanChanges(page)) => WireResult::WanChanges {
                records: page
                    .records
                    .iter()
                    .map(|r| WireChangeRecord {
                        partition: r.partition,
                        seq: r.seq,
                        key: r.key.clone(),
                        entry: r.entry.clone(),
                    })
                    .collect(),
                last_seq: page.last_seq,
            },
            Ok(Response::WanDump(page)) => WireResult::WanDump {
                entries: page.entries.clone(),
                next: page.next,
            },
            Err(CommandError::WrongType) => WireResult::WrongType,
            Err(CommandError::NotAnInteger) => WireResult::NotAnInteger,
            Err(CommandError::Overflow) => WireResult::Overflow,
            Err(CommandError::InvalidExpire { command: "set" }) => WireResult::InvalidExpireSet,
            Err(CommandError::InvalidExpire { .. }) => WireResult::InvalidExpire,
            Err(CommandError::ValueTooLarge { len, max }) => WireResult::ValueTooLarge {
                len: *len,
                max: *max,
            },
            Err(CommandError::KeyTooLarge { len, max }) => WireResult::KeyTooLarge {
                len: *len,
                max: *max,
            },
            Err(CommandError::WanBacklogFull) => WireResult::WanBacklogFull,
            Err(CommandError::OutOfMemory) => WireResult::OutOfMemory,
            Err(CommandError::UnknownResolver { name }) => {
                WireResult::UnknownResolver { name: name.clone() }
            }
        }
    }

    fn from_wire(wire: WireResult) -> CommandResult {
        match wire {
            WireResult::Ok => Ok(Response::Ok),
            WireResult::Value(v) => Ok(Response::Value(v)),
            WireResult::Int(i) => Ok(Response::Int(i)),
            WireResult::ScanPage { keys, next } => Ok(Response::ScanPage { keys, next }),
            WireResult::WanApplied {
                changed,
                conflict,
                clock_rejected,
            } => Ok(Response::WanApplied {
                changed,
                conflict,
                clock_rejected,
            }),
            WireResult::WanChanges { records, last_seq } => {
                Ok(Response::WanChanges(WanChangesPage {
                    records: records
                        .into_iter()
                        .map(|r| ChangeRecord {
                            partition: r.partition,
                            seq: r.seq,
                            key: r.key,
                            entry: r.entry,
                        })
                        .collect(),
                    last_seq,
                }))
            }
            WireResult::WanDump { entries, next } => {
                Ok(Response::WanDump(WanDumpPage { entries, next }))
            }
            WireResult::WrongType => Err(CommandError::WrongType),
            WireResult::NotAnInteger => Err(CommandError::NotAnInteger),
            WireResult::Overflow => Err(CommandError::Overflow),
            WireResult::InvalidExpireSet => Err(CommandError::InvalidExpire { command: "set" }),
            WireResult::InvalidExpire => Err(CommandError::InvalidExpire { command: "expire" }),
            WireResult::ValueTooLarge { len, max } => Err(CommandError::ValueTooLarge { len, max }),
            WireResult::KeyTooLarge { len, max } => Err(CommandError::KeyTooLarge { len, max }),
            WireResult::WanBacklogFull => Err(CommandError::WanBacklogFull),
            WireResult::OutOfMemory => Err(CommandError::OutOfMemory),
            WireResult::UnknownResolver { name } => Err(CommandError::UnknownResolver { name }),
        }
    }

    pub(super) fn serialize<S: Serializer>(
        results: &[CommandResult],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let wire: Vec<WireResult> = results.iter().map(to_wire).collect();
        wire.serialize(serializer)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<CommandResult>, D::Error> {
        let wire = Vec::<WireResult>::deserialize(deserializer)?;
        Ok(wire.into_iter().map(from_wire).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::command::{CommandError, Response};

    #[test]
    fn existing_result_tags_keep_their_encoding() {
        // postcard writes the variant index first: the WAN answers were appended after
        // KeyTooLarge (10), so the previous release's answers decode unchanged.
        let cases: Vec<(CommandResult, u8)> = vec![
            (Ok(Response::Ok), 0),
            (Err(CommandError::KeyTooLarge { len: 1, max: 0 }), 10),
            (
                Ok(Response::WanApplied {
                    changed: false,
                    conflict: false,
                    clock_rejected: false,
                }),
                11,
            ),
            (Err(CommandError::WanBacklogFull), 14),
            (Err(CommandError::OutOfMemory), 15),
        ];
        for (result, tag) in cases {
            let outcome = RequestOutcome {
                id: RequestId {
                    origin: 0,
                    counter: 0,
                },
                seq: 0,
                results: vec![result.clone()],
            };
            let bytes = postcard::to_allocvec(&outcome).expect("encode");
            // id.origin, id.counter, seq (one varint byte each), the result count, then the tag.
            assert_eq!(bytes.get(4), Some(&tag), "{result:?}");
            let back: RequestOutcome = postcard::from_bytes(&bytes).expect("decode");
            assert_eq!(back, outcome);
        }
    }
}
