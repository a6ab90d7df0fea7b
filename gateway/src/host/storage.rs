//! [`FsSiteStorage`]: the site gateway's persistence on the file system under `[wan]
//! data_dir` — a durable backlog directory per target, a cursor file per source, the log
//! generations file. Formats: `backlog/`, `cursors.rs`, `generations.rs`.
use super::{cursors, generations};
use crate::BacklogStore;
use crate::backlog::{BacklogConfig, FsStorage};
use crate::delegator::Delegator;
use crate::limits::GatewayLimits;
use crate::site::SiteStorage;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tern_conflict::SiteId;
use tern_node::core::PartitionId;

/// Directory of the durable backlog towards `site`.
pub fn backlog_dir(data_dir: &Path, site: &str) -> PathBuf {
    data_dir.join("backlog").join(site)
}

#[derive(Debug)]
pub struct FsSiteStorage {
    data_dir: PathBuf,
    backlog: BacklogConfig,
}

impl FsSiteStorage {
    pub fn new(data_dir: PathBuf, backlog: BacklogConfig) -> Self {
        Self { data_dir, backlog }
    }
}

impl SiteStorage for FsSiteStorage {
    type Store = BacklogStore<FsStorage>;

    fn open_delegator(
        &mut self,
        site: &str,
        local: SiteId,
        target: SiteId,
        limits: GatewayLimits,
    ) -> Result<Delegator<Self::Store>, String> {
        let dir = backlog_dir(&self.data_dir, site);
        let storage = FsStorage::open_dir(&dir)
            .map_err(|e| format!("opening backlog directory {}: {e}", dir.display()))?;
        let (delegator, report) =
            Delegator::open(local, target, limits, storage, self.backlog.clone())
                .map_err(|e| format!("opening the backlog of {site}: {e}"))?;
        if !report.events.is_empty() {
            tracing::warn!(target_site = site, events = ?report.events, "backlog recovery");
        }
        Ok(delegator)
    }

    fn sync_backlog(&mut self, _site: &str, store: &mut Self::Store) -> Result<(), String> {
        store.sync().map_err(|e| e.to_string())
    }

    fn remove_backlog(&mut self, site: &str) {
        let dir = backlog_dir(&self.data_dir, site);
        if let Err(error) = std::fs::remove_dir_all(&dir) {
            tracing::warn!(%error, dir = %dir.display(), "deleting a removed target's backlog");
        }
    }

    fn load_cursors(&mut self, site: &str) -> BTreeMap<PartitionId, u64> {
        let path = cursors::cursor_path(&self.data_dir, site);
        cursors::load(&path).unwrap_or_else(|error| {
            tracing::warn!(%error, "sink cursors unreadable: the source resends from the start");
            BTreeMap::new()
        })
    }

    fn store_cursors(
        &mut self,
        site: &str,
        saved: &BTreeMap<PartitionId, u64>,
    ) -> Result<(), String> {
        let path = cursors::cursor_path(&self.data_dir, site);
        cursors::store(&path, saved.iter().map(|(p, s)| (*p, *s))).map_err(|e| e.to_string())
    }

    fn store_generations(
        &mut self,
        by_partition: &BTreeMap<PartitionId, u64>,
    ) -> Result<(), String> {
        let path = generations::path_in(&self.data_dir);
        generations::save(&path, by_partition).map_err(|e| e.to_string())
    }
}
