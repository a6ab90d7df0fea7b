//! [`BootstrapSource`]: streams partition snapshots to one target, rate-limited.
use super::rate::TokenBucket;
use super::{BootstrapError, SourceProgress};
use crate::limits::GatewayLimits;
use crate::repair::{MESSAGE_OVERHEAD_BYTES, Replica, read_chunk};
use crate::wire::{HEADER_BYTES, Message, PositionRange, SnapshotAck, SnapshotChunk};
use std::collections::VecDeque;
use tern_conflict::SiteId;
use tern_node::core::keyspace::PartitionId;
use tern_node::core::partition::SCAN_POSITION_END;

#[derive(Clone, Copy, Debug)]
struct PartitionState {
    partition: PartitionId,
    snapshot_seq: u64,
    /// Everything below this position is applied at the target.
    acked: u64,
    /// Everything below this position was sent (or is in the pending chunk).
    read: u64,
}

impl PartitionState {
    fn done(&self) -> bool {
        self.acked >= SCAN_POSITION_END
    }
}

/// The source side of one bootstrap: one target, a list of partitions, each streamed in
/// scan-position order in chunks of at most `bootstrap_chunk_bytes_max`, at most
/// `bootstrap_bytes_per_sec_max` (token bucket on the caller's clock) and
/// `bootstrap_chunks_inflight_max` unacknowledged chunks.
///
/// The snapshot is not frozen: each chunk reads the partition as it is when built. That is
/// enough because the live stream to the target was established at the snapshot's change-log
/// position ([`Delegator::start_after_snapshot`](crate::Delegator::start_after_snapshot),
/// called by the shell with the `snapshot_seq` it gives here): any change after it reaches the
/// target through the stream, and applying an entry twice or in either order is harmless
/// (reconcile).
///
/// Sans-IO: [`Self::drive`] with the replica of [`Self::current_partition`] builds and sends
/// what the window and the bucket allow; [`Self::poll_timeout`] says when the bucket allows
/// more.
#[derive(Debug)]
pub struct BootstrapSource {
    session: u64,
    target: SiteId,
    partitions: Vec<PartitionState>,
    chunk_bytes_max: usize,
    inflight_max: usize,
    /// Chunks sent and not acknowledged: `(partition, end position)`.
    inflight: VecDeque<(PartitionId, u64)>,
    /// A chunk built and waiting for tokens.
    pending: Option<(SnapshotChunk, u64)>,
    bucket: TokenBucket,
    connected: bool,
    outbox: VecDeque<Message>,
    progress: SourceProgress,
}

impl BootstrapSource {
    /// Start streaming `partitions` — each with the `last_seq` its change log had when the
    /// shell established the target's live stream — to `target`, over a connected link.
    pub fn new(
        session: u64,
        target: SiteId,
        partitions: Vec<(PartitionId, u64)>,
        limits: &GatewayLimits,
        now_ms: u64,
    ) -> Self {
        Self {
            session,
            target,
            partitions: partitions
                .into_iter()
                .map(|(partition, snapshot_seq)| PartitionState {
                    partition,
                    snapshot_seq,
                    acked: 0,
                    read: 0,
                })
                .collect(),
            chunk_bytes_max: limits.bootstrap_chunk_bytes_max,
            inflight_max: limits.bootstrap_chunks_inflight_max.max(1),
            inflight: VecDeque::new(),
            pending: None,
            bucket: TokenBucket::new(
                limits.bootstrap_bytes_per_sec_max,
                limits.bootstrap_chunk_bytes_max as u64,
                now_ms,
            ),
            connected: true,
            outbox: VecDeque::new(),
            progress: SourceProgress {
                started_at_ms: now_ms,
                ..SourceProgress::default()
            },
        }
    }

    pub fn session(&self) -> u64 {
        self.session
    }

    pub fn target(&self) -> SiteId {
        self.target
    }

    /// The partition whose replica [`Self::drive`] needs next, if any is left to read.
    pub fn current_partition(&self) -> Option<PartitionId> {
        if let Some((chunk, _)) = &self.pending {
            return Some(chunk.partition);
        }
        self.partitions
            .iter()
            .find(|p| p.read < SCAN_POSITION_END)
            .map(|p| p.partition)
    }

