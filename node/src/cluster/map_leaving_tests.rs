//! Leaving nodes: a draining node's copies move to stand-ins before they are dropped, a draining
//! node is promoted only when it alone holds every acknowledged write, and `RemoveNode` waits
//! until nothing depends on the node (docs/design/site-ha.md, "Membership").
use super::*;

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
