//! One site's WAN gateway: the real [`SiteGateway`] core (log generations, wipe detection,
//! one apply in flight per (source, partition), the Merkle repair driver, backlog failure and
//! reopen) driven the way `tern_gateway::host` drives it, with the simulated site and WAN in
//! place of the router and QUIC:
//!
//! - the feed reads each partition's change log a page at a time (`Command::WanChanges`) and
//!   hands every page to [`SiteGateway::handle_feed_page`], which says where to read next;
//! - apply requests, snapshot loads (`Command::WanDump` pages) and repair pushes run against
//!   the site's partitions at once and are answered to the core;
//! - transmits are encoded by the real wire encoder into the link's connection
//!   ([`super::transport`]); links are dialed, accepted, detected dead and closed here and
//!   reported to the core as up/down;
//! - persistence is [`SimSiteStorage`]: backlogs on fault-injecting disks that outlive the
//!   gateway, cursors and generations in a [`SavedState`] the scenario keeps across crashes.
//!
//! The gateway runs on its own host so it can crash alone; its volatile state dies with it.
use super::msg::{Dir, LinkId, Msg};
use super::site::Site;
use super::storage::{SavedState, SimSiteStorage};
use super::transport::{Conn, TransportConfig};
use super::{Config, Injection, WanStats};
use crate::check::Violation;
use crate::check::convergence::{WanChecker, WanViolation};
use crate::net::HostId;
use crate::time::SimTime;
use crate::world::World;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::Arc;
use tern_conflict::{KeyspaceResolvers, Value};
use tern_gateway::backlog::MemStorage;
use tern_gateway::site::generations::{generation_of, seq_of};
use tern_gateway::site::{
    AdminCommand, ApplyRequest, LinkRef, RepairLoad, RepairPush, Side, SiteGateway,
    SiteGatewayConfig, Transmit,
};
use tern_gateway::wire::{Message, WanRecord, encode};
use tern_node::admin::WanTargetSpec;
use tern_node::core::{CommandResult, PartitionId, Response};

/// Feed pages one partition reads per pass (the rest waits for the next event).
const FEED_PAGES_PER_PASS_MAX: usize = 64;

/// The name site `index` has on the WAN (certificate identity, peer table, status).
pub fn site_name(index: usize) -> String {
    format!("site{index}")
}

fn site_index(name: &str) -> Option<usize> {
    name.strip_prefix("site")?.parse().ok()
}

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
    pub stats: &'a mut WanStats,
    /// Per (source, target) site pair, the disk of the source's backlog for the target.
    pub disks: &'a BTreeMap<(usize, usize), MemStorage>,
    pub resolvers: &'a Arc<KeyspaceResolvers>,
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
}

/// The dialing end of a link (our delegator's side).
#[derive(Debug)]
enum LinkState {
    Down { retry_at: SimTime },
    Connecting { conn: u64, retry_at: SimTime },
    Up(Conn),
}

impl LinkState {
    fn name(&self) -> &'static str {
        match self {
            LinkState::Down { .. } => "down",
            LinkState::Connecting { .. } => "connecting",
            LinkState::Up(_) => "up",
        }
    }
}

