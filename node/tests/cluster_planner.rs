//! The controller planner: failover, failback, drain and restart scenarios, and the property that
//! whatever it plans applies cleanly, in order, to the map it was given.
use proptest::prelude::*;
use std::collections::BTreeMap;
use tern_node::cluster::{Liveness, MapCommand, NodeId, NodeStatus, PartitionMap, PeerSpec, plan};
use tern_node::core::PartitionId;

fn id(n: u64) -> NodeId {
    NodeId::new(n).expect("test ids are non-zero")
}

fn apply_all(map: &mut PartitionMap, commands: &[MapCommand]) {
    for c in commands {
        if let Err(e) = map.apply(c) {
            panic!("planned {c:?} rejected: {e}");
        }
        map.check_invariants().expect("invariants");
    }
}

/// A world of nodes with liveness, and the "primaries" that report catch-up like replica.rs would.
struct World {
    map: PartitionMap,
    alive: BTreeMap<NodeId, Liveness>,
}

impl World {
    /// Three registered nodes (incarnation 1), 12 partitions, one backup, everything in sync.
    fn new() -> Self {
        let peers = (1..=3).map(|i| PeerSpec {
            id: id(i),
            addr: format!("h{i}"),
            zone: None,
        });
        let mut world = Self {
            map: PartitionMap::bootstrap(12, 1, peers),
            alive: (1..=3)
                .map(|i| (id(i), Liveness::Alive { incarnation: 1 }))
                .collect(),
        };
        let planned = world.plan();
        assert_eq!(planned.len(), 3, "registers every node: {planned:?}");
        assert!(
            planned
                .iter()
                .all(|c| matches!(c, MapCommand::MarkUp { incarnation: 1, .. }))
        );
        apply_all(&mut world.map, &planned);
        world.catch_up_all();
        world
    }

    fn plan(&self) -> Vec<MapCommand> {
        let alive = self.alive.clone();
        plan(&self.map, &move |n| {
            alive.get(&n).copied().unwrap_or(Liveness::Unknown)
        })
    }

    /// What primaries do: declare every live, registered backup caught up.
    fn catch_up_all(&mut self) {
        for p in 0..self.map.partition_count() {
            let partition = PartitionId(p);
            let a = self.map.assignment(partition).expect("partition").clone();
            if a.primary.is_none() {
                continue;
            }
            for node in a
                .replicas
                .iter()
                .filter(|&&n| Some(n) != a.primary && !a.in_sync.contains(&n))
            {
                let up = self
                    .map
                    .node(*node)
                    .is_some_and(|i| i.status != NodeStatus::Down);
                if up {
                    apply_all(
                        &mut self.map,
                        &[MapCommand::CaughtUp {
                            partition,
                            epoch: a.epoch,
                            node: *node,
                            sync_generation: a.sync_generation,
                        }],
                    );
                }
            }
        }
    }

    /// What old primaries do once they drained: complete every started handover.
    fn complete_handovers(&mut self) {
        for p in 0..self.map.partition_count() {
            let partition = PartitionId(p);
            let a = self.map.assignment(partition).expect("partition").clone();
            if let Some(to) = a.handover {
                apply_all(
                    &mut self.map,
                    &[MapCommand::CompleteHandover {
                        partition,
                        epoch: a.epoch,
                        to,
                        last_seq: 1,
                    }],
                );
            }
        }
    }

    fn primaries_on(&self, node: NodeId) -> usize {
        self.map
            .partitions()
            .iter()
            .filter(|a| a.primary == Some(node))
            .count()
    }

    fn on_preferred_primary(&self) -> bool {
        self.map
            .partitions()
            .iter()
            .all(|a| a.primary == a.preferred.first().copied())
    }
}

#[test]
fn steady_state_plans_nothing() {
    let world = World::new();
    assert!(world.on_preferred_primary());
    assert_eq!(world.plan(), vec![]);
}

#[test]
fn primary_down_then_back_promotes_then_fails_back() {
    let mut world = World::new();
    let victim = id(1);
    let owned = world.primaries_on(victim);
    assert!(owned > 0);
    world.alive.insert(victim, Liveness::Dead);
    let planned = world.plan();
    assert_eq!(planned, vec![MapCommand::MarkDown { id: victim }]);
    apply_all(&mut world.map, &planned);
    assert_eq!(
        world.primaries_on(victim),
        0,
        "every partition promoted its in-sync backup"
    );
    assert!(world.map.partitions().iter().all(|a| a.primary.is_some()));
    assert_eq!(world.plan(), vec![], "nothing to do while it is down");

    // Back with the same incarnation (a network blip): a replica again, catching up.
    world
        .alive
        .insert(victim, Liveness::Alive { incarnation: 1 });
    let planned = world.plan();
    assert_eq!(
        planned,
        vec![MapCommand::MarkUp {
            id: victim,
            incarnation: 1
        }]
    );
    apply_all(&mut world.map, &planned);
    assert_eq!(world.plan(), vec![], "no failback before it is in sync");
    world.catch_up_all();
    let planned = world.plan();
    assert_eq!(
        planned.len(),
        owned,
        "one failback handover per partition it prefers: {planned:?}"
    );
    assert!(
        planned
            .iter()
            .all(|c| matches!(c, MapCommand::StartHandover { to, .. } if *to == victim))
    );
    apply_all(&mut world.map, &planned);
    assert_eq!(
        world.plan(),
        vec![],
        "handovers in progress are not planned twice"
    );
    world.complete_handovers();
    assert!(world.on_preferred_primary());
    assert_eq!(world.primaries_on(victim), owned);
    assert_eq!(world.plan(), vec![]);
}

