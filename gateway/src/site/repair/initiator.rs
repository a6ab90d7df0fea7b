//! [`TargetRepair`]: the repair sessions this site initiates against one target — a
//! [`RepairSession`] per partition the delegator marked ([`Delegator::repair_needed`], a
//! target-wide mark, an operator's request) or, with `repair_interval_ms`, every partition
//! periodically; at most [`REPAIR_SESSIONS_PER_TARGET_MAX`] at once, on the dialed link. A
//! session that finished and whose pushes are applied clears the partition's mark; a failed
//! one keeps it and is retried with backoff.
use super::shared::{LoadOwner, RepairShared, link_pacer, pace};
use super::snapshot::{DumpEntries, SnapshotReplica};
use crate::bootstrap::Pacer;
use crate::delegator::{Delegator, RecordStore};
use crate::limits::GatewayLimits;
use crate::repair::{RepairProgress, RepairSession, RepairStatus};
use crate::site::limits::{
    REPAIR_RETRY_BACKOFF_MS_MAX, REPAIR_RETRY_BACKOFF_MS_MIN, REPAIR_SESSIONS_PER_TARGET_MAX,
};
use crate::wire::{DigestParams, Message};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tern_conflict::SiteId;
use tern_node::core::PartitionId;

enum Phase {
    Loading,
    Running {
        session: Box<RepairSession>,
        replica: SnapshotReplica,
    },
    /// The exchange is over; waiting for the pushes queued up to `pushes_upto`.
    Pushing {
        progress: RepairProgress,
        pushes_upto: u64,
    },
}

struct Initiated {
    /// The load token, also the session id on the wire.
    id: u64,
    phase: Phase,
    started_ms: u64,
    /// When one of its messages last left the pacer or an answer came: the reply timeout
    /// counts from here (a request waiting for tokens is not overdue).
    last_activity_ms: u64,
    /// A new cause for repair arrived after this session's snapshot may have been taken: its
    /// success must not clear the mark (the partition is repaired again).
    stale: bool,
}

/// When `initiated`'s peer is overdue, if it is running and none of its messages wait in
/// `pacer`: the session's own deadline, but never before `reply_timeout_ms` after its last
/// activity.
fn overdue_at(
    pacer: &Pacer<PartitionId, Message>,
    reply_timeout_ms: u64,
    partition: PartitionId,
    initiated: &Initiated,
) -> Option<u64> {
    let Phase::Running { session, .. } = &initiated.phase else {
        return None;
    };
    if pacer.holds(&partition) {
        return None;
    }
    let due = session.poll_timeout()?;
    Some(due.max(initiated.last_activity_ms.saturating_add(reply_timeout_ms)))
}

/// Repair sessions this site runs against one target.
pub struct TargetRepair {
    site: String,
    peer: SiteId,
    interval_ms: u64,
    sessions: BTreeMap<PartitionId, Initiated>,
    /// Failed partitions: when to try again, and the backoff after the next failure.
    retry: BTreeMap<PartitionId, (u64, u64)>,
    /// Partitions due for a periodic repair (not marked in the delegator).
    periodic_due: BTreeSet<PartitionId>,
    next_periodic_ms: Option<u64>,
    /// The target-wide mark generation whose partitions were all marked.
    generation_marked: Option<u64>,
    /// The delegator's `repairs_marked_total` last seen: a change means new marks.
    marks_seen: u64,
    repairs_total: u64,
    failures_total: u64,
    wake_at: Option<u64>,
    /// Messages for the dialed link, per partition, at the configured rate.
    pacer: Pacer<PartitionId, Message>,
    reply_timeout_ms: u64,
}

impl std::fmt::Debug for TargetRepair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetRepair")
            .field("site", &self.site)
            .field("sessions", &self.sessions.keys().collect::<Vec<_>>())
            .field("repairs_total", &self.repairs_total)
            .finish_non_exhaustive()
    }
}

impl TargetRepair {
    pub fn new(
        site: &str,
        peer: SiteId,
        interval_ms: u64,
        limits: &GatewayLimits,
        now_ms: u64,
    ) -> Self {
        Self {
            site: site.to_owned(),
            peer,
            interval_ms,
            pacer: link_pacer(limits, now_ms),
            reply_timeout_ms: limits.repair_reply_timeout_ms,
            sessions: BTreeMap::new(),
            retry: BTreeMap::new(),
            periodic_due: BTreeSet::new(),
            next_periodic_ms: None,
            generation_marked: None,
            marks_seen: 0,
            repairs_total: 0,
            failures_total: 0,
            wake_at: None,
        }
    }

