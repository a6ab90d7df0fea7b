//! `PartitionMap::apply`: every command's effect, every rejection, the versioned encodings, and a
//! property test that random command streams keep the map's invariants.
use proptest::prelude::*;
use tern_node::cluster::codec::CodecError;
use tern_node::cluster::{
    MapCommand, MapRole, NodeId, NodeStatus, PartitionMap, PeerSpec, Rejected,
};
use tern_node::core::PartitionId;

fn id(n: u64) -> NodeId {
    NodeId::new(n).expect("test ids are non-zero")
}

const P0: PartitionId = PartitionId(0);

fn peers(n: u64) -> impl Iterator<Item = PeerSpec> {
    (1..=n).map(|i| PeerSpec {
        id: id(i),
        addr: format!("h{i}:7000"),
        zone: None,
    })
}

fn ok(map: &mut PartitionMap, command: MapCommand) {
    if let Err(e) = map.apply(&command) {
        panic!("{command:?} rejected: {e}");
    }
    map.check_invariants()
        .expect("invariants after an applied command");
}

/// Three registered nodes, every backup in sync.
fn synced(partitions: u16) -> PartitionMap {
    let mut map = PartitionMap::bootstrap(partitions, 1, peers(3));
    for n in 1..=3 {
        ok(
            &mut map,
            MapCommand::MarkUp {
                id: id(n),
                incarnation: 1,
            },
        );
    }
    for p in 0..partitions {
        let partition = PartitionId(p);
        let a = map.assignment(partition).expect("partition").clone();
        for node in a.replicas.iter().filter(|&&n| Some(n) != a.primary) {
            ok(
                &mut map,
                MapCommand::CaughtUp {
                    partition,
                    epoch: a.epoch,
                    node: *node,
                    sync_generation: a.sync_generation,
                },
            );
        }
    }
    map
}

fn primary(map: &PartitionMap) -> (NodeId, u64) {
    map.primary_of(P0).expect("p0 has a primary")
}

fn backup(map: &PartitionMap) -> NodeId {
    let a = map.assignment(P0).expect("p0");
    *a.replicas
        .iter()
        .find(|&&n| Some(n) != a.primary)
        .expect("p0 has a backup")
}

/// The node holding no replica of p0 (3 nodes, 2 copies).
fn outsider(map: &PartitionMap) -> NodeId {
    let a = map.assignment(P0).expect("p0");
    (1..=3)
        .map(id)
        .find(|n| !a.replicas.contains(n))
        .expect("one node is outside p0")
}

#[test]
fn bootstrap_places_every_partition() {
    let map = PartitionMap::bootstrap(16, 1, peers(3));
    assert_eq!(map.map_version(), 1);
    for (i, a) in map.partitions().iter().enumerate() {
        assert_eq!(a.epoch, 1, "p{i}");
        assert_eq!(
            a.primary,
            a.preferred.first().copied(),
            "p{i} starts on its preferred primary"
        );
        assert_eq!(a.replicas.len(), 2);
        assert!(a.in_sync.is_empty(), "backups must catch up first");
    }
    map.check_invariants().expect("invariants");
    assert_eq!(
        map,
        PartitionMap::bootstrap(16, 1, peers(3)),
        "deterministic"
    );
}

#[test]
fn accessors_follow_the_assignment() {
    let map = synced(8);
    let (p, epoch) = primary(&map);
    let b = backup(&map);
    assert_eq!(map.role_of(p, P0), Some(MapRole::Primary { epoch }));
    assert_eq!(
        map.role_of(b, P0),
        Some(MapRole::Backup {
            epoch,
            primary: Some(p),
            in_sync: true
        })
    );
    assert_eq!(map.role_of(outsider(&map), P0), None);
    assert!(map.replicas_on(p).contains(&P0));
    assert!(!map.replicas_on(outsider(&map)).contains(&P0));
    assert_eq!(map.primary_of(PartitionId(99)), None);
    let total: usize = (1..=3).map(|n| map.replicas_on(id(n)).len()).sum();
    assert_eq!(total, 16);
}

type Case = (
    &'static str,
    fn(&mut PartitionMap) -> (MapCommand, Rejected),
);

