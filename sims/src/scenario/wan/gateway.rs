//! One site's WAN gateway: a [`Delegator`] per target site and a [`Sink`] per source site, the
//! connection ends of their links, the feed from the site's change logs, and the scenario's
//! stand-in for anti-entropy (full partition resync by snapshot).
//!
//! The gateway runs on its own host so it can crash alone. Its volatile state (cores,
//! connections) dies with it. On restart the sinks resume from the cursors persisted with the
//! partitions ([`Site::sink_cursors`]) and each delegator reopens its durable backlog
//! ([`BacklogStore`] on a fault-injecting [`MemStorage`] disk that outlives the gateway:
//! unsynced data lost, torn tails) and is fed each partition's change log from
//! [`Delegator::resume_after`]. Where the log no longer reaches back that far, or the backlog
//! lost records it cannot get again (overflow drop, damage), the delegator marks repair and the
//! scenario resyncs the partition. A store that fails (I/O error) is reopened and the
//! delegator rebuilt on it, as the shell would.
use super::msg::{Dir, LinkId, Msg};
use super::site::Site;
use super::transport::{Conn, TransportConfig};
use super::{Config, Injection, WanStats};
use crate::check::Violation;
use crate::check::convergence::{WanChecker, WanViolation};
use crate::net::HostId;
use crate::time::SimTime;
use crate::world::World;
use bytes::Bytes;
use std::collections::BTreeMap;
use tern_conflict::Value;
use tern_gateway::backlog::MemStorage;
use tern_gateway::delegator::{RecordError, StoreError};
use tern_gateway::wire::{Message, WanRecord, encode};
use tern_gateway::{BacklogStore, Delegator, Sink};
use tern_node::core::{ChangeRecord, PartitionId};

/// The delegator as the scenario runs it: on the durable backlog over a simulated disk.
pub type DurableDelegator = Delegator<BacklogStore<MemStorage>>;

/// Reopening a backlog fails only through injected I/O faults, which are drawn per call: a
/// few tries always get through unless the fault rate is absurd.
const REOPEN_ATTEMPTS_MAX: usize = 20;

/// What a gateway handler needs from the rest of the world.
pub struct Ctx<'a> {
    pub world: &'a mut World<Msg>,
    pub site: &'a mut Site,
    pub checker: &'a mut WanChecker,
    pub config: &'a Config,
    /// Gateway hosts by site index.
    pub gateway_hosts: &'a [HostId],
    /// Per link, the last connection id handed out (kept outside the gateways so ids only grow
    /// across crashes, like random connection ids never repeating).
    pub conn_ids: &'a mut BTreeMap<LinkId, u64>,
    pub next_repair_id: &'a mut u64,
    pub stats: &'a mut WanStats,
    /// Per (source, target) site pair, the disk of the source's backlog for the target.
    pub disks: &'a BTreeMap<(usize, usize), MemStorage>,
}

impl Ctx<'_> {
    fn now(&self) -> SimTime {
        self.world.now()
    }

    fn host(&self) -> HostId {
        self.gateway_hosts[self.site.index]
    }

    fn now_ms(&self) -> u64 {
        self.world.local_ms(self.host())
    }

    fn transport(&self) -> &TransportConfig {
        &self.config.transport
    }

    fn send(&mut self, to_site: usize, msg: Msg) {
        let (from, to) = (self.host(), self.gateway_hosts[to_site]);
        self.world.send(from, to, msg);
    }

    fn new_conn_id(&mut self, link: LinkId) -> u64 {
        let id = self.conn_ids.entry(link).or_insert(0);
        *id += 1;
        *id
    }

    /// Open (recover) the backlog of `target` and build its delegator on it.
    fn open_delegator(&mut self, target: usize) -> Result<DurableDelegator, Violation> {
        let ids = self.config.site_ids();
        let (local, peer) = (ids[self.site.index], ids[target]);
        let storage = &self.disks[&(self.site.index, target)];
        let mut last_error = None;
        for _ in 0..REOPEN_ATTEMPTS_MAX {
            match Delegator::open(
                local,
                peer,
                self.config.gateway_limits.clone(),
                storage.clone(),
                self.config.backlog.clone(),
            ) {
                Ok((delegator, report)) => {
                    self.stats.backlog_opens += 1;
                    self.stats.recovery_events += report.events.len() as u64;
                    return Ok(delegator);
                }
                Err(error) => {
                    self.stats.store_failures += 1;
                    last_error = Some(error);
                }
            }
        }
        Err(WanViolation::LinkBroken {
            link: LinkId {
                source: self.site.index,
                target,
            }
            .to_string(),
            detail: format!("the backlog does not reopen: {last_error:?}"),
        }
        .into())
    }
}

