//! The primary's side: execute requests, hold their answers until the required backups have
//! acknowledged, stream the change log (or a snapshot) to every backup, and ask the map for
//! in-sync changes and handover completion.
use super::history::EpochHistory;
use super::messages::{
    Replicate, ReplicatedRecord, ReplicationMessage, RequestOutcome, SnapshotChunk,
};
use super::types::{
    AssignmentFacts, MapProposal, ReplicaId, ReplicationLimits, Request, RequestId,
};
use super::{DedupTable, ReplicaCore, RoleState};
use crate::core::command::{Command, CommandResult};
use crate::core::partition::PartitionCore;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use tern_conflict::{Value, Versioned};

#[derive(Debug)]
pub(super) struct PrimaryState {
    followers: BTreeMap<ReplicaId, Follower>,
    /// The map's in-sync backups.
    in_sync: BTreeSet<ReplicaId>,
    /// Handing over to this backup: new requests queue instead of executing.
    handover: Option<ReplicaId>,
    /// Executed requests whose answers wait for backups, in execution order.
    held: VecDeque<Held>,
    /// Requests queued by a handover, never executed here.
    queued: VecDeque<Request>,
    /// Answers of held write requests that changed nothing, by id: a copy of one that arrives
    /// meanwhile gets the same answer. Moved to the dedup table when released — not before,
    /// since only the release proves that this primary's state was current when it ran them
    /// (a deposed primary's no-op, say an `INCRBY` on what was a string before the new primary
    /// wrote a number there, must not answer a retry later). Dropped with the role.
    unconfirmed_noops: BTreeMap<RequestId, Vec<CommandResult>>,
    /// The barrier round of the latest flush (see `Held::required_round`).
    round: u64,
    /// Something executed since the last flush: the next flush opens a new round.
    barrier_needed: bool,
    /// Every write acknowledged so far (by this primary, or by earlier ones: all of this log at
    /// promotion) is at or below this seq. A backup holding it may join the in-sync set.
    acknowledged_seq: u64,
    handover_proposed_at_ms: Option<u64>,
}

#[derive(Debug)]
struct Held {
    id: RequestId,
    results: Vec<CommandResult>,
    /// The partition's last seq after the request executed.
    required_seq: u64,
    /// The first round flushed after it executed: an acknowledgement of it proves the backup
    /// still followed this epoch after the request ran.
    required_round: u64,
}

/// The primary's view of one backup's stream.
#[derive(Debug)]
struct Follower {
    /// The backup confirmed (by an ack, or a nack this primary's history agrees with) that its
    /// log matches ours up to `acked_seq`. Before that the position is a guess.
    matched: bool,
    /// Records up to here were sent (pipelined, maybe not yet acknowledged).
    sent_seq: u64,
    /// The backup holds our log up to here.
    acked_seq: u64,
    sent_round: u64,
    acked_round: u64,
    /// Nacks from rounds before this one answer messages sent before the latest rewind.
    nack_floor_round: u64,
    /// Every answer from a round before this one is ignored: it answers a message sent before
    /// this follower was (re)started, possibly to an earlier incarnation of the node, whose
    /// memory is gone. Only moves at a reset, so a slow backup's acks still count after rewinds.
    ack_floor_round: u64,
    /// A `CaughtUp` (first or retried) needs an acknowledgement of this round or a later one, so
    /// it never rests on an old acknowledgement alone: a backup that stopped answering, or
    /// restarted, proves nothing by what it said before.
    caught_up_round: u64,
    /// A `CaughtUp` is due again (the last one took no effect): proposed as soon as the backup
    /// answers a round sent after this was set, if still caught up.
    reverify: bool,
    /// `(last seq, bytes)` of each `Replicate` not yet acknowledged.
    inflight: VecDeque<(u64, usize)>,
    /// Bytes sent and not acknowledged: records and snapshot chunks.
    inflight_bytes: usize,
    snapshot: Option<OutgoingSnapshot>,
    /// Something sent is not acknowledged: the timeouts run. Survives a rewind, which only
    /// resends.
    waiting: bool,
    /// A resend was asked for: send at least a probe on the next flush.
    probe: bool,
    /// Its log disagrees with ours: the next flush starts a snapshot.
    wants_snapshot: bool,
    /// Last acknowledgement progress (or when waiting started): base of both timeouts.
    progress_at_ms: u64,
    retransmitted_at_ms: u64,
    /// A `CaughtUp` was proposed for it: wait on it from now on as if it were in sync, since
    /// the map may already count it while this primary has not heard yet.
    promised: bool,
    /// Stop treating it as promised at the next assignment that does not list it in sync (the
    /// shrink proposed for it has then been ordered after the `CaughtUp`, or the latter lost).
    drop_promise: bool,
    caught_up_proposed_at_ms: Option<u64>,
    shrink_proposed_at_ms: Option<u64>,
}

