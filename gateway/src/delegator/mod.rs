//! The delegator: the sending half of one source → target link (one per target site).
//!
//! Sans-IO. Inputs: [`Delegator::handle_record`] (committed records, per partition in `seq`
//! order), [`Delegator::handle_ack`] / [`Delegator::handle_hello_ack`] (from the target),
//! [`Delegator::handle_connected`] / [`Delegator::handle_disconnected`] (link state) and
//! [`Delegator::handle_timeout`] (when [`Delegator::poll_timeout`] says). Outputs:
//! [`Delegator::poll_transmit`] (messages to send, in order).
//!
//! - Every record whose origin is not the target is kept in the [`RecordStore`] until the
//!   target acknowledges it; acknowledgements are per-partition cursors.
//! - Batches close at `batch_records_max` records, `batch_bytes_max` bytes, or when their oldest
//!   record has waited `batch_wait_ms_max` since it was handed in.
//! - Flow control: at most `inflight_batches_max` batches / `inflight_bytes_max` bytes sent and
//!   unacknowledged; beyond that nothing is emitted ([`Delegator::is_blocked`]) and the backlog
//!   grows ([`Delegator::backlog_bytes`]); the shell applies its overflow policy above
//!   `backlog_bytes_max` ([`Delegator::is_over_backlog_cap`]).
//! - On (re)connect everything unacknowledged is sent again, in order, after a [`Hello`]. If the
//!   oldest in-flight batch waits `ack_timeout_ms` for its ack, the same happens (go-back-N).
//! - Each record carries `prev_seq`, the previous record shipped in its partition, so the sink
//!   can tell filtered-out records (origin = target) from lost ones.
//!
//! # Holes that cannot be resent
//!
//! If the target turns out to be behind what can still be resent (its [`HelloAck`] cursor is
//! below what it had acknowledged, e.g. it lost state), or the input skipped sequence numbers,
//! or a record is too large for a frame, the partition is marked for repair
//! ([`Delegator::repair_needed`]; anti-entropy fills the hole) and the live stream continues:
//! the next record is sent with `prev_seq` rebased to the target's cursor. Never silent.
mod store;

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) use tests::support as tests_support;

pub use store::{MemoryStore, ReadBatch, RecordStore, Released};

use crate::handshake::{HandshakeError, check_agreed_version};
use crate::limits::{BATCH_OVERHEAD_BYTES_MAX, GatewayLimits};
use crate::wire::{Ack, Batch, Hello, HelloAck, Message, PROTOCOL_VERSION, WanRecord};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use tern_conflict::SiteId;
use tern_node::core::keyspace::PartitionId;

/// Why [`Delegator::handle_record`] did not simply take a record. Each is counted in
/// [`DelegatorStats`]; none stops the stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("{partition} record seq {seq} is not after seq {last_seen} already taken: ignored")]
    Stale {
        partition: PartitionId,
        seq: u64,
        last_seen: u64,
    },
    #[error(
        "{partition} records skipped from seq {expected} to {got}: shipped anyway, partition \
         marked for repair"
    )]
    Gap {
        partition: PartitionId,
        expected: u64,
        got: u64,
    },
    #[error(
        "{partition} record seq {seq} encodes to {bytes} bytes, over the {max} a frame can \
         carry: not shipped, partition marked for repair"
    )]
    TooLarge {
        partition: PartitionId,
        seq: u64,
        bytes: u64,
        max: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    #[error("ack for the stream of {got} reached the delegator of {expected}")]
    WrongSource { expected: SiteId, got: SiteId },
}