#[test]
fn every_rejection_leaves_the_map_unchanged() {
    let cases: &[Case] = &[
        ("add an existing node", |_| {
            (
                MapCommand::AddNode {
                    id: id(1),
                    addr: "x".into(),
                    zone: None,
                },
                Rejected::NodeExists(id(1)),
            )
        }),
        ("remove an unknown node", |_| {
            (
                MapCommand::RemoveNode { id: id(9) },
                Rejected::UnknownNode(id(9)),
            )
        }),
        ("remove a primary", |m| {
            let (p, _) = primary(m);
            let first = m
                .partitions()
                .iter()
                .position(|a| a.primary == Some(p))
                .expect("p0 at least") as u16;
            (
                MapCommand::RemoveNode { id: p },
                Rejected::StillPrimary {
                    node: p,
                    partition: PartitionId(first),
                },
            )
        }),
        ("mark down an unknown node", |_| {
            (
                MapCommand::MarkDown { id: id(9) },
                Rejected::UnknownNode(id(9)),
            )
        }),
        ("mark down a down node", |m| {
            ok(m, MapCommand::MarkDown { id: id(2) });
            (
                MapCommand::MarkDown { id: id(2) },
                Rejected::WrongStatus {
                    node: id(2),
                    status: NodeStatus::Down,
                    needed: NodeStatus::Up,
                },
            )
        }),
        ("mark up the same incarnation", |_| {
            (
                MapCommand::MarkUp {
                    id: id(1),
                    incarnation: 1,
                },
                Rejected::AlreadyUp {
                    node: id(1),
                    incarnation: 1,
                },
            )
        }),
        ("mark up an older incarnation", |m| {
            ok(
                m,
                MapCommand::MarkUp {
                    id: id(1),
                    incarnation: 5,
                },
            );
            (
                MapCommand::MarkUp {
                    id: id(1),
                    incarnation: 4,
                },
                Rejected::StaleIncarnation {
                    node: id(1),
                    known: 5,
                    got: 4,
                },
            )
        }),
        ("shrink with a stale epoch", |m| {
            let (_, e) = primary(m);
            let b = backup(m);
            (
                MapCommand::ShrinkInSync {
                    partition: P0,
                    epoch: e - 1,
                    remove: b,
                },
                Rejected::StaleEpoch {
                    partition: P0,
                    expected: e - 1,
                    current: e,
                },
            )
        }),
        ("shrink an out-of-sync node", |m| {
            let (_, e) = primary(m);
            let o = outsider(m);
            (
                MapCommand::ShrinkInSync {
                    partition: P0,
                    epoch: e,
                    remove: o,
                },
                Rejected::NotInSync {
                    partition: P0,
                    node: o,
                },
            )
        }),
        ("shrink in an unknown partition", |_| {
            (
                MapCommand::ShrinkInSync {
                    partition: PartitionId(99),
                    epoch: 1,
                    remove: id(1),
                },
                Rejected::UnknownPartition(PartitionId(99)),
            )
        }),
        ("caught up: the primary", |m| {
            let (p, e) = primary(m);
            (
                MapCommand::CaughtUp {
                    partition: P0,
                    epoch: e,
                    node: p,
                    sync_generation: 0,
                },
                Rejected::IsPrimary {
                    partition: P0,
                    node: p,
                },
            )
        }),
        ("caught up: not a replica", |m| {
            let (_, e) = primary(m);
            let o = outsider(m);
            (
                MapCommand::CaughtUp {
                    partition: P0,
                    epoch: e,
                    node: o,
                    sync_generation: 0,
                },
                Rejected::NotAReplica {
                    partition: P0,
                    node: o,
                },
            )
        }),
        ("caught up: already in sync", |m| {
            let (_, e) = primary(m);
            let b = backup(m);
            (
                MapCommand::CaughtUp {
                    partition: P0,
                    epoch: e,
                    node: b,
                    sync_generation: 0,
                },
                Rejected::AlreadyInSync {
                    partition: P0,
                    node: b,
                },
            )
        }),
        ("caught up: stale epoch", |m| {
            let (_, e) = primary(m);
            let b = backup(m);
            (
                MapCommand::CaughtUp {
                    partition: P0,
                    epoch: e + 1,
                    node: b,
                    sync_generation: 0,
                },
                Rejected::StaleEpoch {
                    partition: P0,
                    expected: e + 1,
                    current: e,
                },
            )
        }),
        ("caught up: no primary", |m| {
            let (p, _) = primary(m);
            let b = backup(m);
            ok(
                m,
                MapCommand::ShrinkInSync {
                    partition: P0,
                    epoch: primary(m).1,
                    remove: b,
                },
            );
            ok(m, MapCommand::MarkDown { id: p });
            let e = m.assignment(P0).expect("p0").epoch;
            (
                MapCommand::CaughtUp {
                    partition: P0,
                    epoch: e,
                    node: b,
                    sync_generation: 0,
                },
                Rejected::NoPrimary(P0),
            )
        }),
        ("handover to an out-of-sync node", |m| {
            let (_, e) = primary(m);
            let o = outsider(m);
            (
                MapCommand::StartHandover {
                    partition: P0,
                    epoch: e,
                    to: o,
                },
                Rejected::NotInSync {
                    partition: P0,
                    node: o,
                },
            )
        }),
        ("handover to the primary", |m| {
            let (p, e) = primary(m);
            (
                MapCommand::StartHandover {
                    partition: P0,
                    epoch: e,
                    to: p,
                },
                Rejected::IsPrimary {
                    partition: P0,
                    node: p,
                },
            )
        }),
        ("handover while one is in progress", |m| {
            let (_, e) = primary(m);
            let b = backup(m);
            ok(
                m,
                MapCommand::StartHandover {
                    partition: P0,
                    epoch: e,
                    to: b,
                },
            );
            (
                MapCommand::StartHandover {
                    partition: P0,
                    epoch: e,
                    to: b,
                },
                Rejected::HandoverInProgress {
                    partition: P0,
                    to: b,
                },
            )
        }),
        ("handover to a draining node", |m| {
            let (_, e) = primary(m);
            let b = backup(m);
            ok(m, MapCommand::Drain { id: b });
            (
                MapCommand::StartHandover {
                    partition: P0,
                    epoch: e,
                    to: b,
                },
                Rejected::WrongStatus {
                    node: b,
                    status: NodeStatus::Draining,
                    needed: NodeStatus::Up,
                },
            )
        }),
        ("complete a handover never started", |m| {
            let (_, e) = primary(m);
            let b = backup(m);
            (
                MapCommand::CompleteHandover {
                    partition: P0,
                    epoch: e,
                    to: b,
                    last_seq: 9,
                },
                Rejected::NoSuchHandover {
                    partition: P0,
                    to: b,
                },
            )
        }),
        ("complete a handover at a stale epoch", |m| {
            let (_, e) = primary(m);
            let b = backup(m);
            ok(
                m,
                MapCommand::StartHandover {
                    partition: P0,
                    epoch: e,
                    to: b,
                },
            );
            (
                MapCommand::CompleteHandover {
                    partition: P0,
                    epoch: e + 1,
                    to: b,
                    last_seq: 9,
                },
                Rejected::StaleEpoch {
                    partition: P0,
                    expected: e + 1,
                    current: e,
                },
            )
        }),
        ("drain a draining node", |m| {
            ok(m, MapCommand::Drain { id: id(1) });
            (
                MapCommand::Drain { id: id(1) },
                Rejected::WrongStatus {
                    node: id(1),
                    status: NodeStatus::Draining,
                    needed: NodeStatus::Up,
                },
            )
        }),
        ("undrain an up node", |_| {
            (
                MapCommand::Undrain { id: id(1) },
                Rejected::WrongStatus {
                    node: id(1),
                    status: NodeStatus::Up,
                    needed: NodeStatus::Draining,
                },
            )
        }),
    ];
    for (name, case) in cases {
        let mut map = synced(8);
        let (command, expected) = case(&mut map);
        let before = map.clone();
        assert_eq!(map.apply(&command), Err(expected), "{name}");
        assert_eq!(map, before, "{name}: a rejected command changed the map");
    }
}