/// A snapshot being streamed: copied when it starts (values are reference-counted `Bytes`), so
/// it stays consistent while the primary keeps writing.
#[derive(Debug)]
struct OutgoingSnapshot {
    seq: u64,
    seq_epoch: u64,
    entries: Vec<(Bytes, Versioned)>,
    outcomes: Vec<RequestOutcome>,
    next_entry: usize,
    next_outcome: usize,
    next_index: u32,
    all_sent: bool,
    /// `(index, bytes)` of chunks not yet acknowledged.
    inflight: VecDeque<(u32, usize)>,
}

/// What a flush reads from the replica.
struct FlushContext<'a> {
    core: &'a PartitionCore,
    history: &'a EpochHistory,
    dedup: &'a DedupTable,
    limits: &'a ReplicationLimits,
    epoch: u64,
    round: u64,
    now_ms: u64,
    floor_ms: u64,
}

/// The follower's log position cannot be served from the change log (truncated, or older than
/// the epoch history): it needs a snapshot.
struct NeedSnapshot;

impl PrimaryState {
    pub(super) fn new(last_seq: u64) -> Self {
        Self {
            followers: BTreeMap::new(),
            in_sync: BTreeSet::new(),
            handover: None,
            held: VecDeque::new(),
            queued: VecDeque::new(),
            unconfirmed_noops: BTreeMap::new(),
            round: 0,
            barrier_needed: true,
            acknowledged_seq: last_seq,
            handover_proposed_at_ms: None,
        }
    }

    pub(super) fn held(&self) -> usize {
        self.held.len()
    }

    pub(super) fn queued(&self) -> usize {
        self.queued.len()
    }

    pub(super) fn acked_seqs(&self) -> Vec<(ReplicaId, u64)> {
        self.followers
            .iter()
            .map(|(&id, f)| (id, f.acked_seq))
            .collect()
    }

    /// Everything this primary owes an answer for: executed-but-held ids and queued requests.
    pub(super) fn drain_requests(&mut self) -> (Vec<RequestId>, Vec<Request>) {
        let held = self.held.drain(..).map(|h| h.id).collect();
        let queued = self.queued.drain(..).collect();
        (held, queued)
    }

    fn required(&self, id: ReplicaId) -> bool {
        self.in_sync.contains(&id) || self.followers.get(&id).is_some_and(|f| f.promised)
    }

    /// Whether every required backup has acknowledged what `held` depends on.
    fn satisfied(&self, held: &Held) -> bool {
        let followers_ok = self.followers.iter().all(|(&id, f)| {
            !self.required(id)
                || (f.acked_seq >= held.required_seq && f.acked_round >= held.required_round)
        });
        // An in-sync backup always has a follower (created from the same facts); be strict.
        followers_ok
            && self
                .in_sync
                .iter()
                .all(|id| self.followers.contains_key(id))
    }
}