/// Counters and gauges for metrics (`tern_wan_*`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DelegatorStats {
    /// Records taken into the backlog.
    pub records_enqueued_total: u64,
    /// Records not shipped because their origin is the target.
    pub records_filtered_total: u64,
    /// Record transmissions, resends included.
    pub records_shipped_total: u64,
    /// Records freed by an acknowledgement.
    pub records_acked_total: u64,
    pub batches_sent_total: u64,
    /// Times everything unacknowledged was sent again (reconnect or ack timeout).
    pub resends_total: u64,
    pub ack_timeouts_total: u64,
    pub stale_records_total: u64,
    pub gaps_total: u64,
    pub oversized_records_total: u64,
    /// Ack cursors beyond anything shipped, or for unknown partitions: ignored.
    pub ack_cursors_invalid_total: u64,
    /// Partitions newly marked for repair.
    pub repairs_marked_total: u64,
    /// Milliseconds from handing in the newest record freed by the latest ack to that ack.
    pub ack_lag_ms_last: Option<u64>,
}

/// Per-partition stream state.
#[derive(Clone, Copy, Debug)]
struct Stream {
    /// Highest seq handed in (shipped or filtered).
    last_seen: u64,
    /// Highest seq shipped (or, before any, the seq the stream starts after): the next shipped
    /// record's `prev_seq`.
    last_shipped: u64,
    /// Highest seq the target acknowledged (or that the stream starts after).
    acked: u64,
    /// `acked` when the current connection started: a [`HelloAck`] cursor below it means the
    /// target lost records it had acknowledged. (Acks of this connection may overtake the
    /// `HelloAck` on a reordering network, so `acked` itself cannot be the yardstick.)
    acked_at_connect: u64,
    /// Rebase of `prev_seq` after a hole that cannot be resent (see the module docs).
    resync: Option<Resync>,
}

#[derive(Clone, Copy, Debug)]
struct Resync {
    from: u64,
    to: u64,
}

impl Stream {
    /// A stream whose first record is `first_seq`: the target is assumed to hold everything
    /// before it (checked against its [`HelloAck`]).
    fn starting_at(first_seq: u64) -> Self {
        let before = first_seq.saturating_sub(1);
        Self {
            last_seen: before,
            last_shipped: before,
            acked: before,
            acked_at_connect: before,
            resync: None,
        }
    }
}

#[derive(Clone, Debug)]
struct SentBatch {
    sent_at_ms: u64,
    bytes: u64,
    /// Per partition, the highest seq in the batch: the batch is done once all are acked.
    last_seqs: Vec<(PartitionId, u64)>,
}

/// The sending half of the link to one target site.
#[derive(Debug)]
pub struct Delegator<S: RecordStore = MemoryStore> {
    local: SiteId,
    target: SiteId,
    limits: GatewayLimits,
    store: S,
    streams: BTreeMap<PartitionId, Stream>,
    connected: bool,
    /// The target's [`HelloAck`] for this connection was handled (duplicates are ignored).
    answered: bool,
    /// Next store position to send on this connection.
    send_position: u64,
    unsent_records: u64,
    unsent_bytes: u64,
    next_batch_id: u64,
    inflight: VecDeque<SentBatch>,
    inflight_bytes: u64,
    outbox: VecDeque<Message>,
    repair_needed: BTreeSet<PartitionId>,
    stats: DelegatorStats,
}

impl Delegator<MemoryStore> {
    /// A delegator shipping `local`'s records to `target`, starting disconnected.
    pub fn new(local: SiteId, target: SiteId, limits: GatewayLimits) -> Self {
        Self::with_store(local, target, limits, MemoryStore::new())
    }
}

impl<S: RecordStore> Delegator<S> {
    /// As [`Delegator::new`], keeping unacknowledged records in `store` (which must be empty).
    pub fn with_store(local: SiteId, target: SiteId, limits: GatewayLimits, store: S) -> Self {
        Self {
            local,
            target,
            limits,
            store,
            streams: BTreeMap::new(),
            connected: false,
            answered: false,
            send_position: 0,
            unsent_records: 0,
            unsent_bytes: 0,
            next_batch_id: 1,
            inflight: VecDeque::new(),
            inflight_bytes: 0,
            outbox: VecDeque::new(),
            repair_needed: BTreeSet::new(),
            stats: DelegatorStats::default(),
        }
    }

    pub fn target(&self) -> SiteId {
        self.target
    }