    /// Sessions completed (in sync or repaired).
    pub fn repairs_total(&self) -> u64 {
        self.repairs_total
    }

    /// Partitions with a session under way or due for a periodic one (marked partitions are
    /// the delegator's to tell).
    pub fn partitions_under_way(&self) -> impl Iterator<Item = PartitionId> + '_ {
        self.sessions
            .keys()
            .chain(self.periodic_due.iter())
            .copied()
    }

    /// Queue what `partition`'s session produced, to leave at the configured rate.
    fn queue(&mut self, partition: PartitionId, messages: Vec<Message>) {
        pace(&mut self.pacer, partition, messages);
    }

    /// What the pacer lets go at `now_ms`; each release counts as its session's activity.
    fn release(&mut self, now_ms: u64) -> Vec<Message> {
        let mut out = Vec::new();
        while let Some((partition, message)) = self.pacer.poll_release(now_ms) {
            if let Some(initiated) = self.sessions.get_mut(&partition) {
                initiated.last_activity_ms = now_ms;
            }
            out.push(message);
        }
        out
    }

    /// When [`Self::drive`] next has something to do (besides reacting to events).
    pub fn poll_timeout(&self) -> Option<u64> {
        self.wake_at
    }

    /// An operator asked for a repair: sessions already under way may predate what they want.
    pub fn mark_all_stale(&mut self) {
        for initiated in self.sessions.values_mut() {
            initiated.stale = true;
        }
    }

    /// The delegator was rebuilt on a reopened store: its in-memory marks are gone (the
    /// store's target-wide mark is seen again), and sessions under way may not clear marks.
    pub fn handle_delegator_replaced(&mut self) {
        self.generation_marked = None;
        self.marks_seen = 0;
        self.mark_all_stale();
    }

    /// The dialed link went down: running sessions fail (answers in flight are lost).
    pub fn handle_disconnected(&mut self, now_ms: u64) {
        let partitions: Vec<PartitionId> = self.sessions.keys().copied().collect();
        for partition in partitions {
            let pushing = matches!(
                self.sessions.get(&partition).map(|s| &s.phase),
                Some(Phase::Pushing { .. })
            );
            if !pushing {
                self.fail(partition, "link to the target went down", now_ms);
            }
        }
        self.pacer.clear();
    }

    /// A repair answer from the target. Returns what to send back on the dialed link.
    pub fn handle_message(
        &mut self,
        message: Message,
        shared: &mut RepairShared,
        now_ms: u64,
    ) -> Vec<Message> {
        let (id, partition) = match &message {
            Message::DigestReply(reply) => (reply.session, reply.partition),
            Message::RangeEntries(answer) => (answer.session, answer.partition),
            other => {
                tracing::warn!(target_site = %self.site, kind = ?other.kind(), "unexpected repair message from a target");
                return Vec::new();
            }
        };
        let Some(initiated) = self.sessions.get_mut(&partition).filter(|s| s.id == id) else {
            // A session that already ended (timed out, link replaced): nothing to do.
            tracing::debug!(target_site = %self.site, %partition, id, "repair answer for no session");
            return Vec::new();
        };
        let Phase::Running { session, replica } = &mut initiated.phase else {
            return Vec::new();
        };
        initiated.last_activity_ms = now_ms;
        if let Err(error) = session.handle_message(message, replica, now_ms) {
            tracing::warn!(target_site = %self.site, %partition, %error, "repair answer refused");
        }
        shared.push(partition, replica.take_pushes());
        self.after_step(partition, shared, now_ms);
        self.release(now_ms)
    }

    /// The snapshot of load `token` for `partition` arrived (or could not be read).
    pub fn on_loaded(
        &mut self,
        partition: PartitionId,
        token: u64,
        result: Result<DumpEntries, String>,
        link_up: bool,
        shared: &mut RepairShared,
        now_ms: u64,
    ) -> Vec<Message> {
        let Some(initiated) = self.sessions.get_mut(&partition).filter(|s| s.id == token) else {
            return Vec::new();
        };
        if !matches!(initiated.phase, Phase::Loading) {
            return Vec::new();
        }
        let entries = match result {
            Ok(entries) => entries,
            Err(error) => {
                self.fail(partition, &error, now_ms);
                return Vec::new();
            }
        };
        if !link_up {
            self.fail(partition, "link to the target went down", now_ms);
            return Vec::new();
        }
        let replica = shared.snapshot(partition, entries);
        let params = DigestParams::new(now_ms, shared.tombstone_retention_ms, &shared.limits);
        match RepairSession::start(token, self.peer, &replica, params, &shared.limits, now_ms) {
            Ok(session) => {
                initiated.phase = Phase::Running {
                    session: Box::new(session),
                    replica,
                };
                initiated.last_activity_ms = now_ms;
                self.after_step(partition, shared, now_ms);
                self.release(now_ms)
            }
            Err(error) => {
                self.fail(partition, &error.to_string(), now_ms);
                Vec::new()
            }
        }
    }

    /// Queues what a running session wants sent; moves a finished one on.
    fn after_step(&mut self, partition: PartitionId, shared: &mut RepairShared, now_ms: u64) {
        let Some(initiated) = self.sessions.get_mut(&partition) else {
            return;
        };
        let Phase::Running { session, .. } = &mut initiated.phase else {
            return;
        };
        let mut out = Vec::new();
        while let Some(message) = session.poll_transmit() {
            out.push(message);
        }
        match session.status().clone() {
            RepairStatus::Running => {}
            RepairStatus::Done => {
                initiated.phase = Phase::Pushing {
                    progress: session.progress().clone(),
                    pushes_upto: shared.queued_total(partition),
                };
            }
            RepairStatus::Failed(error) => {
                self.fail(partition, &error.to_string(), now_ms);
                return;
            }
        }
        self.queue(partition, out);
    }

    fn fail(&mut self, partition: PartitionId, why: &str, now_ms: u64) {
        let Some(initiated) = self.sessions.remove(&partition) else {
            return;
        };
        self.pacer.remove_flow(&partition);
        self.failures_total += 1;
        let backoff = self
            .retry
            .get(&partition)
            .map_or(REPAIR_RETRY_BACKOFF_MS_MIN, |(_, b)| *b);
        self.retry.insert(
            partition,
            (
                now_ms.saturating_add(backoff),
                (backoff * 2).min(REPAIR_RETRY_BACKOFF_MS_MAX),
            ),
        );
        tracing::warn!(
            target_site = %self.site,
            %partition,
            session = initiated.id,
            retry_in_ms = backoff,
            failures_total = self.failures_total,
            why,
            "WAN repair session failed; the partition stays marked"
        );
    }

    /// Timers, completions, new marks and new sessions. Returns messages for the dialed link
    /// (`link_up`: it is up and the delegator's handshake is done).
    pub fn drive<S: RecordStore>(
        &mut self,
        delegator: &mut Delegator<S>,
        link_up: bool,
        shared: &mut RepairShared,
        now_ms: u64,
    ) -> Vec<Message> {
        let mut out = Vec::new();
        let partitions = Arc::clone(&shared.partitions);
        let partitions = &partitions[..];
        self.note_marks(delegator, partitions);
        if self.interval_ms > 0 {
            match self.next_periodic_ms {
                None => self.next_periodic_ms = Some(now_ms.saturating_add(self.interval_ms)),
                Some(due) if now_ms >= due => {
                    self.periodic_due.extend(partitions.iter().copied());
                    self.next_periodic_ms = Some(now_ms.saturating_add(self.interval_ms));
                }
                Some(_) => {}
            }
        }
        // Timeouts of running sessions.
        let due: Vec<PartitionId> = self
            .sessions
            .iter()
            .filter(|(p, s)| {
                overdue_at(&self.pacer, self.reply_timeout_ms, **p, s).is_some_and(|t| t <= now_ms)
            })
            .map(|(p, _)| *p)
            .collect();
        for partition in due {
            if let Some(Initiated {
                phase: Phase::Running { session, .. },
                ..
            }) = self.sessions.get_mut(&partition)
            {
                session.handle_timeout(now_ms);
            }
            self.after_step(partition, shared, now_ms);
        }
        self.complete(delegator, shared, now_ms);
        self.clear_target_mark(delegator);
        if link_up {
            self.start_sessions(delegator, shared, now_ms);
        }
        out.extend(self.release(now_ms));
        self.wake_at = self.next_wake(link_up, now_ms);
        out
    }

    /// A new target-wide mark marks every partition; any new mark makes sessions under way
    /// stale (their snapshot may predate the hole).
    fn note_marks<S: RecordStore>(
        &mut self,
        delegator: &mut Delegator<S>,
        partitions: &[PartitionId],
    ) {
        let generation = delegator.target_repair_mark();
        if generation.is_some() && generation != self.generation_marked {
            for &partition in partitions {
                delegator.mark_repair(partition);
            }
            self.generation_marked = generation;
            self.mark_all_stale();
            tracing::warn!(target_site = %self.site, ?generation, "target-wide repair mark: every partition will be repaired");
        }
        let marks = delegator.stats().repairs_marked_total;
        if marks != self.marks_seen {
            self.marks_seen = marks;
            self.mark_all_stale();
        }
    }

    fn complete<S: RecordStore>(
        &mut self,
        delegator: &mut Delegator<S>,
        shared: &RepairShared,
        now_ms: u64,
    ) {
        let finished: Vec<PartitionId> = self
            .sessions
            .iter()
            .filter(|(p, s)| match &s.phase {
                Phase::Pushing { pushes_upto, .. } => shared.done_total(**p) >= *pushes_upto,
                _ => false,
            })
            .map(|(p, _)| *p)
            .collect();
        for partition in finished {
            let Some(initiated) = self.sessions.remove(&partition) else {
                continue;
            };
            self.pacer.remove_flow(&partition);
            let Phase::Pushing { progress, .. } = initiated.phase else {
                continue;
            };
            self.repairs_total += 1;
            self.retry.remove(&partition);
            if !initiated.stale {
                delegator.clear_repair(partition);
                self.periodic_due.remove(&partition);
            }
            let in_sync = progress.range_requests == 0;
            tracing::info!(
                target_site = %self.site,
                %partition,
                session = initiated.id,
                in_sync,
                stale = initiated.stale,
                took_ms = now_ms.saturating_sub(initiated.started_ms),
                messages_sent = progress.messages_sent,
                messages_received = progress.messages_received,
                bytes_sent = progress.bytes_sent,
                bytes_received = progress.bytes_received,
                digests_compared = progress.digests_compared,
                leaves_differing = progress.leaves_differing,
                ranges_compared = progress.ranges_compared,
                entries_sent = progress.entries_sent,
                entries_received = progress.entries_received,
                entries_changed = progress.entries_changed,
                conflicts = progress.conflicts,
                "WAN repair session done"
            );
        }
    }

    /// Every partition was repaired since the target-wide mark was seen: clear it durably.
    fn clear_target_mark<S: RecordStore>(&mut self, delegator: &mut Delegator<S>) {
        let Some(generation) = delegator.target_repair_mark() else {
            return;
        };
        if self.generation_marked != Some(generation) || delegator.repair_needed().next().is_some()
        {
            return;
        }
        match delegator.clear_target_repair(generation) {
            Ok(true) => {
                tracing::info!(target_site = %self.site, generation, "target-wide repair mark cleared");
            }
            // A newer cause arrived: the next drive marks every partition again.
            Ok(false) => {}
            Err(error) => {
                tracing::error!(target_site = %self.site, %error, "clearing the target-wide repair mark");
            }
        }
    }

    fn start_sessions<S: RecordStore>(
        &mut self,
        delegator: &Delegator<S>,
        shared: &mut RepairShared,
        now_ms: u64,
    ) {
        let wanted: BTreeSet<PartitionId> = delegator
            .repair_needed()
            .chain(self.periodic_due.iter().copied())
            .collect();
        for partition in wanted {
            if self.sessions.len() >= REPAIR_SESSIONS_PER_TARGET_MAX {
                return;
            }
            if self.sessions.contains_key(&partition)
                || self
                    .retry
                    .get(&partition)
                    .is_some_and(|(at, _)| *at > now_ms)
                || !shared.is_partition(partition)
            {
                continue;
            }
            let owner = LoadOwner::Initiator {
                target: self.site.clone(),
                partition,
            };
            let id = shared.load(partition, owner);
            self.sessions.insert(
                partition,
                Initiated {
                    id,
                    phase: Phase::Loading,
                    started_ms: now_ms,
                    last_activity_ms: now_ms,
                    stale: false,
                },
            );
        }
    }

    fn next_wake(&self, link_up: bool, now_ms: u64) -> Option<u64> {
        let sessions = self
            .sessions
            .iter()
            .filter_map(|(p, s)| overdue_at(&self.pacer, self.reply_timeout_ms, *p, s));
        // Retries wait for the link (its coming up drives again) and only matter while a
        // session slot is free (a completion drives again).
        let retries = self.retry.values().map(|(at, _)| *at).filter(|at| {
            link_up && *at > now_ms && self.sessions.len() < REPAIR_SESSIONS_PER_TARGET_MAX
        });
        sessions
            .chain(retries)
            .chain(self.next_periodic_ms)
            .chain(self.pacer.poll_timeout())
            .min()
    }
}