impl Follower {
    /// A follower whose position is unknown: it is probed at `start_seq` in the next round
    /// after `round`, and nothing it said before counts.
    fn new(start_seq: u64, now_ms: u64, round: u64) -> Self {
        Self {
            matched: false,
            sent_seq: start_seq,
            acked_seq: 0,
            sent_round: 0,
            acked_round: 0,
            nack_floor_round: round + 1,
            ack_floor_round: round + 1,
            caught_up_round: round + 1,
            reverify: false,
            inflight: VecDeque::new(),
            inflight_bytes: 0,
            snapshot: None,
            waiting: false,
            probe: true,
            wants_snapshot: false,
            progress_at_ms: now_ms,
            retransmitted_at_ms: now_ms,
            promised: false,
            drop_promise: false,
            caught_up_proposed_at_ms: None,
            shrink_proposed_at_ms: None,
        }
    }

    /// It holds every write acknowledged so far (`acknowledged_seq`), as confirmed by an
    /// answer to a round after the last reset or proposal. From a `CaughtUp` proposal on,
    /// answers wait for it as well, so it cannot miss a later write. (Requiring the very last
    /// seq instead could starve under a steady write load.)
    fn caught_up(&self, acknowledged_seq: u64) -> bool {
        self.matched
            && self.snapshot.is_none()
            && self.acked_seq >= acknowledged_seq
            && self.acked_round >= self.caught_up_round
    }

    /// A `CaughtUp` goes out now: the next one needs an answer to a round after this one.
    fn propose_caught_up(&mut self, now_ms: u64, round: u64) {
        self.caught_up_proposed_at_ms = Some(now_ms);
        self.caught_up_round = round + 1;
    }

    /// Something sent is not acknowledged yet, or the position is still unconfirmed.
    fn outstanding(&self) -> bool {
        !self.matched
            || self.snapshot.is_some()
            || self.sent_seq > self.acked_seq
            || self.sent_round > self.acked_round
    }

    fn clear_inflight(&mut self) {
        self.inflight.clear();
        self.inflight_bytes = 0;
        if let Some(snapshot) = &mut self.snapshot {
            snapshot.inflight.clear();
        }
    }

    /// Send what the window allows: snapshot chunks first, then the log tail, then a barrier if
    /// this round sent nothing else.
    fn flush(
        &mut self,
        to: ReplicaId,
        required: bool,
        ctx: &FlushContext<'_>,
        out: &mut VecDeque<(ReplicaId, ReplicationMessage)>,
    ) {
        let window = ctx.limits.replicate_inflight_bytes_max;
        if self.wants_snapshot {
            self.wants_snapshot = false;
            self.start_snapshot(ctx);
        }
        loop {
            if let Some(snapshot) = &mut self.snapshot
                && !snapshot.all_sent
            {
                while !snapshot.all_sent && self.inflight_bytes < window {
                    let (chunk, bytes) = snapshot.next_chunk(ctx);
                    self.inflight_bytes += bytes;
                    out.push_back((to, ReplicationMessage::SnapshotChunk(chunk)));
                    self.sent_round = ctx.round;
                }
                if !snapshot.all_sent {
                    break;
                }
            }
            if self.sent_seq >= ctx.core.last_seq() || self.inflight_bytes >= window {
                break;
            }
            match self.next_batch(required, ctx) {
                Ok(replicate) => out.push_back((to, ReplicationMessage::Replicate(replicate))),
                Err(NeedSnapshot) => {
                    if !self.start_snapshot(ctx) {
                        break;
                    }
                }
            }
        }
        // A snapshot in flight carries the rounds itself; a bare `Replicate` after it would only
        // bounce off the backup's old log.
        if (self.sent_round < ctx.round || self.probe) && self.snapshot.is_none() {
            match ctx.history.epoch_of(self.sent_seq) {
                Some(prev_epoch) => {
                    out.push_back((
                        to,
                        ReplicationMessage::Replicate(self.replicate(ctx, prev_epoch)),
                    ));
                    self.sent_round = ctx.round;
                }
                None => {
                    self.start_snapshot(ctx);
                }
            }
        }
        self.probe = false;
        if !self.waiting && self.outstanding() {
            self.waiting = true;
            self.progress_at_ms = ctx.now_ms;
        }
    }

