//! The site gateway: the site-level rules of a site's WAN gateway as one sans-IO state
//! machine, [`SiteGateway`], which the tokio host (`crate::host`) and the WAN simulator both
//! drive.
//!
//! It owns a [`Delegator`] per target site and a [`Sink`] per source site and decides
//! everything around them: which feed records go to which delegator under which log
//! generation ([`generations`]), whether the local partitions lost their memory since the
//! sinks applied into them (`wipe.rs`: Hellos held until every partition was read once,
//! cursors reset), one apply in flight per (source, partition) (`apply.rs`), when and what to
//! repair ([`repair`]), backlog overflow and failure handling, operator requests and status.
//!
//! Inputs are `handle_*(…, now_ms)`; outputs are polled: [`SiteGateway::poll_transmit`]
//! (messages for a link), [`SiteGateway::poll_apply`] (records to reconcile into a
//! partition), [`SiteGateway::poll_repair_load`] / [`SiteGateway::poll_repair_push`]
//! (snapshot reads and repair writes), [`SiteGateway::poll_close_link`],
//! [`SiteGateway::poll_status`], [`SiteGateway::poll_feed_rewind`];
//! [`SiteGateway::next_deadline_ms`] says when to call [`SiteGateway::handle_timers`].
//! Persistence goes through [`SiteStorage`]. No clock, socket, thread or randomness inside;
//! every collection that orders output is a `BTreeMap`/`VecDeque`.
mod admin;
mod apply;
mod feed;
pub mod generations;
pub mod lag;
pub mod limits;
mod links;
pub mod repair;
mod repair_results;
mod status;
pub mod storage;
mod wipe;

#[cfg(test)]
mod tests;

pub use admin::AdminCommand;
pub use apply::ApplyRequest;
pub use links::{LinkRef, Side, Transmit};
pub use repair::{DumpEntries, RepairLoad, RepairPush};
pub use storage::{MemSiteStorage, SiteStorage};

use crate::delegator::Delegator;
use crate::limits::GatewayLimits;
use crate::sink::Sink;
use crate::wire::{Hello, WanRecord};
use generations::LogGenerations;
use lag::LagStats;
use limits::{HELLO_HOLD_MS_MAX, STATUS_PUBLISH_MS};
use repair::{RepairShared, SourceRepair, TargetRepair};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use tern_conflict::{KeyspaceResolvers, SiteId};
use tern_node::core::PartitionId;

/// What a site gateway is built with.
#[derive(Clone, Debug)]
pub struct SiteGatewayConfig {
    /// This site's name (`[wan] site`).
    pub site: String,
    pub site_id: SiteId,
    /// Partitions of the keyspace: `0..partition_count`.
    pub partition_count: u16,
    pub limits: GatewayLimits,
    /// The keyspace's resolvers (conflicts are counted per resolver name; repair snapshots
    /// reconcile with them).
    pub resolvers: Arc<KeyspaceResolvers>,
    /// The partitions' `tombstone_retention_ms`: repair digests treat older tombstones as gone.
    pub tombstone_retention_ms: u64,
    /// Bounds of one apply (and repair push) request.
    pub apply_records_max: u32,
    pub apply_bytes_max: u32,
    /// Every partition is repaired against every target this often (0: only when marked).
    pub repair_interval_ms: u64,
    /// Changed sink cursors are saved at most this often.
    pub cursor_persist_ms: u64,
}

struct Target<S: crate::delegator::RecordStore> {
    site_id: SiteId,
    addr: String,
    delegator: Delegator<S>,
    /// The connection the delegator talks on, if up.
    link: Option<u64>,
    overflows_total: u64,
    /// Why the delegator's store failed last, kept until a reopen succeeds.
    failure: Option<String>,
    /// Anti-entropy sessions this site runs against the target.
    repair: TargetRepair,
}

