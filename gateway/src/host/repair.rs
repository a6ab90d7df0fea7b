//! The repair driver: runs the sans-IO Merkle anti-entropy of [`crate::repair`] between live
//! gateways.
//!
//! - Both sides work on a [`SnapshotReplica`]: an in-memory copy of one partition, loaded by
//!   paging `Command::WanDump` through the router (a task; the engine gets
//!   `Event::RepairLoaded`). What a session applies to the copy is also pushed into the real
//!   partition with `Command::WanApply` (one request per partition in flight, retried), the
//!   same reconcile the copy used. Writes landing during a session are fine: every step is a
//!   reconcile, and a partition marked again meanwhile is repaired again.
//! - [`TargetRepair`] (one per target site) initiates: a [`RepairSession`] per partition the
//!   delegator marked ([`crate::Delegator::repair_needed`], a target-wide mark, an operator's
//!   `Repair`) or, with `repair_interval_ms`, every partition periodically; at most
//!   [`REPAIR_SESSIONS_PER_TARGET_MAX`] at once, on the dialed link. A session that finished and
//!   whose pushes are applied clears the partition's mark; a failed one keeps it and is
//!   retried with backoff.
//! - [`SourceRepair`] (one per source site) answers the sessions a source runs against us,
//!   with a [`RepairResponder`] and a snapshot per session (messages wait while it loads).
//! - [`RepairShared`] owns what both need: the router, snapshot loads and push queues.
//! - Pacing: each side's messages on a link go through a [`Pacer`] at
//!   `bootstrap_bytes_per_sec_max` (sessions take turns), so a bootstrap — a repair where every
//!   range differs — runs at the configured rate beside the live stream. A session's reply
//!   timeout counts from its last message that actually left (or answer that came), never
//!   while its requests wait for tokens.
//!
//! Snapshot loads are not paced: they are local reads in bounded pages that interleave with
//! live requests at the partition, and a responder's load runs under the initiator's reply
//! timeout (pacing it would fail every session on a partition larger than timeout × rate).
use super::engine::{DurableDelegator, Event};
use super::limits::{
    REPAIR_BURST_MS, REPAIR_DUMP_BYTES_MAX, REPAIR_DUMP_ENTRIES_MAX, REPAIR_LOAD_ATTEMPTS_MAX,
    REPAIR_RETRY_BACKOFF_MS_MAX, REPAIR_RETRY_BACKOFF_MS_MIN, REPAIR_SESSIONS_PER_TARGET_MAX,
    REPAIR_TASK_BACKOFF_MS_MAX,
};
use crate::bootstrap::Pacer;
use crate::limits::GatewayLimits;
use crate::repair::{
    ApplyEffect, RepairProgress, RepairResponder, RepairSession, RepairStatus, Replica,
};
use crate::wire::{DigestParams, Message, PositionRange};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tern_conflict::{KeyspaceResolvers, Outcome, SiteId, Versioned, reconcile_into};
use tern_node::core::partition::scan_position;
use tern_node::core::{Command, CommandResult, PartitionId, Response};
use tern_node::shell::Router;
use tokio::sync::mpsc;

/// Entries of one partition in scan order, as `WanDump` pages them.
pub type DumpEntries = Vec<(u64, Bytes, Versioned)>;

/// A partition copy for one repair session. `apply` reconciles into the copy with the
/// keyspace's resolver (the rule of `CoreReplica::apply`, i.e. the partition's
/// `apply_remote`) and records every entry that changed it, for [`Self::take_pushes`].
pub struct SnapshotReplica {
    partition: PartitionId,
    entries: BTreeMap<(u64, Bytes), Versioned>,
    resolvers: Arc<KeyspaceResolvers>,
    pushes: Vec<(Bytes, Versioned)>,
}

impl std::fmt::Debug for SnapshotReplica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotReplica")
            .field("partition", &self.partition)
            .field("entries", &self.entries.len())
            .field("pushes", &self.pushes.len())
            .finish_non_exhaustive()
    }
}

impl SnapshotReplica {
    pub fn new(
        partition: PartitionId,
        resolvers: Arc<KeyspaceResolvers>,
        entries: impl IntoIterator<Item = (u64, Bytes, Versioned)>,
    ) -> Self {
        Self {
            partition,
            entries: entries
                .into_iter()
                .map(|(position, key, entry)| ((position, key), entry))
                .collect(),
            resolvers,
            pushes: Vec::new(),
        }
    }

