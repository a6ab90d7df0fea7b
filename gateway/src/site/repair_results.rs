//! Answers to the repair requests the shell ran ([`super::RepairLoad`],
//! [`super::RepairPush`]).
use super::repair::{DumpEntries, LoadOwner};
use super::{Side, SiteGateway, SiteStorage, links};
use bytes::Bytes;
use tern_conflict::Versioned;
use tern_node::core::{CommandResult, PartitionId};

impl<P: SiteStorage> SiteGateway<P> {
    /// The snapshot load `token` finished (entries in scan order, or why it failed).
    pub fn handle_repair_loaded(
        &mut self,
        token: u64,
        result: Result<DumpEntries, String>,
        now_ms: u64,
    ) {
        match self.repair.take_load(token) {
            // A load of a removed peer's session.
            None => {}
            Some(LoadOwner::Initiator { target, partition }) => {
                if let Some(t) = self.targets.get_mut(&target) {
                    let link_up = t.link.is_some() && t.delegator.is_connected();
                    let out = t.repair.on_loaded(
                        partition,
                        token,
                        result,
                        link_up,
                        &mut self.repair,
                        now_ms,
                    );
                    links::queue(&mut self.transmits, Side::ToTarget, &target, t.link, out);
                }
            }
            Some(LoadOwner::Responder {
                source,
                session,
                partition,
            }) => {
                if let Some(s) = self.sources.get_mut(&source) {
                    let out = s.repair.on_loaded(
                        session,
                        partition,
                        token,
                        result,
                        &mut self.repair,
                        now_ms,
                    );
                    links::queue(&mut self.transmits, Side::FromSource, &source, s.link, out);
                }
            }
        }
        self.settle(now_ms);
    }

    /// A repair push finished: `results[i]` answers `entries[i]`.
    pub fn handle_repair_pushed(
        &mut self,
        partition: PartitionId,
        entries: &[(Bytes, Versioned)],
        results: &[CommandResult],
        now_ms: u64,
    ) {
        self.repair.on_pushed(partition, entries, results);
        self.settle(now_ms);
    }
}