    /// An empty `Replicate` after `sent_seq`, to be filled with records.
    fn replicate(&self, ctx: &FlushContext<'_>, prev_epoch: u64) -> Replicate {
        Replicate {
            epoch: ctx.epoch,
            round: ctx.round,
            now_ms: ctx.floor_ms,
            prev_seq: self.sent_seq,
            prev_epoch,
            records: Vec::new(),
            outcomes: Vec::new(),
            lineage: ctx.core.lineage(),
        }
    }

    /// The next batch of records after `sent_seq`, bounded in bytes (at least one record).
    fn next_batch(
        &mut self,
        required: bool,
        ctx: &FlushContext<'_>,
    ) -> Result<Replicate, NeedSnapshot> {
        let prev_epoch = ctx.history.epoch_of(self.sent_seq).ok_or(NeedSnapshot)?;
        let records = ctx
            .core
            .changes_since(self.sent_seq)
            .map_err(|_| NeedSnapshot)?;
        let budget = if required {
            ctx.limits.replicate_batch_bytes_max
        } else {
            ctx.limits.catchup_batch_bytes_max
        };
        let mut replicate = self.replicate(ctx, prev_epoch);
        let mut bytes = 0;
        for record in records {
            let size = entry_bytes(&record.key, &record.entry);
            if !replicate.records.is_empty() && bytes + size > budget {
                break;
            }
            let epoch = ctx.history.epoch_of(record.seq).ok_or(NeedSnapshot)?;
            replicate.records.push(ReplicatedRecord {
                seq: record.seq,
                epoch,
                key: record.key.clone(),
                entry: record.entry.clone(),
            });
            bytes += size;
        }
        let end = replicate.records.last().map_or(self.sent_seq, |r| r.seq);
        replicate.outcomes = ctx.dedup.between(self.sent_seq, end).cloned().collect();
        bytes += replicate.outcomes.iter().map(outcome_bytes).sum::<usize>();
        self.sent_seq = end;
        self.sent_round = ctx.round;
        self.inflight.push_back((end, bytes));
        self.inflight_bytes += bytes;
        Ok(replicate)
    }

    /// Copy the partition's state for streaming; the tail continues from its seq. Returns
    /// whether it could (the primary's history always covers its own last seq).
    fn start_snapshot(&mut self, ctx: &FlushContext<'_>) -> bool {
        let seq = ctx.core.last_seq();
        let Some(seq_epoch) = ctx.history.epoch_of(seq) else {
            debug_assert!(false, "a primary's epoch history covers its last seq");
            return false;
        };
        self.clear_inflight();
        self.snapshot = Some(OutgoingSnapshot {
            seq,
            seq_epoch,
            entries: ctx
                .core
                .snapshot_entries()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            outcomes: ctx.dedup.up_to(seq),
            next_entry: 0,
            next_outcome: 0,
            next_index: 0,
            all_sent: false,
            inflight: VecDeque::new(),
        });
        self.sent_seq = seq;
        true
    }

    /// Resend from the last confirmed position (lost messages, a reconnect).
    fn rewind(&mut self, last_seq: u64, round: u64, now_ms: u64) {
        self.clear_inflight();
        if let Some(snapshot) = &mut self.snapshot {
            snapshot.restart();
        } else if self.matched {
            self.sent_seq = self.acked_seq;
        } else {
            self.sent_seq = last_seq;
        }
        self.probe = true;
        self.nack_floor_round = round + 1;
        self.retransmitted_at_ms = now_ms;
    }

    fn finish_snapshot(&mut self) {
        if let Some(snapshot) = self.snapshot.take() {
            let bytes: usize = snapshot.inflight.iter().map(|&(_, b)| b).sum();
            self.inflight_bytes = self.inflight_bytes.saturating_sub(bytes);
        }
    }
}

