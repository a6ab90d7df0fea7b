//! After the heal: how long until every partition is served again (invariant 9), and, after the
//! quiet period, whether the site converged: one map everywhere, every partition back on its
//! preferred primary (failback) with every replica in sync and holding the same entries; and
//! whether the membership is what the configurations say ([`Sim::check_membership`]).
use super::msg::Msg;
use super::node::SiteNode;
use super::{Fault, Life, Sim};
use crate::check::site::SiteViolation;
use crate::check::{Violation, show_key};
use crate::world::World;
use bytes::Bytes;
use tern_conflict::Versioned;
use tern_node::cluster::NodeId;
use tern_node::core::{PartitionId, Role};

impl Sim {
    /// Why `partition` has no serving primary right now (`Ok` if it has one): the newest map
    /// names a primary that is up, runs the incarnation the map registered, and whose replica
    /// acts as primary at the map's epoch.
    pub(super) fn served(&self, partition: PartitionId) -> Result<(), String> {
        let map = self.newest_map().ok_or("no node is running")?;
        let a = map
            .assignment(partition)
            .ok_or_else(|| format!("the map (v{}) has no {partition}", map.map_version()))?;
        let primary = a.primary.ok_or_else(|| {
            format!(
                "the newest map (v{}) has no primary at epoch {} (replicas {:?}, in sync {:?}, \
                 orphaned by {:?})",
                map.map_version(),
                a.epoch,
                a.replicas,
                a.in_sync,
                a.orphaned_by
            )
        })?;
        let node = self
            .slot_of(primary)
            .and_then(|i| self.slots[i].node.as_ref())
            .ok_or_else(|| format!("its primary {primary} is down"))?;
        let registered = map.node(primary).map(|i| i.incarnation);
        if registered != Some(node.incarnation()) {
            return Err(format!(
                "its primary {primary} runs incarnation {} but the map (v{}) registered {registered:?}",
                node.incarnation(),
                map.map_version()
            ));
        }
        let replica = node
            .replica(partition)
            .ok_or_else(|| format!("{primary} has no replica of it"))?;
        if replica.role() != Role::Primary || replica.epoch() != a.epoch {
            return Err(format!(
                "the map (v{}) names {primary} primary at epoch {}, but its replica is {:?} at \
                 epoch {} (its own map is v{})",
                map.map_version(),
                a.epoch,
                replica.role(),
                replica.epoch(),
                node.map().map_version()
            ));
        }
        Ok(())
    }

    fn all_served(&self) -> bool {
        (0..self.config.shell.partitions).all(|p| self.served(PartitionId(p)).is_ok())
    }

    pub(super) fn probe(&mut self, world: &mut World<Msg>) {
        let Some(healed) = self.healed_at else {
            return;
        };
        if self.stats.resume_ms.is_some() {
            return;
        }
        if self.all_served() {
            self.stats.resume_ms = Some(world.now().micros_since(healed) / 1000);
        } else {
            world.set_timer(self.chaos_host, 10_000, Msg::Chaos(Fault::Probe));
        }
    }

    pub(super) fn check_resume(&mut self, world: &mut World<Msg>) -> Result<(), Violation> {
        self.probe(world);
        for p in 0..self.config.shell.partitions {
            let partition = PartitionId(p);
            if let Err(detail) = self.served(partition) {
                return Err(SiteViolation::NoPrimaryAfterHeal {
                    partition,
                    bound_ms: self.config.resume_bound_ms,
                    detail,
                }
                .into());
            }
        }
        Ok(())
    }