/// The delegator end of a link's connection.
#[derive(Debug)]
enum LinkState {
    Down { retry_at: SimTime },
    Connecting { conn: u64, retry_at: SimTime },
    Up(Conn),
}

#[derive(Debug)]
struct DelegatorEnd {
    delegator: DurableDelegator,
    link: LinkState,
    /// Repairs in flight per partition: (repair id, when to send again).
    repairs: BTreeMap<PartitionId, (u64, SimTime)>,
    /// The target-wide repair mark whose partitions are being repaired.
    clearing_mark: Option<u64>,
}

#[derive(Debug)]
struct SinkEnd {
    sink: Sink,
    conn: Option<Conn>,
}

#[derive(Debug)]
pub struct Gateway {
    index: usize,
    delegators: BTreeMap<usize, DelegatorEnd>,
    sinks: BTreeMap<usize, SinkEnd>,
    feed_pending: bool,
    /// The earliest Wake timer outstanding.
    wake_at: SimTime,
}

impl Gateway {
    /// A gateway starting (first boot or restart) next to `ctx.site`.
    pub fn start(ctx: &mut Ctx<'_>) -> Result<Self, Violation> {
        let index = ctx.site.index;
        let site_ids = ctx.config.site_ids();
        let local = site_ids[index];
        let now = ctx.now();
        let mut delegators = BTreeMap::new();
        let mut sinks = BTreeMap::new();
        for (other, &peer) in site_ids.iter().enumerate() {
            if other == index {
                continue;
            }
            delegators.insert(
                other,
                DelegatorEnd {
                    delegator: ctx.open_delegator(other)?,
                    link: LinkState::Down { retry_at: now },
                    repairs: BTreeMap::new(),
                    clearing_mark: None,
                },
            );
            let cursors: Vec<(PartitionId, u64)> = ctx
                .site
                .sink_cursors
                .iter()
                .filter(|((source, _), _)| *source == other)
                .map(|(&(_, p), &seq)| (p, seq))
                .collect();
            sinks.insert(
                other,
                SinkEnd {
                    sink: Sink::with_cursors(
                        local,
                        peer,
                        ctx.config.gateway_limits.clone(),
                        cursors,
                    ),
                    conn: None,
                },
            );
        }
        let mut gateway = Self {
            index,
            delegators,
            sinks,
            feed_pending: false,
            wake_at: SimTime::NEVER,
        };
        gateway.schedule_wake(ctx, now);
        Ok(gateway)
    }

    /// The site committed something: read it soon (tailing the change log takes a moment).
    pub fn poke(&mut self, ctx: &mut Ctx<'_>) {
        if !self.feed_pending {
            self.feed_pending = true;
            let delay = ctx.world.rng().between(50, 500);
            let host = ctx.host();
            ctx.world.set_timer(host, delay, Msg::Feed);
        }
    }

    pub fn handle_feed(&mut self, ctx: &mut Ctx<'_>) -> Result<(), Violation> {
        self.feed_pending = false;
        self.pump(ctx)
    }

    pub fn handle_wake(&mut self, ctx: &mut Ctx<'_>) -> Result<(), Violation> {
        if ctx.now() >= self.wake_at {
            self.wake_at = SimTime::NEVER;
        }
        self.pump(ctx)
    }