    #[cfg(test)]
    pub fn get(&self, key: &[u8]) -> Option<&Versioned> {
        self.entries
            .get(&(scan_position(key), Bytes::copy_from_slice(key)))
    }

    /// Entries that changed the copy since the last call, as received: the real partition
    /// reconciles each the same way.
    pub fn take_pushes(&mut self) -> Vec<(Bytes, Versioned)> {
        std::mem::take(&mut self.pushes)
    }
}

impl Replica for SnapshotReplica {
    fn partition(&self) -> PartitionId {
        self.partition
    }

    fn visit(&self, range: PositionRange, visit: &mut dyn FnMut(u64, &Bytes, &Versioned) -> bool) {
        for ((position, key), entry) in self.entries.range((range.from, Bytes::new())..) {
            if *position >= range.to || !visit(*position, key, entry) {
                return;
            }
        }
    }

    fn apply(&mut self, key: Bytes, entry: Versioned, _now_ms: u64) -> ApplyEffect {
        let slot_key = (scan_position(&key), key.clone());
        let mut slot = self.entries.get(&slot_key).cloned();
        let resolver = Arc::clone(self.resolvers.for_key(&key));
        let outcome = reconcile_into(resolver.as_ref(), &key, &mut slot, entry.clone());
        match (outcome, slot) {
            (Outcome::Unchanged, _) | (_, None) => ApplyEffect::default(),
            (outcome, Some(merged)) => {
                self.entries.insert(slot_key, merged);
                self.pushes.push((key, entry));
                ApplyEffect {
                    changed: true,
                    conflict: matches!(outcome, Outcome::Resolved(_)),
                }
            }
        }
    }
}

/// Who asked for a snapshot load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoadOwner {
    Initiator {
        target: String,
        partition: PartitionId,
    },
    Responder {
        source: String,
        session: u64,
        partition: PartitionId,
    },
}

/// WanApply pushes of one partition, applied in order, one request in flight.
#[derive(Debug, Default)]
struct PushQueue {
    queued: VecDeque<(Bytes, Versioned)>,
    inflight: bool,
    /// Entries ever queued / ever finished (applied or refused): a session waits until
    /// `done_total` reaches what was queued when it finished.
    queued_total: u64,
    done_total: u64,
}

/// What initiators and responders share: the router, loads and push queues.
pub struct RepairShared {
    pub limits: GatewayLimits,
    router: Router,
    resolvers: Arc<KeyspaceResolvers>,
    events: mpsc::UnboundedSender<Event>,
    tombstone_retention_ms: u64,
    push_records_max: usize,
    push_bytes_max: usize,
    /// Every partition of the keyspace (fixed for the process).
    partitions: Arc<[PartitionId]>,
    next_token: u64,
    loads: BTreeMap<u64, LoadOwner>,
    pushes: BTreeMap<PartitionId, PushQueue>,
    pub push_errors_total: u64,
}

