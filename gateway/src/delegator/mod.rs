//! The delegator: the sending half of one source → target link (one per target site).
//!
//! Sans-IO. Inputs: [`Delegator::handle_records`] (committed records, per partition in `seq`
//! order), [`Delegator::handle_ack`] / [`Delegator::handle_hello_ack`] (from the target),
//! [`Delegator::handle_connected`] / [`Delegator::handle_disconnected`] (link state) and
//! [`Delegator::handle_timeout`] (when [`Delegator::poll_timeout`] says). Outputs:
//! [`Delegator::poll_transmit`] (messages to send, in order).
//!
//! - Every record whose origin is not the target is kept in the [`RecordStore`] until the
//!   target acknowledges it; acknowledgements are per-partition cursors. Each call of
//!   `handle_records` is one store append (one write, at most one fsync for the durable
//!   [`BacklogStore`]).
//! - Batches close at `batch_records_max` records, `batch_bytes_max` bytes, when their oldest
//!   record has waited `batch_wait_ms_max` since it was handed in, or at once when nothing is in
//!   flight (an idle link adds no batching delay; under load, batches fill while acks travel).
//! - Flow control: at most `inflight_batches_max` batches / `inflight_bytes_max` bytes sent and
//!   unacknowledged; beyond that nothing is emitted ([`Delegator::is_blocked`]) and the backlog
//!   grows ([`Delegator::backlog_bytes`]).
//! - On (re)connect everything unacknowledged is sent again, in order, after a [`Hello`]. If the
//!   oldest in-flight batch waits `ack_timeout_ms` for its ack, the same happens (go-back-N).
//! - Each record carries `prev_seq`, the previous record shipped in its partition, so the sink
//!   can tell filtered-out records (origin = target) from lost ones.
//!
//! # The byte cap
//!
//! The store owns it (for [`BacklogStore`]: `BacklogConfig::backlog_bytes_max` and its
//! `overflow_policy`). Under `BlockWrites` a full store refuses the batch
//! ([`StoreError::Full`]): nothing is taken, [`Delegator::is_write_blocked`] turns on until an
//! acknowledgement frees records, and the shell blocks local writes and feeds the same records
//! again later (from [`Delegator::resume_after`]). Under `DropAndRepair` the store drops what
//! it held, the delegator reports it ([`Intake::overflow`], stats), marks every partition that
//! lost records for repair, and the durable target-wide mark
//! ([`Delegator::target_repair_mark`]) stays until the repair driver clears it.
//!
//! # Holes that cannot be resent
//!
//! If the target turns out to be behind what can still be resent (its [`HelloAck`] cursor is
//! below what it had acknowledged, e.g. it lost state), or the store lost records (overflow
//! drop, damaged segment), or the input skipped sequence numbers, or a record is too large for
//! a frame, the partition is marked for repair ([`Delegator::repair_needed`]; anti-entropy
//! fills the hole) and the live stream continues: the next record is sent with `prev_seq`
//! rebased onto what the target holds (see `stream.rs`). Never silent.
//!
//! # Restart
//!
//! [`Delegator::with_store`] on a reopened [`BacklogStore`] rebuilds every partition's stream
//! from what the store recovered; the shell feeds each partition's change log from
//! [`Delegator::resume_after`] on (records the store lost in a torn tail are fed again).
//!
//! # Store failures
//!
//! A store that fails (I/O error, poisoned backlog) stops the delegator:
//! [`Delegator::failure`] says why, nothing more is sent, and the shell reopens the store
//! (which recovers) and builds a new delegator on it.
mod backlog_store;
mod send;
mod store;
mod stream;

#[cfg(test)]
mod durable_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) use tests::support as tests_support;

pub use backlog_store::{BacklogStore, PAYLOAD_OVERHEAD_BYTES_MAX};
pub use store::{
    Appended, Dropped, MemoryStore, NewWanRecord, ReadBatch, RecordStore, RecoveredStream,
    Released, StoreError,
};

use crate::backlog::{BacklogConfig, RecoveryReport, SegmentStorage};
use crate::handshake::{HandshakeError, check_agreed_version};
use crate::limits::GatewayLimits;
use crate::wire::{Ack, Hello, HelloAck, Message, PROTOCOL_VERSION, WanRecord};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use stream::Stream;
use tern_conflict::SiteId;
use tern_node::core::keyspace::PartitionId;

/// Why [`Delegator::handle_records`] did not simply take a record. Each is counted in
/// [`DelegatorStats`]; none but `Store` stops the stream.
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
    /// The store refused or failed: nothing of the call was taken.
    #[error("record not taken: {0}")]
    Store(StoreError),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    #[error("ack for the stream of {got} reached the delegator of {expected}")]
    WrongSource { expected: SiteId, got: SiteId },
}