    /// Take one committed record. Per partition, records must come in `seq` order; the first
    /// record of a partition sets where its stream starts. `record.prev_seq` is ignored and
    /// assigned here.
    pub fn handle_record(&mut self, mut record: WanRecord, now_ms: u64) -> Result<(), RecordError> {
        let partition = record.partition;
        let stream = self
            .streams
            .entry(partition)
            .or_insert_with(|| Stream::starting_at(record.seq));
        if record.seq <= stream.last_seen {
            self.stats.stale_records_total += 1;
            return Err(RecordError::Stale {
                partition,
                seq: record.seq,
                last_seen: stream.last_seen,
            });
        }
        let expected = stream.last_seen + 1;
        stream.last_seen = record.seq;
        let gap = (record.seq != expected).then_some(RecordError::Gap {
            partition,
            expected,
            got: record.seq,
        });
        if record.origin == self.target {
            self.stats.records_filtered_total += 1;
        } else {
            record.prev_seq = stream.last_shipped;
            // Serializing to a size counter cannot fail for these types; treat a failure as
            // oversized rather than panic.
            let bytes =
                postcard::experimental::serialized_size(&record).map_or(u64::MAX, |n| n as u64);
            let max = self.limits.record_bytes_max() as u64;
            if bytes > max {
                self.stats.oversized_records_total += 1;
                self.mark_repair(partition);
                return Err(RecordError::TooLarge {
                    partition,
                    seq: record.seq,
                    bytes,
                    max,
                });
            }
            stream.last_shipped = record.seq;
            self.store.append(record, bytes, now_ms);
            self.unsent_records += 1;
            self.unsent_bytes += bytes;
            self.stats.records_enqueued_total += 1;
        }
        self.drive(now_ms);
        match gap {
            Some(error) => {
                self.stats.gaps_total += 1;
                self.mark_repair(partition);
                Err(error)
            }
            None => Ok(()),
        }
    }

    /// The link to the target is up: greet it and send everything unacknowledged, in order.
    pub fn handle_connected(&mut self, now_ms: u64) {
        self.connected = true;
        self.answered = false;
        for stream in self.streams.values_mut() {
            stream.acked_at_connect = stream.acked;
        }
        self.outbox.clear();
        self.outbox.push_back(Message::Hello(Hello {
            site: self.local,
            target: self.target,
            protocol_version: PROTOCOL_VERSION,
        }));
        self.rewind();
        self.drive(now_ms);
    }

    /// The link is down: nothing is sent until [`Self::handle_connected`]; records keep
    /// accumulating in the backlog.
    pub fn handle_disconnected(&mut self, _now_ms: u64) {
        self.connected = false;
        self.outbox.clear();
        self.inflight.clear();
        self.inflight_bytes = 0;
    }

    /// The target's answer to our [`Hello`]: drop what it already applied; where it is behind
    /// what can be resent, mark the partition for repair and rebase the stream.
    pub fn handle_hello_ack(&mut self, ack: HelloAck, now_ms: u64) -> Result<(), HandshakeError> {
        if ack.site != self.target {
            return Err(HandshakeError::WrongPeer {
                expected: self.target,
                got: ack.site,
            });
        }
        check_agreed_version(ack.protocol_version)?;
        if self.answered || !self.connected {
            return Ok(());
        }
        self.answered = true;
        let cursors: BTreeMap<PartitionId, u64> = ack.cursors.into_iter().collect();
        let mut rebased = false;
        let partitions: Vec<PartitionId> = self.streams.keys().copied().collect();
        for partition in partitions {
            let cursor = cursors.get(&partition).copied().unwrap_or(0);
            let Some(stream) = self.streams.get_mut(&partition) else {
                continue;
            };
            if cursor < stream.acked_at_connect {
                stream.resync = Some(Resync {
                    from: stream.acked,
                    to: cursor,
                });
                rebased = true;
                self.mark_repair(partition);
            } else {
                self.advance_ack(partition, cursor, now_ms);
            }
        }
        self.stats.ack_cursors_invalid_total += cursors
            .keys()
            .filter(|p| !self.streams.contains_key(p))
            .count() as u64;
        self.complete_batches();
        if rebased && self.connected {
            // Batches sent before this answer carry the old `prev_seq`; send them again.
            self.rewind();
        }
        self.drive(now_ms);
        Ok(())
    }

