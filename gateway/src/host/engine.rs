//! The engine: one task owning every delegator (one per target site) and sink (one per source
//! site), fed by events from the feed, the links, the apply tasks and operators, and woken by
//! the cores' own deadlines. Everything protocol-shaped happens in the sans-IO cores; this
//! file only moves their inputs and outputs.
use super::apply::spawn_apply;
use super::cursors;
use super::generations::{Generations, generation_of, seq_of, wan_seq};
use super::lag::LagStats;
use super::limits::{HELLO_HOLD_MS_MAX, NON_BYTES_VALUE_BYTES, STATUS_PUBLISH_MS};
use super::links::{ConnIds, LinkOut, Side, spawn_dialer};
use super::repair::{DumpEntries, LoadOwner, RepairShared, SourceRepair, TargetRepair};
use crate::backlog::{BacklogConfig, FsStorage};
use crate::delegator::StoreError;
use crate::limits::GatewayLimits;
use crate::net::WanEndpoint;
use crate::wire::{Message, WanRecord};
use crate::{BacklogStore, Delegator, Sink};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use tern_conflict::{KeyspaceResolvers, SiteId, Versioned};
use tern_node::admin::{
    WanAdminError, WanAdminRequest, WanHub, WanSourceStatus, WanStatus, WanTargetSpec,
    WanTargetStatus,
};
use tern_node::config::WanConfig;
use tern_node::core::{ChangeRecord, CommandResult, PartitionId, Response, WanChangesPage};
use tern_node::shell::Router;
use tern_node::transport::PeerAddr;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub type DurableDelegator = Delegator<BacklogStore<FsStorage>>;

/// Inputs of the engine.
pub enum Event {
    /// Committed records of `partition` read after `asked_after`; the reply says where the
    /// feed reads next.
    Feed {
        partition: PartitionId,
        asked_after: u64,
        page: WanChangesPage,
        /// The log was found behind `asked_after`: the partition lost its memory.
        restarted: bool,
        reply: oneshot::Sender<u64>,
    },
    LinkUp {
        side: Side,
        site: String,
        conn: u64,
        out: LinkOut,
    },
    LinkDown {
        side: Side,
        site: String,
        conn: u64,
    },
    Received {
        side: Side,
        site: String,
        conn: u64,
        message: Message,
    },
    /// An apply request finished: `results[i]` is the answer for `records[i]`.
    Applied {
        source: String,
        partition: PartitionId,
        records: Vec<WanRecord>,
        results: Vec<CommandResult>,
    },
    /// A repair snapshot load finished (see `repair.rs`).
    RepairLoaded {
        token: u64,
        result: Result<DumpEntries, String>,
    },
    /// A repair push (WanApply of entries a session brought) finished.
    RepairPushed {
        partition: PartitionId,
        entries: Vec<(Bytes, Versioned)>,
        results: Vec<CommandResult>,
    },
    Admin(WanAdminRequest),
    Shutdown(oneshot::Sender<()>),
}

struct Target {
    site_id: SiteId,
    addr: PeerAddr,
    delegator: DurableDelegator,
    link: Option<(u64, LinkOut)>,
    dialer: JoinHandle<()>,
    overflows_total: u64,
    /// Why the delegator's store failed last, kept until a reopen succeeds.
    failure: Option<String>,
    /// Anti-entropy sessions this site runs against the target.
    repair: TargetRepair,
}

struct Source {
    site_id: SiteId,
    sink: Sink,
    link: Option<(u64, LinkOut)>,
    /// Partitions with an apply request in flight (one at a time keeps per-partition order).
    inflight: BTreeSet<PartitionId>,
    pending: BTreeMap<PartitionId, VecDeque<WanRecord>>,
    applied_total: u64,
    apply_errors_total: u64,
    conflicts: BTreeMap<String, u64>,
    lag: LagStats,
    cursors_dirty: bool,
    /// Answers the anti-entropy sessions the source runs against us.
    repair: SourceRepair,
}

