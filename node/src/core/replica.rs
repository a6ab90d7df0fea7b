//! Primary/backup replication of one partition (docs/design/site-ha.md, "Replication"): a
//! sans-IO state machine wrapping the partition's [`PartitionCore`]. Inputs come in through
//! `handle_*(…, now_ms)`, outputs leave through `poll_*()`; the shell feeds it map facts, client
//! requests and peer messages and carries its outputs.
//!
//! **Acknowledgement.** The primary executes a request at once but holds its answer until every
//! *required* backup (the map's in-sync set, plus any backup it proposed as caught up) has
//! acknowledged both the partition's seq at execution and a barrier *round* sent after it. The
//! round is what makes reads safe: a deposed primary cannot collect it, because a backup that
//! knows a newer epoch answers `Fenced` instead of acknowledging.
//!
//! **Log matching.** Every record carries the epoch that wrote it and every replica keeps an
//! epoch history, so after a failover a backup that kept records the old primary never got
//! acknowledged is found (its log disagrees with the new primary's at some seq) and repaired by
//! snapshot instead of silently keeping a phantom write. An acknowledgement of seq `s` means "my
//! log *is* yours up to `s`": a backup whose log runs past `s` with records of an older epoch
//! answers `Nack` with its real end instead, so the primary keeps or replaces that tail before
//! counting it as matched. Only fresh answers count towards `CaughtUp`: a backup that left the
//! in-sync set (shrunk or fenced, e.g. restarted) is followed from nothing again.
//!
//! **Expiry.** Expiry creates no change record: every replica sweeps values whose (replicated)
//! deadline has passed into tombstones that keep the value's version, with a purge time derived
//! from the deadline, so the swept state is the same wherever and whenever it happens; and a
//! read never shows a value past its deadline, swept or not. Visible state is thus a function of
//! (log, time). Clocks differ between nodes, so each replica keeps a *time floor*: the largest
//! time it has seen, its own or the primary's (carried in every `Replicate`), and executes
//! commands and sweeps at `max(now_ms, floor)`. A promoted backup therefore never evaluates
//! expiry at a time earlier than one its old primary already used for an answer that was
//! released (the barrier acknowledging that answer carried the primary's time), so a key shown
//! as expired stays expired across a failover (invariant 2); clocks only drive timeouts.
//!
//! **Dedup.** Write requests are remembered (`dedup_requests_max`, FIFO) with their answers and
//! the seq they executed at, and replicated with the records up to that seq, so a retry after a
//! failover gets the original answer. That includes writes that changed nothing (a `SET NX`
//! that did not apply): once their answer is out, a second copy of the request (a duplicated or
//! reordered forward) must not apply on a state that changed since. Such a no-op is remembered
//! only once its answer is released (until then a copy gets the held answer), because only the
//! release proves the primary's state was current when it ran: a deposed primary's no-op ran on
//! a stale state, and unlike a write it leaves no record for the repair to throw away. It has no
//! record of its own either, so it travels to a backup only inside a batch or snapshot that
//! covers its seq: only the primary that answered is sure to know it. Reads are not remembered:
//! executing one again changes nothing, and only one answer is read.

mod backup;
mod dedup;
mod history;
mod messages;
mod primary;
mod types;

#[cfg(test)]
mod tests;

pub use messages::{
    Replicate, ReplicatedRecord, ReplicationMessage, RequestOutcome, SnapshotChunk,
};
pub use types::{
    Answer, AssignmentFacts, MapProposal, Redirect, ReplicaId, ReplicationLimits, Request,
    RequestId, Role,
};

use super::partition::{PartitionConfig, PartitionCore};
use backup::IncomingSnapshot;
use dedup::DedupTable;
use history::EpochHistory;
use primary::PrimaryState;
use std::collections::VecDeque;
use std::sync::Arc;
use tern_conflict::KeyspaceResolvers;