impl OutgoingSnapshot {
    fn next_chunk(&mut self, ctx: &FlushContext<'_>) -> (SnapshotChunk, usize) {
        let budget = ctx.limits.catchup_batch_bytes_max;
        let mut bytes = 0;
        let mut entries = Vec::new();
        while let Some((key, entry)) = self.entries.get(self.next_entry) {
            let size = entry_bytes(key, entry);
            if bytes > 0 && bytes + size > budget {
                break;
            }
            entries.push((key.clone(), entry.clone()));
            bytes += size;
            self.next_entry += 1;
        }
        let mut outcomes = Vec::new();
        if self.next_entry == self.entries.len() {
            while let Some(outcome) = self.outcomes.get(self.next_outcome) {
                let size = outcome_bytes(outcome);
                if bytes > 0 && bytes + size > budget {
                    break;
                }
                outcomes.push(outcome.clone());
                bytes += size;
                self.next_outcome += 1;
            }
        }
        let last =
            self.next_entry == self.entries.len() && self.next_outcome == self.outcomes.len();
        let index = self.next_index;
        self.next_index += 1;
        self.all_sent = last;
        self.inflight.push_back((index, bytes));
        let chunk = SnapshotChunk {
            epoch: ctx.epoch,
            round: ctx.round,
            now_ms: ctx.floor_ms,
            seq: self.seq,
            seq_epoch: self.seq_epoch,
            index,
            entries,
            outcomes,
            last,
            lineage: ctx.core.lineage(),
        };
        (chunk, bytes)
    }

    fn restart(&mut self) {
        self.next_entry = 0;
        self.next_outcome = 0;
        self.next_index = 0;
        self.all_sent = false;
        self.inflight.clear();
    }
}

/// Approximate wire and memory size of one entry, for batch and window budgets.
fn entry_bytes(key: &Bytes, entry: &Versioned) -> usize {
    const OVERHEAD_BYTES: usize = 64;
    let value_bytes = match &entry.value {
        Value::Bytes(b) => b.len(),
        Value::Counter(c) => 32 * c.writers().count(),
        Value::Tombstone => 0,
    };
    OVERHEAD_BYTES + key.len() + value_bytes + 16 * entry.version.vv.iter().count()
}

fn outcome_bytes(outcome: &RequestOutcome) -> usize {
    const OVERHEAD_BYTES: usize = 32;
    OVERHEAD_BYTES + 16 * outcome.results.len()
}

impl ReplicaCore {
    /// Map facts while primary (the role itself is settled by the caller).
    pub(super) fn primary_assignment(&mut self, facts: &AssignmentFacts) {
        let me = self.me;
        let now_ms = self.local_now_ms;
        let last_seq = self.core.last_seq();
        let RoleState::Primary(state) = &mut self.role else {
            return;
        };
        let p: &mut PrimaryState = state;
        let wanted: BTreeSet<ReplicaId> = facts
            .replicas
            .iter()
            .chain(facts.in_sync.iter())
            .copied()
            .filter(|&id| id != me)
            .collect();
        p.followers.retain(|id, _| wanted.contains(id));
        let round = p.round;
        for &id in &wanted {
            if let std::collections::btree_map::Entry::Vacant(slot) = p.followers.entry(id) {
                // Probe at our current position; the answer tells where it really is.
                slot.insert(Follower::new(last_seq, now_ms, round));
                p.barrier_needed = true;
            }
        }
        let in_sync: BTreeSet<ReplicaId> = facts
            .in_sync
            .iter()
            .copied()
            .filter(|&id| id != me)
            .collect();
        for (id, f) in &mut p.followers {
            let now_in = in_sync.contains(id);
            let was_in = p.in_sync.contains(id);
            if now_in {
                f.promised = false;
                f.drop_promise = false;
                f.reverify = false;
                f.caught_up_proposed_at_ms = None;
            } else if was_in || f.drop_promise {
                // The map stopped trusting it (a shrink, or a fence: it was marked down, or it
                // restarted and lost its log) or this primary gave up on it. What it
                // acknowledged before may describe a log that no longer exists: start over
                // from nothing, as for a new replica, so only fresh answers count.
                *f = Follower::new(last_seq, now_ms, round);
                p.barrier_needed = true;
            }
            if now_in != was_in {
                f.shrink_proposed_at_ms = None;
            }
        }
        p.in_sync = in_sync;
        let handover = facts.handover.filter(|&to| to != me);
        if handover != p.handover {
            p.handover = handover;
            p.handover_proposed_at_ms = None;
        }
        if p.handover.is_none() && !p.queued.is_empty() {
            // The handover was called off: run what waited, in arrival order.
            let queued: Vec<Request> = p.queued.drain(..).collect();
            for request in queued {
                self.execute(request);
            }
        }
        self.release_held();
        self.check_handover();
    }

