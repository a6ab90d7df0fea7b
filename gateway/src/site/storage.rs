//! The persistence seam of the site gateway: where delegators' backlogs, the sinks' applied
//! cursors and the log generations live. The host puts them on the file system
//! (`host/storage.rs`: `BacklogStore<FsStorage>`, the cursor and generation files); the
//! simulator on simulated disks; [`MemSiteStorage`] keeps them in memory for tests.
//!
//! Calls are synchronous: a generation is saved before any record of it is handed on, and a
//! saved cursor never leads the data (the core only saves what the partitions confirmed).
use crate::delegator::{Delegator, MemoryStore, RecordStore};
use crate::limits::GatewayLimits;
use std::collections::BTreeMap;
use tern_conflict::SiteId;
use tern_node::core::PartitionId;

pub trait SiteStorage {
    /// Where a delegator keeps unacknowledged records.
    type Store: RecordStore;

    /// Opens (recovering) the backlog towards `site` and builds its delegator on it.
    fn open_delegator(
        &mut self,
        site: &str,
        local: SiteId,
        target: SiteId,
        limits: GatewayLimits,
    ) -> Result<Delegator<Self::Store>, String>;

    /// Makes everything the delegator holds durable (a clean shutdown).
    fn sync_backlog(&mut self, site: &str, store: &mut Self::Store) -> Result<(), String>;

    /// Deletes the backlog of a removed peer (its delegator is already dropped).
    fn remove_backlog(&mut self, site: &str);

    /// The applied cursors saved for the sink of `site` (unreadable: empty, so the source
    /// resends from the start, which applies idempotently).
    fn load_cursors(&mut self, site: &str) -> BTreeMap<PartitionId, u64>;

    /// Replaces the saved applied cursors of the sink of `site`, durably.
    fn store_cursors(
        &mut self,
        site: &str,
        cursors: &BTreeMap<PartitionId, u64>,
    ) -> Result<(), String>;

    /// Replaces the saved log generations, durably.
    fn store_generations(&mut self, generations: &BTreeMap<PartitionId, u64>)
    -> Result<(), String>;
}

/// Everything in memory, delegators on [`MemoryStore`]s: for tests of the core.
#[derive(Debug, Default)]
pub struct MemSiteStorage {
    cursors: BTreeMap<String, BTreeMap<PartitionId, u64>>,
    generations: BTreeMap<PartitionId, u64>,
    fail_saves: bool,
}

impl MemSiteStorage {
    pub fn cursors(&self, site: &str) -> BTreeMap<PartitionId, u64> {
        self.cursors.get(site).cloned().unwrap_or_default()
    }

    pub fn generations(&self) -> &BTreeMap<PartitionId, u64> {
        &self.generations
    }

    /// Makes every later save fail (a full or broken disk).
    pub fn fail_saves(&mut self, fail: bool) {
        self.fail_saves = fail;
    }

    fn check_save(&self) -> Result<(), String> {
        match self.fail_saves {
            true => Err("saving: injected failure".into()),
            false => Ok(()),
        }
    }
}

impl SiteStorage for MemSiteStorage {
    type Store = MemoryStore;

    fn open_delegator(
        &mut self,
        _site: &str,
        local: SiteId,
        target: SiteId,
        limits: GatewayLimits,
    ) -> Result<Delegator<MemoryStore>, String> {
        Ok(Delegator::new(local, target, limits))
    }

    fn sync_backlog(&mut self, _site: &str, _store: &mut MemoryStore) -> Result<(), String> {
        Ok(())
    }

    /// A [`MemoryStore`] goes with its delegator: nothing left to delete.
    fn remove_backlog(&mut self, _site: &str) {}

    fn load_cursors(&mut self, site: &str) -> BTreeMap<PartitionId, u64> {
        self.cursors(site)
    }

    fn store_cursors(
        &mut self,
        site: &str,
        cursors: &BTreeMap<PartitionId, u64>,
    ) -> Result<(), String> {
        self.check_save()?;
        self.cursors.insert(site.to_owned(), cursors.clone());
        Ok(())
    }

    fn store_generations(
        &mut self,
        generations: &BTreeMap<PartitionId, u64>,
    ) -> Result<(), String> {
        self.check_save()?;
        self.generations = generations.clone();
        Ok(())
    }
}
