//! The map's Raft group over the deterministic in-memory network (`cluster::testing::SimNet`):
//! election, replication, loss and reordering, a partitioned leader, leader crash and restart from
//! files (with log compaction forcing a snapshot transfer), identical maps at the end.
use tern_node::cluster::testing::SimNet;
use tern_node::cluster::{
    ClusterTimings, FilePersistence, MapCommand, NodeId, NodeStatus, PartitionMap, PeerSpec,
    RaftPersistence,
};

fn id(n: u64) -> NodeId {
    NodeId::new(n).expect("test ids are non-zero")
}

fn ids() -> Vec<NodeId> {
    vec![id(1), id(2), id(3)]
}

fn initial_map() -> PartitionMap {
    let peers = ids().into_iter().map(|id| PeerSpec {
        id,
        addr: format!("10.0.0.{}:7000", id.get()),
        zone: None,
    });
    PartitionMap::bootstrap(8, 1, peers)
}

/// Proposes until some running node has applied `command` (a lost proposal is retried; the
/// commands are conditional, so a duplicate is rejected, never applied twice).
fn commit(net: &mut SimNet, command: &MapCommand) {
    for _attempt in 0..20 {
        if !net
            .run_until(3_000, |n| n.leader().is_some())
            .expect("sim step")
        {
            continue;
        }
        let _ = net.propose(command);
        let applied = net
            .run_until(1_000, |n| {
                n.running().iter().any(|&r| {
                    n.node(r)
                        .is_some_and(|s| s.committed.iter().any(|c| &c.command == command))
                })
            })
            .expect("sim step");
        if applied {
            return;
        }
    }
    panic!("{command:?} never committed");
}

fn converge(net: &mut SimNet) {
    let agreed = net
        .run_until(10_000, |n| {
            let running = n.running();
            let versions: Vec<u64> = running
                .iter()
                .filter_map(|&r| n.group(r))
                .map(|g| g.map().map_version())
                .collect();
            n.maps_agree() && versions.windows(2).all(|w| w[0] == w[1])
        })
        .expect("sim step");
    assert!(agreed, "maps never converged");
}

/// A stream of commands that are each valid in order: re-registering a node with a rising
/// incarnation always applies (it fences the node's old incarnation).
fn churn(k: u64) -> MapCommand {
    MapCommand::MarkUp {
        id: id(k % 3 + 1),
        incarnation: 10 + k,
    }
}

#[test]
fn elects_a_leader_and_replicates_commands() {
    let mut net = SimNet::new(&ids(), initial_map(), ClusterTimings::default(), 7).expect("start");
    assert!(
        net.run_until(5_000, |n| n.leader().is_some())
            .expect("sim step"),
        "no leader elected"
    );
    let first_leader_ms = net.now_ms();
    assert!(
        first_leader_ms <= 2_000,
        "election took {first_leader_ms} ms"
    );

    commit(
        &mut net,
        &MapCommand::AddNode {
            id: id(4),
            addr: "10.0.0.4:7000".into(),
            zone: None,
        },
    );
    commit(&mut net, &MapCommand::MarkDown { id: id(2) });
    converge(&mut net);
    for r in net.running() {
        let map = net.group(r).expect("running").map();
        assert_eq!(map.node(id(2)).map(|n| n.status), Some(NodeStatus::Down));
        assert!(map.node(id(4)).is_some());
        map.check_invariants().expect("invariants");
    }
    // The node's view of who leads is consistent with the harness's.
    let leader = net.leader().expect("leader");
    for r in net.running() {
        assert_eq!(net.group(r).expect("running").leader(), Some(leader));
    }
}

#[test]
fn a_partitioned_leader_is_replaced_and_catches_up_after_healing() {
    let mut net = SimNet::new(&ids(), initial_map(), ClusterTimings::default(), 11).expect("start");
    assert!(
        net.run_until(5_000, |n| n.leader().is_some())
            .expect("sim step")
    );
    let old = net.leader().expect("leader");
    let old_term = net.group(old).expect("running").term();
    net.isolate(old);
    let replaced = net
        .run_until(5_000, |n| {
            n.leader().is_some_and(|l| l != old) && n.group(old).is_some_and(|g| !g.is_leader())
        })
        .expect("sim step");
    assert!(
        replaced,
        "no new leader, or the isolated one kept leading (check_quorum)"
    );
    assert!(
        net.group(net.leader().expect("leader"))
            .expect("running")
            .term()
            > old_term
    );
    for k in 0..5 {
        commit(&mut net, &churn(k));
    }
    net.heal();
    converge(&mut net);
    assert_eq!(
        net.group(old).expect("running").map(),
        net.group(net.leader().expect("leader")).expect("l").map()
    );
}

