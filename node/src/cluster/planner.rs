//! The controller planner: from the map and the failure detector's view, the commands the Raft
//! leader should propose. Pure; run it on the leader after every map change and detector wake-up.
//!
//! Rules (docs/design/site-ha.md):
//! - a node the detector calls dead and not down → `MarkDown`; a down node (`Down` or
//!   `DownDraining`) heard again, or a node heard with a newer incarnation than the map's (it
//!   restarted) → `MarkUp`; all `MarkUp`s first, so a restart is fenced before any silent copy
//!   it relies on is marked down;
//! - a partition whose primary is on a draining node → `StartHandover` to an in-sync backup on an
//!   up node (drain);
//! - a partition whose preferred primary is in sync, up and alive but not primary →
//!   `StartHandover` to it (failback);
//! - re-replication needs no command: `apply` of `MarkDown`/`MarkUp`/`AddNode`/`RemoveNode`/
//!   `Drain`/`Undrain` already tops up each partition with stand-in replicas on up nodes (not in
//!   sync until `CaughtUp`), and drops a draining node's copy once they caught up;
//! - a draining node is never a handover target (failback or drain): only up nodes are.
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

    // Node commands: every `MarkUp` before any `MarkDown`. A restart's fence then runs while
    // the partition's other copies are still trusted: its old incarnation is provably gone (a
    // new one is talking), so an in-sync backup it leaves is promoted — and, if that backup is
    // silent too and marked down next, the partition waits for it (`orphaned_by`), the copy
    // that holds every acknowledged write. Marked down first, that backup would leave the
    // in-sync set while the dead incarnation still counted, and the fence would leave the
    // partition waiting for a copy that no longer exists (liveness gap 3, shape (a); see
    // docs/design/site-ha.md). `MarkUp`s of nodes coming back from `Down` fence nothing, so
    // their place in the order does not matter.
    let mut downs = Vec::new();
    for (id, status, known) in map
        .nodes()
        .iter()
        .map(|(id, info)| (*id, info.status, info.incarnation))
    {
        match liveness(id) {
            Liveness::Dead if !status.is_down() => downs.push(id),
            Liveness::Alive { incarnation }
                if (status.is_down() && incarnation >= known) || incarnation > known =>
            {
                propose(&mut scratch, MapCommand::MarkUp { id, incarnation });
            }
            _ => {}
        }
    }
    for id in downs {
        propose(&mut scratch, MapCommand::MarkDown { id });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::map::PeerSpec;

    fn id(n: u64) -> NodeId {
        NodeId::new(n).expect("non-zero")
    }

    /// Three nodes registered at incarnation 1; `partition`'s backup caught up, so the
    /// partition has exactly one in-sync backup. Returns (map, primary, backup).
    fn one_in_sync_backup(partition: PartitionId) -> (PartitionMap, NodeId, NodeId) {
        let peers = (1..=3).map(|n| PeerSpec {
            id: id(n),
            addr: format!("h{n}"),
            zone: None,
        });
        let mut map = PartitionMap::bootstrap(4, 1, peers);
        for n in 1..=3 {
            map.apply(&MapCommand::MarkUp {
                id: id(n),
                incarnation: 1,
            })
            .expect("register");
        }
        let a = map.assignment(partition).expect("partition").clone();
        let primary = a.primary.expect("bootstrap gives a primary");
        let backup = *a
            .replicas
            .iter()
            .find(|&&n| n != primary)
            .expect("one backup");
        map.apply(&MapCommand::CaughtUp {
            partition,
            epoch: a.epoch,
            node: backup,
            sync_generation: a.sync_generation,
        })
        .expect("caught up");
        (map, primary, backup)
    }

    /// Liveness gap 3 shape (a) and its mirror: in one planner round, one copy of a partition
    /// is heard with a new incarnation (restarted: its data is gone) while the other is silent
    /// (cut off: it keeps its data). Whatever the node ids, the partition must end up waiting
    /// for the silent copy and get it back as primary when it returns with the same
    /// incarnation. The old planner (id order) marked the silent one down first whenever its
    /// id was lower and left the partition waiting for the restarted one, i.e. forever.
    #[test]
    fn a_restart_is_fenced_before_the_silent_copy_it_leaves_is_marked_down() {
        // (case, the primary restarted (else the backup did))
        for (case, primary_restarted) in [
            ("primary restarted, backup silent", true),
            ("backup restarted, primary silent", false),
        ] {
            for p in 0..4 {
                let partition = PartitionId(p);
                let (mut map, primary, backup) = one_in_sync_backup(partition);
                let (restarted, silent) = if primary_restarted {
                    (primary, backup)
                } else {
                    (backup, primary)
                };
                let liveness = |n: NodeId| {
                    if n == restarted {
                        Liveness::Alive { incarnation: 2 }
                    } else if n == silent {
                        Liveness::Dead
                    } else {
                        Liveness::Alive { incarnation: 1 }
                    }
                };
                for command in plan(&map, &liveness) {
                    map.apply(&command).expect(case);
                    map.check_invariants().expect(case);
                }
                let a = map.assignment(partition).expect("partition");
                assert_eq!(
                    (a.primary, a.orphaned_by),
                    (None, Some((silent, 1))),
                    "{case}, {partition}: waits for the copy that kept its data"
                );
                map.apply(&MapCommand::MarkUp {
                    id: silent,
                    incarnation: 1,
                })
                .expect(case);
                assert_eq!(
                    map.assignment(partition).expect("partition").primary,
                    Some(silent),
                    "{case}, {partition}: the silent copy is back, same incarnation"
                );
            }
        }
    }

    #[test]
    fn markups_come_before_markdowns_in_a_round() {
        let (map, primary, backup) = one_in_sync_backup(PartitionId(0));
        let liveness = |n: NodeId| {
            if n == backup {
                Liveness::Dead
            } else if n == primary {
                Liveness::Alive { incarnation: 2 }
            } else {
                Liveness::Alive { incarnation: 1 }
            }
        };
        let planned = plan(&map, &liveness);
        assert_eq!(
            planned.first(),
            Some(&MapCommand::MarkUp {
                id: primary,
                incarnation: 2
            }),
            "{planned:?}"
        );
        assert!(
            planned.contains(&MapCommand::MarkDown { id: backup }),
            "{planned:?}"
        );
    }
}