    /// A message from another gateway.
    pub fn handle_message(&mut self, msg: Msg, ctx: &mut Ctx<'_>) -> Result<(), Violation> {
        let now = ctx.now();
        let now_ms = ctx.now_ms();
        match msg {
            Msg::Connect { link, conn } => {
                let Some(end) = self.sinks.get_mut(&link.source) else {
                    return Ok(());
                };
                match &end.conn {
                    Some(current) if conn < current.id => return Ok(()),
                    Some(current) if conn == current.id => {}
                    _ => {
                        if end.conn.is_some() {
                            end.sink.handle_disconnected(now_ms);
                        }
                        end.conn = Some(Conn::new(conn, ctx.transport(), now));
                    }
                }
                ctx.send(link.source, Msg::Accept { link, conn });
            }
            Msg::Accept { link, conn } => {
                let Some(end) = self.delegators.get_mut(&link.target) else {
                    return Ok(());
                };
                if matches!(end.link, LinkState::Connecting { conn: c, .. } if c == conn) {
                    end.link = LinkState::Up(Conn::new(conn, ctx.transport(), now));
                    end.delegator.handle_connected(now_ms);
                    ctx.stats.connects += 1;
                }
            }
            Msg::Chunk {
                link,
                conn,
                dir,
                offset,
                bytes,
            } => self.handle_chunk(link, conn, dir, offset, bytes, ctx)?,
            Msg::StreamAck {
                link,
                conn,
                dir,
                offset,
            } => {
                let transport = *ctx.transport();
                let stream =
                    match dir {
                        Dir::Forward => self.delegators.get_mut(&link.target).and_then(|end| {
                            match &mut end.link {
                                LinkState::Up(c) if c.id == conn => Some(&mut c.tx),
                                _ => None,
                            }
                        }),
                        Dir::Back => self
                            .sinks
                            .get_mut(&link.source)
                            .and_then(|end| end.conn.as_mut().filter(|c| c.id == conn))
                            .map(|c| &mut c.tx),
                    };
                if let Some(tx) = stream {
                    tx.on_ack(offset, &transport, now);
                }
            }
            Msg::RepairSnapshot {
                link,
                repair,
                partition,
                entries,
            } => {
                for (key, entry) in entries {
                    ctx.site
                        .apply_remote(key, entry, now_ms, ctx.checker, "a repair snapshot")?;
                }
                ctx.stats.repair_snapshots_applied += 1;
                ctx.send(
                    link.source,
                    Msg::RepairDone {
                        link,
                        repair,
                        partition,
                    },
                );
            }
            Msg::RepairDone {
                link,
                repair,
                partition,
            } => {
                if let Some(end) = self.delegators.get_mut(&link.target)
                    && end
                        .repairs
                        .get(&partition)
                        .is_some_and(|&(id, _)| id == repair)
                {
                    end.repairs.remove(&partition);
                    end.delegator.clear_repair(partition);
                    ctx.stats.repairs_done += 1;
                }
            }
            Msg::Think { .. } | Msg::Wake | Msg::Feed | Msg::Fault(_) => {}
        }
        self.pump(ctx)
    }