#[test]
fn mark_down_promotes_the_in_sync_backup_and_re_replicates() {
    let mut map = synced(8);
    let (p, e) = primary(&map);
    let b = backup(&map);
    let version = map.map_version();
    let applied = map
        .apply(&MapCommand::MarkDown { id: p })
        .expect("mark down");
    assert_eq!(applied.map_version, version + 1);
    assert!(applied.changed_partitions.contains(&P0));
    let a = map.assignment(P0).expect("p0");
    assert_eq!((a.primary, a.epoch), (Some(b), e + 1));
    assert!(!a.replicas.contains(&p) && !a.in_sync.contains(&p));
    // A stand-in replica replaces the down node; it is not in sync until it catches up.
    assert_eq!(a.replicas.len(), 2);
    assert!(a.in_sync.is_empty());
    assert_eq!(map.node(p).map(|n| n.status), Some(NodeStatus::Down));
    // Partitions p was not primary of keep their epoch.
    for (i, a) in map.partitions().iter().enumerate() {
        assert!(a.primary != Some(p), "p{i}");
    }
    map.check_invariants().expect("invariants");
}

fn registered_unsynced() -> PartitionMap {
    let mut map = PartitionMap::bootstrap(8, 1, peers(3));
    for n in 1..=3 {
        ok(
            &mut map,
            MapCommand::MarkUp {
                id: id(n),
                incarnation: 1,
            },
        );
    }
    map
}