/// What [`Delegator::handle_records`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use = "an intake can report an overflow drop; log or count it"]
pub struct Intake {
    /// Records taken (shipped later or filtered).
    pub taken: usize,
    /// Records kept in the store for the target.
    pub stored: usize,
    /// Records not taken as they were (stale, gap, too large); the stream goes on.
    pub notices: Vec<RecordError>,
    /// The store passed its cap under `DropAndRepair` and dropped what it held.
    pub overflow: Option<Dropped>,
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
    /// Records sent with `prev_seq` rebased over records the target will never get.
    pub holes_total: u64,
    /// Appends refused because the store was full (`BlockWrites`).
    pub store_full_total: u64,
    /// Overflow drops (`DropAndRepair`) and the records they dropped.
    pub overflow_drops_total: u64,
    pub records_dropped_total: u64,
    /// Milliseconds from handing in the newest record of the latest fully acknowledged batch
    /// to that acknowledgement.
    pub ack_lag_ms_last: Option<u64>,
}

#[derive(Clone, Debug)]
struct SentBatch {
    sent_at_ms: u64,
    bytes: u64,
    /// Per partition, the highest seq in the batch: the batch is done once all are acked.
    last_seqs: Vec<(PartitionId, u64)>,
    newest_enqueued_at_ms: Option<u64>,
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
    /// The cursors that `HelloAck` reported (until the connection ends). A stream that starts
    /// after it is checked against them as the answer checked the others (`Stream::starting_at`
    /// assumes the target holds what precedes its first record; after a restart of either
    /// gateway it may not, and records chained onto seqs it lacks would be held back as gaps
    /// forever).
    target_cursors: Option<BTreeMap<PartitionId, u64>>,
    /// Next store position to send on this connection.
    send_position: u64,
    unsent_records: u64,
    unsent_bytes: u64,
    /// When the oldest unsent record was handed in (a lower bound after partial reads; 0
    /// after a rewind: resends are due at once).
    unsent_since_ms: Option<u64>,
    next_batch_id: u64,
    inflight: VecDeque<SentBatch>,
    inflight_bytes: u64,
    outbox: VecDeque<Message>,
    repair_needed: BTreeSet<PartitionId>,
    /// The store refused an append for lack of room; cleared when an ack frees records.
    write_blocked: bool,
    failure: Option<StoreError>,
    stats: DelegatorStats,
}

impl Delegator<MemoryStore> {
    /// A delegator shipping `local`'s records to `target`, starting disconnected.
    pub fn new(local: SiteId, target: SiteId, limits: GatewayLimits) -> Self {
        Self::with_store(local, target, limits, MemoryStore::new())
    }
}

impl<S: SegmentStorage> Delegator<BacklogStore<S>> {
    /// Open the durable backlog on `storage` (recovering from a crash) and build the
    /// delegator on it, streams restored. The report says what recovery found.
    pub fn open(
        local: SiteId,
        target: SiteId,
        limits: GatewayLimits,
        storage: S,
        config: BacklogConfig,
    ) -> Result<(Self, RecoveryReport), StoreError> {
        let (store, report) = BacklogStore::open(storage, config)?;
        Ok((Self::with_store(local, target, limits, store), report))
    }
}

impl<S: RecordStore> Delegator<S> {
    /// As [`Delegator::new`], keeping unacknowledged records in `store`. A reopened durable
    /// store brings its streams back: each partition resumes above
    /// [`Self::resume_after`], its unacknowledged records are sent again on connect, and a
    /// target-wide repair mark the store holds stays ([`Self::target_repair_mark`]).
    pub fn with_store(local: SiteId, target: SiteId, limits: GatewayLimits, store: S) -> Self {
        let streams = store
            .recovered_streams()
            .iter()
            .map(|found| (found.partition, Stream::recovered(found)))
            .collect();
        let unsent_records = store.records();
        let unsent_bytes = store.bytes();
        Self {
            local,
            target,
            limits,
            store,
            streams,
            connected: false,
            answered: false,
            target_cursors: None,
            send_position: 0,
            unsent_records,
            unsent_bytes,
            unsent_since_ms: (unsent_records > 0).then_some(0),
            next_batch_id: 1,
            inflight: VecDeque::new(),
            inflight_bytes: 0,
            outbox: VecDeque::new(),
            repair_needed: BTreeSet::new(),
            write_blocked: false,
            failure: None,
            stats: DelegatorStats::default(),
        }
    }

