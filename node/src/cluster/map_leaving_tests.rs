//! Leaving nodes: a draining node's copies move to stand-ins before they are dropped, a draining
//! node is promoted only when it alone holds every acknowledged write, and `RemoveNode` waits
//! until nothing depends on the node (docs/design/site-ha.md, "Membership").
use super::*;
use crate::cluster::detector::Liveness;
use crate::cluster::planner::plan;

fn id(n: u64) -> NodeId {
    NodeId::new(n).expect("test ids are non-zero")
}

fn ok(map: &mut PartitionMap, command: MapCommand) {
    if let Err(e) = map.apply(&command) {
        panic!("{command:?} rejected: {e}");
    }
    map.check_invariants()
        .expect("invariants after an applied command");
}

/// `nodes` registered nodes, `backups` per partition, every backup in sync.
fn site(nodes: u64, backups: u8, partitions: u16) -> PartitionMap {
    let peers = (1..=nodes).map(|n| PeerSpec {
        id: id(n),
        addr: format!("h{n}"),
        zone: None,
    });
    let mut map = PartitionMap::bootstrap(partitions, backups, peers);
    for n in 1..=nodes {
        ok(
            &mut map,
            MapCommand::MarkUp {
                id: id(n),
                incarnation: 1,
            },
        );
    }
    catch_up_all(&mut map);
    map
}

/// The next replica of `partition` that is not in sync, as its primary would report it.
fn next_catch_up(map: &PartitionMap, partition: PartitionId) -> Option<MapCommand> {
    let a = map.assignment(partition)?;
    a.primary?;
    let node = *a
        .replicas
        .iter()
        .find(|&&r| Some(r) != a.primary && !a.in_sync.contains(&r))?;
    Some(MapCommand::CaughtUp {
        partition,
        epoch: a.epoch,
        node,
        sync_generation: a.sync_generation,
    })
}

/// Every replica catches up (stand-ins included), one `CaughtUp` at a time.
fn catch_up_all(map: &mut PartitionMap) {
    for p in 0..map.partition_count() {
        while let Some(command) = next_catch_up(map, PartitionId(p)) {
            ok(map, command);
        }
    }
}

/// Hands every partition `node` leads to an in-sync backup on an up node, as the planner does.
fn hand_over_primaries(map: &mut PartitionMap, node: NodeId) {
    for p in 0..map.partition_count() {
        let partition = PartitionId(p);
        let a = map.assignment(partition).expect("partition").clone();
        if a.primary != Some(node) {
            continue;
        }
        let to = *a
            .in_sync
            .iter()
            .find(|n| map.node(**n).map(|i| i.status) == Some(NodeStatus::Up))
            .expect("an in-sync backup on an up node");
        let epoch = a.epoch;
        ok(
            map,
            MapCommand::StartHandover {
                partition,
                epoch,
                to,
            },
        );
        ok(
            map,
            MapCommand::CompleteHandover {
                partition,
                epoch,
                to,
                last_seq: 0,
            },
        );
    }
}

/// A partition where `node` is an in-sync backup.
fn backed_up_by(map: &PartitionMap, node: NodeId) -> PartitionId {
    (0..map.partition_count())
        .map(PartitionId)
        .find(|&p| {
            map.assignment(p)
                .is_some_and(|a| a.primary != Some(node) && a.in_sync.contains(&node))
        })
        .expect("the node backs some partition up")
}

#[test]
fn a_draining_backup_is_replaced_by_a_stand_in_before_its_copy_is_dropped() {
    // (nodes, backups per partition)
    for (nodes, backups) in [(3, 1), (4, 1), (4, 2), (5, 2)] {
        let case = format!("{nodes} nodes, {backups} backups");
        let mut map = site(nodes, backups, 16);
        let leaving = id(nodes);
        let partition = backed_up_by(&map, leaving);
        let before = map.assignment(partition).expect("partition").clone();

        ok(&mut map, MapCommand::Drain { id: leaving });
        let a = map.assignment(partition).expect("partition").clone();
        assert!(a.in_sync.contains(&leaving), "{case}: kept while needed");
        let stand_ins: Vec<NodeId> = a
            .replicas
            .iter()
            .copied()
            .filter(|n| !before.replicas.contains(n))
            .collect();
        assert_eq!(stand_ins.len(), 1, "{case}: one stand-in: {a:?}");
        assert!(
            !a.in_sync.contains(&stand_ins[0]),
            "{case}: it must catch up"
        );
        assert_eq!(a.preferred, before.preferred, "{case}: placement unchanged");
        assert!(
            map.replicas_on(leaving)
                .iter()
                .all(|&p| map.role_of(leaving, p)
                    == Some(MapRole::Backup {
                        epoch: map.assignment(p).expect("p").epoch,
                        primary: map.assignment(p).expect("p").primary,
                        in_sync: true,
                    })
                    || map.assignment(p).expect("p").primary == Some(leaving)),
            "{case}: its copies that are not complete are dropped at once"
        );

        let catch_up = next_catch_up(&map, partition).expect("the stand-in catches up");
        ok(&mut map, catch_up);
        let a = map.assignment(partition).expect("partition");
        assert!(!a.replicas.contains(&leaving), "{case}: dropped: {a:?}");
        assert!(a.in_sync.contains(&stand_ins[0]), "{case}");
        assert_eq!(
            a.in_sync.len(),
            usize::from(backups),
            "{case}: full complement"
        );
    }
}

