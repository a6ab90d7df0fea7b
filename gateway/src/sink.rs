//! The sink: the receiving half of one source → target link (one per source site).
//!
//! Sans-IO. Inputs: [`Sink::handle_hello`], [`Sink::handle_batch`], [`Sink::handle_applied`] /
//! [`Sink::handle_apply_failed`] (the shell reports what the local partition primaries did),
//! [`Sink::handle_timeout`]. Outputs: [`Sink::poll_apply`] (records to apply, per partition in
//! order) and [`Sink::poll_transmit`] (the [`HelloAck`] and [`Ack`]s).
//!
//! # Delivery rule (per partition)
//!
//! `delivered` is the highest seq handed to the shell, `applied` the highest it confirmed.
//!
//! - `seq <= delivered`: a duplicate (resend, duplicated packet): skipped, counted.
//! - `prev_seq <= delivered < seq`: the next record of the stream (records in between, if any,
//!   had the target as origin and were never shipped): delivered.
//! - `prev_seq > delivered`: a gap (an earlier batch was lost or reordered): **not** delivered,
//!   counted, and nothing is acknowledged past `delivered`. The delegator resends everything
//!   unacknowledged, in order, on reconnect or after `ack_timeout_ms`, so the gap fills.
//!   Later records of the partition in the same batch are gaps too, so order is never broken.
//!
//! # Acknowledgements
//!
//! An [`Ack`] carries, for each partition touched since the previous one, `applied`: the highest
//! contiguous seq the shell *confirmed* applied. So an update is never acknowledged (and freed at
//! the source) while it sits between the sink and the partition. Acks are coalesced: one goes out
//! `ack_delay_ms_max` after the first change it reports, or as soon as `ack_batches_max` batches
//! were received and everything delivered from them is applied. A batch of duplicates still
//! touches its partitions, so a lost ack is repeated.
//!
//! The cursors are volatile here; the shell should persist `applied` with the data (the
//! partition) and restore it through [`Sink::with_cursors`], or the source must resend (or
//! repair) after a restart.
use crate::handshake::{HandshakeError, negotiate_version};
use crate::limits::GatewayLimits;
use crate::wire::{Ack, Batch, Hello, HelloAck, Message, WanRecord};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use tern_conflict::SiteId;
use tern_node::core::keyspace::PartitionId;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    #[error("batch from {got} reached the sink of {expected}")]
    WrongSource { expected: SiteId, got: SiteId },
}

/// Counters and gauges for metrics (`tern_wan_*`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SinkStats {
    pub batches_received_total: u64,
    /// Records handed to the shell for applying.
    pub records_delivered_total: u64,
    /// Records skipped as already delivered.
    pub duplicates_total: u64,
    /// Records held back because an earlier one is missing.
    pub gap_records_total: u64,
    pub apply_failures_total: u64,
    pub acks_sent_total: u64,
    /// `now - committed_at_ms` of the latest delivered record (origin clock vs ours).
    pub lag_ms_last: Option<u64>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Cursor {
    /// Highest seq queued for the shell.
    delivered: u64,
    /// Highest seq the shell took with `poll_apply`.
    taken: u64,
    /// Highest seq the shell confirmed applied.
    applied: u64,
}

/// The receiving half of the link from one source site.
#[derive(Debug)]
pub struct Sink {
    local: SiteId,
    source: SiteId,
    limits: GatewayLimits,
    cursors: BTreeMap<PartitionId, Cursor>,
    apply_queue: VecDeque<WanRecord>,
    /// Partitions to report in the next ack.
    touched: BTreeSet<PartitionId>,
    ack_pending_since_ms: Option<u64>,
    batches_since_ack: u32,
    last_batch_id: Option<u64>,
    outbox: VecDeque<Message>,
    stats: SinkStats,
}

impl Sink {
    /// A sink at `local` for records from `source`, with nothing applied yet.
    pub fn new(local: SiteId, source: SiteId, limits: GatewayLimits) -> Self {
        Self::with_cursors(local, source, limits, [])
    }

    /// A sink resuming from `applied` cursors persisted with the data.
    pub fn with_cursors(
        local: SiteId,
        source: SiteId,
        limits: GatewayLimits,
        applied: impl IntoIterator<Item = (PartitionId, u64)>,
    ) -> Self {
        let cursors = applied
            .into_iter()
            .map(|(p, seq)| {
                (
                    p,
                    Cursor {
                        delivered: seq,
                        taken: seq,
                        applied: seq,
                    },
                )
            })
            .collect();
        Self {
            local,
            source,
            limits,
            cursors,
            apply_queue: VecDeque::new(),
            touched: BTreeSet::new(),
            ack_pending_since_ms: None,
            batches_since_ack: 0,
            last_batch_id: None,
            outbox: VecDeque::new(),
            stats: SinkStats::default(),
        }
    }

    pub fn source(&self) -> SiteId {
        self.source
    }

    /// A new connection from the source: check who it is and answer with every cursor.
    pub fn handle_hello(&mut self, hello: Hello, _now_ms: u64) -> Result<(), HandshakeError> {
        if hello.site != self.source {
            return Err(HandshakeError::WrongPeer {
                expected: self.source,
                got: hello.site,
            });
        }
        if hello.target != self.local {
            return Err(HandshakeError::WrongTarget {
                expected: self.local,
                got: hello.target,
            });
        }
        let protocol_version = negotiate_version(hello.protocol_version)?;
        // Pending ack state is kept: the delegator ignores a duplicated HelloAck, so the
        // regular ack must still come.
        self.outbox.push_back(Message::HelloAck(HelloAck {
            site: self.local,
            protocol_version,
            cursors: self
                .cursors
                .iter()
                .filter(|(_, c)| c.applied > 0)
                .map(|(&p, c)| (p, c.applied))
                .collect(),
        }));
        Ok(())
    }