    pub fn target(&self) -> SiteId {
        self.target
    }

    /// Take one committed record (see [`Self::handle_records`]; prefer it, one store append per
    /// call).
    pub fn handle_record(&mut self, record: WanRecord, now_ms: u64) -> Result<(), RecordError> {
        match self.handle_records([record], now_ms) {
            Ok(mut intake) => match intake.notices.pop() {
                Some(notice) => Err(notice),
                None => Ok(()),
            },
            Err(error) => Err(RecordError::Store(error)),
        }
    }

    /// Take committed records, in one store append. Per partition, records must come in `seq`
    /// order; the first record of a new partition sets where its stream starts.
    /// `record.prev_seq` is ignored and assigned here.
    ///
    /// All or nothing towards the store: on `Err` nothing was taken (streams unchanged) and
    /// the shell feeds the same records again later. `Err(StoreError::Full)` is backpressure
    /// ([`Self::is_write_blocked`]); `Failed` stops the delegator ([`Self::failure`]).
    pub fn handle_records(
        &mut self,
        records: impl IntoIterator<Item = WanRecord>,
        now_ms: u64,
    ) -> Result<Intake, StoreError> {
        if let Some(failure) = &self.failure {
            return Err(failure.clone());
        }
        let staged = self.stage(records);
        let appended = if staged.to_store.is_empty() {
            Appended::default()
        } else {
            match self.store.append(&staged.to_store, now_ms) {
                Ok(appended) => appended,
                Err(error) => {
                    match &error {
                        StoreError::Full { .. } => {
                            self.write_blocked = true;
                            self.stats.store_full_total += 1;
                        }
                        StoreError::Failed { .. } => self.fail(error.clone()),
                    }
                    return Err(error);
                }
            }
        };
        Ok(self.commit(staged, appended, now_ms))
    }

    /// The seq after which the shell feeds `partition`'s change log (`None`: from where it
    /// stands now; the first record fed starts the stream).
    pub fn resume_after(&self, partition: PartitionId) -> Option<u64> {
        self.streams
            .get(&partition)
            .map(|s| s.last_seen)
            .or_else(|| self.store.last_appended(partition))
    }

    /// The link to the target is up: greet it and send everything unacknowledged, in order.
    pub fn handle_connected(&mut self, now_ms: u64) {
        self.connected = true;
        self.answered = false;
        self.target_cursors = None;
        for stream in self.streams.values_mut() {
            stream.acked_at_connect = stream.acked;
        }
        self.outbox.clear();
        self.outbox.push_back(self.hello());
        self.rewind();
        self.drive(now_ms);
    }

    fn hello(&self) -> Message {
        Message::Hello(Hello {
            site: self.local,
            target: self.target,
            protocol_version: PROTOCOL_VERSION,
        })
    }

    /// The link is down: nothing is sent until [`Self::handle_connected`]; records keep
    /// accumulating in the backlog.
    pub fn handle_disconnected(&mut self, _now_ms: u64) {
        self.connected = false;
        self.target_cursors = None;
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
        if self.answered || !self.connected || self.failure.is_some() {
            return Ok(());
        }
        self.answered = true;
        let cursors: BTreeMap<PartitionId, u64> = ack.cursors.into_iter().collect();
        let mut lowered = false;
        let partitions: Vec<PartitionId> = self.streams.keys().copied().collect();
        for partition in partitions {
            let cursor = cursors.get(&partition).copied().unwrap_or(0);
            if self.lower_to_target_cursor(partition, cursor) {
                lowered = true;
            } else {
                self.advance_ack(partition, cursor);
            }
        }
        self.stats.ack_cursors_invalid_total += cursors
            .keys()
            .filter(|p| !self.streams.contains_key(p))
            .count() as u64;
        self.target_cursors = Some(cursors);
        self.complete_batches(now_ms);
        if lowered && self.connected {
            // Batches sent before this answer carry a `prev_seq` the target cannot continue
            // from; send them again.
            self.rewind();
        }
        self.drive(now_ms);
        Ok(())
    }

    /// If the target's `cursor` for `partition` is below what the stream assumed it holds
    /// (it lost records it had acknowledged, or never had what a new stream assumed), continue
    /// from what it holds and mark the partition for repair. Whether it was.
    fn lower_to_target_cursor(&mut self, partition: PartitionId, cursor: u64) -> bool {
        let Some(stream) = self.streams.get_mut(&partition) else {
            return false;
        };
        if cursor >= stream.acked_at_connect {
            return false;
        }
        stream.target_has = cursor;
        self.mark_repair(partition);
        true
    }