#[test]
fn mark_down_without_in_sync_backup_leaves_no_primary_until_it_returns() {
    let mut map = registered_unsynced(); // nobody in sync yet
    let (p, e) = primary(&map);
    ok(&mut map, MapCommand::MarkDown { id: p });
    let a = map.assignment(P0).expect("p0").clone();
    assert_eq!(
        a.primary, None,
        "never promote a backup that may miss writes"
    );
    assert_eq!(a.epoch, e + 1, "the old primary is fenced all the same");
    assert_eq!(a.orphaned_by, Some((p, 1)));
    let b = backup(&map);
    assert_eq!(
        map.apply(&MapCommand::CaughtUp {
            partition: P0,
            epoch: e + 1,
            node: b,
            sync_generation: 0,
        }),
        Err(Rejected::NoPrimary(P0))
    );
    // Back with the same incarnation (it was cut off, not restarted): it holds every write.
    ok(
        &mut map,
        MapCommand::MarkUp {
            id: p,
            incarnation: 1,
        },
    );
    let a = map.assignment(P0).expect("p0");
    assert_eq!((a.primary, a.epoch, a.orphaned_by), (Some(p), e + 2, None));
}

#[test]
fn a_restarted_orphan_leaves_the_partition_to_the_operator() {
    let mut map = registered_unsynced();
    let (p, e) = primary(&map);
    ok(&mut map, MapCommand::MarkDown { id: p });
    ok(
        &mut map,
        MapCommand::MarkUp {
            id: p,
            incarnation: 2,
        },
    );
    let a = map.assignment(P0).expect("p0");
    assert_eq!(
        (a.primary, a.orphaned_by),
        (None, None),
        "its data is gone: no automatic primary"
    );
    let b = backup(&map);
    assert_eq!(
        map.apply(&MapCommand::ForcePrimary {
            partition: P0,
            epoch: e,
            to: b
        }),
        Err(Rejected::StaleEpoch {
            partition: P0,
            expected: e,
            current: e + 1
        })
    );
    ok(
        &mut map,
        MapCommand::ForcePrimary {
            partition: P0,
            epoch: e + 1,
            to: b,
        },
    );
    assert_eq!(map.primary_of(P0), Some((b, e + 2)));
    assert_eq!(
        map.apply(&MapCommand::ForcePrimary {
            partition: P0,
            epoch: e + 2,
            to: b
        }),
        Err(Rejected::HasPrimary(P0))
    );
}

#[test]
fn an_unregistered_primary_never_acted_so_any_replica_may_take_over() {
    let mut map = PartitionMap::bootstrap(8, 1, peers(3));
    let (p, e) = primary(&map);
    let b = backup(&map);
    ok(&mut map, MapCommand::MarkDown { id: p });
    assert_eq!(map.primary_of(P0), Some((b, e + 1)));
    // And an unregistered node cannot be declared in sync.
    let mut fresh = PartitionMap::bootstrap(8, 1, peers(3));
    let (_, e) = primary(&fresh);
    let b = backup(&fresh);
    assert_eq!(
        fresh.apply(&MapCommand::CaughtUp {
            partition: P0,
            epoch: e,
            node: b,
            sync_generation: 0,
        }),
        Err(Rejected::NotRegistered(b))
    );
}