    /// Build and send chunks while the window, the bucket and the link allow. `replica` must
    /// be [`Self::current_partition`]'s; call again (with the next partition's replica) while
    /// `current_partition` changes and chunks go out.
    pub fn drive(&mut self, replica: &dyn Replica, now_ms: u64) -> Result<(), BootstrapError> {
        while self.connected && self.inflight.len() < self.inflight_max {
            if self.pending.is_none() {
                let Some(state) = self
                    .partitions
                    .iter_mut()
                    .find(|p| p.read < SCAN_POSITION_END)
                else {
                    return Ok(());
                };
                if replica.partition() != state.partition {
                    return Err(BootstrapError::WrongReplica {
                        expected: state.partition,
                        got: replica.partition(),
                    });
                }
                let budget = self.chunk_bytes_max.saturating_sub(MESSAGE_OVERHEAD_BYTES);
                let range = PositionRange {
                    from: state.read,
                    to: SCAN_POSITION_END,
                };
                let read = read_chunk(replica, range, budget, true);
                let chunk = SnapshotChunk {
                    session: self.session,
                    partition: state.partition,
                    snapshot_seq: state.snapshot_seq,
                    from: state.read,
                    to: read.to,
                    entries: read.entries,
                    last: read.to >= SCAN_POSITION_END,
                };
                state.read = read.to;
                // Sizing into a counter cannot fail for these types; a failure reads as huge.
                let bytes = postcard::experimental::serialized_size(&chunk)
                    .map_or(u64::MAX, |n| (n + HEADER_BYTES) as u64);
                self.pending = Some((chunk, bytes));
            }
            let Some((_, bytes)) = &self.pending else {
                return Ok(());
            };
            if !self.bucket.try_take(*bytes, now_ms) {
                return Ok(());
            }
            if let Some((chunk, bytes)) = self.pending.take() {
                self.progress.chunks_sent += 1;
                self.progress.entries_sent += chunk.entries.len() as u64;
                self.progress.bytes_sent += bytes;
                self.progress.last_sent_at_ms = Some(now_ms);
                self.inflight.push_back((chunk.partition, chunk.to));
                self.outbox.push_back(Message::SnapshotChunk(chunk));
            }
        }
        Ok(())
    }

    /// The target applied `partition` below `ack.through`.
    pub fn handle_ack(&mut self, ack: SnapshotAck, now_ms: u64) -> Result<(), BootstrapError> {
        if ack.session != self.session {
            return Err(BootstrapError::WrongSession {
                expected: self.session,
                got: ack.session,
            });
        }
        let Some(state) = self
            .partitions
            .iter_mut()
            .find(|p| p.partition == ack.partition)
        else {
            return Err(BootstrapError::UnknownPartition(ack.partition));
        };
        if ack.through > state.read {
            return Err(BootstrapError::AckBeyondSent {
                partition: ack.partition,
                through: ack.through,
                sent: state.read,
            });
        }
        let was_done = state.done();
        state.acked = state.acked.max(ack.through);
        if state.done() && !was_done {
            self.progress.partitions_done += 1;
        }
        self.inflight
            .retain(|&(p, to)| p != ack.partition || to > ack.through);
        if self.is_done() && self.progress.done_at_ms.is_none() {
            self.progress.done_at_ms = Some(now_ms);
        }
        Ok(())
    }

    /// The link dropped: chunks in flight are lost; each partition resumes from what the
    /// target acknowledged once [`Self::handle_connected`].
    pub fn handle_disconnected(&mut self) {
        self.connected = false;
        self.inflight.clear();
        self.pending = None;
        self.outbox.clear();
        for state in &mut self.partitions {
            state.read = state.acked;
        }
    }

    pub fn handle_connected(&mut self) {
        self.connected = true;
    }

    pub fn poll_transmit(&mut self) -> Option<Message> {
        self.outbox.pop_front()
    }

    /// When the bucket lets the waiting chunk go (call [`Self::drive`] then).
    pub fn poll_timeout(&self) -> Option<u64> {
        let (_, bytes) = self.pending.as_ref()?;
        (self.connected && self.inflight.len() < self.inflight_max)
            .then(|| self.bucket.ready_at(*bytes))
    }

    /// Every partition is applied at the target.
    pub fn is_done(&self) -> bool {
        self.partitions.iter().all(PartitionState::done)
    }

    pub fn progress(&self) -> &SourceProgress {
        &self.progress
    }
}
