//! Operator requests: add or remove a peer site, repair against one now.
use super::repair::{SourceRepair, TargetRepair};
use super::{SiteGateway, SiteStorage, Source, Target};
use crate::sink::Sink;
use std::collections::{BTreeMap, BTreeSet};
use tern_conflict::SiteId;
use tern_node::admin::{WanAdminError, WanTargetSpec};

/// What an operator can ask of the gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminCommand {
    /// Open the backlog towards the peer, ship to it and accept it as a source.
    AddTarget(WanTargetSpec),
    /// Stop shipping to the peer and refuse it; its backlog is deleted.
    RemoveTarget(String),
    /// Run anti-entropy against the peer now (every partition).
    Repair(String),
}

impl<P: SiteStorage> SiteGateway<P> {
    pub fn handle_admin(
        &mut self,
        command: AdminCommand,
        now_ms: u64,
    ) -> Result<(), WanAdminError> {
        let result = match command {
            AdminCommand::AddTarget(spec) => self.add_peer(&spec, now_ms),
            AdminCommand::RemoveTarget(site) => self.remove_peer(&site),
            AdminCommand::Repair(site) => self.request_repair(&site),
        };
        self.settle(now_ms);
        result
    }

    fn add_peer(&mut self, spec: &WanTargetSpec, now_ms: u64) -> Result<(), WanAdminError> {
        if spec.site == self.config.site {
            return Err(WanAdminError::Invalid(format!(
                "{:?} is this site",
                spec.site
            )));
        }
        if self.targets.contains_key(&spec.site) {
            return Err(WanAdminError::AlreadyTarget(spec.site.clone()));
        }
        if spec.site_id == self.config.site_id.0
            || self.targets.values().any(|t| t.site_id.0 == spec.site_id)
        {
            return Err(WanAdminError::Invalid(format!(
                "site id {} is already in use",
                spec.site_id
            )));
        }
        tern_node::transport::Identity::site(&spec.site)
            .map_err(|e| WanAdminError::Invalid(e.to_string()))?;
        let addr = tern_node::transport::PeerAddr::parse(&spec.addr)
            .map_err(|e| WanAdminError::Invalid(format!("addr {:?}: {e}", spec.addr)))?;
        let target_id = SiteId(spec.site_id);
        let delegator = self
            .storage
            .open_delegator(
                &spec.site,
                self.config.site_id,
                target_id,
                self.config.limits.clone(),
            )
            .map_err(WanAdminError::Invalid)?;
        let limits = &self.config.limits;
        self.targets.insert(
            spec.site.clone(),
            Target {
                site_id: target_id,
                addr: addr.to_string(),
                delegator,
                link: None,
                overflows_total: 0,
                failure: None,
                repair: TargetRepair::new(
                    &spec.site,
                    target_id,
                    self.config.repair_interval_ms,
                    limits,
                    now_ms,
                ),
            },
        );
        let saved = self.storage.load_cursors(&spec.site);
        let sink = Sink::with_cursors(self.config.site_id, target_id, limits.clone(), saved);
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
                lag: Default::default(),
                cursors_dirty: false,
                repair: SourceRepair::new(&spec.site, target_id, limits, now_ms),
            },
        );
        self.sync_generations(&spec.site);
        self.feed_rewind = true;
        tracing::info!(site = %spec.site, addr = %spec.addr, now_ms, "WAN peer added");
        Ok(())
    }

    fn remove_peer(&mut self, site: &str) -> Result<(), WanAdminError> {
        let Some(target) = self.targets.remove(site) else {
            return Err(WanAdminError::UnknownSite(site.to_owned()));
        };
        drop(target);
        self.sources.remove(site);
        self.held_hellos.retain(|(s, _, _)| s != site);
        self.storage.remove_backlog(site);
        tracing::info!(site, "WAN peer removed");
        Ok(())
    }

    fn request_repair(&mut self, site: &str) -> Result<(), WanAdminError> {
        let partitions: Vec<_> = self.partitions().collect();
        let Some(target) = self.targets.get_mut(site) else {
            return Err(WanAdminError::UnknownSite(site.to_owned()));
        };
        // The driver runs them; sessions under way may predate the request.
        for p in partitions {
            target.delegator.mark_repair(p);
        }
        target.repair.mark_all_stale();
        Ok(())
    }
}