impl RepairShared {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        limits: GatewayLimits,
        router: Router,
        resolvers: Arc<KeyspaceResolvers>,
        events: mpsc::UnboundedSender<Event>,
        tombstone_retention_ms: u64,
        push_records_max: u32,
        push_bytes_max: u32,
    ) -> Self {
        Self {
            limits,
            partitions: router.keyspace().partitions().collect(),
            router,
            resolvers,
            events,
            tombstone_retention_ms,
            push_records_max: push_records_max.max(1) as usize,
            push_bytes_max: push_bytes_max as usize,
            next_token: 1,
            loads: BTreeMap::new(),
            pushes: BTreeMap::new(),
            push_errors_total: 0,
        }
    }

    fn is_partition(&self, partition: PartitionId) -> bool {
        partition.0 < self.router.keyspace().partition_count()
    }

    /// Starts loading `partition`'s snapshot; the answer comes as `Event::RepairLoaded` with
    /// the returned token (also the session id of an initiator).
    fn load(&mut self, partition: PartitionId, owner: LoadOwner) -> u64 {
        let token = self.next_token;
        self.next_token += 1;
        self.loads.insert(token, owner);
        spawn_load(self.router.clone(), partition, token, self.events.clone());
        token
    }

    /// Who asked for the load `token` (once; a forgotten load yields `None`).
    pub fn take_load(&mut self, token: u64) -> Option<LoadOwner> {
        self.loads.remove(&token)
    }

    fn snapshot(&self, partition: PartitionId, entries: DumpEntries) -> SnapshotReplica {
        SnapshotReplica::new(partition, Arc::clone(&self.resolvers), entries)
    }

    /// Queue `entries` for the real partition.
    fn push(&mut self, partition: PartitionId, entries: Vec<(Bytes, Versioned)>) {
        if entries.is_empty() {
            return;
        }
        let queue = self.pushes.entry(partition).or_default();
        queue.queued_total += entries.len() as u64;
        queue.queued.extend(entries);
        self.dispatch(partition);
    }

    /// Everything ever queued for `partition` so far.
    fn queued_total(&self, partition: PartitionId) -> u64 {
        self.pushes.get(&partition).map_or(0, |q| q.queued_total)
    }

    fn done_total(&self, partition: PartitionId) -> u64 {
        self.pushes.get(&partition).map_or(0, |q| q.done_total)
    }

    fn dispatch(&mut self, partition: PartitionId) {
        let Some(queue) = self.pushes.get_mut(&partition) else {
            return;
        };
        if queue.inflight || queue.queued.is_empty() {
            return;
        }
        let mut chunk = Vec::new();
        let mut bytes = 0;
        while let Some((key, entry)) = queue.queued.front() {
            let size = key.len() + value_len(&entry.value);
            if !chunk.is_empty()
                && (chunk.len() >= self.push_records_max || bytes + size > self.push_bytes_max)
            {
                break;
            }
            bytes += size;
            chunk.extend(queue.queued.pop_front());
        }
        queue.inflight = true;
        spawn_push(self.router.clone(), partition, chunk, self.events.clone());
    }

    /// A push request finished (`results[i]` answers `entries[i]`).
    pub fn on_pushed(
        &mut self,
        partition: PartitionId,
        entries: &[(Bytes, Versioned)],
        results: &[CommandResult],
    ) {
        for ((key, _), result) in entries.iter().zip(results) {
            if !matches!(result, Ok(Response::WanApplied { .. })) {
                // Over this site's limits, say: counted and logged, like a streamed record.
                self.push_errors_total += 1;
                tracing::error!(%partition, key = ?key, ?result, "repair entry not applied");
            }
        }
        if let Some(queue) = self.pushes.get_mut(&partition) {
            queue.inflight = false;
            queue.done_total += entries.len() as u64;
        }
        self.dispatch(partition);
    }
}

/// The pacer of one link's repair messages: `bootstrap_bytes_per_sec_max`, bursts of
/// [`REPAIR_BURST_MS`] of it but at most one repair message.
pub fn link_pacer<K: Ord + Clone>(limits: &GatewayLimits, now_ms: u64) -> Pacer<K, Message> {
    let rate = limits.bootstrap_bytes_per_sec_max;
    let burst = (rate.saturating_mul(REPAIR_BURST_MS) / 1_000)
        .min(limits.repair_message_bytes_max as u64)
        .max(1);
    Pacer::new(rate, burst, now_ms)
}

/// Queue `messages` of `flow` on `pacer`, each counted at its encoded frame size.
fn pace<K: Ord + Clone>(pacer: &mut Pacer<K, Message>, flow: K, messages: Vec<Message>) {
    for message in messages {
        let bytes = crate::wire::encoded_len(&message) as u64;
        pacer.push(flow.clone(), message, bytes);
    }
}

/// Payload bytes of a value, for sizing push requests.
fn value_len(value: &tern_conflict::Value) -> usize {
    match value {
        tern_conflict::Value::Bytes(bytes) => bytes.len(),
        _ => 64,
    }
}

/// Pages `partition` through `WanDump` into memory and reports `Event::RepairLoaded`.
fn spawn_load(
    router: Router,
    partition: PartitionId,
    token: u64,
    events: mpsc::UnboundedSender<Event>,
) {
    tokio::spawn(async move {
        let result = load_partition(&router, partition, &events).await;
        let _ = events.send(Event::RepairLoaded { token, result });
    });
}

async fn load_partition(
    router: &Router,
    partition: PartitionId,
    events: &mpsc::UnboundedSender<Event>,
) -> Result<DumpEntries, String> {
    let mut entries = Vec::new();
    let mut from = 0;
    let mut failures = 0;
    let mut backoff = 5;
    loop {
        let command = Command::WanDump {
            from_position: from,
            entries_max: REPAIR_DUMP_ENTRIES_MAX,
            bytes_max: REPAIR_DUMP_BYTES_MAX,
        };
        let page = match router.execute(partition, vec![command]).await {
            Ok(mut results) => match results.pop() {
                Some(Ok(Response::WanDump(page))) => page,
                other => return Err(format!("unexpected answer to WanDump: {other:?}")),
            },
            Err(error) => {
                failures += 1;
                if failures >= REPAIR_LOAD_ATTEMPTS_MAX || events.is_closed() {
                    return Err(format!("reading partition {partition} for repair: {error}"));
                }
                tokio::time::sleep(Duration::from_millis(backoff)).await;
                backoff = (backoff * 2).min(REPAIR_TASK_BACKOFF_MS_MAX);
                continue;
            }
        };
        entries.extend(page.entries);
        match page.next {
            Some(next) if next > from => from = next,
            Some(next) => return Err(format!("WanDump did not advance ({from} → {next})")),
            None => return Ok(entries),
        }
    }
}