#[test]
fn a_draining_primary_hands_over_and_then_leaves_like_a_backup() {
    let mut map = site(3, 1, 16);
    let leaving = id(3);
    ok(&mut map, MapCommand::Drain { id: leaving });
    for a in map.partitions() {
        if a.primary == Some(leaving) {
            // The handover target and a stand-in for the copy the node takes with it.
            assert_eq!(a.replicas.len(), 3, "{a:?}");
        }
    }
    hand_over_primaries(&mut map, leaving);
    assert!(
        !map.replicas_on(leaving).is_empty(),
        "the old primary stays as the in-sync backup until its stand-ins caught up"
    );
    catch_up_all(&mut map);
    assert_eq!(map.replicas_on(leaving), vec![]);
    assert_eq!(map.check_removable(leaving), Ok(()));
    for a in map.partitions() {
        assert_eq!(a.in_sync.len(), 1, "{a:?}");
    }
}

#[test]
fn a_draining_node_keeps_its_copies_when_no_node_can_take_them() {
    // (nodes, backups, down): the up nodes other than the leaving one cannot hold N backups.
    for (nodes, backups, down) in [(2, 1, None), (3, 2, None), (3, 1, Some(1))] {
        let case = format!("{nodes} nodes, {backups} backups, down {down:?}");
        let mut map = site(nodes, backups, 8);
        let leaving = id(nodes);
        if let Some(d) = down {
            ok(&mut map, MapCommand::MarkDown { id: id(d) });
            catch_up_all(&mut map);
        }
        ok(&mut map, MapCommand::Drain { id: leaving });
        hand_over_primaries(&mut map, leaving);
        catch_up_all(&mut map);
        for a in map.partitions() {
            if a.primary.is_some() {
                assert!(a.in_sync.contains(&leaving), "{case}: {a:?}");
            }
        }
        // Removal is fine once the others hold what they can (the site is shrinking below N+1),
        // but not while a down node may come back to hold a backup.
        let removable = map.check_removable(leaving);
        assert_eq!(removable.is_ok(), down.is_none(), "{case}: {removable:?}");
    }
}

#[test]
fn remove_node_is_refused_while_anything_depends_on_the_node() {
    type Setup = fn(&mut PartitionMap) -> NodeId;
    type Expected = fn(NodeId, PartitionId) -> Rejected;
    let cases: Vec<(&str, Setup, Expected)> = vec![
        (
            "draining, still primary",
            |m| {
                ok(m, MapCommand::Drain { id: id(4) });
                id(4)
            },
            |node, partition| Rejected::StillPrimary { node, partition },
        ),
        (
            "draining, receiving a handover",
            |m| {
                let p = PartitionId(
                    (0..m.partition_count())
                        .find(|&p| {
                            m.role_of(id(4), PartitionId(p))
                                .is_some_and(|r| matches!(r, MapRole::Backup { .. }))
                        })
                        .expect("4 backs something up"),
                );
                let epoch = m.assignment(p).expect("p").epoch;
                ok(
                    m,
                    MapCommand::StartHandover {
                        partition: p,
                        epoch,
                        to: id(4),
                    },
                );
                ok(m, MapCommand::Drain { id: id(4) });
                hand_over_primaries(m, id(4));
                id(4)
            },
            |node, partition| Rejected::ReceivingHandover { node, partition },
        ),
        (
            "draining, stand-ins still catching up",
            |m| {
                ok(m, MapCommand::Drain { id: id(4) });
                hand_over_primaries(m, id(4));
                id(4)
            },
            |node, partition| Rejected::StillNeeded {
                node,
                partition,
                in_sync_elsewhere: 0,
                needed: 1,
            },
        ),
        (
            "down, the only complete copy of partitions it led",
            |m| {
                // A backup of each of its partitions leaves the in-sync set first.
                for p in 0..m.partition_count() {
                    let a = m.assignment(PartitionId(p)).expect("p").clone();
                    if a.primary == Some(id(4)) {
                        for &remove in &a.in_sync {
                            ok(
                                m,
                                MapCommand::ShrinkInSync {
                                    partition: PartitionId(p),
                                    epoch: a.epoch,
                                    remove,
                                },
                            );
                        }
                    }
                }
                ok(m, MapCommand::MarkDown { id: id(4) });
                id(4)
            },
            |node, partition| Rejected::WaitedFor { node, partition },
        ),
    ];
    for (case, setup, expected) in cases {
        let mut map = site(4, 1, 16);
        let node = setup(&mut map);
        let before = map.clone();
        let got = map.apply(&MapCommand::RemoveNode { id: node });
        let Err(rejected) = got else {
            panic!("{case}: accepted");
        };
        let partition = match &rejected {
            Rejected::StillPrimary { partition, .. }
            | Rejected::ReceivingHandover { partition, .. }
            | Rejected::StillNeeded { partition, .. }
            | Rejected::WaitedFor { partition, .. } => *partition,
            other => panic!("{case}: {other}"),
        };
        assert_eq!(rejected, expected(node, partition), "{case}");
        assert_eq!(map, before, "{case}: a rejection changes nothing");
        assert_eq!(map.check_removable(node), Err(rejected), "{case}");
    }
}