    /// An acknowledgement from the target: free what it covers and send more if the window
    /// opened.
    pub fn handle_ack(&mut self, ack: Ack, now_ms: u64) -> Result<(), AckError> {
        if ack.source != self.local {
            return Err(AckError::WrongSource {
                expected: self.local,
                got: ack.source,
            });
        }
        for (partition, cursor) in ack.cursors {
            if self.streams.contains_key(&partition) {
                self.advance_ack(partition, cursor, now_ms);
            } else {
                self.stats.ack_cursors_invalid_total += 1;
            }
        }
        self.complete_batches();
        self.drive(now_ms);
        Ok(())
    }

    /// Call at (or after) the time [`Self::poll_timeout`] returned.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        if self.connected {
            let oldest_sent = self.inflight.iter().map(|b| b.sent_at_ms).min();
            if oldest_sent.is_some_and(|at| now_ms >= at.saturating_add(self.limits.ack_timeout_ms))
            {
                self.stats.ack_timeouts_total += 1;
                self.rewind();
            }
        }
        self.drive(now_ms);
    }

    /// The next message to send on the link, in order.
    pub fn poll_transmit(&mut self) -> Option<Message> {
        self.outbox.pop_front()
    }

    /// When [`Self::handle_timeout`] must next be called, if anything is waiting on time: the
    /// oldest unsent record's batching deadline, or the oldest in-flight batch's ack deadline.
    pub fn poll_timeout(&self) -> Option<u64> {
        if !self.connected {
            return None;
        }
        let batch_due = if self.unsent_records > 0 && !self.window_full() {
            self.store
                .enqueued_at_from(self.send_position)
                .map(|at| at.saturating_add(self.limits.batch_wait_ms_max))
        } else {
            None
        };
        let ack_due = self
            .inflight
            .iter()
            .map(|b| b.sent_at_ms.saturating_add(self.limits.ack_timeout_ms))
            .min();
        match (batch_due, ack_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Flow control: the in-flight window is full, so nothing more is sent until acks arrive.
    pub fn is_blocked(&self) -> bool {
        self.window_full()
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// The backlog is above `backlog_bytes_max`: the shell must apply its overflow policy.
    pub fn is_over_backlog_cap(&self) -> bool {
        self.store.bytes() > self.limits.backlog_bytes_max
    }

    /// Unacknowledged records (sent or not).
    pub fn backlog_records(&self) -> u64 {
        self.store.records()
    }

    /// Encoded bytes of unacknowledged records.
    pub fn backlog_bytes(&self) -> u64 {
        self.store.bytes()
    }

    pub fn inflight_batches(&self) -> usize {
        self.inflight.len()
    }

    pub fn inflight_bytes(&self) -> u64 {
        self.inflight_bytes
    }

    /// Highest acknowledged seq per partition.
    pub fn acked_cursors(&self) -> impl Iterator<Item = (PartitionId, u64)> + '_ {
        self.streams.iter().map(|(&p, s)| (p, s.acked))
    }

    /// Partitions whose target copy has a hole only repair (anti-entropy) can fill.
    pub fn repair_needed(&self) -> impl Iterator<Item = PartitionId> + '_ {
        self.repair_needed.iter().copied()
    }

    /// Repair of `partition` finished (called by the anti-entropy driver).
    pub fn clear_repair(&mut self, partition: PartitionId) {
        self.repair_needed.remove(&partition);
    }

    pub fn stats(&self) -> &DelegatorStats {
        &self.stats
    }

    // --- internals ---

    fn window_full(&self) -> bool {
        self.inflight.len() >= self.limits.inflight_batches_max
            || self.inflight_bytes >= self.limits.inflight_bytes_max as u64
    }

    fn mark_repair(&mut self, partition: PartitionId) {
        if self.repair_needed.insert(partition) {
            self.stats.repairs_marked_total += 1;
        }
    }

    /// Forget what was sent on this connection: everything unacknowledged goes out again.
    fn rewind(&mut self) {
        if self.send_position > 0 || !self.inflight.is_empty() {
            self.stats.resends_total += 1;
        }
        self.send_position = 0;
        self.unsent_records = self.store.records();
        self.unsent_bytes = self.store.bytes();
        self.inflight.clear();
        self.inflight_bytes = 0;
    }

    fn advance_ack(&mut self, partition: PartitionId, cursor: u64, now_ms: u64) {
        let Some(stream) = self.streams.get_mut(&partition) else {
            return;
        };
        if cursor > stream.last_shipped {
            // The target claims records we never had: trusting it could free records it does
            // not hold. Ignore it; resends are deduplicated.
            self.stats.ack_cursors_invalid_total += 1;
            return;
        }
        if cursor <= stream.acked {
            return;
        }
        stream.acked = cursor;
        if stream.resync.is_some_and(|r| cursor > r.from) {
            stream.resync = None;
        }
        let released = self
            .store
            .release_through(partition, cursor, self.send_position);
        self.unsent_records = self.unsent_records.saturating_sub(released.unsent_records);
        self.unsent_bytes = self.unsent_bytes.saturating_sub(released.unsent_bytes);
        self.stats.records_acked_total += released.records;
        if let Some(at) = released.newest_enqueued_at_ms {
            self.stats.ack_lag_ms_last = Some(now_ms.saturating_sub(at));
        }
    }

    /// Drop in-flight batches whose records are all acknowledged.
    fn complete_batches(&mut self) {
        let streams = &self.streams;
        let mut freed = 0;
        self.inflight.retain(|batch| {
            let done = batch
                .last_seqs
                .iter()
                .all(|(p, seq)| streams.get(p).is_some_and(|s| s.acked >= *seq));
            if done {
                freed += batch.bytes;
            }
            !done
        });
        self.inflight_bytes = self.inflight_bytes.saturating_sub(freed);
    }

    /// Emit every batch that is due and fits the window.
    fn drive(&mut self, now_ms: u64) {
        while self.connected && self.unsent_records > 0 && !self.window_full() {
            let full = self.unsent_records >= self.limits.batch_records_max as u64
                || self.unsent_bytes >= self.limits.batch_bytes_max as u64;
            if !full {
                let due = self
                    .store
                    .enqueued_at_from(self.send_position)
                    .is_some_and(|at| now_ms >= at.saturating_add(self.limits.batch_wait_ms_max));
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
        let read = self.store.read_from(
            self.send_position,
            self.limits.batch_records_max,
            self.limits.batch_bytes_max as u64,
        );
        if read.records.is_empty() {
            // The counters disagree with the store; trust the store.
            self.unsent_records = 0;
            self.unsent_bytes = 0;
            return false;
        }
        let mut records = read.records;
        let mut last_seqs: BTreeMap<PartitionId, u64> = BTreeMap::new();
        for record in &mut records {
            let resync = self.streams.get(&record.partition).and_then(|s| s.resync);
            if let Some(resync) = resync.filter(|r| r.from == record.prev_seq) {
                record.prev_seq = resync.to;
            }
            last_seqs.insert(record.partition, record.seq);
        }
        let count = records.len() as u64;
        self.send_position = read.next_position;
        self.unsent_records = self.unsent_records.saturating_sub(count);
        self.unsent_bytes = self.unsent_bytes.saturating_sub(read.bytes);
        let batch_id = self.next_batch_id;
        self.next_batch_id += 1;
        self.inflight.push_back(SentBatch {
            sent_at_ms: now_ms,
            bytes: read.bytes + BATCH_OVERHEAD_BYTES_MAX as u64,
            last_seqs: last_seqs.into_iter().collect(),
        });
        self.inflight_bytes += read.bytes + BATCH_OVERHEAD_BYTES_MAX as u64;
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
