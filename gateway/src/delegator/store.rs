//! Where a delegator keeps records until the target acknowledges them.
//!
//! [`RecordStore`] is the seam for the durable backlog (gateway/src/backlog/): the delegator
//! only appends, reads ranges in append order and releases per-partition prefixes.
//! [`MemoryStore`] is the in-memory implementation.
use crate::wire::WanRecord;
use std::collections::{BTreeMap, VecDeque};
use tern_node::core::keyspace::PartitionId;

/// Records read for one batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadBatch {
    pub records: Vec<WanRecord>,
    /// Sum of the records' encoded sizes.
    pub bytes: u64,
    /// Where the next read continues.
    pub next_position: u64,
}

/// What [`RecordStore::release_through`] freed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Released {
    pub records: u64,
    pub bytes: u64,
    /// Of those, the ones at or after the `unsent_from` position (not yet sent on this
    /// connection).
    pub unsent_records: u64,
    pub unsent_bytes: u64,
    /// When the newest released record was handed to the delegator.
    pub newest_enqueued_at_ms: Option<u64>,
}

/// Unacknowledged records in append order. Positions increase with every append and are never
/// reused; per partition, appends come in increasing `seq`.
pub trait RecordStore: std::fmt::Debug {
    /// Keep `record` (whose postcard encoding takes `encoded_bytes`); returns its position.
    fn append(&mut self, record: WanRecord, encoded_bytes: u64, enqueued_at_ms: u64) -> u64;

    /// Records from `position` on, in append order: at most `records_max`, and no more than
    /// `bytes_max` encoded bytes unless the first record alone exceeds it (it is then read
    /// alone, so an oversized record still travels).
    fn read_from(&self, position: u64, records_max: usize, bytes_max: u64) -> ReadBatch;

    /// When the first record at or after `position` was appended.
    fn enqueued_at_from(&self, position: u64) -> Option<u64>;

    /// Drop every record of `partition` with `seq <= through_seq` (acknowledged).
    fn release_through(
        &mut self,
        partition: PartitionId,
        through_seq: u64,
        unsent_from: u64,
    ) -> Released;

    /// Records held.
    fn records(&self) -> u64;

    /// Encoded bytes held.
    fn bytes(&self) -> u64;
}

#[derive(Clone, Debug)]
struct Stored {
    record: WanRecord,
    encoded_bytes: u64,
    enqueued_at_ms: u64,
}

/// In-memory [`RecordStore`]: a position-ordered map plus a per-partition index for releases.
#[derive(Debug, Default)]
pub struct MemoryStore {
    entries: BTreeMap<u64, Stored>,
    /// Per partition, `(seq, position)` in increasing order.
    by_partition: BTreeMap<PartitionId, VecDeque<(u64, u64)>>,
    next_position: u64,
    bytes: u64,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

impl RecordStore for MemoryStore {
    fn append(&mut self, record: WanRecord, encoded_bytes: u64, enqueued_at_ms: u64) -> u64 {
        let position = self.next_position;
        self.next_position += 1;
        self.by_partition
            .entry(record.partition)
            .or_default()
            .push_back((record.seq, position));
        self.bytes += encoded_bytes;
        self.entries.insert(
            position,
            Stored {
                record,
                encoded_bytes,
                enqueued_at_ms,
            },
        );
        position
    }

    fn read_from(&self, position: u64, records_max: usize, bytes_max: u64) -> ReadBatch {
        let mut batch = ReadBatch {
            next_position: position,
            ..ReadBatch::default()
        };
        for (&at, stored) in self.entries.range(position..) {
            let first = batch.records.is_empty();
            if batch.records.len() >= records_max
                || (!first && batch.bytes + stored.encoded_bytes > bytes_max)
            {
                break;
            }
            batch.records.push(stored.record.clone());
            batch.bytes += stored.encoded_bytes;
            batch.next_position = at + 1;
        }
        batch
    }

    fn enqueued_at_from(&self, position: u64) -> Option<u64> {
        self.entries
            .range(position..)
            .next()
            .map(|(_, stored)| stored.enqueued_at_ms)
    }

    fn release_through(
        &mut self,
        partition: PartitionId,
        through_seq: u64,
        unsent_from: u64,
    ) -> Released {
        let mut released = Released::default();
        let Some(index) = self.by_partition.get_mut(&partition) else {
            return released;
        };
        while let Some(&(seq, position)) = index.front() {
            if seq > through_seq {
                break;
            }
            index.pop_front();
            let Some(stored) = self.entries.remove(&position) else {
                continue;
            };
            released.records += 1;
            released.bytes += stored.encoded_bytes;
            if position >= unsent_from {
                released.unsent_records += 1;
                released.unsent_bytes += stored.encoded_bytes;
            }
            released.newest_enqueued_at_ms = Some(
                released
                    .newest_enqueued_at_ms
                    .map_or(stored.enqueued_at_ms, |t| t.max(stored.enqueued_at_ms)),
            );
        }
        if index.is_empty() {
            self.by_partition.remove(&partition);
        }
        self.bytes -= released.bytes;
        released
    }

    fn records(&self) -> u64 {
        self.entries.len() as u64
    }

    fn bytes(&self) -> u64 {
        self.bytes
    }
}