/// Applies `entries` to `partition`'s primary (retried while the router fails) and reports
/// `Event::RepairPushed`.
fn spawn_push(
    router: Router,
    partition: PartitionId,
    entries: Vec<(Bytes, Versioned)>,
    events: mpsc::UnboundedSender<Event>,
) {
    tokio::spawn(async move {
        let mut backoff = 5;
        let results = loop {
            let commands = entries
                .iter()
                .map(|(key, entry)| Command::WanApply {
                    key: key.clone(),
                    entry: entry.clone(),
                })
                .collect();
            match router.execute(partition, commands).await {
                Ok(results) => break results,
                Err(error) => {
                    tracing::debug!(%partition, %error, "applying repair entries; retrying");
                    if events.is_closed() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(backoff)).await;
                    backoff = (backoff * 2).min(REPAIR_TASK_BACKOFF_MS_MAX);
                }
            }
        };
        let _ = events.send(Event::RepairPushed {
            partition,
            entries,
            results,
        });
    });
}

// --- initiator ---

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
    pub fn drive(
        &mut self,
        delegator: &mut DurableDelegator,
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
    fn note_marks(&mut self, delegator: &mut DurableDelegator, partitions: &[PartitionId]) {
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

    fn complete(&mut self, delegator: &mut DurableDelegator, shared: &RepairShared, now_ms: u64) {
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
    fn clear_target_mark(&mut self, delegator: &mut DurableDelegator) {
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

    fn start_sessions(
        &mut self,
        delegator: &DurableDelegator,
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

// --- responder ---

enum Answering {
    Loading {
        queued: Vec<Message>,
        since_ms: u64,
    },
    Ready {
        replica: SnapshotReplica,
        last_used_ms: u64,
    },
}

/// Answers the repair sessions one source runs against this site.
pub struct SourceRepair {
    site: String,
    peer: SiteId,
    responder: RepairResponder,
    /// Per (session, partition): its snapshot, or the messages waiting for it.
    replicas: BTreeMap<(u64, PartitionId), (u64 /* load token */, Answering)>,
    idle_ms_max: u64,
    sessions_max: usize,
    /// Answers for the source's link, per (session, partition), at the configured rate.
    pacer: Pacer<(u64, PartitionId), Message>,
}

impl SourceRepair {
    pub fn new(site: &str, peer: SiteId, limits: &GatewayLimits, now_ms: u64) -> Self {
        Self {
            site: site.to_owned(),
            peer,
            responder: RepairResponder::new(limits),
            replicas: BTreeMap::new(),
            idle_ms_max: limits.repair_responder_idle_ms_max,
            sessions_max: limits.repair_responder_sessions_max.max(1),
            pacer: link_pacer(limits, now_ms),
        }
    }

    /// The source's link went down: its sessions are over.
    pub fn handle_disconnected(&mut self) {
        self.replicas.clear();
        self.pacer.clear();
    }

    /// What the pacer lets go at `now_ms`.
    fn release(&mut self, now_ms: u64) -> Vec<Message> {
        let mut out = Vec::new();
        while let Some((_, message)) = self.pacer.poll_release(now_ms) {
            out.push(message);
        }
        out
    }

    /// A repair request from the source. Returns the answers for its link.
    pub fn handle_message(
        &mut self,
        message: Message,
        shared: &mut RepairShared,
        now_ms: u64,
    ) -> Vec<Message> {
        let (session, partition) = match &message {
            Message::DigestRequest(request) => (request.session, request.partition),
            Message::RangeRequest(request) => (request.session, request.partition),
            other => {
                tracing::warn!(source_site = %self.site, kind = ?other.kind(), "unexpected repair message from a source");
                return Vec::new();
            }
        };
        if !shared.is_partition(partition) {
            tracing::warn!(source_site = %self.site, %partition, "repair request for a partition this site does not have");
            return Vec::new();
        }
        let key = (session, partition);
        match self.replicas.get_mut(&key) {
            Some((_, Answering::Loading { queued, .. })) => {
                queued.push(message);
                Vec::new()
            }
            Some((_, Answering::Ready { .. })) => {
                let answers = self.answer(key, message, shared, now_ms);
                pace(&mut self.pacer, key, answers);
                self.release(now_ms)
            }
            None => {
                self.make_room();
                let owner = LoadOwner::Responder {
                    source: self.site.clone(),
                    session,
                    partition,
                };
                let token = shared.load(partition, owner);
                self.replicas.insert(
                    key,
                    (
                        token,
                        Answering::Loading {
                            queued: vec![message],
                            since_ms: now_ms,
                        },
                    ),
                );
                Vec::new()
            }
        }
    }

    /// The snapshot for `(session, partition)` arrived: answer what waited for it.
    pub fn on_loaded(
        &mut self,
        session: u64,
        partition: PartitionId,
        token: u64,
        result: Result<DumpEntries, String>,
        shared: &mut RepairShared,
        now_ms: u64,
    ) -> Vec<Message> {
        let key = (session, partition);
        let Some((loaded_token, Answering::Loading { .. })) = self.replicas.get(&key) else {
            return Vec::new();
        };
        if *loaded_token != token {
            return Vec::new();
        }
        let Some((_, Answering::Loading { queued, .. })) = self.replicas.remove(&key) else {
            return Vec::new();
        };
        let entries = match result {
            Ok(entries) => entries,
            Err(error) => {
                // The initiator times out and retries later.
                tracing::warn!(source_site = %self.site, %partition, %error, "repair snapshot not loaded");
                return Vec::new();
            }
        };
        self.replicas.insert(
            key,
            (
                token,
                Answering::Ready {
                    replica: shared.snapshot(partition, entries),
                    last_used_ms: now_ms,
                },
            ),
        );
        for message in queued {
            let answers = self.answer(key, message, shared, now_ms);
            pace(&mut self.pacer, key, answers);
        }
        self.release(now_ms)
    }

    fn answer(
        &mut self,
        key: (u64, PartitionId),
        message: Message,
        shared: &mut RepairShared,
        now_ms: u64,
    ) -> Vec<Message> {
        let Some((
            _,
            Answering::Ready {
                replica,
                last_used_ms,
            },
        )) = self.replicas.get_mut(&key)
        else {
            return Vec::new();
        };
        *last_used_ms = now_ms;
        let last = matches!(&message, Message::RangeRequest(r) if r.last);
        let answers = match self
            .responder
            .handle_message(self.peer, message, replica, now_ms)
        {
            Ok(answers) => answers,
            Err(error) => {
                tracing::warn!(source_site = %self.site, partition = %key.1, %error, "repair request refused");
                Vec::new()
            }
        };
        shared.push(key.1, replica.take_pushes());
        let in_sync = answers
            .iter()
            .any(|a| matches!(a, Message::DigestReply(r) if r.in_sync));
        if last || in_sync {
            self.replicas.remove(&key);
        }
        answers
    }

    /// Forget the oldest session when at `repair_responder_sessions_max` (like the responder).
    fn make_room(&mut self) {
        if self.replicas.len() < self.sessions_max {
            return;
        }
        let oldest = self
            .replicas
            .iter()
            .min_by_key(|(k, (_, a))| (last_used(a), **k))
            .map(|(k, _)| *k);
        if let Some(oldest) = oldest {
            self.replicas.remove(&oldest);
        }
    }

    /// Forgets idle sessions; returns the answers the pacer lets go now.
    pub fn handle_timeout(&mut self, now_ms: u64) -> Vec<Message> {
        self.responder.handle_timeout(now_ms);
        let idle_ms_max = self.idle_ms_max;
        self.replicas
            .retain(|_, (_, a)| now_ms < last_used(a).saturating_add(idle_ms_max));
        self.release(now_ms)
    }

    pub fn poll_timeout(&self) -> Option<u64> {
        let replicas = self
            .replicas
            .values()
            .map(|(_, a)| last_used(a).saturating_add(self.idle_ms_max));
        replicas
            .chain(self.responder.poll_timeout())
            .chain(self.pacer.poll_timeout())
            .min()
    }
}

fn last_used(answering: &Answering) -> u64 {
    match answering {
        Answering::Loading { since_ms, .. } => *since_ms,
        Answering::Ready { last_used_ms, .. } => *last_used_ms,
    }
}

#[cfg(test)]
#[path = "repair_tests.rs"]
mod tests;