#[test]
fn survives_loss_reordering_and_leader_crash_with_restart_from_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let timings = ClusterTimings {
        raft_snapshot_entries: 4,
        ..ClusterTimings::default()
    };
    let root = dir.path().to_path_buf();
    let make = move |node: NodeId| -> Box<dyn RaftPersistence> {
        Box::new(
            FilePersistence::open(root.join(node.get().to_string())).expect("open persistence"),
        )
    };
    let mut net =
        SimNet::with_persistence(&ids(), initial_map(), timings.clone(), 42, make).expect("start");
    net.set_loss(10);
    net.set_delay(1, 20);

    for k in 0..6 {
        commit(&mut net, &churn(k));
    }
    let leader = net.leader().expect("leader");
    net.crash(leader);
    for k in 6..20 {
        commit(&mut net, &churn(k));
    }
    assert_ne!(net.leader(), Some(leader));
    // The crashed node is far behind a compacted log: it needs a snapshot from the new leader.
    net.restart(leader).expect("restart from files");
    net.set_loss(0);
    converge(&mut net);
    // It got the commands it missed through a snapshot, not by replaying them.
    let restarted = net.node(leader).expect("node");
    assert!(
        !restarted.committed.iter().any(|c| c.command == churn(10)),
        "expected a snapshot transfer"
    );
    assert!(
        net.group(leader).expect("running").snapshot_index()
            > tern_node::cluster::raft_group::BOOTSTRAP_INDEX
    );
    let map = net.group(leader).expect("running").map().clone();
    assert_eq!(
        map.node(churn(19).node_id()).map(|n| n.incarnation),
        Some(29)
    );
    map.check_invariants().expect("invariants");

    // A whole-site restart from the files ends with the same map.
    for r in ids() {
        net.crash(r);
    }
    let root = dir.path().to_path_buf();
    let make = move |node: NodeId| -> Box<dyn RaftPersistence> {
        Box::new(
            FilePersistence::open(root.join(node.get().to_string())).expect("open persistence"),
        )
    };
    let mut again =
        SimNet::with_persistence(&ids(), initial_map(), timings, 43, make).expect("restart all");
    converge(&mut again);
    assert!(
        again
            .run_until(5_000, |n| n.leader().is_some())
            .expect("sim step")
    );
    converge(&mut again);
    assert_eq!(again.group(id(1)).expect("running").map(), &map);
}

#[test]
fn many_seeds_with_crashes_end_identical() {
    for seed in 0..12 {
        let mut net =
            SimNet::new(&ids(), initial_map(), ClusterTimings::default(), seed).expect("start");
        net.set_loss(5);
        net.set_delay(1, 30);
        for k in 0..8 {
            if k == 3 {
                let victim = id(seed % 3 + 1);
                net.crash(victim);
                commit(&mut net, &churn(k));
                net.restart(victim).expect("restart");
            } else {
                commit(&mut net, &churn(k));
            }
        }
        net.set_loss(0);
        converge(&mut net);
        let map = net.group(id(1)).expect("running").map();
        map.check_invariants().expect("invariants");
        // Every command of the stream was applied exactly once, in order.
        assert_eq!(map.map_version(), 1 + 8, "seed {seed}");
    }
}

#[test]
fn same_seed_same_run() {
    let run = |seed: u64| {
        let mut net =
            SimNet::new(&ids(), initial_map(), ClusterTimings::default(), seed).expect("start");
        net.set_loss(10);
        net.set_delay(1, 25);
        for k in 0..4 {
            commit(&mut net, &churn(k));
        }
        let trace: Vec<_> = ids()
            .into_iter()
            .map(|r| {
                let g = net.group(r).expect("running");
                (g.term(), g.applied_index(), g.map().clone())
            })
            .collect();
        (net.now_ms(), net.leader(), trace)
    };
    assert_eq!(run(5), run(5));
}

trait NodeOf {
    fn node_id(&self) -> NodeId;
}

impl NodeOf for MapCommand {
    fn node_id(&self) -> NodeId {
        match self {
            MapCommand::MarkUp { id, .. } => *id,
            other => panic!("not a node command: {other:?}"),
        }
    }
}

#[test]
fn a_single_node_site_leads_itself() {
    let peers = [PeerSpec {
        id: id(1),
        addr: "127.0.0.1:7000".into(),
        zone: None,
    }];
    let map = PartitionMap::bootstrap(4, 1, peers);
    let mut net = SimNet::new(&[id(1)], map, ClusterTimings::default(), 3).expect("start");
    assert!(
        net.run_until(2_000, |n| n.leader() == Some(id(1)))
            .expect("sim step")
    );
    commit(
        &mut net,
        &MapCommand::MarkUp {
            id: id(1),
            incarnation: 1,
        },
    );
    let map = net.group(id(1)).expect("running").map();
    assert_eq!(
        map.primary_of(tern_node::core::PartitionId(0)),
        Some((id(1), 1))
    );
}