#[test]
fn mark_up_returns_a_replica_that_must_catch_up_and_fails_back_by_handover() {
    let mut map = synced(8);
    let (p, _) = primary(&map);
    ok(&mut map, MapCommand::MarkDown { id: p });
    ok(
        &mut map,
        MapCommand::MarkUp {
            id: p,
            incarnation: 2,
        },
    );
    let a = map.assignment(P0).expect("p0").clone();
    assert!(a.replicas.contains(&p), "back on its preferred partition");
    assert!(!a.in_sync.contains(&p));
    assert_eq!(a.preferred[0], p);
    ok(
        &mut map,
        MapCommand::CaughtUp {
            partition: P0,
            epoch: a.epoch,
            node: p,
            sync_generation: a.sync_generation,
        },
    );
    let a = map.assignment(P0).expect("p0").clone();
    assert_eq!(
        a.replicas.len(),
        2,
        "the stand-in is dropped once the preferred replica is in sync"
    );
    ok(
        &mut map,
        MapCommand::StartHandover {
            partition: P0,
            epoch: a.epoch,
            to: p,
        },
    );
    let old = a.primary.expect("primary");
    ok(
        &mut map,
        MapCommand::CompleteHandover {
            partition: P0,
            epoch: a.epoch,
            to: p,
            last_seq: 42,
        },
    );
    let after = map.assignment(P0).expect("p0");
    assert_eq!(
        (after.primary, after.epoch, after.handover),
        (Some(p), a.epoch + 1, None)
    );
    assert!(
        after.in_sync.contains(&old),
        "the old primary drained everything to the new one"
    );
}

#[test]
fn a_new_incarnation_of_a_registered_node_is_fenced() {
    let mut map = synced(8);
    let (p, e) = primary(&map);
    let b = backup(&map);
    ok(
        &mut map,
        MapCommand::MarkUp {
            id: p,
            incarnation: 2,
        },
    );
    let a = map.assignment(P0).expect("p0");
    assert_eq!(
        (a.primary, a.epoch),
        (Some(b), e + 1),
        "a restarted primary lost its data"
    );
    assert!(!a.in_sync.contains(&p));
    assert_eq!(
        map.node(p).map(|n| (n.status, n.incarnation)),
        Some((NodeStatus::Up, 2))
    );
    // First registration (incarnation 0 → x) fences nothing.
    let mut fresh = PartitionMap::bootstrap(8, 1, peers(3));
    let before = fresh.partitions().to_vec();
    let applied = fresh
        .apply(&MapCommand::MarkUp {
            id: id(1),
            incarnation: 7,
        })
        .expect("register");
    assert!(applied.changed_partitions.is_empty());
    assert_eq!(fresh.partitions(), &before[..]);
}

#[test]
fn shrink_in_sync_cancels_a_handover_to_that_node() {
    let mut map = synced(8);
    let (_, e) = primary(&map);
    let b = backup(&map);
    ok(
        &mut map,
        MapCommand::StartHandover {
            partition: P0,
            epoch: e,
            to: b,
        },
    );
    ok(
        &mut map,
        MapCommand::ShrinkInSync {
            partition: P0,
            epoch: e,
            remove: b,
        },
    );
    let a = map.assignment(P0).expect("p0");
    assert_eq!(a.handover, None);
    assert!(
        !a.in_sync.contains(&b) && a.replicas.contains(&b),
        "still a replica, catching up again"
    );
    assert_eq!(a.epoch, e, "shrinking does not change the primary's term");
}

#[test]
fn add_and_remove_nodes_rebalance() {
    let mut map = synced(12);
    ok(
        &mut map,
        MapCommand::AddNode {
            id: id(4),
            addr: "h4:7000".into(),
            zone: None,
        },
    );
    let on_new = map.replicas_on(id(4));
    assert!(!on_new.is_empty(), "the new node gets replicas");
    for p in &on_new {
        let a = map.assignment(*p).expect("partition");
        assert!(!a.in_sync.contains(&id(4)));
        // Durability is kept while the new replica copies: the old in-sync backup stays.
        assert!(
            !a.in_sync.is_empty() || a.primary.is_none(),
            "p{}: {a:?}",
            p.0
        );
    }
    // Removing needs the node to be primary nowhere: drain by handovers first.
    ok(&mut map, MapCommand::MarkDown { id: id(4) });
    ok(&mut map, MapCommand::RemoveNode { id: id(4) });
    assert!(map.node(id(4)).is_none());
    assert!(map.replicas_on(id(4)).is_empty());
    assert!(
        map.partitions()
            .iter()
            .all(|a| !a.preferred.contains(&id(4)))
    );
}