#[test]
fn remove_node_is_accepted_once_nothing_depends_on_the_node() {
    // (case, setup, every partition still has an in-sync backup afterwards)
    type Setup = fn(&mut PartitionMap);
    let cases: Vec<(&str, Setup, bool)> = vec![
        (
            "drained, stand-ins caught up",
            |m| {
                ok(m, MapCommand::Drain { id: id(4) });
                hand_over_primaries(m, id(4));
                catch_up_all(m);
            },
            true,
        ),
        (
            "down, its partitions promoted in-sync backups",
            |m| {
                ok(m, MapCommand::MarkDown { id: id(4) });
            },
            false,
        ),
        (
            "down while draining, stand-ins caught up",
            |m| {
                ok(m, MapCommand::Drain { id: id(4) });
                hand_over_primaries(m, id(4));
                catch_up_all(m);
                ok(m, MapCommand::MarkDown { id: id(4) });
            },
            true,
        ),
    ];
    for (case, setup, backed_up) in cases {
        let mut map = site(4, 1, 16);
        setup(&mut map);
        ok(&mut map, MapCommand::RemoveNode { id: id(4) });
        assert!(map.node(id(4)).is_none(), "{case}");
        for a in map.partitions() {
            assert!(
                !a.replicas.contains(&id(4)) && !a.preferred.contains(&id(4)),
                "{case}: {a:?}"
            );
            assert!(a.primary.is_some(), "{case}: {a:?}");
            assert!(!backed_up || !a.in_sync.is_empty(), "{case}: {a:?}");
        }
    }
}

#[test]
fn a_draining_node_is_promoted_only_when_it_alone_holds_every_write() {
    // 4 nodes, 2 backups: a partition can have a draining and an up node in sync at once.
    let mut map = site(4, 2, 16);
    let leaving = id(4);
    let partition = backed_up_by(&map, leaving);
    let a = map.assignment(partition).expect("partition").clone();
    let primary = a.primary.expect("primary");
    let other = *a
        .in_sync
        .iter()
        .find(|&&n| n != leaving)
        .expect("a second in-sync backup");
    ok(&mut map, MapCommand::Drain { id: leaving });
    assert!(
        map.assignment(partition)
            .expect("p")
            .in_sync
            .contains(&leaving)
    );

    // (case, shrink the up backup first)
    for (case, only_the_leaving_copy) in [
        ("an up in-sync backup exists", false),
        ("the draining node is the only complete copy", true),
    ] {
        let mut map = map.clone();
        if only_the_leaving_copy {
            let a = map.assignment(partition).expect("p").clone();
            ok(
                &mut map,
                MapCommand::ShrinkInSync {
                    partition,
                    epoch: a.epoch,
                    remove: other,
                },
            );
        }
        ok(&mut map, MapCommand::MarkDown { id: primary });
        let promoted = map.assignment(partition).expect("p").primary;
        let expected = if only_the_leaving_copy {
            leaving
        } else {
            other
        };
        assert_eq!(promoted, Some(expected), "{case}");
    }
}

