//! [`BootstrapTarget`]: asks a peer for snapshots and applies them with reconcile semantics.
use super::{BootstrapError, TargetProgress};
use crate::repair::Replica;
use crate::wire::{Message, SnapshotAck, SnapshotChunk, SnapshotRequest};
use std::collections::{BTreeMap, VecDeque};
use tern_conflict::SiteId;
use tern_node::core::keyspace::PartitionId;
use tern_node::core::partition::SCAN_POSITION_END;

#[derive(Clone, Copy, Debug, Default)]
struct PartitionState {
    /// Every chunk below this position is applied.
    applied_through: u64,
    snapshot_seq: Option<u64>,
}

/// The target side of one bootstrap from one source site.
///
/// The target need not be empty: every entry is applied like a replicated one (causal order
/// decides; the resolver only sees real concurrency), so entries the target already holds in
/// the same or a newer version change nothing, stale copies are fast-forwarded without a
/// conflict, and entries only the target holds stay (repair brings them to the source). That
/// is what makes a bootstrap safe with more than two sites: a third site's writes the target
/// already has carry version vectors that dominate or equal the snapshot's.
#[derive(Debug)]
pub struct BootstrapTarget {
    session: u64,
    source: SiteId,
    partitions: BTreeMap<PartitionId, PartitionState>,
    outbox: VecDeque<Message>,
    progress: TargetProgress,
}

impl BootstrapTarget {
    /// Ask `source` for `partitions` (the request is the first message to send).
    pub fn new(session: u64, source: SiteId, partitions: Vec<PartitionId>) -> Self {
        let mut target = Self {
            session,
            source,
            partitions: partitions
                .into_iter()
                .map(|p| (p, PartitionState::default()))
                .collect(),
            outbox: VecDeque::new(),
            progress: TargetProgress::default(),
        };
        target.request();
        target
    }

    pub fn session(&self) -> u64 {
        self.session
    }

    pub fn source(&self) -> SiteId {
        self.source
    }

    /// Queue a request for every partition not complete yet (after a reconnect to a source
    /// that may have lost the session; one that kept it resumes on its own).
    pub fn request(&mut self) {
        let partitions: Vec<PartitionId> = self
            .partitions
            .iter()
            .filter(|(_, s)| s.applied_through < SCAN_POSITION_END)
            .map(|(&p, _)| p)
            .collect();
        if !partitions.is_empty() {
            self.outbox
                .push_back(Message::SnapshotRequest(SnapshotRequest {
                    session: self.session,
                    partitions,
                }));
        }
    }

    /// Apply one chunk to `replica` (the chunk's partition) and acknowledge it. A chunk
    /// already applied is acknowledged again; one beyond a missing chunk is ignored (the
    /// source resends from the acknowledged position after a reconnect).
    pub fn handle_chunk(
        &mut self,
        chunk: SnapshotChunk,
        replica: &mut dyn Replica,
        now_ms: u64,
    ) -> Result<(), BootstrapError> {
        if chunk.session != self.session {
            return Err(BootstrapError::WrongSession {
                expected: self.session,
                got: chunk.session,
            });
        }
        if replica.partition() != chunk.partition {
            return Err(BootstrapError::WrongReplica {
                expected: chunk.partition,
                got: replica.partition(),
            });
        }
        let Some(state) = self.partitions.get_mut(&chunk.partition) else {
            return Err(BootstrapError::UnknownPartition(chunk.partition));
        };
        let fits = chunk.from <= chunk.to && chunk.to <= SCAN_POSITION_END;
        if !fits || chunk.last != (chunk.to == SCAN_POSITION_END) {
            return Err(BootstrapError::BadChunk {
                partition: chunk.partition,
                from: chunk.from,
                to: chunk.to,
            });
        }
        if chunk.from > state.applied_through {
            self.progress.chunks_out_of_order += 1;
            return Ok(());
        }
        if chunk.to > state.applied_through || chunk.from == chunk.to {
            state.snapshot_seq = Some(chunk.snapshot_seq);
            for entry in chunk.entries {
                self.progress.entries_applied += 1;
                let effect = replica.apply(entry.key, entry.entry, now_ms);
                self.progress.entries_changed += u64::from(effect.changed);
                self.progress.conflicts += u64::from(effect.conflict);
            }
            self.progress.chunks_applied += 1;
            let was_done = state.applied_through >= SCAN_POSITION_END;
            state.applied_through = state.applied_through.max(chunk.to);
            if state.applied_through >= SCAN_POSITION_END && !was_done {
                self.progress.partitions_done += 1;
            }
        } else {
            self.progress.chunks_duplicate += 1;
        }
        self.outbox.push_back(Message::SnapshotAck(SnapshotAck {
            session: self.session,
            partition: chunk.partition,
            through: state.applied_through,
        }));
        Ok(())
    }

    pub fn poll_transmit(&mut self) -> Option<Message> {
        self.outbox.pop_front()
    }

    /// Every requested partition's snapshot is applied.
    pub fn is_done(&self) -> bool {
        self.partitions
            .values()
            .all(|s| s.applied_through >= SCAN_POSITION_END)
    }

    /// The change-log position of `partition`'s snapshot at the source, once a chunk came.
    pub fn snapshot_seq(&self, partition: PartitionId) -> Option<u64> {
        self.partitions.get(&partition).and_then(|s| s.snapshot_seq)
    }

    pub fn progress(&self) -> &TargetProgress {
        &self.progress
    }
}
