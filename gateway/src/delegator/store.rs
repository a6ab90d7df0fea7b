//! Where a delegator keeps records until the target acknowledges them.
//!
//! [`RecordStore`] is the seam: the delegator appends one batch of records per call, reads
//! ranges in append order and releases per-partition prefixes. Two implementations:
//! [`MemoryStore`] (volatile, unbounded: tests and simulations) and
//! [`BacklogStore`](super::BacklogStore) (the durable backlog, which owns the byte cap and the
//! overflow policy).
use crate::wire::WanRecord;
use std::collections::{BTreeMap, VecDeque};
use tern_node::core::keyspace::PartitionId;

/// A record handed to [`RecordStore::append`], with its postcard size (what batches count).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewWanRecord {
    pub record: WanRecord,
    pub encoded_bytes: u64,
}

/// Records read for one batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadBatch {
    pub records: Vec<WanRecord>,
    /// Sum of the records' encoded sizes.
    pub bytes: u64,
    /// Where the next read continues.
    pub next_position: u64,
    /// When the newest record read was handed to the delegator.
    pub newest_enqueued_at_ms: Option<u64>,
}

/// What [`RecordStore::release_through`] freed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Released {
    pub records: u64,
    pub bytes: u64,
    /// Of those, the ones with `seq` above the `sent_through` argument (not yet sent on this
    /// connection).
    pub unsent_records: u64,
    pub unsent_bytes: u64,
}

/// What an append did besides keeping the records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Appended {
    /// Set when the store passed its byte cap under the drop-and-repair policy and dropped
    /// every record it held.
    pub dropped: Option<Dropped>,
}

/// The store dropped its records (overflow under `DropAndRepair`): the target needs repair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dropped {
    pub records: u64,
    pub bytes: u64,
    /// The batch being appended went too (it alone exceeded the cap).
    pub batch_dropped: bool,
    /// The durable repair mark set for it (see [`RecordStore::repair_mark`]).
    pub repair_generation: u64,
}

/// A store failure. `Full` is backpressure; `Failed` means the store must be reopened (which
/// recovers) and the delegator rebuilt on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error(
        "backlog full: {bytes_held} bytes held + {bytes_needed} needed > {bytes_max}; local \
         writes must wait for acknowledgements"
    )]
    Full {
        bytes_held: u64,
        bytes_needed: u64,
        bytes_max: u64,
    },
    #[error("backlog unusable: {detail}; reopen it to recover")]
    Failed { detail: String },
}

/// What a store recovered about one partition's stream after a restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecoveredStream {
    pub partition: PartitionId,
    /// Highest seq appended, acknowledged or dropped: the stream resumes above it.
    pub last_appended: u64,
    /// Everything up to this seq was acknowledged (as last persisted).
    pub acked: Option<u64>,
    /// `prev_seq` of the oldest unacknowledged record still held, if any.
    pub oldest_prev_seq: Option<u64>,
}

/// Unacknowledged records in append order. Positions increase with every append and are never
/// reused (position 0 is before everything); per partition, appends come in increasing `seq`.
pub trait RecordStore: std::fmt::Debug {
    /// Keep `records` (one delegator batch), all or none.
    fn append(
        &mut self,
        records: &[NewWanRecord],
        enqueued_at_ms: u64,
    ) -> Result<Appended, StoreError>;

    /// Records from `position` on, in append order: at most `records_max`, and no more than
    /// `bytes_max` encoded bytes unless the first record alone exceeds it (it is then read
    /// alone, so an oversized record still travels).
    fn read_from(
        &mut self,
        position: u64,
        records_max: usize,
        bytes_max: u64,
    ) -> Result<ReadBatch, StoreError>;

    /// Drop every record of `partition` with `seq <= through_seq` (acknowledged).
    fn release_through(
        &mut self,
        partition: PartitionId,
        through_seq: u64,
        sent_through: u64,
    ) -> Result<Released, StoreError>;

    /// Records held.
    fn records(&self) -> u64;

    /// Encoded bytes held.
    fn bytes(&self) -> u64;

    /// The largest encoded record the store accepts.
    fn record_bytes_max(&self) -> u64 {
        u64::MAX
    }

    /// Time-driven work (fsync, cursor persistence) with the caller's clock.
    fn tick(&mut self, _now_ms: u64) -> Result<(), StoreError> {
        Ok(())
    }

    /// When [`Self::tick`] next has work.
    fn next_tick_ms(&self) -> Option<u64> {
        None
    }

    /// Streams found when the store was opened (empty for a new store).
    fn recovered_streams(&self) -> Vec<RecoveredStream> {
        Vec::new()
    }

    /// The floor for the next append of `partition`, as the store knows it.
    fn last_appended(&self, _partition: PartitionId) -> Option<u64> {
        None
    }

    /// Generation of the durable target-wide repair mark (set by overflow drops, corruption,
    /// lost tails), if any.
    fn repair_mark(&self) -> Option<u64> {
        None
    }

    /// Clear the mark of `generation` after a repair of every partition; false if a newer
    /// cause arrived meanwhile.
    fn clear_repair_mark(&mut self, _generation: u64) -> Result<bool, StoreError> {
        Ok(false)
    }
}

#[derive(Clone, Debug)]
struct Stored {
    record: WanRecord,
    encoded_bytes: u64,
    enqueued_at_ms: u64,
}

/// In-memory [`RecordStore`]: a position-ordered map plus a per-partition index for releases.
/// Unbounded and volatile: for tests and simulations.
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
    fn append(
        &mut self,
        records: &[NewWanRecord],
        enqueued_at_ms: u64,
    ) -> Result<Appended, StoreError> {
        for new in records {
            // Position 0 stays "before everything".
            self.next_position += 1;
            let position = self.next_position;
            self.by_partition
                .entry(new.record.partition)
                .or_default()
                .push_back((new.record.seq, position));
            self.bytes += new.encoded_bytes;
            self.entries.insert(
                position,
                Stored {
                    record: new.record.clone(),
                    encoded_bytes: new.encoded_bytes,
                    enqueued_at_ms,
                },
            );
        }
        Ok(Appended::default())
    }

    fn read_from(
        &mut self,
        position: u64,
        records_max: usize,
        bytes_max: u64,
    ) -> Result<ReadBatch, StoreError> {
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
            batch.newest_enqueued_at_ms = Some(stored.enqueued_at_ms);
        }
        Ok(batch)
    }

    fn release_through(
        &mut self,
        partition: PartitionId,
        through_seq: u64,
        sent_through: u64,
    ) -> Result<Released, StoreError> {
        let mut released = Released::default();
        let Some(index) = self.by_partition.get_mut(&partition) else {
            return Ok(released);
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
            if seq > sent_through {
                released.unsent_records += 1;
                released.unsent_bytes += stored.encoded_bytes;
            }
        }
        if index.is_empty() {
            self.by_partition.remove(&partition);
        }
        self.bytes -= released.bytes;
        Ok(released)
    }

    fn records(&self) -> u64 {
        self.entries.len() as u64
    }

    fn bytes(&self) -> u64 {
        self.bytes
    }
}