    /// The end of the quiet period: everything must have settled.
    pub(super) fn finish(&mut self, world: &mut World<Msg>) -> Result<(), Violation> {
        // Replicas sweep expired values on their own clocks: compare what a reader would see
        // at the latest clock of the site.
        let visible_at = self
            .slots
            .iter()
            .map(|s| world.local_ms(s.host))
            .max()
            .unwrap_or(0);
        let fail = |detail: String| -> Violation { SiteViolation::NotConverged { detail }.into() };
        if self.clients_busy() {
            return Err(fail("a client still waits for an answer".to_string()));
        }
        let mut nodes = Vec::new();
        for slot in self.slots.iter().filter(|s| s.life == Life::Active) {
            let node = slot
                .node
                .as_ref()
                .ok_or_else(|| fail(format!("{} is down", slot.id)))?;
            if node.pending_forwards() > 0 {
                return Err(fail(format!(
                    "{} still forwards {} requests",
                    slot.id,
                    node.pending_forwards()
                )));
            }
            nodes.push(node);
        }
        let first = nodes[0];
        for node in &nodes[1..] {
            if node.map() != first.map() {
                return Err(fail(format!(
                    "{} holds map v{} but {} holds v{}",
                    node.id(),
                    node.map().map_version(),
                    first.id(),
                    first.map().map_version()
                )));
            }
        }
        let map = first.map();
        self.check_membership(&nodes).map_err(fail)?;
        for p in 0..self.config.shell.partitions {
            let partition = PartitionId(p);
            self.served(partition)
                .map_err(|detail| fail(format!("{partition}: {detail}")))?;
            let Some(a) = map.assignment(partition) else {
                continue;
            };
            let primary = a.primary.expect("served() checked it");
            if a.preferred.first() != Some(&primary) {
                return Err(fail(format!(
                    "{partition}: primary is {primary}, not its preferred {:?} (no failback)",
                    a.preferred.first()
                )));
            }
            let backups: Vec<_> = a.replicas.iter().filter(|&&n| n != primary).collect();
            if backups.len() != usize::from(self.config.shell.backups)
                || !backups.iter().all(|n| a.in_sync.contains(n))
            {
                return Err(fail(format!(
                    "{partition}: replicas {:?}, in sync {:?}: not fully replicated",
                    a.replicas, a.in_sync
                )));
            }
            let primary_node = nodes
                .iter()
                .find(|n| n.id() == primary)
                .expect("every node is up");
            let primary_replica = primary_node
                .replica(partition)
                .expect("every node has every partition");
            if primary_replica.held_responses() > 0 || primary_replica.queued_requests() > 0 {
                return Err(fail(format!(
                    "{partition}: primary {primary} still holds {} and queues {} requests",
                    primary_replica.held_responses(),
                    primary_replica.queued_requests()
                )));
            }
            let expected = entries(primary_replica.partition(), visible_at);
            for &&backup in &backups {
                let node = nodes
                    .iter()
                    .find(|n| n.id() == backup)
                    .expect("every node is up");
                let replica = node
                    .replica(partition)
                    .expect("every node has every partition");
                if replica.role() != Role::Backup || replica.epoch() != a.epoch {
                    return Err(fail(format!(
                        "{partition}: backup {backup} is {:?} at epoch {}, the map's epoch is {}",
                        replica.role(),
                        replica.epoch(),
                        a.epoch
                    )));
                }
                let actual = entries(replica.partition(), visible_at);
                if let Some(detail) = first_difference(&expected, &actual) {
                    return Err(fail(format!(
                        "{partition}: backup {backup} differs from primary {primary}: {detail}"
                    )));
                }
            }
        }
        Ok(())
    }
}

impl Sim {
    /// The members are the nodes still configured (`nodes`, every one running): on every one of
    /// them the map's nodes, the configured peers and the Raft voters are exactly those, and
    /// no partition names any other node (a removed or dead one) in any role.
    fn check_membership(&self, nodes: &[&SiteNode]) -> Result<(), String> {
        let members: Vec<NodeId> = nodes.iter().map(|n| n.id()).collect();
        for node in nodes {
            let in_map: Vec<NodeId> = node.map().nodes().keys().copied().collect();
            let configured: Vec<NodeId> = node.configured().collect();
            let voters = node.raft().voters();
            for (what, listed) in [
                ("map", &in_map),
                ("configuration", &configured),
                ("Raft voters", &voters),
            ] {
                if *listed != members {
                    return Err(format!(
                        "{}'s {what} lists {listed:?}, the members are {members:?}",
                        node.id()
                    ));
                }
            }
        }
        let Some(map) = nodes.first().map(|n| n.map()) else {
            return Ok(());
        };
        for p in 0..self.config.shell.partitions {
            let partition = PartitionId(p);
            let Some(a) = map.assignment(partition) else {
                continue;
            };
            let named = a
                .primary
                .iter()
                .chain(&a.replicas)
                .chain(&a.in_sync)
                .chain(&a.preferred)
                .chain(&a.handover)
                .chain(a.orphaned_by.as_ref().map(|(n, _)| n));
            for id in named {
                if !members.contains(id) {
                    return Err(format!(
                        "{partition} names {id}, not a member ({members:?}): {a:?}"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A replica's entries as a reader sees them at `now_ms`: a value past its deadline reads as
/// gone whether or not this replica has swept it into a tombstone yet; the version stays.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Visible {
    Live(Versioned),
    Gone(tern_conflict::Version),
}

fn entries(core: &tern_node::core::PartitionCore, now_ms: u64) -> Vec<(Bytes, Visible)> {
    core.snapshot_entries()
        .map(|(k, v)| {
            let visible = if v.is_tombstone() || v.is_expired(now_ms) {
                Visible::Gone(v.version.clone())
            } else {
                Visible::Live(v.clone())
            };
            (k.clone(), visible)
        })
        .collect()
}

fn first_difference(expected: &[(Bytes, Visible)], actual: &[(Bytes, Visible)]) -> Option<String> {
    for i in 0..expected.len().max(actual.len()) {
        match (expected.get(i), actual.get(i)) {
            (Some(e), Some(a)) if e == a => continue,
            (e, a) => {
                let show = |x: Option<&(Bytes, Visible)>| match x {
                    Some((k, v)) => format!("{} = {v:?}", show_key(k)),
                    None => "nothing".to_string(),
                };
                return Some(format!(
                    "entry #{i}: primary holds {}, backup holds {}",
                    show(e),
                    show(a)
                ));
            }
        }
    }
    None
}