pub struct Engine {
    pub site: String,
    pub site_id: SiteId,
    pub config: WanConfig,
    pub limits: GatewayLimits,
    pub backlog: BacklogConfig,
    pub router: Router,
    pub hub: WanHub,
    pub resolvers: Arc<KeyspaceResolvers>,
    pub endpoint: WanEndpoint,
    pub ids: ConnIds,
    pub events: mpsc::UnboundedSender<Event>,
    targets: BTreeMap<String, Target>,
    sources: BTreeMap<String, Source>,
    repair: RepairShared,
    next_persist_ms: u64,
    next_publish_ms: u64,
    /// Set by the host once the feeds exist: a new target makes them re-read from the start.
    pub feed_rewind: Option<std::sync::Arc<super::feed::FeedRewind>>,
    /// Per partition, the log generation in the high bits of every WAN seq shipped.
    generations: Generations,
    /// Partitions whose first feed page arrived (so we know whether their log is empty).
    primed: BTreeSet<PartitionId>,
    partition_count: usize,
    /// Hellos from sources waiting until every partition is primed: the sink's cursors must
    /// be checked against the local data (a wiped partition's cursors are reset) before a
    /// `HelloAck` reports them.
    held_hellos: Vec<(String, u64, crate::wire::Hello)>,
    /// Hellos are held at most until then: a partition without a primary (it may wait for an
    /// operator) must not stop the WAN for every other partition. One primed later is still
    /// checked, and a wiped one then closes the source links so the sources greet again.
    hellos_held_until_ms: u64,
}

/// Directory of the durable backlog towards `site`.
pub fn backlog_dir(data_dir: &std::path::Path, site: &str) -> PathBuf {
    data_dir.join("backlog").join(site)
}

/// Whether `conn` is the link the engine uses now (events of a replaced link are stale).
fn is_current(link: &Option<(u64, LinkOut)>, conn: u64) -> bool {
    link.as_ref().is_some_and(|(c, _)| *c == conn)
}

/// Sends `messages` on `link` if it is up (a link that went down fails its sessions).
fn send(link: &Option<(u64, LinkOut)>, messages: Vec<Message>) {
    if let (Some((_, out)), false) = (link, messages.is_empty()) {
        let _ = out.send(messages);
    }
}

/// Payload bytes of a value, for sizing apply requests.
fn value_len(value: &tern_conflict::Value) -> usize {
    match value {
        tern_conflict::Value::Bytes(bytes) => bytes.len(),
        _ => NON_BYTES_VALUE_BYTES,
    }
}

fn to_wan_record(record: &ChangeRecord, generation: u64) -> WanRecord {
    WanRecord {
        origin: record.entry.version.origin,
        partition: record.partition,
        prev_seq: 0,
        seq: wan_seq(generation, record.seq),
        key: record.key.clone(),
        entry: record.entry.clone(),
        // The HLC's wall part is the commit time at the origin (for a relayed record too).
        committed_at_ms: record.entry.version.hlc.wall_ms,
    }
}