#[test]
fn undrain_makes_the_node_a_placement_target_again() {
    let original = site(3, 1, 16);
    let mut map = original.clone();
    let node = id(3);
    ok(&mut map, MapCommand::Drain { id: node });
    hand_over_primaries(&mut map, node);
    catch_up_all(&mut map);
    assert_eq!(map.replicas_on(node), vec![]);

    ok(&mut map, MapCommand::Undrain { id: node });
    for (p, (a, was)) in map
        .partitions()
        .iter()
        .zip(original.partitions())
        .enumerate()
    {
        if was.replicas.contains(&node) {
            assert!(a.replicas.contains(&node), "p{p}: a copy again: {a:?}");
            assert!(!a.in_sync.contains(&node), "p{p}: it must catch up first");
            assert!(!a.in_sync.is_empty(), "p{p}: the stand-in stays until then");
        }
    }
    catch_up_all(&mut map);
    for (p, (a, was)) in map
        .partitions()
        .iter()
        .zip(original.partitions())
        .enumerate()
    {
        let (mut now, mut then) = (a.replicas.clone(), was.replicas.clone());
        now.sort();
        then.sort();
        assert_eq!(now, then, "p{p}: back to its placement (stand-ins dropped)");
    }
}

/// What happens to the leaving node in [`a_drain_survives_down_and_up_only_without_a_restart`].
#[derive(Clone, Copy, Debug)]
enum Event {
    Drain,
    Undrain,
    /// The detector calls it dead; the planner marks it down.
    Silent,
    /// Heard again with this incarnation; the planner marks it up.
    Heard(u64),
    /// The planner and the primaries finish what they have to do ([`settle`]).
    Settle,
}

/// The liveness the planner sees: every node alive with its registered incarnation, a down
/// node dead (still silent), and `changed` as given.
fn liveness_of(
    map: &PartitionMap,
    changed: Option<(NodeId, Liveness)>,
) -> impl Fn(NodeId) -> Liveness {
    let statuses: BTreeMap<NodeId, NodeInfo> = map.nodes().clone();
    move |n| match (changed, statuses.get(&n)) {
        (Some((c, liveness)), _) if c == n => liveness,
        (_, Some(i)) if i.status.is_down() => Liveness::Dead,
        (_, Some(i)) => Liveness::Alive {
            incarnation: i.incarnation,
        },
        (_, None) => Liveness::Unknown,
    }
}

/// Runs the planner until it has nothing left to do, as the leader and the primaries would:
/// handovers complete at once and every replica catches up.
fn settle(map: &mut PartitionMap) {
    for _ in 0..32 {
        catch_up_all(map);
        let commands = plan(map, &liveness_of(map, None));
        if commands.is_empty() {
            return;
        }
        for command in commands {
            ok(map, command.clone());
            if let MapCommand::StartHandover {
                partition,
                epoch,
                to,
            } = command
            {
                ok(
                    map,
                    MapCommand::CompleteHandover {
                        partition,
                        epoch,
                        to,
                        last_seq: 0,
                    },
                );
            }
        }
    }
    panic!(
        "the planner did not settle: {:?}",
        plan(map, &liveness_of(map, None))
    );
}

/// Applies `event` to `node` the way the site does: operator requests directly, liveness
/// changes through the planner (which must notice a down node that is draining, too).
fn happen(map: &mut PartitionMap, node: NodeId, event: Event) {
    let (liveness, expected) = match event {
        Event::Drain => return ok(map, MapCommand::Drain { id: node }),
        Event::Undrain => return ok(map, MapCommand::Undrain { id: node }),
        Event::Settle => return settle(map),
        Event::Silent => (Liveness::Dead, MapCommand::MarkDown { id: node }),
        Event::Heard(incarnation) => (
            Liveness::Alive { incarnation },
            MapCommand::MarkUp {
                id: node,
                incarnation,
            },
        ),
    };
    let commands = plan(map, &liveness_of(map, Some((node, liveness))));
    assert!(commands.contains(&expected), "{event:?}: {commands:?}");
    for command in commands {
        ok(map, command);
    }
}

