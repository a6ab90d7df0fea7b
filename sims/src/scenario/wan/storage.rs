//! [`SimSiteStorage`]: the site gateway's persistence in the simulator.
//!
//! - Backlogs: one [`BacklogStore`] per target on the scenario's fault-injecting
//!   [`MemStorage`] disk for that (source, target) pair. The disk outlives the gateway; a crash
//!   loses what was not synced (`MemStorage::crash`, torn tails with `torn_writes`).
//! - Sink cursors and log generations: [`SavedState`], which models the host's small files
//!   written by atomic replace + fsync: once a `store_*` call returned `Ok` the value survives
//!   a crash, and nothing else does. The scenario keeps the `SavedState` of a gateway that
//!   crashed and hands it to the next one.
use super::WanStats;
use super::gateway::site_name;
use std::collections::BTreeMap;
use tern_conflict::SiteId;
use tern_gateway::backlog::{BacklogConfig, MemStorage};
use tern_gateway::site::SiteStorage;
use tern_gateway::{BacklogStore, Delegator, GatewayLimits};
use tern_node::core::PartitionId;

/// Reopening a backlog fails only through injected I/O faults, which are drawn per call: a
/// few tries always get through unless the fault rate is absurd.
const OPEN_ATTEMPTS_MAX: usize = 20;

/// What a gateway saved durably besides its backlogs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SavedState {
    /// Per source site name, the sink's applied cursors.
    pub cursors: BTreeMap<String, BTreeMap<PartitionId, u64>>,
    pub generations: BTreeMap<PartitionId, u64>,
}

/// Counters of what the storage went through, folded into [`WanStats`].
#[derive(Clone, Debug, Default)]
pub struct StorageStats {
    pub backlog_opens: u64,
    pub recovery_events: u64,
    pub store_failures: u64,
    pub delegator_rebuilds: u64,
}

#[derive(Debug)]
pub struct SimSiteStorage {
    /// Per target site name, the disk under the backlog towards it.
    disks: BTreeMap<String, MemStorage>,
    backlog: BacklogConfig,
    saved: SavedState,
    /// Targets whose backlog this gateway opened already (a second open is a rebuild after a
    /// store failure).
    opened: BTreeMap<String, u64>,
    pub stats: StorageStats,
}

impl SimSiteStorage {
    /// The storage of site `local`'s gateway: its backlog disks by target index, and what
    /// its previous incarnation saved.
    pub fn new(
        disks: &BTreeMap<(usize, usize), MemStorage>,
        local: usize,
        backlog: BacklogConfig,
        saved: SavedState,
    ) -> Self {
        let disks = disks
            .iter()
            .filter(|((source, _), _)| *source == local)
            .map(|(&(_, target), disk)| (site_name(target), disk.clone()))
            .collect();
        Self {
            disks,
            backlog,
            saved,
            opened: BTreeMap::new(),
            stats: StorageStats::default(),
        }
    }

    /// What survives this gateway if it dies now.
    pub fn saved(&self) -> &SavedState {
        &self.saved
    }

    pub fn collect_stats(&self, stats: &mut WanStats) {
        stats.backlog_opens += self.stats.backlog_opens;
        stats.recovery_events += self.stats.recovery_events;
        stats.store_failures += self.stats.store_failures;
        stats.delegator_rebuilds += self.stats.delegator_rebuilds;
    }
}

impl SiteStorage for SimSiteStorage {
    type Store = BacklogStore<MemStorage>;

    fn open_delegator(
        &mut self,
        site: &str,
        local: SiteId,
        target: SiteId,
        limits: GatewayLimits,
    ) -> Result<Delegator<Self::Store>, String> {
        let disk = self
            .disks
            .get(site)
            .ok_or_else(|| format!("opening the backlog of {site}: no disk for that site"))?;
        let opens = self.opened.entry(site.to_owned()).or_insert(0);
        if *opens > 0 {
            // The core reopens only a backlog whose store failed.
            self.stats.store_failures += 1;
            self.stats.delegator_rebuilds += 1;
        }
        *opens += 1;
        let mut last_error = String::new();
        for _ in 0..OPEN_ATTEMPTS_MAX {
            match Delegator::open(
                local,
                target,
                limits.clone(),
                disk.clone(),
                self.backlog.clone(),
            ) {
                Ok((delegator, report)) => {
                    self.stats.backlog_opens += 1;
                    self.stats.recovery_events += report.events.len() as u64;
                    return Ok(delegator);
                }
                Err(error) => {
                    self.stats.store_failures += 1;
                    last_error = error.to_string();
                }
            }
        }
        Err(format!("opening the backlog of {site}: {last_error}"))
    }

    fn sync_backlog(&mut self, _site: &str, store: &mut Self::Store) -> Result<(), String> {
        store.sync().map_err(|e| e.to_string())
    }

    /// Peers are never removed in the scenarios.
    fn remove_backlog(&mut self, _site: &str) {}

    fn load_cursors(&mut self, site: &str) -> BTreeMap<PartitionId, u64> {
        self.saved.cursors.get(site).cloned().unwrap_or_default()
    }

    fn store_cursors(
        &mut self,
        site: &str,
        cursors: &BTreeMap<PartitionId, u64>,
    ) -> Result<(), String> {
        self.saved.cursors.insert(site.to_owned(), cursors.clone());
        Ok(())
    }

    fn store_generations(
        &mut self,
        generations: &BTreeMap<PartitionId, u64>,
    ) -> Result<(), String> {
        self.saved.generations = generations.clone();
        Ok(())
    }
}