#[test]
fn encodings_round_trip_and_reject_unknown_versions() {
    let map = synced(8);
    let bytes = map.encode().expect("encode");
    assert_eq!(PartitionMap::decode(&bytes).expect("decode"), map);
    let mut future = bytes.clone();
    future[4] = 2;
    assert!(matches!(
        PartitionMap::decode(&future),
        Err(CodecError::UnsupportedVersion { found: 2, .. })
    ));
    let commands = [
        MapCommand::AddNode {
            id: id(4),
            addr: "h4".into(),
            zone: Some("z".into()),
        },
        MapCommand::RemoveNode { id: id(4) },
        MapCommand::MarkDown { id: id(1) },
        MapCommand::MarkUp {
            id: id(1),
            incarnation: 3,
        },
        MapCommand::ShrinkInSync {
            partition: P0,
            epoch: 2,
            remove: id(2),
        },
        MapCommand::CaughtUp {
            partition: P0,
            epoch: 2,
            node: id(2),
            sync_generation: 0,
        },
        MapCommand::StartHandover {
            partition: P0,
            epoch: 2,
            to: id(2),
        },
        MapCommand::CompleteHandover {
            partition: P0,
            epoch: 2,
            to: id(2),
            last_seq: 77,
        },
        MapCommand::Drain { id: id(3) },
        MapCommand::Undrain { id: id(3) },
        MapCommand::ForcePrimary {
            partition: P0,
            epoch: 3,
            to: id(1),
        },
    ];
    for command in commands {
        let bytes = command.encode().expect("encode");
        assert_eq!(MapCommand::decode(&bytes).expect("decode"), command);
        assert!(
            PartitionMap::decode(&bytes).is_err(),
            "a command is not a map"
        );
    }
}