#[test]
fn a_drain_survives_down_and_up_only_without_a_restart() {
    use Event::*;
    // (case, events for node 4 registered at incarnation 1, its status once the site settled)
    let cases: Vec<(&str, Vec<Event>, NodeStatus)> = vec![
        (
            "drain, down mid-drain, heard again (same incarnation)",
            vec![Drain, Silent, Heard(1)],
            NodeStatus::Draining,
        ),
        (
            "drained, down, heard again (same incarnation)",
            vec![Drain, Settle, Silent, Settle, Heard(1)],
            NodeStatus::Draining,
        ),
        (
            "drain, down and heard again twice (same incarnation)",
            vec![Drain, Silent, Heard(1), Silent, Settle, Heard(1)],
            NodeStatus::Draining,
        ),
        (
            "drain, down, restarted (new incarnation)",
            vec![Drain, Silent, Settle, Heard(2)],
            NodeStatus::Up,
        ),
        (
            "drain, restarted before it was marked down",
            vec![Drain, Heard(2)],
            NodeStatus::Up,
        ),
        (
            "drain, down, undrain while down, heard again",
            vec![Drain, Silent, Undrain, Heard(1)],
            NodeStatus::Up,
        ),
        (
            "drain, down, undrain while down",
            vec![Drain, Silent, Undrain],
            NodeStatus::Down,
        ),
        ("drain, down", vec![Drain, Silent], NodeStatus::DownDraining),
        (
            "no drain: down, heard again",
            vec![Silent, Heard(1)],
            NodeStatus::Up,
        ),
    ];
    for (case, events, expected) in cases {
        let mut map = site(4, 1, 16);
        let node = id(4);
        for &event in &events {
            happen(&mut map, node, event);
        }
        settle(&mut map);
        assert_eq!(map.node(node).map(|i| i.status), Some(expected), "{case}");
        let primaries = map
            .partitions()
            .iter()
            .filter(|a| a.primary == Some(node))
            .count();
        if expected == NodeStatus::Up {
            // Failback gave it its preferred partitions again: a fresh (or undrained) member.
            assert!(primaries > 0, "{case}: primary nowhere");
            continue;
        }
        // Leaving or down: primary nowhere, no copy, and nothing waits for it.
        assert_eq!(primaries, 0, "{case}");
        assert_eq!(map.replicas_on(node), vec![], "{case}");
        assert_eq!(map.check_removable(node), Ok(()), "{case}");
        if expected.is_down() {
            // Re-replication after another failure never picks it either.
            happen(&mut map, id(3), Silent);
            settle(&mut map);
            assert_eq!(map.replicas_on(node), vec![], "{case}, node 3 down too");
            for a in map.partitions() {
                assert_eq!(a.replicas.len(), 2, "{case}: copies on nodes 1, 2: {a:?}");
            }
        }
    }
}

#[test]
fn node_commands_that_do_not_fit_a_down_draining_node_are_rejected() {
    let mut map = site(4, 1, 16);
    let node = id(4);
    happen(&mut map, node, Event::Drain);
    happen(&mut map, node, Event::Silent);
    let wrong = |needed| Rejected::WrongStatus {
        node,
        status: NodeStatus::DownDraining,
        needed,
    };
    // (command, why it is refused)
    let cases = [
        (MapCommand::MarkDown { id: node }, wrong(NodeStatus::Up)),
        (MapCommand::Drain { id: node }, wrong(NodeStatus::Up)),
        (
            MapCommand::MarkUp {
                id: node,
                incarnation: 0,
            },
            Rejected::StaleIncarnation {
                node,
                known: 1,
                got: 0,
            },
        ),
    ];
    for (command, expected) in cases {
        let before = map.clone();
        assert_eq!(map.apply(&command), Err(expected), "{command:?}");
        assert_eq!(map, before, "{command:?}: a rejection changes nothing");
    }
    ok(&mut map, MapCommand::Undrain { id: node });
    assert_eq!(
        map.apply(&MapCommand::Undrain { id: node }),
        Err(Rejected::WrongStatus {
            node,
            status: NodeStatus::Down,
            needed: NodeStatus::Draining,
        })
    );
}

#[test]
fn a_node_drained_before_it_registered_stays_draining_when_it_registers() {
    let peers = (1..=4).map(|n| PeerSpec {
        id: id(n),
        addr: format!("h{n}"),
        zone: None,
    });
    let mut map = PartitionMap::bootstrap(16, 1, peers);
    for n in 1..=3 {
        ok(
            &mut map,
            MapCommand::MarkUp {
                id: id(n),
                incarnation: 1,
            },
        );
    }
    ok(&mut map, MapCommand::Drain { id: id(4) });
    ok(
        &mut map,
        MapCommand::MarkUp {
            id: id(4),
            incarnation: 1,
        },
    );
    // No earlier incarnation to tell a restart by: the operator's drain stands.
    assert_eq!(
        map.node(id(4)).map(|i| (i.status, i.incarnation)),
        Some((NodeStatus::Draining, 1))
    );
}
