//! [`BacklogStore`]: the delegator's [`RecordStore`] over the durable [`Backlog`].
//!
//! Each record is one backlog frame tagged `(partition, seq)`, whose payload is
//! `PAYLOAD_FORMAT` (one byte) followed by the postcard encoding of `(enqueued_at_ms,
//! WanRecord)`. Positions are [`ReadCursor::to_u64`]. A delegator batch is one
//! [`Backlog::append_batch`] (one write, at most one fsync).
//!
//! The backlog owns the byte cap and the overflow policy (`BacklogConfig::backlog_bytes_max`,
//! `overflow_policy`); this store reports their outcomes: `BlockWrites` refusals as
//! [`StoreError::Full`], `DropAndRepair` drops in [`Appended::dropped`].
//!
//! In memory it keeps, per partition, `(seq, encoded bytes)` of each unacknowledged record
//! (16 bytes a record) so releases report exact counts without reading the disk.
use super::store::{
    Appended, Dropped, NewWanRecord, ReadBatch, RecordStore, RecoveredStream, Released, StoreError,
};
use crate::backlog::{
    Backlog, BacklogConfig, BacklogError, NewRecord, ReadCursor, ReadLimits, RecoveryReport,
    SegmentStorage,
};
use crate::wire::WanRecord;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use tern_node::core::keyspace::PartitionId;

/// First byte of every payload: lets a later build change the payload encoding.
const PAYLOAD_FORMAT: u8 = 1;
/// Bytes a payload adds around the encoded record: format byte and the `enqueued_at_ms` varint.
pub const PAYLOAD_OVERHEAD_BYTES_MAX: u64 = 1 + 10;

/// The durable [`RecordStore`]. See the module docs.
#[derive(Debug)]
pub struct BacklogStore<S: SegmentStorage> {
    backlog: Backlog<S>,
    /// Per partition, `(seq, encoded bytes)` of unacknowledged records, oldest first.
    index: BTreeMap<PartitionId, VecDeque<(u64, u64)>>,
    records: u64,
    bytes: u64,
    recovered: Vec<RecoveredStream>,
}

impl<S: SegmentStorage> BacklogStore<S> {
    /// Open (and recover) the backlog on `storage`, then read every unacknowledged record once
    /// to index it. What recovery found is in the report (the backlog's repair mark is set for
    /// anything that lost records).
    pub fn open(storage: S, config: BacklogConfig) -> Result<(Self, RecoveryReport), StoreError> {
        let (backlog, report) = Backlog::open(storage, config).map_err(failed)?;
        let mut store = Self {
            backlog,
            index: BTreeMap::new(),
            records: 0,
            bytes: 0,
            recovered: Vec::new(),
        };
        let oldest_prev = store.rebuild_index()?;
        let mut partitions: BTreeSet<PartitionId> = store.index.keys().copied().collect();
        partitions.extend(
            store
                .backlog
                .acked_cursors()
                .keys()
                .map(|&p| PartitionId(p)),
        );
        store.recovered = partitions
            .into_iter()
            .map(|partition| RecoveredStream {
                partition,
                last_appended: store.backlog.last_appended(partition.0).unwrap_or(0),
                acked: store.backlog.acked(partition.0),
                oldest_prev_seq: oldest_prev.get(&partition).copied(),
            })
            .collect();
        Ok((store, report))
    }

    pub fn backlog(&self) -> &Backlog<S> {
        &self.backlog
    }

    /// Make everything appended durable and persist the cursors, whatever the fsync policy
    /// (e.g. on a clean shutdown).
    pub fn sync(&mut self) -> Result<(), StoreError> {
        self.backlog.sync().map_err(failed)
    }

    /// Give the storage back, to reopen on it after a failure.
    pub fn into_storage(self) -> S {
        self.backlog.into_storage()
    }

    /// Index every unacknowledged record; returns each partition's oldest `prev_seq`.
    fn rebuild_index(&mut self) -> Result<BTreeMap<PartitionId, u64>, StoreError> {
        self.index.clear();
        self.records = 0;
        self.bytes = 0;
        let mut oldest_prev = BTreeMap::new();
        let mut entries = Vec::new();
        for record in self.backlog.replay() {
            let record = record.map_err(failed)?;
            let (_, wan) = decode_payload(&record.payload, record.position)?;
            let bytes = encoded_size(&wan);
            oldest_prev.entry(wan.partition).or_insert(wan.prev_seq);
            entries.push((wan.partition, wan.seq, bytes));
        }
        for (partition, seq, bytes) in entries {
            self.index
                .entry(partition)
                .or_default()
                .push_back((seq, bytes));
            self.records += 1;
            self.bytes += bytes;
        }
        Ok(oldest_prev)
    }
}

impl<S: SegmentStorage> RecordStore for BacklogStore<S> {
    fn append(
        &mut self,
        records: &[NewWanRecord],
        enqueued_at_ms: u64,
    ) -> Result<Appended, StoreError> {
        let mut payloads = Vec::with_capacity(records.len());
        for new in records {
            let mut payload = vec![PAYLOAD_FORMAT];
            payload =
                postcard::to_extend(&(enqueued_at_ms, &new.record), payload).map_err(|e| {
                    StoreError::Failed {
                        detail: format!("encode record for the backlog: {e}"),
                    }
                })?;
            payloads.push(payload);
        }
        let batch: Vec<NewRecord<'_>> = records
            .iter()
            .zip(&payloads)
            .map(|(new, payload)| NewRecord {
                partition: new.record.partition.0,
                seq: new.record.seq,
                payload,
            })
            .collect();
        let outcome = self.backlog.append_batch(&batch).map_err(failed)?;
        let mut appended = Appended::default();
        if let Some(drop) = outcome.overflow {
            appended.dropped = Some(Dropped {
                records: drop.records_dropped,
                bytes: drop.bytes_dropped,
                batch_dropped: drop.batch_dropped,
                repair_generation: drop.repair.generation,
            });
            self.index.clear();
            self.records = 0;
            self.bytes = 0;
            if drop.batch_dropped {
                return Ok(appended);
            }
        }
        for new in records {
            self.index
                .entry(new.record.partition)
                .or_default()
                .push_back((new.record.seq, new.encoded_bytes));
            self.records += 1;
            self.bytes += new.encoded_bytes;
        }
        Ok(appended)
    }