impl Engine {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        site: String,
        site_id: SiteId,
        config: WanConfig,
        limits: GatewayLimits,
        backlog: BacklogConfig,
        router: Router,
        hub: WanHub,
        resolvers: Arc<KeyspaceResolvers>,
        endpoint: WanEndpoint,
        events: mpsc::UnboundedSender<Event>,
        generations: Generations,
        tombstone_retention_ms: u64,
    ) -> Self {
        let partition_count = router.keyspace().partitions().count();
        let repair = RepairShared::new(
            limits.clone(),
            router.clone(),
            Arc::clone(&resolvers),
            events.clone(),
            tombstone_retention_ms,
            config.feed_records_max,
            config.feed_bytes_max,
        );
        Self {
            site,
            site_id,
            config,
            limits,
            backlog,
            router,
            hub,
            resolvers,
            endpoint,
            ids: ConnIds::default(),
            events,
            targets: BTreeMap::new(),
            sources: BTreeMap::new(),
            repair,
            next_persist_ms: 0,
            next_publish_ms: 0,
            feed_rewind: None,
            generations,
            primed: BTreeSet::new(),
            partition_count,
            held_hellos: Vec::new(),
            hellos_held_until_ms: tern_node::shell::unix_now_ms() + HELLO_HOLD_MS_MAX,
        }
    }

    /// Open the backlog towards `spec`'s site, start dialing it and accept it as a source.
    pub fn add_peer(&mut self, spec: &WanTargetSpec, now_ms: u64) -> Result<(), WanAdminError> {
        if spec.site == self.site {
            return Err(WanAdminError::Invalid(format!(
                "{:?} is this site",
                spec.site
            )));
        }
        if self.targets.contains_key(&spec.site) {
            return Err(WanAdminError::AlreadyTarget(spec.site.clone()));
        }
        if spec.site_id == self.site_id.0
            || self.targets.values().any(|t| t.site_id.0 == spec.site_id)
        {
            return Err(WanAdminError::Invalid(format!(
                "site id {} is already in use",
                spec.site_id
            )));
        }
        tern_node::transport::Identity::site(&spec.site)
            .map_err(|e| WanAdminError::Invalid(e.to_string()))?;
        let addr = PeerAddr::parse(&spec.addr)
            .map_err(|e| WanAdminError::Invalid(format!("addr {:?}: {e}", spec.addr)))?;
        let target_id = SiteId(spec.site_id);
        let delegator = self
            .open_delegator(&spec.site, target_id)
            .map_err(WanAdminError::Invalid)?;
        let dialer = spawn_dialer(
            self.endpoint.clone(),
            spec.site.clone(),
            addr.clone(),
            self.config.reconnect_ms,
            self.ids.clone(),
            self.events.clone(),
        );
        self.targets.insert(
            spec.site.clone(),
            Target {
                site_id: target_id,
                addr,
                delegator,
                link: None,
                dialer,
                overflows_total: 0,
                failure: None,
                repair: TargetRepair::new(
                    &spec.site,
                    target_id,
                    self.config.repair_interval_ms,
                    &self.limits,
                    now_ms,
                ),
            },
        );
        let path = cursors::cursor_path(&self.config.data_dir, &spec.site);
        let saved = cursors::load(&path).unwrap_or_else(|error| {
            tracing::warn!(%error, "sink cursors unreadable: the source resends from the start");
            BTreeMap::new()
        });
        let sink = Sink::with_cursors(self.site_id, target_id, self.limits.clone(), saved);
        self.sources.insert(
            spec.site.clone(),
            Source {
                site_id: target_id,
                sink,
                link: None,
                inflight: BTreeSet::new(),
                pending: BTreeMap::new(),
                applied_total: 0,
                apply_errors_total: 0,
                conflicts: BTreeMap::new(),
                lag: LagStats::default(),
                cursors_dirty: false,
                repair: SourceRepair::new(&spec.site, target_id, &self.limits, now_ms),
            },
        );
        self.endpoint
            .set_allowed(self.targets.keys().cloned().collect());
        self.sync_generations(&spec.site);
        if let Some(rewind) = &self.feed_rewind {
            rewind.rewind_all();
        }
        tracing::info!(site = %spec.site, addr = %spec.addr, now_ms, "WAN peer added");
        Ok(())
    }

    fn open_delegator(&self, site: &str, target: SiteId) -> Result<DurableDelegator, String> {
        let dir = backlog_dir(&self.config.data_dir, site);
        let storage = FsStorage::open_dir(&dir)
            .map_err(|e| format!("opening backlog directory {}: {e}", dir.display()))?;
        let (delegator, report) = Delegator::open(
            self.site_id,
            target,
            self.limits.clone(),
            storage,
            self.backlog.clone(),
        )
        .map_err(|e| format!("opening the backlog of {site}: {e}"))?;
        if !report.events.is_empty() {
            tracing::warn!(target_site = site, events = ?report.events, "backlog recovery");
        }
        Ok(delegator)
    }

    fn remove_peer(&mut self, site: &str) -> Result<(), WanAdminError> {
        let Some(target) = self.targets.remove(site) else {
            return Err(WanAdminError::UnknownSite(site.to_owned()));
        };
        target.dialer.abort();
        drop(target.delegator);
        self.sources.remove(site);
        self.endpoint
            .set_allowed(self.targets.keys().cloned().collect());
        let dir = backlog_dir(&self.config.data_dir, site);
        if let Err(error) = std::fs::remove_dir_all(&dir) {
            tracing::warn!(%error, dir = %dir.display(), "deleting a removed target's backlog");
        }
        tracing::info!(site, "WAN peer removed");
        Ok(())
    }

    /// Where every partition's feed starts: the lowest seq (of the partition's change log) any
    /// delegator still needs.
    pub fn feed_start(&self, partition: PartitionId) -> u64 {
        self.targets
            .values()
            .map(|t| self.raw_after(partition, t.delegator.resume_after(partition)))
            .min()
            .unwrap_or(0)
    }

    /// The change-log seq after which a delegator resuming after WAN seq `resume` needs
    /// records: records of an older generation are all shipped (the log restarted since).
    fn raw_after(&self, partition: PartitionId, resume: Option<u64>) -> u64 {
        match resume {
            Some(w) if generation_of(w) >= self.generations.get(partition) => seq_of(w),
            _ => 0,
        }
    }

    /// A backlog may hold a later generation than the generations file (the file was lost):
    /// never ship below what a delegator already holds.
    fn sync_generations(&mut self, site: &str) {
        let Some(target) = self.targets.get(site) else {
            return;
        };
        let ahead: Vec<(PartitionId, u64)> = self
            .router
            .keyspace()
            .partitions()
            .filter_map(|p| {
                let g = generation_of(target.delegator.resume_after(p)?);
                (g > self.generations.get(p)).then_some((p, g))
            })
            .collect();
        for (partition, generation) in ahead {
            if let Err(error) = self.generations.bump(partition, generation) {
                tracing::error!(%partition, %error, "saving a log generation");
            }
        }
    }

    /// The partition's log restarted (it lost its memory): ship its records under a new
    /// generation. Returns where the feed reads next.
    fn on_log_restarted(&mut self, partition: PartitionId, asked_after: u64) -> u64 {
        let newest = self
            .targets
            .values()
            .filter_map(|t| t.delegator.resume_after(partition))
            .map(generation_of)
            .max()
            .unwrap_or(0);
        match self.generations.bump(partition, newest + 1) {
            Ok(generation) => {
                tracing::warn!(
                    %partition,
                    generation,
                    "change log restarted: shipping it as a new generation (peers repair it)"
                );
                0
            }
            Err(error) => {
                tracing::error!(%partition, %error, "saving a new log generation; retrying");
                asked_after
            }
        }
    }

    /// The first page of `partition` arrived: if its log is empty-ever, the data this gateway's
    /// sinks applied into it is gone (the site lost its memory), so their cursors go back to 0
    /// and the sources, seeing the lower cursor in our `HelloAck`, repair the partition.
    fn prime(&mut self, partition: PartitionId, log_empty: bool, now_ms: u64) {
        // Before this page counts: were sources already answered with our cursors?
        let hellos_answered = self.hellos_released(now_ms);
        if !self.primed.insert(partition) {
            return;
        }
        if log_empty {
            for (site, source) in &mut self.sources {
                let applied = source
                    .sink
                    .applied_cursors()
                    .find(|(p, _)| *p == partition)
                    .map_or(0, |(_, seq)| seq);
                if applied > 0 {
                    tracing::warn!(source_site = %site, %partition, applied, "local partition is empty although records were applied: cursor reset, the source repairs it");
                    source.sink.reset_cursor(partition, 0);
                    source.cursors_dirty = true;
                    if hellos_answered && source.link.take().is_some() {
                        // Our HelloAck reported the old cursor: make the source greet again.
                        source.sink.handle_disconnected(now_ms);
                    }
                }
            }
        }
        self.release_hellos(now_ms);
    }

    /// Whether sources' Hellos are answered now (every partition primed, or held long enough).
    fn hellos_released(&self, now_ms: u64) -> bool {
        self.primed.len() >= self.partition_count || now_ms >= self.hellos_held_until_ms
    }

    fn release_hellos(&mut self, now_ms: u64) {
        if self.held_hellos.is_empty() || !self.hellos_released(now_ms) {
            return;
        }
        if self.primed.len() < self.partition_count {
            tracing::warn!(
                unprimed = self.partition_count - self.primed.len(),
                "answering WAN sources before every partition could be read (no primary?)"
            );
        }
        for (site, conn, hello) in std::mem::take(&mut self.held_hellos) {
            self.on_message(Side::FromSource, &site, conn, Message::Hello(hello), now_ms);
        }
    }

    /// Handles one event; returns false when the engine must stop.
    pub fn handle(&mut self, event: Event, now_ms: u64) -> bool {
        match event {
            Event::Feed {
                partition,
                asked_after,
                page,
                restarted,
                reply,
            } => {
                self.prime(partition, page.last_seq == 0, now_ms);
                let next = if restarted {
                    self.on_log_restarted(partition, asked_after)
                } else {
                    self.on_feed(partition, asked_after, &page, now_ms)
                };
                let _ = reply.send(next);
            }
            Event::LinkUp {
                side,
                site,
                conn,
                out,
            } => self.on_link_up(side, &site, conn, out, now_ms),
            Event::LinkDown { side, site, conn } => self.on_link_down(side, &site, conn, now_ms),
            Event::Received {
                side,
                site,
                conn,
                message,
            } => self.on_message(side, &site, conn, message, now_ms),
            Event::Applied {
                source,
                partition,
                records,
                results,
            } => self.on_applied(&source, partition, records, results, now_ms),
            Event::RepairLoaded { token, result } => self.on_repair_loaded(token, result, now_ms),
            Event::RepairPushed {
                partition,
                entries,
                results,
            } => self.repair.on_pushed(partition, &entries, &results),
            Event::Admin(request) => self.on_admin(request, now_ms),
            Event::Shutdown(done) => {
                self.stop();
                let _ = done.send(());
                return false;
            }
        }
        self.drive_repairs(now_ms);
        self.flush();
        true
    }

    fn on_repair_loaded(&mut self, token: u64, result: Result<DumpEntries, String>, now_ms: u64) {
        match self.repair.take_load(token) {
            // A load of a removed peer's session.
            None => {}
            Some(LoadOwner::Initiator { target, partition }) => {
                let Some(t) = self.targets.get_mut(&target) else {
                    return;
                };
                let link_up = t.link.is_some() && t.delegator.is_connected();
                let out =
                    t.repair
                        .on_loaded(partition, token, result, link_up, &mut self.repair, now_ms);
                send(&t.link, out);
            }
            Some(LoadOwner::Responder {
                source,
                session,
                partition,
            }) => {
                let Some(s) = self.sources.get_mut(&source) else {
                    return;
                };
                let out =
                    s.repair
                        .on_loaded(session, partition, token, result, &mut self.repair, now_ms);
                send(&s.link, out);
            }
        }
    }

    /// Runs what the repair driver of every target has due (marks, timeouts, completions,
    /// new sessions).
    fn drive_repairs(&mut self, now_ms: u64) {
        for target in self.targets.values_mut() {
            if target.delegator.failure().is_some() {
                continue;
            }
            let link_up = target.link.is_some() && target.delegator.is_connected();
            let out = target
                .repair
                .drive(&mut target.delegator, link_up, &mut self.repair, now_ms);
            send(&target.link, out);
        }
    }

    fn on_feed(
        &mut self,
        partition: PartitionId,
        asked_after: u64,
        page: &WanChangesPage,
        now_ms: u64,
    ) -> u64 {
        let last_in_page = page.records.last().map_or(asked_after, |r| r.seq);
        let generation = self.generations.get(partition);
        for (site, target) in &mut self.targets {
            let resume = target.delegator.resume_after(partition);
            // Past generations are shipped in full: compare within the current one.
            let resume_seq = match resume {
                Some(w) if generation_of(w) >= generation => Some(w),
                Some(_) => Some(wan_seq(generation, 0)),
                None => None,
            };
            // A stream not begun must begin at the log's start; if this page was read from
            // further on (for other targets), the feed re-reads from 0 (see the reply).
            if resume.is_none() && asked_after > 0 {
                continue;
            }
            let records: Vec<WanRecord> = page
                .records
                .iter()
                .filter(|r| resume_seq.is_none_or(|s| wan_seq(generation, r.seq) > s))
                .map(|r| to_wan_record(r, generation))
                .collect();
            let Some(first) = records.first().map(|r| seq_of(r.seq)) else {
                continue;
            };
            // The log no longer holds the start of this partition's history: the target
            // misses what came before, which only anti-entropy can bring.
            let lost_start = resume.is_none() && first > 1;
            match target.delegator.handle_records(records, now_ms) {
                Ok(intake) => {
                    for notice in &intake.notices {
                        tracing::warn!(target_site = %site, %notice, "WAN feed");
                    }
                    if let Some(dropped) = intake.overflow {
                        target.overflows_total += 1;
                        tracing::error!(
                            target_site = %site,
                            records = dropped.records,
                            bytes = dropped.bytes,
                            "WAN backlog over its byte cap: dropped, target marked for repair"
                        );
                    }
                    if lost_start {
                        tracing::warn!(target_site = %site, %partition, first, "change log starts after 1: partition marked for repair");
                        target.delegator.mark_repair(partition);
                    }
                }
                Err(StoreError::Full { .. }) => {
                    tracing::debug!(target_site = %site, "WAN backlog full: shipping waits");
                }
                Err(error) => {
                    tracing::error!(target_site = %site, %error, "WAN backlog failed");
                    target.failure = Some(error.to_string());
                }
            }
        }
        if self.targets.is_empty() {
            return last_in_page;
        }
        self.feed_start(partition)
    }

    fn on_link_up(&mut self, side: Side, site: &str, conn: u64, out: LinkOut, now_ms: u64) {
        match side {
            Side::ToTarget => {
                let Some(target) = self.targets.get_mut(site) else {
                    return;
                };
                target.link = Some((conn, out));
                target.delegator.handle_connected(now_ms);
            }
            Side::FromSource => {
                let Some(source) = self.sources.get_mut(site) else {
                    tracing::warn!(site, "link from a site that is not a peer: ignored");
                    return;
                };
                if source.link.is_some() {
                    source.sink.handle_disconnected(now_ms);
                }
                source.link = Some((conn, out));
            }
        }
    }

    fn on_link_down(&mut self, side: Side, site: &str, conn: u64, now_ms: u64) {
        match side {
            Side::ToTarget => {
                if let Some(target) = self.targets.get_mut(site)
                    && is_current(&target.link, conn)
                {
                    target.link = None;
                    target.delegator.handle_disconnected(now_ms);
                    target.repair.handle_disconnected(now_ms);
                }
            }
            Side::FromSource => {
                if let Some(source) = self.sources.get_mut(site)
                    && is_current(&source.link, conn)
                {
                    source.link = None;
                    source.sink.handle_disconnected(now_ms);
                    source.repair.handle_disconnected();
                }
            }
        }
    }

    fn on_message(&mut self, side: Side, site: &str, conn: u64, message: Message, now_ms: u64) {
        match side {
            Side::ToTarget => {
                let Some(target) = self.targets.get_mut(site) else {
                    return;
                };
                if !is_current(&target.link, conn) {
                    return;
                }
                let result = match message {
                    Message::HelloAck(ack) => target
                        .delegator
                        .handle_hello_ack(ack, now_ms)
                        .map_err(|e| e.to_string()),
                    Message::Ack(ack) => target
                        .delegator
                        .handle_ack(ack, now_ms)
                        .map_err(|e| e.to_string()),
                    message @ (Message::DigestReply(_) | Message::RangeEntries(_)) => {
                        let out = target
                            .repair
                            .handle_message(message, &mut self.repair, now_ms);
                        send(&target.link, out);
                        Ok(())
                    }
                    other => Err(format!("unexpected {:?} from a target", other.kind())),
                };
                if let Err(error) = result {
                    tracing::warn!(target_site = site, %error, "WAN target message refused");
                }
            }
            Side::FromSource => {
                let released = self.hellos_released(now_ms);
                let Some(source) = self.sources.get_mut(site) else {
                    return;
                };
                if !is_current(&source.link, conn) {
                    return;
                }
                let result = match message {
                    Message::Hello(hello) if !released => {
                        self.held_hellos.push((site.to_owned(), conn, hello));
                        return;
                    }
                    Message::Hello(hello) => source
                        .sink
                        .handle_hello(hello, now_ms)
                        .map_err(|e| e.to_string()),
                    Message::Batch(batch) => source
                        .sink
                        .handle_batch(batch, now_ms)
                        .map_err(|e| e.to_string()),
                    message @ (Message::DigestRequest(_) | Message::RangeRequest(_)) => {
                        let out = source
                            .repair
                            .handle_message(message, &mut self.repair, now_ms);
                        send(&source.link, out);
                        Ok(())
                    }
                    other => Err(format!("unexpected {:?} from a source", other.kind())),
                };
                if let Err(error) = result {
                    tracing::warn!(source_site = site, %error, "WAN source message refused");
                }
                while let Some(record) = source.sink.poll_apply() {
                    source
                        .pending
                        .entry(record.partition)
                        .or_default()
                        .push_back(record);
                }
                let partitions: Vec<PartitionId> = source.pending.keys().copied().collect();
                for partition in partitions {
                    self.dispatch(site, partition);
                }
            }
        }
    }

    /// Starts the next apply request of (`site`, `partition`) unless one is in flight.
    fn dispatch(&mut self, site: &str, partition: PartitionId) {
        let records_max = self.config.feed_records_max.max(1) as usize;
        let bytes_max = self.config.feed_bytes_max as usize;
        let Some(source) = self.sources.get_mut(site) else {
            return;
        };
        if source.inflight.contains(&partition) {
            return;
        }
        let Some(queue) = source.pending.get_mut(&partition) else {
            return;
        };
        let mut chunk = Vec::new();
        let mut bytes = 0;
        while let Some(record) = queue.front() {
            let size = record.key.len() + value_len(&record.entry.value);
            if !chunk.is_empty() && (chunk.len() >= records_max || bytes + size > bytes_max) {
                break;
            }
            bytes += size;
            chunk.extend(queue.pop_front());
        }
        if queue.is_empty() {
            source.pending.remove(&partition);
        }
        if chunk.is_empty() {
            return;
        }
        source.inflight.insert(partition);
        spawn_apply(
            self.router.clone(),
            site.to_owned(),
            partition,
            chunk,
            self.events.clone(),
        );
    }

    fn on_applied(
        &mut self,
        site: &str,
        partition: PartitionId,
        records: Vec<WanRecord>,
        results: Vec<CommandResult>,
        now_ms: u64,
    ) {
        let Some(source) = self.sources.get_mut(site) else {
            return;
        };
        source.inflight.remove(&partition);
        for (record, result) in records.iter().zip(&results) {
            match result {
                Ok(Response::WanApplied {
                    conflict,
                    clock_rejected,
                    ..
                }) => {
                    source.applied_total += 1;
                    source
                        .lag
                        .record(now_ms.saturating_sub(record.committed_at_ms));
                    if *conflict {
                        let name = self.resolvers.for_key(&record.key).name().to_owned();
                        *source.conflicts.entry(name).or_default() += 1;
                    }
                    if *clock_rejected {
                        tracing::warn!(source_site = site, "remote HLC beyond hlc_offset_ms_max");
                    }
                }
                other => {
                    // The record cannot apply here (e.g. over this site's limits): counted and
                    // logged, and the stream goes on rather than stalling every later record.
                    source.apply_errors_total += 1;
                    tracing::error!(source_site = site, %partition, seq = record.seq, ?other, "WAN record not applied");
                }
            }
        }
        if results.len() != records.len() {
            tracing::error!(
                source_site = site,
                "apply answered {} of {} records",
                results.len(),
                records.len()
            );
        }
        if let Some(last) = records.last() {
            source.sink.handle_applied(partition, last.seq, now_ms);
            source.cursors_dirty = true;
        }
        self.dispatch(site, partition);
    }

    fn on_admin(&mut self, request: WanAdminRequest, now_ms: u64) {
        match request {
            WanAdminRequest::AddTarget { spec, reply } => {
                let result = self.add_peer(&spec, now_ms);
                let _ = reply.send(result);
            }
            WanAdminRequest::RemoveTarget { site, reply } => {
                let _ = reply.send(self.remove_peer(&site));
            }
            WanAdminRequest::Repair { site, reply } => {
                let result = match self.targets.get_mut(&site) {
                    None => Err(WanAdminError::UnknownSite(site)),
                    Some(target) => {
                        // The driver runs them; sessions under way may predate the request.
                        for p in self.router.keyspace().partitions() {
                            target.delegator.mark_repair(p);
                        }
                        target.repair.mark_all_stale();
                        Ok(())
                    }
                };
                let _ = reply.send(result);
            }
        }
    }

    /// The earliest time any core, persistence or status publication needs the engine.
    pub fn next_deadline_ms(&self) -> u64 {
        let cores = self
            .targets
            .values()
            .filter_map(|t| t.delegator.poll_timeout())
            .chain(self.sources.values().filter_map(|s| s.sink.poll_timeout()))
            .chain(
                self.targets
                    .values()
                    .filter_map(|t| t.repair.poll_timeout()),
            )
            .chain(
                self.sources
                    .values()
                    .filter_map(|s| s.repair.poll_timeout()),
            );
        cores
            .chain([self.next_persist_ms, self.next_publish_ms])
            .min()
            .unwrap_or(self.next_publish_ms)
    }

    /// Runs whatever is due at `now_ms` (the status publication bounds the sleep, so held
    /// Hellos are released within `STATUS_PUBLISH_MS` of their deadline).
    pub fn handle_timers(&mut self, now_ms: u64) {
        self.release_hellos(now_ms);
        for (site, target) in &mut self.targets {
            if target.delegator.poll_timeout().is_some_and(|t| t <= now_ms) {
                target.delegator.handle_timeout(now_ms);
            }
            if let Some(failure) = target.delegator.failure() {
                target.failure = Some(failure.to_string());
            }
            let _ = site;
        }
        self.reopen_failed(now_ms);
        for source in self.sources.values_mut() {
            if source.sink.poll_timeout().is_some_and(|t| t <= now_ms) {
                source.sink.handle_timeout(now_ms);
            }
            if source.repair.poll_timeout().is_some_and(|t| t <= now_ms) {
                let out = source.repair.handle_timeout(now_ms);
                send(&source.link, out);
            }
        }
        self.drive_repairs(now_ms);
        if now_ms >= self.next_persist_ms {
            self.persist_cursors();
            self.next_persist_ms = now_ms + self.config.cursor_persist_ms.max(1);
        }
        if now_ms >= self.next_publish_ms {
            self.hub.publish(self.status());
            self.next_publish_ms = now_ms + STATUS_PUBLISH_MS;
        }
        self.flush();
    }

    /// A delegator whose store failed is rebuilt on the reopened (recovered) store.
    fn reopen_failed(&mut self, now_ms: u64) {
        let failed: Vec<(String, SiteId)> = self
            .targets
            .iter()
            .filter(|(_, t)| t.delegator.failure().is_some())
            .map(|(s, t)| (s.clone(), t.site_id))
            .collect();
        for (site, id) in failed {
            match self.open_delegator(&site, id) {
                Ok(mut delegator) => {
                    let target = self.targets.get_mut(&site).expect("listed above");
                    if target.link.is_some() {
                        delegator.handle_connected(now_ms);
                    }
                    target.delegator = delegator;
                    target.failure = None;
                    target.repair.handle_delegator_replaced();
                    tracing::info!(target_site = %site, "WAN backlog reopened after a failure");
                }
                Err(error) => {
                    tracing::error!(target_site = %site, %error, "reopening the WAN backlog");
                }
            }
        }
    }

    fn persist_cursors(&mut self) {
        for (site, source) in &mut self.sources {
            if !source.cursors_dirty {
                continue;
            }
            let path = cursors::cursor_path(&self.config.data_dir, site);
            match cursors::store(&path, source.sink.applied_cursors()) {
                Ok(()) => source.cursors_dirty = false,
                Err(error) => tracing::warn!(%error, "saving WAN sink cursors"),
            }
        }
    }

    /// Sends what the cores want sent.
    fn flush(&mut self) {
        for target in self.targets.values_mut() {
            let mut messages = Vec::new();
            while let Some(message) = target.delegator.poll_transmit() {
                messages.push(message);
            }
            if let (Some((_, out)), false) = (&target.link, messages.is_empty()) {
                let _ = out.send(messages);
            }
        }
        for source in self.sources.values_mut() {
            let mut messages = Vec::new();
            while let Some(message) = source.sink.poll_transmit() {
                messages.push(message);
            }
            if let (Some((_, out)), false) = (&source.link, messages.is_empty()) {
                let _ = out.send(messages);
            }
        }
    }

    pub fn status(&self) -> WanStatus {
        WanStatus {
            site: self.site.clone(),
            site_id: self.site_id.0,
            targets: self
                .targets
                .iter()
                .map(|(site, t)| {
                    let stats = t.delegator.stats();
                    WanTargetStatus {
                        site: site.clone(),
                        site_id: t.site_id.0,
                        addr: t.addr.to_string(),
                        connected: t.link.is_some() && t.delegator.is_connected(),
                        backlog_records: t.delegator.backlog_records(),
                        backlog_bytes: t.delegator.backlog_bytes(),
                        shipped_total: stats.records_acked_total,
                        filtered_total: stats.records_filtered_total,
                        // Marked (a bootstrap, an overflow, an operator) or under way.
                        repairing_partitions: t
                            .delegator
                            .repair_needed()
                            .chain(t.repair.partitions_under_way())
                            .map(|p| p.0)
                            .collect::<BTreeSet<u16>>()
                            .into_iter()
                            .collect(),
                        overflows_total: t.overflows_total,
                        write_blocked: t.delegator.is_write_blocked(),
                        failure: t.failure.clone(),
                        repairs_total: t.repair.repairs_total(),
                    }
                })
                .collect(),
            sources: self
                .sources
                .iter()
                .map(|(site, s)| WanSourceStatus {
                    site: site.clone(),
                    site_id: s.site_id.0,
                    connected: s.link.is_some(),
                    applied_total: s.applied_total,
                    duplicates_total: s.sink.stats().duplicates_total,
                    conflicts_total: s.conflicts.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                    lag_ms_last: s.lag.last_ms(),
                    lag_ms_p50: s.lag.percentile_ms(0.5),
                    lag_ms_p99: s.lag.percentile_ms(0.99),
                    lag_buckets: s.lag.cumulative_buckets(),
                    lag_seconds_sum: s.lag.sum_seconds(),
                    lag_count: s.lag.count(),
                })
                .collect(),
            refused_total: self.endpoint.refusals(),
        }
    }

    /// Stops dialing, saves cursors, syncs backlogs.
    pub fn stop(&mut self) {
        for (site, target) in &mut self.targets {
            target.dialer.abort();
            if let Err(error) = target.delegator.store_mut().sync() {
                tracing::warn!(target_site = %site, %error, "syncing the WAN backlog at shutdown");
            }
        }
        for source in self.sources.values_mut() {
            source.cursors_dirty = true;
        }
        self.persist_cursors();
        self.hub.publish(self.status());
        self.endpoint.close();
    }
}
