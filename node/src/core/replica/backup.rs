//! The backup's side: attach the primary's records to the local log (refusing anything that
//! does not follow on, or that disagrees with the local history), assemble and install
//! snapshots, remember replicated request answers, and say how far the log matches.
use super::messages::{Replicate, ReplicationMessage, RequestOutcome, SnapshotChunk};
use super::types::ReplicaId;
use super::{ReplicaCore, RoleState};
use crate::core::partition::ChangeRecord;
use bytes::Bytes;
use tern_conflict::Versioned;

/// A snapshot arriving in chunks; installed all at once when the last one arrives, so the
/// replica's state is never a mix of two points in time.
#[derive(Debug)]
pub(super) struct IncomingSnapshot {
    seq: u64,
    seq_epoch: u64,
    next_index: u32,
    entries: Vec<(Bytes, Versioned)>,
    outcomes: Vec<RequestOutcome>,
}

impl ReplicaCore {
    pub(super) fn backup_replicate(&mut self, from: ReplicaId, replicate: Replicate) {
        self.floor_ms = self.floor_ms.max(replicate.now_ms);
        let (epoch, round) = (replicate.epoch, replicate.round);
        let attaches = replicate.prev_seq <= self.core.last_seq()
            && self.history.epoch_of(replicate.prev_seq) == Some(replicate.prev_epoch);
        if !attaches {
            self.nack(from, epoch, round);
            return;
        }
        // The log attaches: this copy is the primary's data line, so it counts in its slot.
        self.core.set_lineage(replicate.lineage);
        let mut matched = replicate.prev_seq;
        for record in replicate.records {
            if record.seq != matched + 1 {
                self.nack(from, epoch, round);
                return;
            }
            if record.seq <= self.core.last_seq() {
                // Already held (a duplicate or a resend): only if written in the same epoch is
                // it the same record.
                if self.history.epoch_of(record.seq) != Some(record.epoch) {
                    self.nack(from, epoch, round);
                    return;
                }
            } else {
                let change = ChangeRecord {
                    partition: self.core.partition(),
                    seq: record.seq,
                    key: record.key,
                    entry: record.entry,
                };
                if self.core.apply_replicated_owned(change).is_err() {
                    self.nack(from, epoch, round);
                    return;
                }
                self.history.note(record.seq, record.epoch);
            }
            matched = record.seq;
        }
        for outcome in replicate.outcomes {
            if outcome.seq <= matched {
                self.dedup.insert(outcome);
            }
        }
        if self.holds_foreign_tail(matched, epoch) {
            // Matching up to `matched` is not enough: the primary counts an acknowledgement as
            // "this replica's log *is* mine up to there", and a tail from an older epoch may be
            // a deposed primary's never-acknowledged writes. Say where the log really ends; the
            // primary keeps it if its own log agrees there, replaces it otherwise.
            self.nack(from, epoch, round);
            return;
        }
        // Only what this message covered is known to match; a longer local tail written in this
        // epoch came from this very primary (pipelined messages overtaken by a resend).
        self.send(
            from,
            ReplicationMessage::Ack {
                epoch,
                round,
                matched_seq: matched,
            },
        );
    }

    pub(super) fn backup_chunk(&mut self, from: ReplicaId, chunk: SnapshotChunk) {
        self.floor_ms = self.floor_ms.max(chunk.now_ms);
        let (epoch, round, seq) = (chunk.epoch, chunk.round, chunk.seq);
        let already_held = seq <= self.core.last_seq()
            && self.history.epoch_of(seq) == Some(chunk.seq_epoch)
            && !self.holds_foreign_tail(seq, epoch);
        let RoleState::Backup { incoming, .. } = &mut self.role else {
            return;
        };
        if already_held {
            // Already holds that state (a late duplicate, or the primary did not need to):
            // installing it would only throw newer records away.
            *incoming = None;
            self.core.set_lineage(chunk.lineage);
            self.send(
                from,
                ReplicationMessage::Ack {
                    epoch,
                    round,
                    matched_seq: seq,
                },
            );
            return;
        }
        if chunk.index == 0 {
            *incoming = Some(IncomingSnapshot {
                seq,
                seq_epoch: chunk.seq_epoch,
                next_index: 0,
                entries: Vec::new(),
                outcomes: Vec::new(),
            });
        }
        let Some(snapshot) = incoming
            .as_mut()
            .filter(|s| s.seq == seq && s.next_index == chunk.index)
        else {
            // Out of order: the primary's retransmission starts the snapshot over.
            return;
        };
        snapshot.entries.extend(chunk.entries);
        snapshot.outcomes.extend(chunk.outcomes);
        snapshot.next_index += 1;
        if !chunk.last {
            let index = chunk.index;
            self.send(
                from,
                ReplicationMessage::ChunkAck {
                    epoch,
                    round,
                    seq,
                    index,
                },
            );
            return;
        }
        let Some(snapshot) = incoming.take() else {
            return;
        };
        self.core.install_snapshot(snapshot.entries, snapshot.seq);
        self.core.set_lineage(chunk.lineage);
        self.history.reset_to(snapshot.seq, snapshot.seq_epoch);
        self.dedup.replace(snapshot.outcomes);
        self.send(
            from,
            ReplicationMessage::Ack {
                epoch,
                round,
                matched_seq: seq,
            },
        );
    }

    /// Whether the log runs past `matched` with records this epoch's primary did not write: one
    /// primary per epoch, so a tail ending in `epoch` attaches to the primary's log, while any
    /// other tail is unconfirmed and may be a deposed primary's unacknowledged writes.
    fn holds_foreign_tail(&self, matched: u64, epoch: u64) -> bool {
        let last_seq = self.core.last_seq();
        last_seq > matched && self.history.epoch_of(last_seq) != Some(epoch)
    }

    fn nack(&mut self, to: ReplicaId, epoch: u64, round: u64) {
        let last_seq = self.core.last_seq();
        let last_epoch = self.history.epoch_of(last_seq);
        self.send(
            to,
            ReplicationMessage::Nack {
                epoch,
                round,
                last_seq,
                last_epoch,
            },
        );
    }
}