pub struct Gateway {
    index: usize,
    core: SiteGateway<SimSiteStorage>,
    /// Per target site, the link we dial.
    dialed: BTreeMap<usize, LinkState>,
    /// Per source site, the connection it dialed to us, if any.
    accepted: BTreeMap<usize, Conn>,
    /// When the next keep-alive goes on the links we dialed.
    ping_at: SimTime,
    /// Per partition, the seq after which the feed reads next.
    feed_after: Vec<u64>,
    /// Per partition, whether its first page went to the core.
    feed_primed: Vec<bool>,
    feed_pending: bool,
    /// Per target, the target-wide repair mark last seen (to count marks cleared).
    target_marks: BTreeMap<usize, Option<u64>>,
    /// The earliest Wake timer outstanding.
    wake_at: SimTime,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("index", &self.index)
            .field("core", &self.core)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// A gateway starting (first boot or restart) next to `ctx.site`, with what its previous
    /// incarnation saved.
    pub fn start(ctx: &mut Ctx<'_>, saved: SavedState) -> Result<Self, Violation> {
        let index = ctx.site.index;
        let config = ctx.config;
        let site_ids = config.site_ids();
        let now_ms = ctx.now_ms();
        let generations = saved.generations.clone();
        let storage = SimSiteStorage::new(ctx.disks, index, config.backlog.clone(), saved);
        let core_config = SiteGatewayConfig {
            site: site_name(index),
            site_id: site_ids[index],
            partition_count: u16::try_from(config.partitions).unwrap_or(u16::MAX),
            limits: config.gateway_limits.clone(),
            resolvers: Arc::clone(ctx.resolvers),
            tombstone_retention_ms: config.limits.tombstone_retention_ms,
            apply_records_max: config.apply_records_max,
            apply_bytes_max: config.apply_bytes_max,
            // Repairs run only when something is marked: a quiet run must drain.
            repair_interval_ms: 0,
            cursor_persist_ms: config.cursor_persist_ms,
        };
        let mut core = SiteGateway::new(core_config, storage, generations, now_ms);
        let mut dialed = BTreeMap::new();
        for (other, id) in site_ids.iter().enumerate() {
            if other == index {
                continue;
            }
            let spec = WanTargetSpec {
                site: site_name(other),
                site_id: id.0,
                addr: format!("gw-{other}.sim:7400"),
            };
            core.handle_admin(AdminCommand::AddTarget(spec), now_ms)
                .map_err(|e| WanViolation::LinkBroken {
                    link: LinkId {
                        source: index,
                        target: other,
                    }
                    .to_string(),
                    detail: format!("adding the peer failed: {e}"),
                })?;
            dialed.insert(
                other,
                LinkState::Down {
                    retry_at: ctx.now(),
                },
            );
        }
        // As the host: the feeds start where the delegators need records (a restarted log is
        // seen at the first read); the rewind asked by adding the peers predates them.
        core.poll_feed_rewind();
        let feed_after = ctx.site.partitions().map(|p| core.feed_start(p)).collect();
        let mut gateway = Self {
            index,
            core,
            dialed,
            accepted: BTreeMap::new(),
            ping_at: SimTime::ZERO,
            feed_after,
            feed_primed: ctx.site.partitions().map(|_| false).collect(),
            feed_pending: false,
            target_marks: BTreeMap::new(),
            wake_at: SimTime::NEVER,
        };
        gateway.pump(ctx)?;
        Ok(gateway)
    }

    /// What survives this gateway if it dies now.
    pub fn saved(&self) -> &SavedState {
        self.core.storage().saved()
    }