    pub(super) fn primary_request(&mut self, request: Request) {
        let queue_max = self.limits.handover_queue_requests_max;
        let epoch = self.epoch;
        let RoleState::Primary(p) = &mut self.role else {
            return;
        };
        let Some(to) = p.handover else {
            self.execute(request);
            return;
        };
        if p.queued.len() < queue_max {
            p.queued.push_back(request);
            return;
        }
        // Queue full: the sender retries once the handover committed (epoch + 1, at `to`).
        self.out.redirects.push_back(super::Redirect {
            id: request.id,
            epoch: epoch + 1,
            primary: Some(to),
            commands: Some(request.commands),
        });
    }

    /// Run a request (or find its remembered answer) and hold the answer.
    fn execute(&mut self, request: Request) {
        let now_ms = self.floor_ms;
        let RoleState::Primary(p) = &mut self.role else {
            return;
        };
        let remembered = self
            .dedup
            .get(&request.id)
            .or_else(|| p.unconfirmed_noops.get(&request.id).map(Vec::as_slice));
        let results = match remembered {
            Some(results) => results.to_vec(),
            None => {
                let writes = request.commands.iter().any(Command::is_write);
                let before = self.core.last_seq();
                let results: Vec<CommandResult> = request
                    .commands
                    .into_iter()
                    .map(|command| self.core.handle_command(command, now_ms))
                    .collect();
                let after = self.core.last_seq();
                if after > before {
                    self.history.note(before + 1, self.epoch);
                    self.dedup.insert(RequestOutcome {
                        id: request.id,
                        seq: after,
                        results: results.clone(),
                    });
                } else if writes {
                    // A write that changed nothing (`SET NX` on a present key, `SET XX` or `DEL`
                    // on a missing one, `INCRBY` on a string) is remembered too: its answer may
                    // be out when a copy of the request arrives (a duplicated or reordered
                    // forward), and the copy, run on a state that changed since, could apply
                    // after the client was told it did not. Reads are not remembered: running
                    // one again changes nothing, and only one answer is read.
                    p.unconfirmed_noops.insert(request.id, results.clone());
                }
                results
            }
        };
        p.held.push_back(Held {
            id: request.id,
            results,
            required_seq: self.core.last_seq(),
            required_round: p.round + 1,
        });
        p.barrier_needed = true;
        self.release_held();
    }

    /// Release, in execution order, every answer whose backups have caught up with it.
    fn release_held(&mut self) {
        let RoleState::Primary(p) = &mut self.role else {
            return;
        };
        while let Some(held) = p.held.front() {
            if !p.satisfied(held) {
                break;
            }
            if let Some(held) = p.held.pop_front() {
                p.acknowledged_seq = p.acknowledged_seq.max(held.required_seq);
                // Released in execution order, so the first execution's answer is moved here,
                // with the seq it ran at; a copy answered from it finds nothing left.
                if let Some(results) = p.unconfirmed_noops.remove(&held.id) {
                    self.dedup.insert(RequestOutcome {
                        id: held.id,
                        seq: held.required_seq,
                        results,
                    });
                }
                self.out.responses.push_back((held.id, held.results));
            }
        }
    }

    pub(super) fn primary_flush(&mut self) {
        let RoleState::Primary(state) = &mut self.role else {
            return;
        };
        let p: &mut PrimaryState = state;
        if p.barrier_needed {
            p.round += 1;
            p.barrier_needed = false;
        }
        let ctx = FlushContext {
            core: &self.core,
            history: &self.history,
            dedup: &self.dedup,
            limits: &self.limits,
            epoch: self.epoch,
            round: p.round,
            now_ms: self.local_now_ms,
            floor_ms: self.floor_ms,
        };
        for (&id, f) in &mut p.followers {
            let required = p.in_sync.contains(&id) || f.promised;
            f.flush(id, required, &ctx, &mut self.out.transmits);
        }
    }