    /// Records from the source: deliver what continues each partition's stream (see the module
    /// docs), skip duplicates, hold back gaps.
    pub fn handle_batch(&mut self, batch: Batch, now_ms: u64) -> Result<(), SinkError> {
        if batch.source != self.source {
            return Err(SinkError::WrongSource {
                expected: self.source,
                got: batch.source,
            });
        }
        self.stats.batches_received_total += 1;
        for record in batch.records {
            let cursor = self.cursors.entry(record.partition).or_default();
            self.touched.insert(record.partition);
            if record.seq <= cursor.delivered {
                self.stats.duplicates_total += 1;
            } else if record.prev_seq <= cursor.delivered {
                cursor.delivered = record.seq;
                self.stats.records_delivered_total += 1;
                self.stats.lag_ms_last = Some(now_ms.saturating_sub(record.committed_at_ms));
                self.apply_queue.push_back(record);
            } else {
                self.stats.gap_records_total += 1;
            }
        }
        self.last_batch_id = Some(batch.batch_id);
        self.batches_since_ack = self.batches_since_ack.saturating_add(1);
        self.ack_pending_since_ms.get_or_insert(now_ms);
        self.maybe_ack(now_ms);
        Ok(())
    }

    /// The next record to apply locally (per partition in order). Report the result with
    /// [`Self::handle_applied`] or [`Self::handle_apply_failed`].
    pub fn poll_apply(&mut self) -> Option<WanRecord> {
        let record = self.apply_queue.pop_front()?;
        if let Some(cursor) = self.cursors.get_mut(&record.partition) {
            cursor.taken = record.seq;
        }
        Some(record)
    }

    /// Records delivered and not yet taken by [`Self::poll_apply`]: the shell stops reading
    /// the link while this is high.
    pub fn apply_queue_records(&self) -> usize {
        self.apply_queue.len()
    }

    /// The local partition applied every record of `partition` taken with
    /// [`Self::poll_apply`] up to `seq` (confirmations are cumulative, as the partition applies
    /// in order).
    pub fn handle_applied(&mut self, partition: PartitionId, seq: u64, now_ms: u64) {
        let Some(cursor) = self.cursors.get_mut(&partition) else {
            return;
        };
        // Never acknowledge past what the shell took, whatever it says.
        let seq = seq.min(cursor.taken);
        if seq > cursor.applied {
            cursor.applied = seq;
            self.touched.insert(partition);
            self.ack_pending_since_ms.get_or_insert(now_ms);
        }
        self.maybe_ack(now_ms);
    }

    /// Applying a record of `partition` failed (e.g. the primary moved): forget everything
    /// delivered but not applied, so the resent records are delivered again.
    pub fn handle_apply_failed(&mut self, partition: PartitionId, _now_ms: u64) {
        let Some(cursor) = self.cursors.get_mut(&partition) else {
            return;
        };
        self.stats.apply_failures_total += 1;
        cursor.delivered = cursor.applied;
        cursor.taken = cursor.applied;
        self.apply_queue.retain(|r| r.partition != partition);
    }

    /// Call at (or after) the time [`Self::poll_timeout`] returned.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        self.maybe_ack(now_ms);
    }

    /// The link is down: drop unsent acks (the next [`HelloAck`] reports every cursor).
    pub fn handle_disconnected(&mut self, _now_ms: u64) {
        self.outbox.clear();
    }

    pub fn poll_transmit(&mut self) -> Option<Message> {
        self.outbox.pop_front()
    }

    /// When [`Self::handle_timeout`] must next be called: the pending ack's deadline.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.ack_pending_since_ms
            .map(|since| since.saturating_add(self.limits.ack_delay_ms_max))
    }

    /// Highest applied seq per partition (what the shell persists with the data).
    pub fn applied_cursors(&self) -> impl Iterator<Item = (PartitionId, u64)> + '_ {
        self.cursors.iter().map(|(&p, c)| (p, c.applied))
    }

    /// Set `partition`'s cursor after a repair or bootstrap brought the data up to `seq`.
    pub fn reset_cursor(&mut self, partition: PartitionId, seq: u64) {
        self.apply_queue.retain(|r| r.partition != partition);
        self.cursors.insert(
            partition,
            Cursor {
                delivered: seq,
                taken: seq,
                applied: seq,
            },
        );
        self.touched.insert(partition);
    }

    pub fn stats(&self) -> &SinkStats {
        &self.stats
    }

    fn maybe_ack(&mut self, now_ms: u64) {
        let Some(since) = self.ack_pending_since_ms else {
            return;
        };
        let waited_enough = now_ms >= since.saturating_add(self.limits.ack_delay_ms_max);
        // Everything received is applied: ack now if enough batches came, or at once when the
        // sink is idle (`ack_when_applied`: the source's idle link then sends its next record
        // without waiting for the ack delay).
        let enough_batches = (self.batches_since_ack >= self.limits.ack_batches_max
            || self.limits.ack_when_applied)
            && self
                .touched
                .iter()
                .all(|p| self.cursors.get(p).is_none_or(|c| c.applied == c.delivered));
        if !(waited_enough || enough_batches) {
            return;
        }
        let cursors = self
            .touched
            .iter()
            .map(|&p| (p, self.cursors.get(&p).map_or(0, |c| c.applied)))
            .collect();
        self.outbox.push_back(Message::Ack(Ack {
            source: self.source,
            batch_id: self.last_batch_id,
            cursors,
        }));
        self.stats.acks_sent_total += 1;
        self.touched.clear();
        self.ack_pending_since_ms = None;
        self.batches_since_ack = 0;
    }
}

#[cfg(test)]
#[path = "sink_tests.rs"]
mod tests;
