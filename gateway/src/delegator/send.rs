//! Delegator internals: staging records for the store, acknowledgements, batching and resends.
use super::StoreError;
use super::stream::Stream;
use super::{Appended, Delegator, Intake, NewWanRecord, RecordError, RecordStore, SentBatch};
use crate::limits::BATCH_OVERHEAD_BYTES_MAX;
use crate::wire::{Batch, Message, WanRecord};
use std::collections::{BTreeMap, BTreeSet};
use tern_node::core::keyspace::PartitionId;

/// Records checked and prepared for one store append; applied to the delegator only if the
/// append succeeds.
#[derive(Debug, Default)]
pub(super) struct Staged {
    pub to_store: Vec<NewWanRecord>,
    /// Stream states after these records.
    streams: BTreeMap<PartitionId, Stream>,
    notices: Vec<RecordError>,
    taken: usize,
    filtered: u64,
    stale: u64,
    gaps: u64,
    oversized: u64,
    repair: BTreeSet<PartitionId>,
}

impl<S: RecordStore> Delegator<S> {
    pub(super) fn stage(&self, records: impl IntoIterator<Item = WanRecord>) -> Staged {
        let mut staged = Staged::default();
        let record_bytes_max =
            (self.limits.record_bytes_max() as u64).min(self.store.record_bytes_max());
        for mut record in records {
            let partition = record.partition;
            let stream = staged.streams.entry(partition).or_insert_with(|| {
                self.streams
                    .get(&partition)
                    .copied()
                    .unwrap_or_else(|| Stream::starting_at(record.seq))
            });
            if record.seq <= stream.last_seen {
                staged.stale += 1;
                staged.notices.push(RecordError::Stale {
                    partition,
                    seq: record.seq,
                    last_seen: stream.last_seen,
                });
                continue;
            }
            let expected = stream.last_seen + 1;
            stream.last_seen = record.seq;
            staged.taken += 1;
            if record.seq != expected {
                staged.gaps += 1;
                staged.repair.insert(partition);
                staged.notices.push(RecordError::Gap {
                    partition,
                    expected,
                    got: record.seq,
                });
            }
            if record.origin == self.target {
                staged.filtered += 1;
                continue;
            }
            record.prev_seq = stream.last_shipped;
            // Sizing into a counter cannot fail for these types; treat a failure as oversized
            // rather than panic.
            let bytes =
                postcard::experimental::serialized_size(&record).map_or(u64::MAX, |n| n as u64);
            if bytes > record_bytes_max {
                staged.oversized += 1;
                staged.repair.insert(partition);
                staged.notices.push(RecordError::TooLarge {
                    partition,
                    seq: record.seq,
                    bytes,
                    max: record_bytes_max,
                });
                continue;
            }
            stream.last_shipped = record.seq;
            staged.to_store.push(NewWanRecord {
                record,
                encoded_bytes: bytes,
            });
        }
        staged
    }

    /// Apply what was staged, now that the store kept it.
    pub(super) fn commit(&mut self, staged: Staged, appended: Appended, now_ms: u64) -> Intake {
        // Partitions that had records in the store before this append: an overflow drop took
        // them.
        let had_unacked: Vec<PartitionId> = self
            .streams
            .iter()
            .filter(|(_, s)| s.last_shipped > s.acked)
            .map(|(&p, _)| p)
            .collect();
        let stored = staged.to_store.len();
        let stored_bytes: u64 = staged.to_store.iter().map(|r| r.encoded_bytes).sum();
        let new_streams: Vec<PartitionId> = staged
            .streams
            .keys()
            .filter(|p| !self.streams.contains_key(p))
            .copied()
            .collect();
        self.streams.extend(staged.streams);
        self.check_new_streams(&new_streams);
        self.stats.stale_records_total += staged.stale;
        self.stats.gaps_total += staged.gaps;
        self.stats.oversized_records_total += staged.oversized;
        self.stats.records_filtered_total += staged.filtered;
        for partition in staged.repair {
            self.mark_repair(partition);
        }
        match appended.dropped {
            None => {
                if stored > 0 && self.unsent_records == 0 {
                    self.unsent_since_ms = Some(now_ms);
                }
                self.unsent_records += stored as u64;
                self.unsent_bytes += stored_bytes;
                self.stats.records_enqueued_total += stored as u64;
            }
            Some(dropped) => {
                self.stats.overflow_drops_total += 1;
                self.stats.records_dropped_total += dropped.records;
                for partition in had_unacked {
                    self.mark_repair(partition);
                }
                if dropped.batch_dropped {
                    self.stats.records_dropped_total += stored as u64;
                    for record in &staged.to_store {
                        self.mark_repair(record.record.partition);
                    }
                } else {
                    self.stats.records_enqueued_total += stored as u64;
                }
                // The store holds only what survived; in-flight batches complete when acked
                // or time out as usual.
                self.unsent_records = self.store.records();
                self.unsent_bytes = self.store.bytes();
                self.unsent_since_ms = (self.unsent_records > 0).then_some(now_ms);
            }
        }
        self.drive(now_ms);
        Intake {
            taken: staged.taken,
            stored,
            notices: staged.notices,
            overflow: appended.dropped,
        }
    }

    pub(super) fn fail(&mut self, error: StoreError) {
        self.outbox.clear();
        self.inflight.clear();
        self.inflight_bytes = 0;
        self.failure.get_or_insert(error);
    }

    pub(super) fn window_full(&self) -> bool {
        self.inflight.len() >= self.limits.inflight_batches_max
            || self.inflight_bytes >= self.limits.inflight_bytes_max as u64
    }