/// Commands drawn against the current map, valid or not.
fn command_from(map: &PartitionMap, pick: (u8, u8, u8, u8)) -> MapCommand {
    let (kind, node, partition, twist) = pick;
    let node = id(u64::from(node % 5) + 1);
    let partition = PartitionId(u16::from(partition) % map.partition_count());
    let a = map.assignment(partition).cloned().unwrap_or_default();
    let epoch = a.epoch.saturating_sub(u64::from(twist % 4 == 0));
    let known = map.node(node).map_or(0, |n| n.incarnation);
    // Partition commands mostly name one of the partition's replicas, so many of them apply.
    let member = if a.replicas.is_empty() || twist % 5 == 0 {
        node
    } else {
        a.replicas[usize::from(twist) % a.replicas.len()]
    };
    // Weighted towards partition commands, so streams get past node churn.
    match kind % 16 {
        0 if twist % 3 == 0 => MapCommand::AddNode {
            id: node,
            addr: "h".into(),
            zone: None,
        },
        0 => MapCommand::RemoveNode { id: node },
        1 => MapCommand::AddNode {
            id: node,
            addr: "h".into(),
            zone: None,
        },
        2 if twist % 2 == 0 => MapCommand::MarkDown { id: node },
        2 => MapCommand::CaughtUp {
            partition,
            epoch,
            node: member,
            sync_generation: a.sync_generation,
        },
        3 | 4 => MapCommand::MarkUp {
            id: node,
            incarnation: known + u64::from(twist % 4 == 0),
        },
        5 => MapCommand::ShrinkInSync {
            partition,
            epoch,
            remove: member,
        },
        6..=9 => MapCommand::CaughtUp {
            partition,
            epoch,
            node: member,
            sync_generation: a.sync_generation,
        },
        10 | 11 if a.handover.is_none() => {
            let to = a
                .in_sync
                .iter()
                .nth(usize::from(twist) % a.in_sync.len().max(1))
                .copied()
                .unwrap_or(member);
            MapCommand::StartHandover {
                partition,
                epoch,
                to,
            }
        }
        10 | 11 => MapCommand::CompleteHandover {
            partition,
            epoch,
            to: a.handover.unwrap_or(member),
            last_seq: 1,
        },
        12 if twist % 3 == 0 => MapCommand::Drain { id: node },
        12 => MapCommand::Undrain { id: node },
        13 => MapCommand::Undrain { id: node },
        _ => MapCommand::ForcePrimary {
            partition,
            epoch,
            to: node,
        },
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn random_streams_keep_invariants(picks in prop::collection::vec(any::<(u8, u8, u8, u8)>(), 1..120)) {
        let mut map = PartitionMap::bootstrap(6, 1, peers(3));
        for pick in picks {
            let command = command_from(&map, pick);
            let before = map.clone();
            match map.apply(&command) {
                Ok(applied) => {
                    prop_assert_eq!(applied.map_version, before.map_version() + 1);
                    prop_assert_eq!(map.map_version(), applied.map_version);
                }
                Err(_) => prop_assert_eq!(&map, &before),
            }
            if let Err(e) = map.check_invariants() {
                return Err(TestCaseError::fail(format!("{command:?}: {e}")));
            }
            for (a, b) in before.partitions().iter().zip(map.partitions()) {
                prop_assert!(b.epoch >= a.epoch, "epochs only rise");
                // A new primary at a higher epoch was in sync before (or the same node continues).
                if b.epoch > a.epoch
                    && !matches!(command, MapCommand::ForcePrimary { .. })
                    && let Some(new) = b.primary
                {
                    {
                        let unregistered = a.primary.and_then(|p| before.node(p)).is_some_and(|n| n.incarnation == 0);
                        let orphan = a.orphaned_by.is_some_and(|(n, _)| n == new);
                        prop_assert!(a.in_sync.contains(&new) || a.primary == Some(new) || a.epoch == 0 || unregistered || orphan,
                            "{:?} promoted a replica not in sync: {:?} → {:?}", command, a, b);
                    }
                }
            }
            prop_assert_eq!(&PartitionMap::decode(&map.encode().expect("encode")).expect("decode"), &map);
        }
    }
}

/// Guards the generator above: a long stream applies every kind of command, so the property test
/// reaches promotions, handovers and rebalances rather than only rejections.
#[test]
fn random_streams_reach_every_command() {
    let mut map = PartitionMap::bootstrap(6, 1, peers(3));
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut applied = std::collections::BTreeMap::<&'static str, u32>::new();
    for _ in 0..5_000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let b = state.to_le_bytes();
        let command = command_from(&map, (b[0], b[1], b[2], b[3]));
        if map.apply(&command).is_ok() {
            let kind = match command {
                MapCommand::AddNode { .. } => "add",
                MapCommand::RemoveNode { .. } => "remove",
                MapCommand::MarkDown { .. } => "down",
                MapCommand::MarkUp { .. } => "up",
                MapCommand::ShrinkInSync { .. } => "shrink",
                MapCommand::CaughtUp { .. } => "caught up",
                MapCommand::StartHandover { .. } => "start handover",
                MapCommand::CompleteHandover { .. } => "complete handover",
                MapCommand::Drain { .. } => "drain",
                MapCommand::Undrain { .. } => "undrain",
                MapCommand::ForcePrimary { .. } => "force primary",
            };
            *applied.entry(kind).or_default() += 1;
        }
        map.check_invariants().expect("invariants");
    }
    assert_eq!(applied.len(), 11, "{applied:?}");
    assert!(applied.values().all(|&n| n >= 5), "{applied:?}");
}

#[test]
fn replica_proposals_translate_to_map_commands() {
    use tern_node::core::MapProposal;
    let p = PartitionId(3);
    let n = |id| NodeId::new(id).expect("non-zero id");
    let cases: Vec<(MapProposal, Option<MapCommand>)> = vec![
        (
            MapProposal::ShrinkInSync {
                epoch: 4,
                remove: 2,
            },
            Some(MapCommand::ShrinkInSync {
                partition: p,
                epoch: 4,
                remove: n(2),
            }),
        ),
        (
            MapProposal::CaughtUp { epoch: 4, node: 3 },
            Some(MapCommand::CaughtUp {
                partition: p,
                epoch: 4,
                node: n(3),
                sync_generation: 7,
            }),
        ),
        (
            MapProposal::CompleteHandover {
                epoch: 4,
                to: 1,
                last_seq: 99,
            },
            Some(MapCommand::CompleteHandover {
                partition: p,
                epoch: 4,
                to: n(1),
                last_seq: 99,
            }),
        ),
        // Node id 0 is never valid: nothing to propose.
        (MapProposal::CaughtUp { epoch: 4, node: 0 }, None),
        (
            MapProposal::ShrinkInSync {
                epoch: 4,
                remove: 0,
            },
            None,
        ),
    ];
    for (proposal, expected) in cases {
        let got = MapCommand::from_replica_proposal(p, proposal.clone(), 7);
        assert_eq!(got, expected, "{proposal:?}");
    }
}