/// One replica of one partition.
#[derive(Debug)]
pub struct ReplicaCore {
    me: ReplicaId,
    limits: ReplicationLimits,
    core: PartitionCore,
    /// The highest epoch this replica has heard of (map or peers); only rises.
    epoch: u64,
    role: RoleState,
    history: EpochHistory,
    dedup: DedupTable,
    /// Latest local time handed in: drives this replica's own timers.
    local_now_ms: u64,
    /// Largest time seen, local or the primary's: commands and expiry run at no earlier time.
    floor_ms: u64,
    out: Outputs,
}

#[derive(Debug)]
enum RoleState {
    Idle {
        primary: Option<ReplicaId>,
    },
    Backup {
        primary: Option<ReplicaId>,
        incoming: Option<IncomingSnapshot>,
    },
    Primary(Box<PrimaryState>),
}

#[derive(Debug, Default)]
struct Outputs {
    responses: VecDeque<Answer>,
    transmits: VecDeque<(ReplicaId, ReplicationMessage)>,
    proposals: VecDeque<MapProposal>,
    redirects: VecDeque<Redirect>,
}

impl ReplicaCore {
    /// A replica that knows no epoch yet (`Idle`) until its first assignment. `config.limits`
    /// still governs the partition core (e.g. `change_log_bytes_max`, which decides how far back
    /// a backup can catch up from the log before it needs a snapshot).
    pub fn new(me: ReplicaId, config: PartitionConfig, limits: ReplicationLimits) -> Self {
        let history = EpochHistory::new(limits.epoch_history_entries_max);
        let dedup = DedupTable::new(limits.dedup_requests_max);
        Self {
            me,
            limits,
            core: PartitionCore::new(config),
            epoch: 0,
            role: RoleState::Idle { primary: None },
            history,
            dedup,
            local_now_ms: 0,
            floor_ms: 0,
            out: Outputs::default(),
        }
    }

    /// Use `resolvers` for the WAN entries this replica applies as primary (see
    /// [`PartitionCore::with_resolvers`]). Backups never consult them: they replicate the
    /// primary's resolved entry.
    #[must_use]
    pub fn with_resolvers(self, resolvers: Arc<KeyspaceResolvers>) -> Self {
        Self {
            core: self.core.with_resolvers(resolvers),
            ..self
        }
    }

    // --- inputs ---

    /// The map's current facts for this partition. Call it whenever the map applies a command
    /// (even one that changed nothing for this partition: a proposal that had no effect is how
    /// the primary learns it may stop waiting on a backup it proposed as caught up); calling it
    /// again with the same facts is harmless. Facts older than the known epoch are ignored.
    pub fn handle_assignment(&mut self, facts: &AssignmentFacts, now_ms: u64) {
        self.observe_time(now_ms);
        if facts.epoch < self.epoch {
            return;
        }
        let role = if facts.primary == Some(self.me) {
            Role::Primary
        } else if facts.replicas.contains(&self.me) {
            Role::Backup
        } else {
            Role::Idle
        };
        let changes_role = facts.epoch > self.epoch || role != self.role();
        if changes_role {
            // One primary per epoch: a primary never stays on at the same epoch under another
            // role, so anything it executed but did not confirm goes back to its senders.
            self.step_down(facts.epoch, facts.primary);
            self.epoch = facts.epoch;
            self.role = match role {
                Role::Primary => {
                    RoleState::Primary(Box::new(PrimaryState::new(self.core.last_seq())))
                }
                Role::Backup => RoleState::Backup {
                    primary: facts.primary,
                    incoming: None,
                },
                Role::Idle => RoleState::Idle {
                    primary: facts.primary,
                },
            };
        }
        match &mut self.role {
            RoleState::Primary(_) => self.primary_assignment(facts),
            RoleState::Backup { primary, .. } | RoleState::Idle { primary } => {
                *primary = facts.primary;
            }
        }
    }