    /// A clean shutdown: cursors saved, backlogs synced.
    pub fn stop(&mut self) {
        self.core.stop();
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
                let fresh = match self.accepted.get(&link.source) {
                    Some(current) if conn < current.id => return Ok(()),
                    Some(current) => conn > current.id,
                    None => true,
                };
                if fresh {
                    self.accepted
                        .insert(link.source, Conn::new(conn, ctx.transport(), now));
                    self.core.handle_link_up(
                        Side::FromSource,
                        &site_name(link.source),
                        conn,
                        now_ms,
                    );
                }
                ctx.send(link.source, Msg::Accept { link, conn });
            }
            Msg::Accept { link, conn } => {
                if let Some(state) = self.dialed.get_mut(&link.target)
                    && matches!(state, LinkState::Connecting { conn: c, .. } if *c == conn)
                {
                    *state = LinkState::Up(Conn::new(conn, ctx.transport(), now));
                    self.core
                        .handle_link_up(Side::ToTarget, &site_name(link.target), conn, now_ms);
                    ctx.stats.connects += 1;
                }
            }
            Msg::Close { link, conn } => self.on_close(link, conn, ctx),
            Msg::Ping { link, conn } => {
                if !self
                    .accepted
                    .get(&link.source)
                    .is_some_and(|c| c.id == conn)
                {
                    ctx.send(link.source, Msg::Close { link, conn });
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
                let stream = match dir {
                    Dir::Forward => match self.dialed.get_mut(&link.target) {
                        Some(LinkState::Up(c)) if c.id == conn => Some(&mut c.tx),
                        _ => None,
                    },
                    Dir::Back => self
                        .accepted
                        .get_mut(&link.source)
                        .filter(|c| c.id == conn)
                        .map(|c| &mut c.tx),
                };
                if let Some(tx) = stream {
                    tx.on_ack(offset, &transport, now);
                }
            }
            Msg::Think { .. } | Msg::Wake | Msg::Feed | Msg::Fault(_) | Msg::RestoreCheck => {}
        }
        self.pump(ctx)
    }

    /// The peer closed connection `conn` of `link` (the core asked it to).
    fn on_close(&mut self, link: LinkId, conn: u64, ctx: &mut Ctx<'_>) {
        let now_ms = ctx.now_ms();
        if link.target == self.index {
            if self
                .accepted
                .get(&link.source)
                .is_some_and(|c| c.id == conn)
            {
                self.accepted.remove(&link.source);
                self.core
                    .handle_link_down(Side::FromSource, &site_name(link.source), conn, now_ms);
            }
        } else if let Some(state) = self.dialed.get_mut(&link.target) {
            let current = match state {
                LinkState::Up(c) => c.id == conn,
                LinkState::Connecting { conn: c, .. } => *c == conn,
                LinkState::Down { .. } => false,
            };
            if current {
                *state = LinkState::Down {
                    retry_at: ctx.now(),
                };
                self.core
                    .handle_link_down(Side::ToTarget, &site_name(link.target), conn, now_ms);
                ctx.stats.disconnects += 1;
            }
        }
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
        let (peer, side, c) = match dir {
            // We are the target: the source's delegator talks to our sink.
            Dir::Forward => {
                let Some(c) = self.accepted.get_mut(&link.source).filter(|c| c.id == conn) else {
                    // Not a connection we know (we restarted since): reset it.
                    ctx.send(link.source, Msg::Close { link, conn });
                    return Ok(());
                };
                (link.source, Side::FromSource, c)
            }
            Dir::Back => {
                let Some(LinkState::Up(c)) = self.dialed.get_mut(&link.target) else {
                    return Ok(());
                };
                if c.id != conn {
                    return Ok(());
                }
                (link.target, Side::ToTarget, c)
            }
        };
        let messages =
            c.rx.on_chunk(offset, bytes)
                .map_err(|e| broken(format!("stream undecodable: {e}")))?;
        let delivered = c.rx.delivered();
        ctx.send(
            peer,
            Msg::StreamAck {
                link,
                conn,
                dir,
                offset: delivered,
            },
        );
        let name = site_name(peer);
        for mut message in messages {
            if let Message::Batch(batch) = &mut message {
                inject_phantom(ctx, &mut batch.records);
            }
            self.core.handle_message(side, &name, conn, message, now_ms);
        }
        Ok(())
    }

    /// Run what is due, feed, carry out the core's requests, and set the next wake-up.
    fn pump(&mut self, ctx: &mut Ctx<'_>) -> Result<(), Violation> {
        let now_ms = ctx.now_ms();
        if self.core.next_deadline_ms() <= now_ms {
            self.core.handle_timers(now_ms);
        }
        self.drive_links(ctx);
        loop {
            self.feed(ctx);
            let worked = self.run_requests(ctx)?;
            self.transmit(ctx)?;
            // Applied records are committed locally and relayed onwards: feed again.
            if !worked {
                break;
            }
        }
        self.note_target_marks(ctx);
        let now = ctx.now();
        self.schedule_wake(ctx, now);
        Ok(())
    }

    /// Offer every partition's new change records to the core, from where it asked.
    fn feed(&mut self, ctx: &mut Ctx<'_>) {
        let now_ms = ctx.now_ms();
        let (records_max, bytes_max) = (ctx.config.feed_records_max, ctx.config.feed_bytes_max);
        for partition in ctx.site.partitions() {
            let p = usize::from(partition.0);
            for _ in 0..FEED_PAGES_PER_PASS_MAX {
                let after = self.feed_after[p];
                let page = ctx
                    .site
                    .wan_changes(partition, after, records_max, bytes_max);
                // The log went back below what was read: the partition lost its memory.
                let restarted = page.last_seq < after;
                if self.feed_primed[p] && !restarted && page.records.is_empty() {
                    break;
                }
                if page.records.first().is_some_and(|r| r.seq > after + 1) {
                    ctx.stats.feeds_truncated += 1;
                }
                self.feed_primed[p] = true;
                let generation = self.core.generation(partition);
                let next = self.core.handle_feed_page(partition, after, &page, now_ms);
                self.feed_after[p] = next;
                if self.core.generation(partition) > generation {
                    ctx.stats.log_restarts += 1;
                }
                // No progress: nothing was taken; the next pass offers it again.
                if !(next > after || (restarted && next == 0)) {
                    break;
                }
            }
        }
    }

    /// Carry out the core's requests against the site; true if any ran.
    fn run_requests(&mut self, ctx: &mut Ctx<'_>) -> Result<bool, Violation> {
        let mut worked = false;
        while let Some(close) = self.core.poll_close_link() {
            self.close(close, ctx);
        }
        while let Some(apply) = self.core.poll_apply() {
            self.apply(apply, ctx)?;
            worked = true;
        }
        while let Some(RepairLoad { token, partition }) = self.core.poll_repair_load() {
            let (entries_max, bytes_max) = (ctx.config.dump_entries_max, ctx.config.dump_bytes_max);
            let entries = ctx.site.dump(partition, entries_max, bytes_max);
            ctx.stats.repair_loads += 1;
            let now_ms = ctx.now_ms();
            self.core.handle_repair_loaded(token, entries, now_ms);
            worked = true;
        }
        while let Some(RepairPush { partition, entries }) = self.core.poll_repair_push() {
            let now_ms = ctx.now_ms();
            let mut results = Vec::with_capacity(entries.len());
            for (key, entry) in &entries {
                let applied = ctx.site.apply_remote(
                    key.clone(),
                    entry.clone(),
                    now_ms,
                    ctx.checker,
                    "a repair push",
                )?;
                results.push(applied_response(&applied));
            }
            ctx.stats.repair_entries_pushed += entries.len() as u64;
            self.core
                .handle_repair_pushed(partition, &entries, &results, now_ms);
            worked = true;
        }
        if self.core.poll_feed_rewind() {
            self.feed_after.iter_mut().for_each(|after| *after = 0);
        }
        Ok(worked)
    }

    /// Reconcile an apply request's records into the site (with the injections) and answer.
    fn apply(&mut self, request: ApplyRequest, ctx: &mut Ctx<'_>) -> Result<(), Violation> {
        let now_ms = ctx.now_ms();
        let target = self.index;
        let Some(source) = site_index(&request.source) else {
            return Err(WanViolation::LinkBroken {
                link: request.source.clone(),
                detail: "an apply request from an unknown site".into(),
            }
            .into());
        };
        let cause = "a sink apply";
        let mut results: Vec<CommandResult> = Vec::with_capacity(request.records.len());
        for record in &request.records {
            let (partition, seq) = (record.partition, record.seq);
            let nth = ctx.stats.sink_applies;
            ctx.stats.sink_applies += 1;
            let inject = ctx.config.inject;
            if let Some(Injection::ConfirmWithoutApply { from_nth }) = inject
                && target == 0
                && nth >= from_nth
            {
                results.push(Ok(Response::WanApplied {
                    changed: false,
                    conflict: false,
                    clock_rejected: false,
                }));
                continue;
            }
            ctx.checker.on_apply(target, source, partition, seq)?;
            let applied = ctx.site.apply_remote(
                record.key.clone(),
                record.entry.clone(),
                now_ms,
                ctx.checker,
                cause,
            )?;
            if inject == Some(Injection::DuplicateApply { nth }) {
                // A sink that forgets it applied this record and applies it again.
                ctx.checker.on_apply(target, source, partition, seq)?;
                ctx.site.apply_remote(
                    record.key.clone(),
                    record.entry.clone(),
                    now_ms,
                    ctx.checker,
                    cause,
                )?;
            }
            results.push(applied_response(&applied));
        }
        self.core.handle_applied(
            &request.source,
            request.partition,
            &request.records,
            &results,
            now_ms,
        );
        Ok(())
    }

    /// The core wants a connection closed: drop our end and tell the peer.
    fn close(&mut self, close: LinkRef, ctx: &mut Ctx<'_>) {
        let Some(peer) = site_index(&close.site) else {
            return;
        };
        let now_ms = ctx.now_ms();
        let link = match close.side {
            Side::FromSource => {
                if !self.accepted.get(&peer).is_some_and(|c| c.id == close.conn) {
                    return;
                }
                self.accepted.remove(&peer);
                LinkId {
                    source: peer,
                    target: self.index,
                }
            }
            Side::ToTarget => {
                let Some(state) = self.dialed.get_mut(&peer) else {
                    return;
                };
                if !matches!(state, LinkState::Up(c) if c.id == close.conn) {
                    return;
                }
                *state = LinkState::Down {
                    retry_at: ctx.now(),
                };
                LinkId {
                    source: self.index,
                    target: peer,
                }
            }
        };
        ctx.stats.links_closed += 1;
        self.core
            .handle_link_down(close.side, &close.site, close.conn, now_ms);
        ctx.send(
            peer,
            Msg::Close {
                link,
                conn: close.conn,
            },
        );
    }

    /// Connect, retransmit, detect dead connections.
    fn drive_links(&mut self, ctx: &mut Ctx<'_>) {
        let now = ctx.now();
        let now_ms = ctx.now_ms();
        let transport = *ctx.transport();
        let index = self.index;
        for (&target, state) in &mut self.dialed {
            let link = LinkId {
                source: index,
                target,
            };
            let retry = match state {
                LinkState::Down { retry_at } | LinkState::Connecting { retry_at, .. } => {
                    now >= *retry_at
                }
                LinkState::Up(conn) => {
                    if conn.tx.is_dead(&transport, now) {
                        self.core.handle_link_down(
                            Side::ToTarget,
                            &site_name(target),
                            conn.id,
                            now_ms,
                        );
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
                *state = LinkState::Connecting {
                    conn,
                    retry_at: now.after_micros(transport.connect_retry_us),
                };
                ctx.send(target, Msg::Connect { link, conn });
            }
        }
        if now >= self.ping_at {
            self.ping_at = now.after_micros(transport.keepalive_us);
            for (&target, state) in &self.dialed {
                if let LinkState::Up(conn) = state {
                    let link = LinkId {
                        source: index,
                        target,
                    };
                    ctx.send(
                        target,
                        Msg::Ping {
                            link,
                            conn: conn.id,
                        },
                    );
                }
            }
        }
        let mut dead = Vec::new();
        for (&source, conn) in &mut self.accepted {
            let link = LinkId {
                source,
                target: index,
            };
            if conn.tx.is_dead(&transport, now) {
                dead.push((source, conn.id));
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
        for (source, conn) in dead {
            self.accepted.remove(&source);
            self.core
                .handle_link_down(Side::FromSource, &site_name(source), conn, now_ms);
        }
    }

    /// Encode what the core wants sent into its connections' streams.
    fn transmit(&mut self, ctx: &mut Ctx<'_>) -> Result<(), Violation> {
        let now = ctx.now();
        let transport = *ctx.transport();
        let frame_bytes_max = ctx.config.gateway_limits.frame_bytes_max;
        while let Some(Transmit { link, messages }) = self.core.poll_transmit() {
            let Some(peer) = site_index(&link.site) else {
                continue;
            };
            let (id, dir, conn) = match link.side {
                Side::ToTarget => {
                    let Some(LinkState::Up(conn)) = self.dialed.get_mut(&peer) else {
                        continue;
                    };
                    let id = LinkId {
                        source: self.index,
                        target: peer,
                    };
                    (id, Dir::Forward, conn)
                }
                Side::FromSource => {
                    let Some(conn) = self.accepted.get_mut(&peer) else {
                        continue;
                    };
                    let id = LinkId {
                        source: peer,
                        target: self.index,
                    };
                    (id, Dir::Back, conn)
                }
            };
            if conn.id != link.conn {
                continue;
            }
            for message in &messages {
                if is_repair(message) {
                    ctx.stats.repair_messages += 1;
                }
                let frame =
                    encode(message, frame_bytes_max).map_err(|e| WanViolation::LinkBroken {
                        link: id.to_string(),
                        detail: format!("cannot encode {:?}: {e}", message.kind()),
                    })?;
                for (offset, bytes) in conn.tx.write(&frame, ctx.world.rng(), &transport, now) {
                    let msg = Msg::Chunk {
                        link: id,
                        conn: conn.id,
                        dir,
                        offset,
                        bytes,
                    };
                    let (from, to) = (ctx.host(), ctx.gateway_hosts[peer]);
                    ctx.world.send(from, to, msg);
                }
            }
        }
        Ok(())
    }

    /// Count target-wide repair marks that went away (every partition repaired since).
    fn note_target_marks(&mut self, ctx: &mut Ctx<'_>) {
        for &target in self.dialed.keys() {
            let mark = self
                .core
                .delegator(&site_name(target))
                .and_then(|d| d.target_repair_mark());
            let before = self.target_marks.insert(target, mark).flatten();
            if before.is_some() && mark != before {
                ctx.stats.target_marks_cleared += 1;
            }
        }
    }

    /// Set a Wake timer for the earliest thing that will be due, unless one is already set
    /// for then or earlier.
    fn schedule_wake(&mut self, ctx: &mut Ctx<'_>, now: SimTime) {
        let now_ms = ctx.now_ms();
        let transport = *ctx.transport();
        // Local deadlines map to global time through the host's (drifting) clock; firing
        // slightly early only means another wake-up.
        let deadline = self.core.next_deadline_ms();
        let mut next = now.after_micros(deadline.saturating_sub(now_ms).max(1) * 1000);
        if self.dialed.values().any(|s| matches!(s, LinkState::Up(_))) {
            next = next.min(self.ping_at);
        }
        for state in self.dialed.values() {
            let link_due = match state {
                LinkState::Down { retry_at } | LinkState::Connecting { retry_at, .. } => {
                    Some(*retry_at)
                }
                LinkState::Up(conn) => conn.tx.deadline(&transport),
            };
            if let Some(t) = link_due {
                next = next.min(t);
            }
        }
        for conn in self.accepted.values() {
            if let Some(t) = conn.tx.deadline(&transport) {
                next = next.min(t);
            }
        }
        let next = next.max(now.after_micros(100));
        if next < self.wake_at || self.wake_at <= now {
            self.wake_at = next;
            let host = ctx.host();
            ctx.world.set_timer(host, next.micros_since(now), Msg::Wake);
        }
    }

    /// Why this gateway is not done yet: records to ship, apply or feed, repairs to run.
    pub fn drained(&self, site: &Site) -> Option<String> {
        if let Some(detail) = self.outward_pending(site) {
            return Some(detail);
        }
        for &source in self.dialed.keys() {
            let name = site_name(source);
            let queued = self.core.sink(&name).map_or(0, |s| s.apply_queue_records())
                + self.core.apply_backlog(&name);
            if queued > 0 {
                return Some(format!(
                    "site {} ← {source}: {queued} records waiting to apply",
                    self.index
                ));
            }
        }
        // Sessions under way (the delegators' marks were checked above); last because it
        // builds the whole status.
        for target in self.core.status().targets {
            if !target.repairing_partitions.is_empty() {
                return Some(format!(
                    "site {} → {}: repairs under way for partitions {:?}",
                    self.index, target.site, target.repairing_partitions
                ));
            }
        }
        None
    }

    /// Why not every record of the site's change logs is fed, shipped and acknowledged by
    /// every target, with no repair pending, if so.
    fn outward_pending(&self, site: &Site) -> Option<String> {
        for (&target, state) in &self.dialed {
            let Some(d) = self.core.delegator(&site_name(target)) else {
                continue;
            };
            if let Some(failure) = d.failure() {
                return Some(format!(
                    "site {} → {target}: store failed: {failure}",
                    self.index
                ));
            }
            if d.backlog_records() > 0 {
                return Some(format!(
                    "site {} → {target}: {} records unacknowledged (link {})",
                    self.index,
                    d.backlog_records(),
                    state.name()
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
                let unfed = self.unfed(site, partition, d.resume_after(partition));
                if unfed > 0 {
                    return Some(format!(
                        "site {} → {target} {partition}: {unfed} records not fed",
                        self.index
                    ));
                }
            }
        }
        None
    }

    /// Records of `partition`'s log after what a delegator resuming after `resume` holds.
    fn unfed(&self, site: &Site, partition: PartitionId, resume: Option<u64>) -> u64 {
        let last = site.core(partition).last_seq();
        let fed = match resume {
            Some(w) if generation_of(w) >= self.core.generation(partition) => seq_of(w),
            _ => 0,
        };
        last.saturating_sub(fed)
    }

    /// Unacknowledged plus not-yet-fed records, for the resume bound.
    pub fn pending_records(&self, site: &Site) -> u64 {
        self.dialed
            .keys()
            .filter_map(|&target| self.core.delegator(&site_name(target)))
            .map(|d| {
                let unfed: u64 = site
                    .partitions()
                    .map(|p| self.unfed(site, p, d.resume_after(p)))
                    .sum();
                d.backlog_records() + unfed
            })
            .sum()
    }

    /// Fold this gateway's counters into the run's totals (before it crashes or at the end of
    /// the run).
    pub fn collect_stats(&self, stats: &mut WanStats) {
        for &peer in self.dialed.keys() {
            let name = site_name(peer);
            if let Some(d) = self.core.delegator(&name) {
                let s = d.stats();
                stats.resends += s.resends_total;
                stats.repairs_marked += s.repairs_marked_total;
                stats.records_shipped += s.records_shipped_total;
                stats.records_filtered += s.records_filtered_total;
                stats.holes += s.holes_total;
                stats.feed_gaps += s.gaps_total;
                stats.overflow_drops += s.overflow_drops_total;
            }
            if let Some(sink) = self.core.sink(&name) {
                let s = sink.stats();
                stats.sink_duplicates += s.duplicates_total;
                stats.sink_gap_records += s.gap_records_total;
            }
        }
        for target in self.core.status().targets {
            stats.repairs_done += target.repairs_total;
        }
        self.core.storage().collect_stats(stats);
    }
}

/// The answer a `WanApply` would give for what the partition did.
fn applied_response(applied: &tern_node::core::RemoteApplied) -> CommandResult {
    Ok(Response::WanApplied {
        changed: applied.seq.is_some(),
        conflict: applied.is_conflict(),
        clock_rejected: applied.clock.is_err(),
    })
}

fn is_repair(message: &Message) -> bool {
    matches!(
        message,
        Message::DigestRequest(_)
            | Message::DigestReply(_)
            | Message::RangeRequest(_)
            | Message::RangeEntries(_)
    )
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