    /// Streams that began after this connection's `HelloAck` (`new`), checked against the
    /// cursors it reported.
    pub(super) fn check_new_streams(&mut self, new: &[PartitionId]) {
        let Some(cursors) = &self.target_cursors else {
            return;
        };
        let lowered: Vec<(PartitionId, u64)> = new
            .iter()
            .map(|p| (*p, cursors.get(p).copied().unwrap_or(0)))
            .collect();
        for (partition, cursor) in lowered {
            if self.lower_to_target_cursor(partition, cursor)
                && let Some(stream) = self.streams.get_mut(&partition)
            {
                // Nothing of it was sent yet: its first record chains onto what the target has.
                stream.rewind();
            }
        }
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
        if self.failure.is_some() {
            return Ok(());
        }
        for (partition, cursor) in ack.cursors {
            if self.streams.contains_key(&partition) {
                self.advance_ack(partition, cursor);
            } else {
                self.stats.ack_cursors_invalid_total += 1;
            }
        }
        self.complete_batches(now_ms);
        self.drive(now_ms);
        Ok(())
    }

    /// Call at (or after) the time [`Self::poll_timeout`] returned.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        if self.failure.is_some() {
            return;
        }
        if self.store.next_tick_ms().is_some_and(|due| now_ms >= due)
            && let Err(error) = self.store.tick(now_ms)
        {
            self.fail(error);
            return;
        }
        if self.connected {
            let oldest_sent = self.inflight.iter().map(|b| b.sent_at_ms).min();
            if oldest_sent.is_some_and(|at| now_ms >= at.saturating_add(self.limits.ack_timeout_ms))
            {
                self.stats.ack_timeouts_total += 1;
                if !self.answered {
                    // Our Hello or its answer was lost: without the target's cursors the
                    // stream may not continue (a target that lost state holds every batch
                    // as a gap), so greet again; the sink answers every Hello.
                    self.outbox.push_back(self.hello());
                }
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
    /// oldest unsent record's batching deadline, the oldest in-flight batch's ack deadline, or
    /// the store's next fsync / cursor persistence.
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.failure.is_some() {
            return None;
        }
        let store_due = self.store.next_tick_ms();
        if !self.connected {
            return store_due;
        }
        let batch_due = if self.unsent_records > 0 && !self.window_full() {
            self.unsent_since_ms
                .map(|at| at.saturating_add(self.limits.batch_wait_ms_max))
        } else {
            None
        };
        let ack_due = self
            .inflight
            .iter()
            .map(|b| b.sent_at_ms.saturating_add(self.limits.ack_timeout_ms))
            .min();
        [batch_due, ack_due, store_due].into_iter().flatten().min()
    }

    /// Flow control: the in-flight window is full, so nothing more is sent until acks arrive.
    pub fn is_blocked(&self) -> bool {
        self.window_full()
    }

    /// Backpressure: the store refused records for lack of room (`BlockWrites`). The shell
    /// blocks local writes to the target's partitions until this clears (an acknowledgement
    /// freed records), then feeds the refused records again.
    pub fn is_write_blocked(&self) -> bool {
        self.write_blocked
    }

    /// Why the delegator stopped, if its store failed. Reopen the store and build a new
    /// delegator on it.
    pub fn failure(&self) -> Option<&StoreError> {
        self.failure.as_ref()
    }

    pub fn is_connected(&self) -> bool {
        self.connected
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

    /// Mark `partition` for repair (e.g. the shell could not feed it: change log truncated).
    pub fn mark_repair(&mut self, partition: PartitionId) {
        if self.repair_needed.insert(partition) {
            self.stats.repairs_marked_total += 1;
        }
    }

    /// Repair of `partition` finished (called by the anti-entropy driver).
    pub fn clear_repair(&mut self, partition: PartitionId) {
        self.repair_needed.remove(&partition);
    }

    /// The durable target-wide repair mark's generation (overflow drop, damaged segment, lost
    /// tail): every partition of the target needs repair.
    pub fn target_repair_mark(&self) -> Option<u64> {
        self.store.repair_mark()
    }

    /// Every partition was repaired for mark `generation`: clear it (durably). False if a
    /// newer cause arrived meanwhile (repair again).
    pub fn clear_target_repair(&mut self, generation: u64) -> Result<bool, StoreError> {
        let cleared = self.store.clear_repair_mark(generation);
        if let Err(error) = &cleared {
            self.fail(error.clone());
        }
        cleared
    }

    pub fn stats(&self) -> &DelegatorStats {
        &self.stats
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Give the store back (to reopen a durable one after a failure).
    pub fn into_store(self) -> S {
        self.store
    }
}