    /// Forget what was sent on this connection: everything unacknowledged goes out again.
    pub(super) fn rewind(&mut self) {
        if self.send_position > 0 || !self.inflight.is_empty() {
            self.stats.resends_total += 1;
        }
        self.send_position = 0;
        self.unsent_records = self.store.records();
        self.unsent_bytes = self.store.bytes();
        self.unsent_since_ms = (self.unsent_records > 0).then_some(0);
        self.inflight.clear();
        self.inflight_bytes = 0;
        for stream in self.streams.values_mut() {
            stream.rewind();
        }
    }

    pub(super) fn advance_ack(&mut self, partition: PartitionId, cursor: u64) {
        let Some(stream) = self.streams.get_mut(&partition) else {
            return;
        };
        if cursor > stream.last_shipped {
            // The target claims records we never had: trusting it could free records it does
            // not hold. Ignore it; resends are deduplicated.
            self.stats.ack_cursors_invalid_total += 1;
            return;
        }
        let newly_acked = cursor > stream.acked;
        let sent_through = stream.sent_through;
        stream.acknowledge(cursor);
        if !newly_acked {
            return;
        }
        match self.store.release_through(partition, cursor, sent_through) {
            Ok(released) => {
                self.unsent_records = self.unsent_records.saturating_sub(released.unsent_records);
                self.unsent_bytes = self.unsent_bytes.saturating_sub(released.unsent_bytes);
                if self.unsent_records == 0 {
                    self.unsent_since_ms = None;
                }
                self.stats.records_acked_total += released.records;
                if released.records > 0 {
                    self.write_blocked = false;
                }
            }
            Err(error) => self.fail(error),
        }
    }

    /// Drop in-flight batches whose records are all acknowledged.
    pub(super) fn complete_batches(&mut self, now_ms: u64) {
        let streams = &self.streams;
        let mut freed = 0;
        let mut newest_done = None;
        self.inflight.retain(|batch| {
            let done = batch
                .last_seqs
                .iter()
                .all(|(p, seq)| streams.get(p).is_some_and(|s| s.acked >= *seq));
            if done {
                freed += batch.bytes;
                newest_done = newest_done.max(batch.newest_enqueued_at_ms);
            }
            !done
        });
        self.inflight_bytes = self.inflight_bytes.saturating_sub(freed);
        if let Some(at) = newest_done {
            self.stats.ack_lag_ms_last = Some(now_ms.saturating_sub(at));
        }
    }

    /// Emit every batch that is due and fits the window.
    pub(super) fn drive(&mut self, now_ms: u64) {
        while self.connected
            && self.failure.is_none()
            && self.unsent_records > 0
            && !self.window_full()
        {
            let full = self.unsent_records >= self.limits.batch_records_max as u64
                || self.unsent_bytes >= self.limits.batch_bytes_max as u64;
            if !full {
                // Like Nagle's rule: an idle link sends at once (a lone write pays no batching
                // delay); while a batch is in flight, records gather until a batch fills, its
                // wait is over, or the link goes idle again (an ack arrived).
                let due = (self.limits.batch_send_when_idle && self.inflight.is_empty())
                    || self.unsent_since_ms.is_some_and(|at| {
                        now_ms >= at.saturating_add(self.limits.batch_wait_ms_max)
                    });
                if !due {
                    return;
                }
            }
            if !self.send_batch(now_ms) {
                return;
            }
        }
    }

    /// Send one batch from `send_position`; false if there was nothing to read.
    fn send_batch(&mut self, now_ms: u64) -> bool {
        let read = match self.store.read_from(
            self.send_position,
            self.limits.batch_records_max,
            self.limits.batch_bytes_max as u64,
        ) {
            Ok(read) => read,
            Err(error) => {
                self.fail(error);
                return false;
            }
        };
        if read.records.is_empty() {
            // The counters disagree with the store; trust the store.
            self.unsent_records = 0;
            self.unsent_bytes = 0;
            self.unsent_since_ms = None;
            return false;
        }
        let mut records = read.records;
        let mut last_seqs: BTreeMap<PartitionId, u64> = BTreeMap::new();
        let mut holes = BTreeSet::new();
        for record in &mut records {
            let stream = self
                .streams
                .entry(record.partition)
                .or_insert_with(|| Stream::starting_at(record.seq));
            if record.prev_seq > stream.chain_end {
                // Records in between are gone for good: continue from what the target holds.
                holes.insert(record.partition);
                record.prev_seq = stream.chain_end;
            }
            stream.chain_end = record.seq;
            stream.sent_through = stream.sent_through.max(record.seq);
            last_seqs.insert(record.partition, record.seq);
        }
        self.stats.holes_total += holes.len() as u64;
        for partition in holes {
            self.mark_repair(partition);
        }
        let count = records.len() as u64;
        self.send_position = read.next_position;
        self.unsent_records = self.unsent_records.saturating_sub(count);
        self.unsent_bytes = self.unsent_bytes.saturating_sub(read.bytes);
        // The next unsent record was handed in no earlier than the newest one read.
        self.unsent_since_ms =
            (self.unsent_records > 0).then(|| read.newest_enqueued_at_ms.unwrap_or(0));
        let batch_id = self.next_batch_id;
        self.next_batch_id += 1;
        let bytes = read.bytes + BATCH_OVERHEAD_BYTES_MAX as u64;
        self.inflight.push_back(SentBatch {
            sent_at_ms: now_ms,
            bytes,
            last_seqs: last_seqs.into_iter().collect(),
            newest_enqueued_at_ms: read.newest_enqueued_at_ms,
        });
        self.inflight_bytes += bytes;
        self.stats.batches_sent_total += 1;
        self.stats.records_shipped_total += count;
        self.outbox.push_back(Message::Batch(Batch {
            source: self.local,
            batch_id,
            records,
        }));
        true
    }
}