    fn read_from(
        &mut self,
        position: u64,
        records_max: usize,
        bytes_max: u64,
    ) -> Result<ReadBatch, StoreError> {
        let limits = ReadLimits {
            records_max: records_max.max(1),
            bytes_max: usize::try_from(bytes_max).unwrap_or(usize::MAX),
        };
        let read = self
            .backlog
            .read_from(ReadCursor::from_u64(position), limits)
            .map_err(failed)?;
        if !read.corruptions.is_empty() {
            // Quarantined segments took records with them (the repair mark is set): count
            // again so `records()`/`bytes()` stay exact.
            self.rebuild_index()?;
        }
        let mut batch = ReadBatch {
            next_position: read.next.to_u64(),
            ..ReadBatch::default()
        };
        for record in read.records {
            let (enqueued_at_ms, wan) = decode_payload(&record.payload, record.position)?;
            let bytes = encoded_size(&wan);
            // The backlog may overshoot by one record (it checks before adding): keep the
            // delegator's exact rule so a batch always fits its frame.
            if !batch.records.is_empty() && batch.bytes + bytes > bytes_max {
                batch.next_position = record.position.to_u64();
                break;
            }
            batch.bytes += bytes;
            batch.newest_enqueued_at_ms = Some(enqueued_at_ms);
            batch.records.push(wan);
        }
        Ok(batch)
    }

    fn release_through(
        &mut self,
        partition: PartitionId,
        through_seq: u64,
        sent_through: u64,
    ) -> Result<Released, StoreError> {
        self.backlog
            .acknowledge(partition.0, through_seq)
            .map_err(failed)?;
        let mut released = Released::default();
        let Some(index) = self.index.get_mut(&partition) else {
            return Ok(released);
        };
        while let Some(&(seq, bytes)) = index.front() {
            if seq > through_seq {
                break;
            }
            index.pop_front();
            released.records += 1;
            released.bytes += bytes;
            if seq > sent_through {
                released.unsent_records += 1;
                released.unsent_bytes += bytes;
            }
        }
        if index.is_empty() {
            self.index.remove(&partition);
        }
        self.records -= released.records;
        self.bytes -= released.bytes;
        Ok(released)
    }

    fn records(&self) -> u64 {
        self.records
    }

    fn bytes(&self) -> u64 {
        self.bytes
    }

    fn record_bytes_max(&self) -> u64 {
        self.backlog
            .config()
            .record_bytes_max
            .saturating_sub(PAYLOAD_OVERHEAD_BYTES_MAX)
    }

    fn tick(&mut self, now_ms: u64) -> Result<(), StoreError> {
        self.backlog.handle_tick(now_ms).map(|_| ()).map_err(failed)
    }

    fn next_tick_ms(&self) -> Option<u64> {
        self.backlog.next_tick_due_ms()
    }

    fn recovered_streams(&self) -> Vec<RecoveredStream> {
        self.recovered.clone()
    }

    fn last_appended(&self, partition: PartitionId) -> Option<u64> {
        self.backlog.last_appended(partition.0)
    }

    fn repair_mark(&self) -> Option<u64> {
        self.backlog.needs_repair().map(|mark| mark.generation)
    }

    fn clear_repair_mark(&mut self, generation: u64) -> Result<bool, StoreError> {
        self.backlog.clear_repair(generation).map_err(failed)
    }
}

fn failed(error: BacklogError) -> StoreError {
    match error {
        BacklogError::Full {
            bytes_held,
            bytes_needed,
            backlog_bytes_max,
        } => StoreError::Full {
            bytes_held,
            bytes_needed,
            bytes_max: backlog_bytes_max,
        },
        other => StoreError::Failed {
            detail: other.to_string(),
        },
    }
}

fn encoded_size(record: &WanRecord) -> u64 {
    // Sizing into a counter cannot fail for these types; a failure would show as huge.
    postcard::experimental::serialized_size(record).map_or(u64::MAX, |n| n as u64)
}

/// `(enqueued_at_ms, record)` from a payload. A checksummed frame that does not decode means a
/// bug or a foreign format: the store stops rather than guess.
fn decode_payload(payload: &[u8], position: ReadCursor) -> Result<(u64, WanRecord), StoreError> {
    let undecodable = |detail: String| StoreError::Failed {
        detail: format!(
            "backlog record at segment {} offset {} does not decode: {detail}",
            position.segment_id(),
            position.offset()
        ),
    };
    match payload.split_first() {
        Some((&PAYLOAD_FORMAT, rest)) => {
            postcard::from_bytes(rest).map_err(|e| undecodable(e.to_string()))
        }
        Some((format, _)) => Err(undecodable(format!("unknown payload format {format}"))),
        None => Err(undecodable("empty payload".to_string())),
    }
}