struct Source {
    site_id: SiteId,
    sink: Sink,
    link: Option<u64>,
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

/// A site's WAN gateway rules. See the module docs.
pub struct SiteGateway<P: SiteStorage> {
    config: SiteGatewayConfig,
    storage: P,
    targets: BTreeMap<String, Target<P::Store>>,
    sources: BTreeMap<String, Source>,
    repair: RepairShared,
    /// Per partition, the log generation in the high bits of every WAN seq shipped.
    generations: LogGenerations,
    /// Partitions whose first feed page arrived (so we know whether their log is empty).
    primed: BTreeSet<PartitionId>,
    /// Hellos from sources waiting until every partition is primed: the sink's cursors must
    /// be checked against the local data (a wiped partition's cursors are reset) before a
    /// `HelloAck` reports them.
    held_hellos: Vec<(String, u64, Hello)>,
    /// Hellos are held at most until then: a partition without a primary (it may wait for an
    /// operator) must not stop the WAN for every other partition. One primed later is still
    /// checked, and a wiped one then closes the source links so the sources greet again.
    hellos_held_until_ms: u64,
    next_persist_ms: u64,
    next_publish_ms: u64,
    status_due: bool,
    feed_rewind: bool,
    transmits: VecDeque<Transmit>,
    applies: VecDeque<ApplyRequest>,
    closes: VecDeque<LinkRef>,
}

impl<P: SiteStorage> std::fmt::Debug for SiteGateway<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiteGateway")
            .field("site", &self.config.site)
            .field("targets", &self.targets.keys().collect::<Vec<_>>())
            .field("primed", &self.primed.len())
            .finish_non_exhaustive()
    }
}

impl<P: SiteStorage> SiteGateway<P> {
    /// A gateway with no peers yet ([`AdminCommand::AddTarget`] adds them), its log
    /// generations as saved (`generations`).
    pub fn new(
        config: SiteGatewayConfig,
        storage: P,
        generations: BTreeMap<PartitionId, u64>,
        now_ms: u64,
    ) -> Self {
        let partitions: Arc<[PartitionId]> = (0..config.partition_count).map(PartitionId).collect();
        let repair = RepairShared::new(
            config.limits.clone(),
            partitions,
            Arc::clone(&config.resolvers),
            config.tombstone_retention_ms,
            config.apply_records_max,
            config.apply_bytes_max,
        );
        Self {
            config,
            storage,
            targets: BTreeMap::new(),
            sources: BTreeMap::new(),
            repair,
            generations: LogGenerations::new(generations),
            primed: BTreeSet::new(),
            held_hellos: Vec::new(),
            hellos_held_until_ms: now_ms.saturating_add(HELLO_HOLD_MS_MAX),
            next_persist_ms: 0,
            next_publish_ms: 0,
            status_due: false,
            feed_rewind: false,
            transmits: VecDeque::new(),
            applies: VecDeque::new(),
            closes: VecDeque::new(),
        }
    }

    pub fn config(&self) -> &SiteGatewayConfig {
        &self.config
    }

    pub fn storage(&self) -> &P {
        &self.storage
    }

    fn partitions(&self) -> impl Iterator<Item = PartitionId> + use<P> {
        (0..self.config.partition_count).map(PartitionId)
    }

    /// The peer sites, in name order.
    pub fn peers(&self) -> impl Iterator<Item = &str> {
        self.targets.keys().map(String::as_str)
    }

    /// The delegator shipping to `site`, for inspection.
    pub fn delegator(&self, site: &str) -> Option<&Delegator<P::Store>> {
        self.targets.get(site).map(|t| &t.delegator)
    }

    /// The sink receiving from `site`, for inspection.
    pub fn sink(&self, site: &str) -> Option<&Sink> {
        self.sources.get(site).map(|s| &s.sink)
    }

    /// Records waiting for (or in) an apply request from `site`.
    pub fn apply_backlog(&self, site: &str) -> usize {
        self.sources.get(site).map_or(0, |s| {
            s.pending.values().map(VecDeque::len).sum::<usize>() + s.inflight.len()
        })
    }

    /// The current log generation of `partition`.
    pub fn generation(&self, partition: PartitionId) -> u64 {
        self.generations.get(partition)
    }

    /// The next messages for a link.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next apply request for the shell to run (results: [`Self::handle_applied`]).
    pub fn poll_apply(&mut self) -> Option<ApplyRequest> {
        self.applies.pop_front()
    }

    /// The next snapshot load for the shell (result: [`Self::handle_repair_loaded`]).
    pub fn poll_repair_load(&mut self) -> Option<RepairLoad> {
        self.repair.poll_load()
    }

    /// The next repair push for the shell (results: [`Self::handle_repair_pushed`]).
    pub fn poll_repair_push(&mut self) -> Option<RepairPush> {
        self.repair.poll_push()
    }

    /// A link the shell must close (the peer then reconnects and greets again).
    pub fn poll_close_link(&mut self) -> Option<LinkRef> {
        self.closes.pop_front()
    }

    /// The status, every `STATUS_PUBLISH_MS` (the shell adds what only it knows).
    pub fn poll_status(&mut self) -> Option<tern_node::admin::WanStatus> {
        std::mem::take(&mut self.status_due).then(|| self.status())
    }