    /// A client request (local or forwarded). Executed if this replica is the primary and not
    /// handing over; queued during a handover; redirected otherwise.
    pub fn handle_request(&mut self, request: Request, now_ms: u64) {
        self.observe_time(now_ms);
        match &self.role {
            RoleState::Primary(_) => self.primary_request(request),
            RoleState::Backup { primary, .. } | RoleState::Idle { primary } => {
                let primary = *primary;
                self.redirect(request.id, primary, Some(request.commands));
            }
        }
    }

    /// A message from another replica of this partition.
    pub fn handle_message(&mut self, from: ReplicaId, message: ReplicationMessage, now_ms: u64) {
        self.observe_time(now_ms);
        let epoch = message.epoch();
        match message {
            ReplicationMessage::Replicate(_) | ReplicationMessage::SnapshotChunk(_) => {
                if epoch < self.epoch {
                    self.send(from, ReplicationMessage::Fenced { epoch: self.epoch });
                    return;
                }
                if !self.follow(from, epoch) {
                    return;
                }
                match message {
                    ReplicationMessage::Replicate(replicate) => {
                        self.backup_replicate(from, replicate);
                    }
                    ReplicationMessage::SnapshotChunk(chunk) => self.backup_chunk(from, chunk),
                    _ => {}
                }
            }
            ReplicationMessage::Fenced { epoch } => self.learn_epoch(epoch),
            ReplicationMessage::Ack { .. }
            | ReplicationMessage::Nack { .. }
            | ReplicationMessage::ChunkAck { .. } => {
                // A backup echoes the primary's epoch; a newer one would come as `Fenced`.
                if epoch > self.epoch {
                    self.learn_epoch(epoch);
                }
                if epoch == self.epoch && matches!(self.role, RoleState::Primary(_)) {
                    self.primary_feedback(from, message);
                }
            }
        }
    }

    /// Timers: expiry sweep, retransmission, backup ack timeout, proposal retries.
    pub fn handle_tick(&mut self, now_ms: u64) {
        self.observe_time(now_ms);
        self.core.handle_tick(self.floor_ms);
        if matches!(self.role, RoleState::Primary(_)) {
            self.primary_tick();
        }
    }

    // --- outputs ---

    /// A released answer: every required backup holds what it depends on.
    pub fn poll_response(&mut self) -> Option<Answer> {
        self.out.responses.pop_front()
    }

    /// A message to send to another replica. Replication batches are built here, lazily, so
    /// everything handled since the last poll goes out together (one barrier per batch).
    pub fn poll_transmit(&mut self) -> Option<(ReplicaId, ReplicationMessage)> {
        if self.out.transmits.is_empty() {
            self.primary_flush();
        }
        self.out.transmits.pop_front()
    }

    /// A change to the partition map this replica asks the controller to commit.
    pub fn poll_map_proposal(&mut self) -> Option<MapProposal> {
        self.out.proposals.pop_front()
    }

    /// A request to answer with `NotPrimary` / forward elsewhere.
    pub fn poll_redirect(&mut self) -> Option<Redirect> {
        self.out.redirects.pop_front()
    }

    // --- state, for the shell, metrics, sims and checkers ---

    pub fn id(&self) -> ReplicaId {
        self.me
    }