    /// An answer from a backup at our epoch.
    pub(super) fn primary_feedback(&mut self, from: ReplicaId, message: ReplicationMessage) {
        let now_ms = self.local_now_ms;
        let last_seq = self.core.last_seq();
        let RoleState::Primary(state) = &mut self.role else {
            return;
        };
        let p: &mut PrimaryState = state;
        let Some(f) = p.followers.get_mut(&from) else {
            return;
        };
        match message {
            ReplicationMessage::Ack {
                round, matched_seq, ..
            } if round >= f.ack_floor_round => {
                let progress = round > f.acked_round || matched_seq > f.acked_seq || !f.matched;
                f.acked_round = f.acked_round.max(round);
                if f.snapshot.as_ref().is_some_and(|s| matched_seq >= s.seq) {
                    f.finish_snapshot();
                }
                f.matched = true;
                f.acked_seq = f.acked_seq.max(matched_seq);
                while let Some(&(end, bytes)) = f.inflight.front() {
                    if end > f.acked_seq {
                        break;
                    }
                    f.inflight.pop_front();
                    f.inflight_bytes = f.inflight_bytes.saturating_sub(bytes);
                }
                if progress {
                    f.progress_at_ms = now_ms;
                }
            }
            ReplicationMessage::ChunkAck {
                round, seq, index, ..
            } if round >= f.ack_floor_round => {
                if round > f.acked_round {
                    f.progress_at_ms = now_ms;
                }
                f.acked_round = f.acked_round.max(round);
                if let Some(snapshot) = &mut f.snapshot
                    && snapshot.seq == seq
                {
                    while let Some(&(sent, bytes)) = snapshot.inflight.front() {
                        if sent > index {
                            break;
                        }
                        snapshot.inflight.pop_front();
                        f.inflight_bytes = f.inflight_bytes.saturating_sub(bytes);
                        f.progress_at_ms = now_ms;
                    }
                }
            }
            ReplicationMessage::Nack {
                round,
                last_seq: their_last,
                last_epoch,
                ..
            } if round >= f.ack_floor_round => {
                // Any answer at our epoch proves the backup still follows it (barrier).
                f.acked_round = f.acked_round.max(round);
                // Nacks to messages sent before the latest rewind, or while a snapshot streams,
                // say nothing new.
                if f.snapshot.is_none() && round >= f.nack_floor_round {
                    let agrees = their_last <= last_seq
                        && last_epoch.is_some()
                        && self.history.epoch_of(their_last) == last_epoch;
                    f.clear_inflight();
                    if agrees {
                        // Below what it acknowledged: either an answer overtaken by a later
                        // ack (the next ack restores it) or a backup that lost its memory
                        // (restarted; it stops acknowledging and the ack timeout shrinks it).
                        // Resending from there serves both.
                        if their_last < f.acked_seq {
                            // If it lost its memory, an acknowledgement its earlier
                            // incarnation sent and that is still on its way would claim
                            // records it no longer holds.
                            f.ack_floor_round = p.round + 1;
                        }
                        f.matched = true;
                        f.acked_seq = their_last;
                        f.sent_seq = their_last;
                    } else {
                        // Its log disagrees with ours (it kept records a deposed primary never
                        // got acknowledged) or runs past our history: replace it wholesale.
                        f.matched = false;
                        f.acked_seq = 0;
                        f.wants_snapshot = true;
                    }
                    f.nack_floor_round = p.round + 1;
                    f.probe = true;
                    p.barrier_needed = true;
                }
            }
            _ => {}
        }
        if let Some(f) = p.followers.get_mut(&from)
            && !f.outstanding()
        {
            f.waiting = false;
        }
        self.release_held();
        self.check_caught_up(from);
        self.check_handover();
    }