    /// True once after a target was added or a delegator rebuilt on its reopened store: every
    /// partition's feed must read its log again from the start (the new delegator needs every
    /// retained record above where it resumes; idle partitions would otherwise never be read
    /// below where they stand).
    pub fn poll_feed_rewind(&mut self) -> bool {
        std::mem::take(&mut self.feed_rewind)
    }

    /// The earliest time any core, persistence or status publication needs
    /// [`Self::handle_timers`].
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
        for target in self.targets.values_mut() {
            if target.delegator.poll_timeout().is_some_and(|t| t <= now_ms) {
                target.delegator.handle_timeout(now_ms);
            }
            if let Some(failure) = target.delegator.failure() {
                target.failure = Some(failure.to_string());
            }
        }
        self.reopen_failed(now_ms);
        for (site, source) in &mut self.sources {
            if source.sink.poll_timeout().is_some_and(|t| t <= now_ms) {
                source.sink.handle_timeout(now_ms);
            }
            if source.repair.poll_timeout().is_some_and(|t| t <= now_ms) {
                let out = source.repair.handle_timeout(now_ms);
                links::queue(
                    &mut self.transmits,
                    Side::FromSource,
                    site,
                    source.link,
                    out,
                );
            }
        }
        self.drive_repairs(now_ms);
        if now_ms >= self.next_persist_ms {
            self.persist_cursors();
            self.next_persist_ms = now_ms + self.config.cursor_persist_ms.max(1);
        }
        if now_ms >= self.next_publish_ms {
            self.status_due = true;
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
            let opened = self.storage.open_delegator(
                &site,
                self.config.site_id,
                id,
                self.config.limits.clone(),
            );
            let Some(target) = self.targets.get_mut(&site) else {
                continue;
            };
            match opened {
                Ok(mut delegator) => {
                    if target.link.is_some() {
                        delegator.handle_connected(now_ms);
                    }
                    target.delegator = delegator;
                    target.failure = None;
                    target.repair.handle_delegator_replaced();
                    // The rebuilt delegator resumes where its store ends, which may be below
                    // where the feeds read (filtered records leave no trace in the store; a
                    // torn tail is cut): an idle partition would never be offered the rest.
                    self.feed_rewind = true;
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
            let cursors: BTreeMap<PartitionId, u64> = source.sink.applied_cursors().collect();
            match self.storage.store_cursors(site, &cursors) {
                Ok(()) => source.cursors_dirty = false,
                Err(error) => tracing::warn!(%error, "saving WAN sink cursors"),
            }
        }
    }

    /// Saves cursors and syncs backlogs (a clean shutdown); the gateway may go on.
    pub fn stop(&mut self) {
        for (site, target) in &mut self.targets {
            if let Err(error) = self
                .storage
                .sync_backlog(site, target.delegator.store_mut())
            {
                tracing::warn!(target_site = %site, %error, "syncing the WAN backlog at shutdown");
            }
        }
        for source in self.sources.values_mut() {
            source.cursors_dirty = true;
        }
        self.persist_cursors();
    }

    /// Queues what the delegators and sinks want sent.
    fn flush(&mut self) {
        for (site, target) in &mut self.targets {
            let mut messages = Vec::new();
            while let Some(message) = target.delegator.poll_transmit() {
                messages.push(message);
            }
            links::queue(
                &mut self.transmits,
                Side::ToTarget,
                site,
                target.link,
                messages,
            );
        }
        for (site, source) in &mut self.sources {
            let mut messages = Vec::new();
            while let Some(message) = source.sink.poll_transmit() {
                messages.push(message);
            }
            links::queue(
                &mut self.transmits,
                Side::FromSource,
                site,
                source.link,
                messages,
            );
        }
    }

    /// What every input ends with: repairs driven, core output queued.
    fn settle(&mut self, now_ms: u64) {
        self.drive_repairs(now_ms);
        self.flush();
    }

    /// Runs what the repair driver of every target has due (marks, timeouts, completions,
    /// new sessions).
    fn drive_repairs(&mut self, now_ms: u64) {
        for (site, target) in &mut self.targets {
            if target.delegator.failure().is_some() {
                continue;
            }
            let link_up = target.link.is_some() && target.delegator.is_connected();
            let out = target
                .repair
                .drive(&mut target.delegator, link_up, &mut self.repair, now_ms);
            links::queue(&mut self.transmits, Side::ToTarget, site, target.link, out);
        }
    }
}