    pub fn role(&self) -> Role {
        match self.role {
            RoleState::Primary(_) => Role::Primary,
            RoleState::Backup { .. } => Role::Backup,
            RoleState::Idle { .. } => Role::Idle,
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Where this replica believes the primary is (itself when primary).
    pub fn primary_hint(&self) -> Option<ReplicaId> {
        match &self.role {
            RoleState::Primary(_) => Some(self.me),
            RoleState::Backup { primary, .. } | RoleState::Idle { primary } => *primary,
        }
    }

    pub fn last_seq(&self) -> u64 {
        self.core.last_seq()
    }

    /// The wrapped partition state (read-only: every change goes through this replica).
    pub fn partition(&self) -> &PartitionCore {
        &self.core
    }

    /// Input: whether this node is over its data cap (`data_bytes_max`), as the shell last
    /// summed it over all its partitions. While it is, client writes that store a value are
    /// refused here as primary; replicated and remote records are always applied.
    pub fn handle_memory_full(&mut self, full: bool) {
        self.core.set_memory_full(full);
    }

    /// Requests executed and waiting for backups (primary only).
    pub fn held_responses(&self) -> usize {
        match &self.role {
            RoleState::Primary(p) => p.held(),
            _ => 0,
        }
    }

    /// Requests queued by a handover (primary only).
    pub fn queued_requests(&self) -> usize {
        match &self.role {
            RoleState::Primary(p) => p.queued(),
            _ => 0,
        }
    }

    /// Highest seq each backup acknowledged, for the backup-lag metric (primary only).
    pub fn backup_acked_seqs(&self) -> Vec<(ReplicaId, u64)> {
        match &self.role {
            RoleState::Primary(p) => p.acked_seqs(),
            _ => Vec::new(),
        }
    }

    /// Remembered request answers (dedup table size).
    pub fn remembered_requests(&self) -> usize {
        self.dedup.len()
    }

    // --- shared helpers ---

    fn observe_time(&mut self, now_ms: u64) {
        self.local_now_ms = self.local_now_ms.max(now_ms);
        self.floor_ms = self.floor_ms.max(now_ms);
    }

    fn send(&mut self, to: ReplicaId, message: ReplicationMessage) {
        self.out.transmits.push_back((to, message));
    }

    fn redirect(
        &mut self,
        id: RequestId,
        primary: Option<ReplicaId>,
        commands: Option<Vec<crate::core::command::Command>>,
    ) {
        self.out.redirects.push_back(Redirect {
            id,
            epoch: self.epoch,
            primary,
            commands,
        });
    }

    /// A newer epoch was heard of from a peer: stop acting on the old one until the map says
    /// what this replica is now.
    fn learn_epoch(&mut self, epoch: u64) {
        if epoch <= self.epoch {
            return;
        }
        self.step_down(epoch, None);
        self.epoch = epoch;
        self.role = match self.role {
            RoleState::Backup { .. } => RoleState::Backup {
                primary: None,
                incoming: None,
            },
            _ => RoleState::Idle { primary: None },
        };
    }

    /// Accept replication from `from` at `epoch` (not older than ours)? A primary's message at a
    /// newer epoch is news of that epoch: follow it without waiting for the map.
    fn follow(&mut self, from: ReplicaId, epoch: u64) -> bool {
        if epoch > self.epoch {
            self.step_down(epoch, Some(from));
            self.epoch = epoch;
            self.role = RoleState::Backup {
                primary: Some(from),
                incoming: None,
            };
            return true;
        }
        match &mut self.role {
            // Two primaries in one epoch cannot happen (the map gives each epoch one); ignore.
            RoleState::Primary(_) => false,
            RoleState::Backup { primary, .. } => match primary {
                Some(p) => *p == from,
                None => {
                    *primary = Some(from);
                    true
                }
            },
            RoleState::Idle { primary } => {
                if primary.is_some_and(|p| p != from) {
                    return false;
                }
                self.role = RoleState::Backup {
                    primary: Some(from),
                    incoming: None,
                };
                true
            }
        }
    }

    /// If primary, give up: executed-but-unconfirmed requests and queued ones go back to their
    /// senders as redirects, never as answers.
    fn step_down(&mut self, new_epoch: u64, new_primary: Option<ReplicaId>) {
        let RoleState::Primary(state) = &mut self.role else {
            return;
        };
        let (held, queued) = state.drain_requests();
        self.role = RoleState::Idle {
            primary: new_primary,
        };
        // The hint may be this very node (re-elected): the retry then meets the dedup table.
        let hint = new_primary;
        for id in held {
            self.out.redirects.push_back(Redirect {
                id,
                epoch: new_epoch,
                primary: hint,
                commands: None,
            });
        }
        for request in queued {
            self.out.redirects.push_back(Redirect {
                id: request.id,
                epoch: new_epoch,
                primary: hint,
                commands: Some(request.commands),
            });
        }
    }
}
