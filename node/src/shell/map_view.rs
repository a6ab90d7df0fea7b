//! The partition map as one node acts on it. The incarnation rule lives here: a node acts as
//! primary or in-sync backup only while the map records its current incarnation, because the
//! map's trust was placed in whichever incarnation registered, and a restarted node's data died
//! with the previous one.
use crate::cluster::{NodeId, PartitionMap};
use crate::core::{AssignmentFacts, PartitionId};

#[derive(Debug)]
pub struct MapView {
    pub map: PartitionMap,
    pub me: NodeId,
    /// The map records this node's current incarnation.
    pub registered: bool,
}

impl MapView {
    pub fn new(map: PartitionMap, me: NodeId, incarnation: u64) -> Self {
        let registered = map.node(me).is_some_and(|i| i.incarnation == incarnation);
        Self {
            map,
            me,
            registered,
        }
    }

    /// What `partition`'s local replica acts on: the map's facts, minus this node's primary
    /// role and in-sync membership while it is not registered.
    pub fn facts(&self, partition: PartitionId) -> AssignmentFacts {
        let Some(a) = self.map.assignment(partition) else {
            return AssignmentFacts::default();
        };
        let me = self.me.get();
        let mut primary = a.primary.map(NodeId::get);
        let mut in_sync: std::collections::BTreeSet<u64> =
            a.in_sync.iter().map(|n| n.get()).collect();
        if !self.registered {
            if primary == Some(me) {
                primary = None;
            }
            in_sync.remove(&me);
        }
        AssignmentFacts {
            epoch: a.epoch,
            primary,
            replicas: a.replicas.iter().map(|n| n.get()).collect(),
            in_sync,
            handover: a.handover.map(NodeId::get),
        }
    }

    /// Where to send `partition`'s requests: its primary, unless that is this node while
    /// unregistered (it would only redirect).
    pub fn route(&self, partition: PartitionId) -> Option<NodeId> {
        let primary = self.map.assignment(partition)?.primary?;
        (primary != self.me || self.registered).then_some(primary)
    }

    /// The partition's `sync_generation`, which a caught-up proposal must carry.
    pub fn sync_generation(&self, partition: PartitionId) -> u64 {
        self.map
            .assignment(partition)
            .map_or(0, |a| a.sync_generation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{MapCommand, PeerSpec};

    fn id(n: u64) -> NodeId {
        NodeId::new(n).expect("non-zero")
    }

    #[test]
    fn an_unregistered_node_neither_leads_nor_counts_as_in_sync() {
        let peers = (1..=2).map(|n| PeerSpec {
            id: id(n),
            addr: format!("h{n}"),
            zone: None,
        });
        let mut map = PartitionMap::bootstrap(1, 1, peers);
        let p0 = PartitionId(0);
        let (primary, epoch) = map.primary_of(p0).expect("bootstrap primary");
        let backup = if primary == id(1) { id(2) } else { id(1) };
        for n in [primary, backup] {
            map.apply(&MapCommand::MarkUp {
                id: n,
                incarnation: 4,
            })
            .expect("register");
        }
        map.apply(&MapCommand::CaughtUp {
            partition: p0,
            epoch,
            node: backup,
            sync_generation: 0,
        })
        .expect("in sync");
        // (incarnation this process runs, facts: primary, backup in sync, route)
        let cases = [
            (4, Some(primary.get()), true, Some(primary)),
            (5, None, false, None),
        ];
        for (incarnation, want_primary, backup_in_sync, route) in cases {
            let as_primary = MapView::new(map.clone(), primary, incarnation);
            let facts = as_primary.facts(p0);
            assert_eq!(facts.primary, want_primary, "incarnation {incarnation}");
            assert_eq!(facts.epoch, epoch);
            assert_eq!(as_primary.route(p0), route, "incarnation {incarnation}");
            let as_backup = MapView::new(map.clone(), backup, incarnation);
            assert_eq!(
                as_backup.facts(p0).in_sync.contains(&backup.get()),
                backup_in_sync,
                "incarnation {incarnation}"
            );
        }
    }
}