    /// A backup outside the in-sync set that has reached our position: propose it.
    fn check_caught_up(&mut self, id: ReplicaId) {
        let now_ms = self.local_now_ms;
        let epoch = self.epoch;
        let RoleState::Primary(p) = &mut self.role else {
            return;
        };
        if p.in_sync.contains(&id) {
            return;
        }
        let acknowledged_seq = p.acknowledged_seq;
        let round = p.round;
        let Some(f) = p.followers.get_mut(&id) else {
            return;
        };
        if f.caught_up(acknowledged_seq) && (!f.promised || f.reverify) {
            f.promised = true;
            f.drop_promise = false;
            f.reverify = false;
            f.propose_caught_up(now_ms, round);
            p.barrier_needed = true;
            self.out
                .proposals
                .push_back(MapProposal::CaughtUp { epoch, node: id });
        }
    }

    /// Draining and nothing left unacknowledged: ask the map to move the primary.
    fn check_handover(&mut self) {
        let last_seq = self.core.last_seq();
        let now_ms = self.local_now_ms;
        let retry_ms = self.limits.map_proposal_retry_ms;
        let epoch = self.epoch;
        let RoleState::Primary(p) = &mut self.role else {
            return;
        };
        let Some(to) = p.handover else {
            return;
        };
        let drained = p.held.is_empty()
            && p.in_sync.contains(&to)
            && p.followers
                .get(&to)
                .is_some_and(|f| f.matched && f.acked_seq >= last_seq);
        let due = p
            .handover_proposed_at_ms
            .is_none_or(|at| now_ms.saturating_sub(at) >= retry_ms);
        if drained && due {
            p.handover_proposed_at_ms = Some(now_ms);
            self.out.proposals.push_back(MapProposal::CompleteHandover {
                epoch,
                to,
                last_seq,
            });
        }
    }

    pub(super) fn primary_tick(&mut self) {
        let now_ms = self.local_now_ms;
        let last_seq = self.core.last_seq();
        let epoch = self.epoch;
        let limits = &self.limits;
        let RoleState::Primary(state) = &mut self.role else {
            return;
        };
        let p: &mut PrimaryState = state;
        let mut caught_up_candidates = Vec::new();
        for (&id, f) in &mut p.followers {
            let required = p.in_sync.contains(&id) || f.promised;
            if !f.outstanding() {
                f.waiting = false;
            }
            if f.waiting {
                let stalled_ms = now_ms.saturating_sub(f.progress_at_ms);
                if stalled_ms >= limits.replicate_retransmit_ms
                    && now_ms.saturating_sub(f.retransmitted_at_ms)
                        >= limits.replicate_retransmit_ms
                {
                    f.rewind(last_seq, p.round, now_ms);
                    p.barrier_needed = true;
                }
                let shrink_due = f
                    .shrink_proposed_at_ms
                    .is_none_or(|at| now_ms.saturating_sub(at) >= limits.map_proposal_retry_ms);
                if required && stalled_ms >= limits.backup_ack_timeout_ms && shrink_due {
                    f.shrink_proposed_at_ms = Some(now_ms);
                    if !p.in_sync.contains(&id) {
                        f.drop_promise = true;
                    }
                    self.out
                        .proposals
                        .push_back(MapProposal::ShrinkInSync { epoch, remove: id });
                }
            }
            // A lost `CaughtUp` (Raft leader change) is proposed again; it is idempotent. Only on
            // fresh evidence, though: the backup must first answer a new round, which a backup
            // that stalled or restarted since does not (or not from the same position). One that
            // stalled, was proposed out, and recovered while neither proposal took effect (the
            // map is quiet, so no assignment drops the promise) is proposed again this way too:
            // it is still waited on, so the promise stands.
            if f.promised
                && !p.in_sync.contains(&id)
                && f.caught_up_proposed_at_ms
                    .is_some_and(|at| now_ms.saturating_sub(at) >= limits.map_proposal_retry_ms)
            {
                f.propose_caught_up(now_ms, p.round);
                f.reverify = true;
                p.barrier_needed = true;
            }
            if !f.promised && !p.in_sync.contains(&id) {
                caught_up_candidates.push(id);
            }
        }
        for id in caught_up_candidates {
            self.check_caught_up(id);
        }
        self.check_handover();
    }
}
