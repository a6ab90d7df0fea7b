use super::super::*;
use super::harness::*;
use crate::core::command::{CommandError, Response as R};
use tern_conflict::{HlcTimestamp, SiteId, Value, Version, Versioned};

#[test]
fn every_message_survives_postcard() {
    let entry = Versioned {
        value: Value::Bytes(b("v")),
        version: Version::first(SiteId(1), HlcTimestamp::new(5, 1)),
        expires_at_ms: Some(9),
    };
    let outcome = RequestOutcome {
        id: rid(4),
        seq: 3,
        results: vec![
            Ok(R::Ok),
            Ok(R::Value(None)),
            Ok(R::Int(-3)),
            Ok(R::ScanPage {
                keys: vec![b("k")],
                next: Some(2),
            }),
            Err(CommandError::WrongType),
            Err(CommandError::NotAnInteger),
            Err(CommandError::Overflow),
            Err(CommandError::InvalidExpire { command: "set" }),
            Err(CommandError::InvalidExpire { command: "expire" }),
            Err(CommandError::ValueTooLarge { len: 9, max: 8 }),
            Err(CommandError::KeyTooLarge { len: 9, max: 8 }),
            Ok(R::WanApplied {
                changed: true,
                conflict: true,
                clock_rejected: false,
            }),
            Ok(R::WanChanges(crate::core::command::WanChangesPage {
                records: vec![crate::core::ChangeRecord {
                    partition: crate::core::PartitionId(1),
                    seq: 3,
                    key: b("k"),
                    entry: entry.clone(),
                }],
                last_seq: 3,
            })),
        ],
    };
    let messages = [
        ReplicationMessage::Replicate(Replicate {
            epoch: 2,
            round: 7,
            now_ms: 11,
            prev_seq: 2,
            prev_epoch: 1,
            records: vec![ReplicatedRecord {
                seq: 3,
                epoch: 2,
                key: b("k"),
                entry: entry.clone(),
            }],
            outcomes: vec![outcome.clone()],
            lineage: Some(1 << 40),
        }),
        ReplicationMessage::Ack {
            epoch: 2,
            round: 7,
            matched_seq: 3,
        },
        ReplicationMessage::Nack {
            epoch: 2,
            round: 7,
            last_seq: 1,
            last_epoch: None,
        },
        ReplicationMessage::SnapshotChunk(SnapshotChunk {
            epoch: 2,
            round: 8,
            now_ms: 12,
            seq: 3,
            seq_epoch: 2,
            index: 0,
            entries: vec![(b("k"), entry)],
            outcomes: vec![outcome],
            last: true,
            lineage: None,
        }),
        ReplicationMessage::ChunkAck {
            epoch: 2,
            round: 8,
            seq: 3,
            index: 0,
        },
        ReplicationMessage::Fenced { epoch: 3 },
    ];
    for message in messages {
        let bytes = postcard::to_allocvec(&message).expect("serializes");
        let back: ReplicationMessage = postcard::from_bytes(&bytes).expect("deserializes");
        assert_eq!(back, message);
    }
}
