//! The controller planner: from the map and the failure detector's view, the commands the Raft
//! leader should propose. Pure; run it on the leader after every map change and detector wake-up.
//!
//! Rules (docs/design/site-ha.md):
//! - a node the detector calls dead and not `Down` → `MarkDown`; a `Down` node heard again, or a
//!   node heard with a newer incarnation than the map's (it restarted) → `MarkUp`;
//! - a partition whose primary is on a draining node → `StartHandover` to an in-sync backup on an
//!   up node (drain);
//! - a partition whose preferred primary is in sync, up and alive but not primary →
//!   `StartHandover` to it (failback);
//! - re-replication needs no command: `apply` of `MarkDown`/`MarkUp`/`AddNode`/`RemoveNode` already
//!   tops up each partition with stand-in replicas (not in sync until `CaughtUp`).
//!
//! The planner applies each command to a scratch copy of the map as it goes and keeps only those
//! that apply, so the list it returns applies cleanly, in order, to the map it was given.
//! Nodes whose liveness is `Unknown` are left alone (a new leader waits for its own observation).
use crate::cluster::detector::Liveness;
use crate::cluster::ids::NodeId;
use crate::cluster::map::{MapCommand, NodeStatus, PartitionMap};
use crate::core::PartitionId;

pub fn plan(map: &PartitionMap, liveness: &dyn Fn(NodeId) -> Liveness) -> Vec<MapCommand> {
    let mut scratch = map.clone();
    let mut out = Vec::new();
    let mut propose = |scratch: &mut PartitionMap, command: MapCommand| {
        if scratch.apply(&command).is_ok() {
            out.push(command);
        }
    };

    let nodes: Vec<(NodeId, NodeStatus, u64)> = map
        .nodes()
        .iter()
        .map(|(id, info)| (*id, info.status, info.incarnation))
        .collect();
    for (id, status, known) in nodes {
        match liveness(id) {
            Liveness::Dead if status != NodeStatus::Down => {
                propose(&mut scratch, MapCommand::MarkDown { id });
            }
            Liveness::Alive { incarnation }
                if (status == NodeStatus::Down && incarnation >= known) || incarnation > known =>
            {
                propose(&mut scratch, MapCommand::MarkUp { id, incarnation });
            }
            _ => {}
        }
    }

    for p in 0..scratch.partition_count() {
        let partition = PartitionId(p);
        let Some(a) = scratch.assignment(partition) else {
            continue;
        };
        let (Some(primary), None) = (a.primary, a.handover) else {
            continue;
        };
        let usable = |n: &NodeId| {
            a.in_sync.contains(n)
                && scratch.node(*n).is_some_and(|i| i.status == NodeStatus::Up)
                && matches!(liveness(*n), Liveness::Alive { .. })
        };
        let draining = scratch
            .node(primary)
            .is_some_and(|i| i.status == NodeStatus::Draining);
        let to = if draining {
            a.preferred
                .iter()
                .chain(&a.replicas)
                .find(|n| usable(n))
                .copied()
        } else {
            a.preferred
                .first()
                .filter(|&&q| q != primary && usable(&q))
                .copied()
        };
        if let Some(to) = to {
            let epoch = a.epoch;
            propose(
                &mut scratch,
                MapCommand::StartHandover {
                    partition,
                    epoch,
                    to,
                },
            );
        }
    }
    out
}