#[test]
fn drain_moves_every_primary_off_the_node() {
    let mut world = World::new();
    let drained = id(2);
    apply_all(&mut world.map, &[MapCommand::Drain { id: drained }]);
    let planned = world.plan();
    assert_eq!(planned.len(), world.primaries_on(drained));
    apply_all(&mut world.map, &planned);
    world.complete_handovers();
    assert_eq!(world.primaries_on(drained), 0);
    assert_eq!(world.plan(), vec![], "no failback to a draining node");
    // Stop it (rolling restart), start it again with a new incarnation, undrain: it fails back.
    world.alive.insert(drained, Liveness::Dead);
    let planned = world.plan();
    apply_all(&mut world.map, &planned);
    assert_eq!(
        world.map.node(drained).map(|n| n.status),
        Some(NodeStatus::DownDraining),
        "down, and still draining should it come back without a restart"
    );
    world
        .alive
        .insert(drained, Liveness::Alive { incarnation: 2 });
    let planned = world.plan();
    apply_all(&mut world.map, &planned);
    world.catch_up_all();
    let planned = world.plan();
    apply_all(&mut world.map, &planned);
    world.complete_handovers();
    assert!(world.on_preferred_primary());
}

#[test]
fn a_restart_within_the_timeout_is_fenced_by_incarnation() {
    let mut world = World::new();
    let restarted = id(3);
    let owned = world.primaries_on(restarted);
    world
        .alive
        .insert(restarted, Liveness::Alive { incarnation: 2 });
    let planned = world.plan();
    assert_eq!(
        planned,
        vec![MapCommand::MarkUp {
            id: restarted,
            incarnation: 2
        }]
    );
    apply_all(&mut world.map, &planned);
    assert_eq!(
        world.primaries_on(restarted),
        0,
        "its in-memory data is gone; {owned} partitions promoted"
    );
    assert!(
        world
            .map
            .partitions()
            .iter()
            .all(|a| !a.in_sync.contains(&restarted))
    );
    // A late heartbeat of the old incarnation plans nothing.
    world
        .alive
        .insert(restarted, Liveness::Alive { incarnation: 1 });
    assert_eq!(world.plan(), vec![]);
}

#[test]
fn unknown_liveness_never_marks_down() {
    let mut world = World::new();
    world.alive.clear(); // a new leader that has not heard anyone yet
    assert_eq!(world.plan(), vec![]);
}

fn liveness_strategy() -> impl Strategy<Value = Vec<(u8, u8)>> {
    prop::collection::vec((0u8..4, 0u8..3), 3)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// From maps reached by random failures, returns, catch-ups and drains, every plan applies
    /// cleanly in order, and the map never gets a down primary.
    #[test]
    fn plans_always_apply(rounds in prop::collection::vec((liveness_strategy(), any::<bool>(), any::<bool>(), 0u8..4), 1..12)) {
        let mut world = World::new();
        for (liveness, catch_up, complete, drain) in rounds {
            for (i, (kind, incarnation)) in liveness.into_iter().enumerate() {
                let node = id(i as u64 + 1);
                let l = match kind {
                    0 => Liveness::Dead,
                    1 => Liveness::Unknown,
                    _ => Liveness::Alive { incarnation: u64::from(incarnation) + 1 },
                };
                world.alive.insert(node, l);
            }
            if drain > 0 {
                let node = id(u64::from(drain));
                let _ = world.map.apply(&MapCommand::Drain { id: node });
            }
            let planned = world.plan();
            let mut applied = world.map.clone();
            for c in &planned {
                if let Err(e) = applied.apply(c) {
                    return Err(TestCaseError::fail(format!("planned {c:?} rejected: {e}")));
                }
            }
            world.map = applied;
            world.map.check_invariants().map_err(TestCaseError::fail)?;
            if catch_up {
                world.catch_up_all();
            }
            if complete {
                world.complete_handovers();
            }
        }
    }
}