    fn handle_chunk(
        &mut self,
        link: LinkId,
        conn: u64,
        dir: Dir,
        offset: u64,
        bytes: Bytes,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), Violation> {
        let now_ms = ctx.now_ms();
        let broken = |detail: String| WanViolation::LinkBroken {
            link: link.to_string(),
            detail,
        };
        match dir {
            Dir::Forward => {
                let Some(end) = self.sinks.get_mut(&link.source) else {
                    return Ok(());
                };
                let Some(c) = end.conn.as_mut().filter(|c| c.id == conn) else {
                    return Ok(());
                };
                let messages =
                    c.rx.on_chunk(offset, bytes)
                        .map_err(|e| broken(format!("sink stream undecodable: {e}")))?;
                let delivered = c.rx.delivered();
                ctx.send(
                    link.source,
                    Msg::StreamAck {
                        link,
                        conn,
                        dir,
                        offset: delivered,
                    },
                );
                for message in messages {
                    match message {
                        Message::Hello(hello) => end
                            .sink
                            .handle_hello(hello, now_ms)
                            .map_err(|e| broken(format!("hello refused: {e}")))?,
                        Message::Batch(mut batch) => {
                            inject_phantom(ctx, &mut batch.records);
                            end.sink
                                .handle_batch(batch, now_ms)
                                .map_err(|e| broken(format!("batch refused: {e}")))?;
                        }
                        other => {
                            return Err(broken(format!("sink got {:?}", other.kind())).into());
                        }
                    }
                }
            }
            Dir::Back => {
                let Some(end) = self.delegators.get_mut(&link.target) else {
                    return Ok(());
                };
                let LinkState::Up(c) = &mut end.link else {
                    return Ok(());
                };
                if c.id != conn {
                    return Ok(());
                }
                let messages =
                    c.rx.on_chunk(offset, bytes)
                        .map_err(|e| broken(format!("delegator stream undecodable: {e}")))?;
                let delivered = c.rx.delivered();
                ctx.send(
                    link.target,
                    Msg::StreamAck {
                        link,
                        conn,
                        dir,
                        offset: delivered,
                    },
                );
                for message in messages {
                    match message {
                        Message::HelloAck(answer) => end
                            .delegator
                            .handle_hello_ack(answer, now_ms)
                            .map_err(|e| broken(format!("hello ack refused: {e}")))?,
                        Message::Ack(ack) => end
                            .delegator
                            .handle_ack(ack, now_ms)
                            .map_err(|e| broken(format!("ack refused: {e}")))?,
                        other => {
                            return Err(broken(format!("delegator got {:?}", other.kind())).into());
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Do everything that is due, send what the cores produced, and set the next wake-up.
    fn pump(&mut self, ctx: &mut Ctx<'_>) -> Result<(), Violation> {
        let now_ms = ctx.now_ms();
        self.feed(ctx);
        for end in self.delegators.values_mut() {
            if end.delegator.poll_timeout().is_some_and(|t| t <= now_ms) {
                end.delegator.handle_timeout(now_ms);
            }
        }
        for end in self.sinks.values_mut() {
            if end.sink.poll_timeout().is_some_and(|t| t <= now_ms) {
                end.sink.handle_timeout(now_ms);
            }
        }
        if self.apply(ctx)? {
            // Applied records are committed locally and relayed onwards.
            self.feed(ctx);
        }
        self.reopen_failed(ctx)?;
        self.drive_links(ctx);
        self.drive_repairs(ctx)?;
        self.transmit(ctx)?;
        let now = ctx.now();
        self.schedule_wake(ctx, now);
        Ok(())
    }

    /// Hand each delegator the records committed after where it resumes, per partition.
    fn feed(&mut self, ctx: &mut Ctx<'_>) {
        let now_ms = ctx.now_ms();
        for partition in ctx.site.partitions() {
            let core = ctx.site.core(partition);
            let last_seq = core.last_seq();
            for end in self.delegators.values_mut() {
                let delegator = &mut end.delegator;
                if delegator.failure().is_some() {
                    continue;
                }
                let from = delegator.resume_after(partition).unwrap_or(0);
                if from >= last_seq {
                    continue;
                }
                let records: Vec<ChangeRecord> = match core.changes_since(from) {
                    Ok(records) => records.cloned().collect(),
                    Err(truncated) => {
                        // The gateway was away longer than the log reaches back: hand in what
                        // is left; the delegator sees the gap and marks the partition.
                        ctx.stats.feeds_truncated += 1;
                        core.changes_since(truncated.oldest_retained.saturating_sub(1))
                            .map(|r| r.cloned().collect())
                            .unwrap_or_default()
                    }
                };
                let wan = records.into_iter().map(|record| WanRecord {
                    origin: record.entry.version.origin,
                    partition,
                    prev_seq: 0,
                    seq: record.seq,
                    key: record.key,
                    entry: record.entry,
                    committed_at_ms: now_ms,
                });
                match delegator.handle_records(wan, now_ms) {
                    Ok(intake) => {
                        for notice in intake.notices {
                            match notice {
                                RecordError::Gap { .. } => ctx.stats.feed_gaps += 1,
                                other => ctx.stats.record_errors.push(other.to_string()),
                            }
                        }
                        if intake.overflow.is_some() {
                            ctx.stats.overflow_drops += 1;
                        }
                    }
                    // Reopened (and fed again) by `reopen_failed`.
                    Err(StoreError::Failed { .. }) => ctx.stats.store_failures += 1,
                    Err(full @ StoreError::Full { .. }) => {
                        ctx.stats.record_errors.push(full.to_string());
                    }
                }
            }
        }
    }

    /// A delegator whose store failed stops; reopen the store (which recovers) and build a new
    /// delegator on it, as the shell does. Its connection starts over.
    fn reopen_failed(&mut self, ctx: &mut Ctx<'_>) -> Result<(), Violation> {
        let now = ctx.now();
        let failed: Vec<usize> = self
            .delegators
            .iter()
            .filter(|(_, end)| end.delegator.failure().is_some())
            .map(|(&target, _)| target)
            .collect();
        for target in &failed {
            let Some(mut end) = self.delegators.remove(target) else {
                continue;
            };
            collect_delegator_stats(&end.delegator, ctx.stats);
            // Close the failed backlog before recovering it from the disk.
            drop(end.delegator);
            end.delegator = ctx.open_delegator(*target)?;
            end.link = LinkState::Down { retry_at: now };
            end.repairs.clear();
            end.clearing_mark = None;
            ctx.stats.delegator_rebuilds += 1;
            self.delegators.insert(*target, end);
        }
        if !failed.is_empty() {
            self.feed(ctx);
        }
        Ok(())
    }

    /// Apply what the sinks deliver; true if anything was applied.
    fn apply(&mut self, ctx: &mut Ctx<'_>) -> Result<bool, Violation> {
        let now_ms = ctx.now_ms();
        let target = self.index;
        let mut any = false;
        for (&source, end) in &mut self.sinks {
            while let Some(record) = end.sink.poll_apply() {
                any = true;
                let (partition, seq) = (record.partition, record.seq);
                let nth = ctx.stats.sink_applies;
                ctx.stats.sink_applies += 1;
                let inject = ctx.config.inject;
                if let Some(Injection::ConfirmWithoutApply { from_nth }) = inject
                    && target == 0
                    && nth >= from_nth
                {
                    end.sink.handle_applied(partition, seq, now_ms);
                    continue;
                }
                ctx.checker.on_apply(target, source, partition, seq)?;
                let cause = "a sink apply";
                let key = record.key.clone();
                ctx.site.apply_remote(
                    key.clone(),
                    record.entry.clone(),
                    now_ms,
                    ctx.checker,
                    cause,
                )?;
                if inject == Some(Injection::DuplicateApply { nth }) {
                    // A sink that forgets it applied this record and applies it again.
                    ctx.checker.on_apply(target, source, partition, seq)?;
                    ctx.site
                        .apply_remote(key, record.entry, now_ms, ctx.checker, cause)?;
                }
                ctx.site.sink_cursors.insert((source, partition), seq);
                end.sink.handle_applied(partition, seq, now_ms);
            }
        }
        Ok(any)
    }

    /// Connect, retransmit, detect dead connections.
    fn drive_links(&mut self, ctx: &mut Ctx<'_>) {
        let now = ctx.now();
        let now_ms = ctx.now_ms();
        let transport = *ctx.transport();
        let index = self.index;
        for (&target, end) in &mut self.delegators {
            let link = LinkId {
                source: index,
                target,
            };
            let retry = match &mut end.link {
                LinkState::Down { retry_at } | LinkState::Connecting { retry_at, .. } => {
                    now >= *retry_at
                }
                LinkState::Up(conn) => {
                    if conn.tx.is_dead(&transport, now) {
                        end.delegator.handle_disconnected(now_ms);
                        ctx.stats.disconnects += 1;
                        true
                    } else {
                        let id = conn.id;
                        for (offset, bytes) in conn.tx.due_retransmit(&transport, now) {
                            ctx.stats.chunk_retransmits += 1;
                            let msg = Msg::Chunk {
                                link,
                                conn: id,
                                dir: Dir::Forward,
                                offset,
                                bytes,
                            };
                            ctx.send(target, msg);
                        }
                        false
                    }
                }
            };
            if retry {
                let conn = ctx.new_conn_id(link);
                end.link = LinkState::Connecting {
                    conn,
                    retry_at: now.after_micros(transport.connect_retry_us),
                };
                ctx.send(target, Msg::Connect { link, conn });
            }
        }
        for (&source, end) in &mut self.sinks {
            let link = LinkId {
                source,
                target: index,
            };
            let Some(conn) = &mut end.conn else {
                continue;
            };
            if conn.tx.is_dead(&transport, now) {
                end.conn = None;
                end.sink.handle_disconnected(now_ms);
                continue;
            }
            let id = conn.id;
            for (offset, bytes) in conn.tx.due_retransmit(&transport, now) {
                ctx.stats.chunk_retransmits += 1;
                let msg = Msg::Chunk {
                    link,
                    conn: id,
                    dir: Dir::Back,
                    offset,
                    bytes,
                };
                ctx.send(source, msg);
            }
        }
    }

    /// Resync each partition a delegator marked for repair: send the whole partition state.
    /// A target-wide mark (from the backlog: overflow drop, damage, lost tail) means every
    /// partition; it is cleared once they all are repaired.
    fn drive_repairs(&mut self, ctx: &mut Ctx<'_>) -> Result<(), Violation> {
        let now = ctx.now();
        let index = self.index;
        for (&target, end) in &mut self.delegators {
            if end.delegator.failure().is_some() {
                continue;
            }
            if let Some(generation) = end.delegator.target_repair_mark() {
                if end.clearing_mark != Some(generation) {
                    end.clearing_mark = Some(generation);
                    for partition in ctx.site.partitions() {
                        end.delegator.mark_repair(partition);
                    }
                } else if end.delegator.repair_needed().next().is_none() {
                    // Every partition repaired since the mark: clear it (false: a newer cause
                    // arrived meanwhile, and the next pass repairs again).
                    match end.delegator.clear_target_repair(generation) {
                        Ok(true) => ctx.stats.target_marks_cleared += 1,
                        Ok(false) => end.clearing_mark = None,
                        Err(_) => ctx.stats.store_failures += 1,
                    }
                }
            }
            if !matches!(end.link, LinkState::Up(_)) {
                continue;
            }
            let marked: Vec<PartitionId> = end.delegator.repair_needed().collect();
            for partition in marked {
                if end
                    .repairs
                    .get(&partition)
                    .is_some_and(|&(_, resend_at)| now < resend_at)
                {
                    continue;
                }
                *ctx.next_repair_id += 1;
                let repair = *ctx.next_repair_id;
                let entries: Vec<(Bytes, tern_conflict::Versioned)> = ctx
                    .site
                    .core(partition)
                    .snapshot_entries()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let resend_at = now.after_micros(ctx.config.repair_retry_us);
                end.repairs.insert(partition, (repair, resend_at));
                ctx.stats.repair_snapshots_sent += 1;
                let link = LinkId {
                    source: index,
                    target,
                };
                ctx.send(
                    target,
                    Msg::RepairSnapshot {
                        link,
                        repair,
                        partition,
                        entries,
                    },
                );
            }
        }
        Ok(())
    }

    /// Encode what the cores want to send into their connections' streams.
    fn transmit(&mut self, ctx: &mut Ctx<'_>) -> Result<(), Violation> {
        let now = ctx.now();
        let index = self.index;
        let transport = *ctx.transport();
        let frame_bytes_max = ctx.config.gateway_limits.frame_bytes_max;
        let encode_frame = |message: &Message, link: LinkId| {
            encode(message, frame_bytes_max).map_err(|e| WanViolation::LinkBroken {
                link: link.to_string(),
                detail: format!("cannot encode {:?}: {e}", message.kind()),
            })
        };
        for (&target, end) in &mut self.delegators {
            let link = LinkId {
                source: index,
                target,
            };
            while let Some(message) = end.delegator.poll_transmit() {
                let LinkState::Up(conn) = &mut end.link else {
                    continue;
                };
                let frame = encode_frame(&message, link)?;
                let id = conn.id;
                for (offset, bytes) in conn.tx.write(&frame, ctx.world.rng(), &transport, now) {
                    let msg = Msg::Chunk {
                        link,
                        conn: id,
                        dir: Dir::Forward,
                        offset,
                        bytes,
                    };
                    ctx.send(target, msg);
                }
            }
        }
        for (&source, end) in &mut self.sinks {
            let link = LinkId {
                source,
                target: index,
            };
            while let Some(message) = end.sink.poll_transmit() {
                let Some(conn) = &mut end.conn else {
                    continue;
                };
                let frame = encode_frame(&message, link)?;
                let id = conn.id;
                for (offset, bytes) in conn.tx.write(&frame, ctx.world.rng(), &transport, now) {
                    let msg = Msg::Chunk {
                        link,
                        conn: id,
                        dir: Dir::Back,
                        offset,
                        bytes,
                    };
                    ctx.send(source, msg);
                }
            }
        }
        Ok(())
    }

    /// Set a Wake timer for the earliest thing that will be due, unless one is already set
    /// for then or earlier.
    fn schedule_wake(&mut self, ctx: &mut Ctx<'_>, now: SimTime) {
        let now_ms = ctx.now_ms();
        let transport = *ctx.transport();
        let local_to_global = |deadline_ms: u64| {
            // Local deadlines map to global time through the host's (drifting) clock; firing
            // slightly early only means another wake-up.
            now.after_micros(deadline_ms.saturating_sub(now_ms).max(1) * 1000)
        };
        let mut next = SimTime::NEVER;
        for end in self.delegators.values() {
            if let Some(t) = end.delegator.poll_timeout() {
                next = next.min(local_to_global(t));
            }
            let link_due = match &end.link {
                LinkState::Down { retry_at } | LinkState::Connecting { retry_at, .. } => {
                    Some(*retry_at)
                }
                LinkState::Up(conn) => conn.tx.deadline(&transport),
            };
            if let Some(t) = link_due {
                next = next.min(t);
            }
            if end.delegator.repair_needed().next().is_some()
                || end.delegator.target_repair_mark().is_some()
            {
                let resend = end.repairs.values().map(|&(_, at)| at).min();
                next = next.min(resend.unwrap_or(now.after_micros(1_000)));
            }
        }
        for end in self.sinks.values() {
            if let Some(t) = end.sink.poll_timeout() {
                next = next.min(local_to_global(t));
            }
            if let Some(t) = end.conn.as_ref().and_then(|c| c.tx.deadline(&transport)) {
                next = next.min(t);
            }
        }
        if next == SimTime::NEVER {
            return;
        }
        let next = next.max(now.after_micros(100));
        if next < self.wake_at || self.wake_at <= now {
            self.wake_at = next;
            let host = ctx.host();
            ctx.world.set_timer(host, next.micros_since(now), Msg::Wake);
        }
    }

    /// Nothing left to ship, apply or repair, and every committed record was fed.
    pub fn drained(&self, site: &Site) -> Option<String> {
        for (&target, end) in &self.delegators {
            let d = &end.delegator;
            if d.backlog_records() > 0 {
                return Some(format!(
                    "site {} → {target}: {} records unacknowledged ({:?})",
                    self.index,
                    d.backlog_records(),
                    end.link_state()
                ));
            }
            if d.repair_needed().next().is_some() || d.target_repair_mark().is_some() {
                return Some(format!(
                    "site {} → {target}: repair pending for {:?} (target-wide mark {:?})",
                    self.index,
                    d.repair_needed().collect::<Vec<_>>(),
                    d.target_repair_mark()
                ));
            }
            for partition in site.partitions() {
                let fed = d.resume_after(partition).unwrap_or(0);
                if fed < site.core(partition).last_seq() {
                    return Some(format!(
                        "site {} → {target} {partition}: not fed past seq {fed}",
                        self.index
                    ));
                }
            }
        }
        for (&source, end) in &self.sinks {
            if end.sink.apply_queue_records() > 0 {
                return Some(format!(
                    "site {} ← {source}: {} records waiting to apply",
                    self.index,
                    end.sink.apply_queue_records()
                ));
            }
        }
        None
    }

    /// Unacknowledged plus not-yet-fed records, for the resume bound.
    pub fn pending_records(&self, site: &Site) -> u64 {
        self.delegators
            .values()
            .map(|end| {
                let d = &end.delegator;
                let unfed: u64 = site
                    .partitions()
                    .map(|p| {
                        site.core(p)
                            .last_seq()
                            .saturating_sub(d.resume_after(p).unwrap_or(0))
                    })
                    .sum();
                d.backlog_records() + unfed
            })
            .sum()
    }

    /// Fold this gateway's core counters into the run's totals (before it crashes or at the
    /// end of the run).
    pub fn collect_stats(&self, stats: &mut WanStats) {
        for end in self.delegators.values() {
            collect_delegator_stats(&end.delegator, stats);
        }
        for end in self.sinks.values() {
            let s = end.sink.stats();
            stats.sink_duplicates += s.duplicates_total;
            stats.sink_gap_records += s.gap_records_total;
        }
    }
}

fn collect_delegator_stats(delegator: &DurableDelegator, stats: &mut WanStats) {
    let s = delegator.stats();
    stats.resends += s.resends_total;
    stats.repairs_marked += s.repairs_marked_total;
    stats.records_shipped += s.records_shipped_total;
    stats.records_filtered += s.records_filtered_total;
    stats.holes += s.holes_total;
}

impl DelegatorEnd {
    fn link_state(&self) -> &'static str {
        match self.link {
            LinkState::Down { .. } => "down",
            LinkState::Connecting { .. } => "connecting",
            LinkState::Up(_) => "up",
        }
    }
}

/// Injection: the first string record of the chosen batch gets a value nobody wrote.
fn inject_phantom(ctx: &mut Ctx<'_>, records: &mut [WanRecord]) {
    if let Some(Injection::PhantomValue { nth }) = ctx.config.inject {
        for record in records {
            if matches!(record.entry.value, Value::Bytes(_)) {
                let n = ctx.stats.string_records_received;
                ctx.stats.string_records_received += 1;
                if n == nth {
                    record.entry.value = Value::Bytes(Bytes::from_static(b"phantom"));
                }
            }
        }
    }
}
