//! The Raft leader's membership decisions (docs/design/site-ha.md, "Membership"): from this
//! node's configured peers, the Raft voters and the map, the next step towards the configured
//! membership, and which nodes the planner must not mark down. Pure functions, so the actix
//! shell (`shell/cluster.rs`) and the site simulator (`sims/`) make exactly the same decisions;
//! each shell only paces them (at most one step every `planner_repropose_ms`, none while a Raft
//! configuration change is pending or leadership is being transferred) and carries them out.
use crate::cluster::{
    FailureDetector, Liveness, MapCommand, NodeId, NodeStatus, PartitionMap, PeerSpec,
};
use std::collections::BTreeMap;

/// One step of the leader's membership work, from the configured peers, the Raft voters and
/// the map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipStep {
    /// A configured node waiting to join: `AddNode` (placement gives it partitions).
    AddToMap(PeerSpec),
    /// In the map, not yet a voter: the Raft configuration change (it then gets a snapshot).
    AddVoter(NodeId),
    /// Drained or down, no longer configured, nothing depends on it
    /// ([`PartitionMap::check_removable`]): `RemoveNode`.
    RemoveFromMap(NodeId),
    /// Out of the map and no longer configured: the Raft configuration change.
    RemoveVoter(NodeId),
    /// A removal that must wait (logged): why the map would still reject it.
    Wait { node: NodeId, reason: String },
}

/// The next membership step, if any. The order keeps every intermediate state unambiguous for
/// a leader with an older or newer configuration (a rolling config change has both):
/// - add = `AddNode`, then the voter: a map node that is not a voter is only ever completed,
///   never removed, since removal needs the operator's drain (`Draining`, replicated in the
///   map) — a leader whose config does not list the node yet leaves it alone;
/// - remove = `RemoveNode`, then the voter: a voter outside the map is only ever removed, and
///   a node is only added while it reports never having had a map (a removed node still
///   running, known to a leader whose config still lists it, is not re-added);
/// - only a node the operator drained, or one that is down (dead and dropped from the
///   configs), is removed, and only once nothing depends on it: the map's own rule
///   ([`PartitionMap::check_removable`]), so the proposal is not rejected. A removal that must
///   wait does not hold up adds;
/// - never this node itself, never a voter change leaving the configured peers without a
///   majority among the voters.
pub fn membership_step(
    me: NodeId,
    configured: &BTreeMap<NodeId, PeerSpec>,
    voters: &[NodeId],
    map: &PartitionMap,
    waiting_to_join: &dyn Fn(NodeId) -> bool,
) -> Option<MembershipStep> {
    let is_voter = |id: &NodeId| voters.contains(id);
    let majority = configured.len() / 2 + 1;
    // Finish a removal.
    for &id in voters {
        if id == me || configured.contains_key(&id) || map.node(id).is_some() {
            continue;
        }
        let remaining = voters
            .iter()
            .filter(|&&v| v != id && configured.contains_key(&v))
            .count();
        if remaining >= majority {
            return Some(MembershipStep::RemoveVoter(id));
        }
    }
    // Start a removal: of a node the operator drained or one that is down, once nothing
    // depends on it.
    let mut waiting = None;
    for (&id, info) in map.nodes() {
        if id == me || configured.contains_key(&id) || info.status == NodeStatus::Up {
            continue;
        }
        match map.check_removable(id) {
            Ok(()) => return Some(MembershipStep::RemoveFromMap(id)),
            Err(reason) => {
                waiting.get_or_insert(MembershipStep::Wait {
                    node: id,
                    reason: reason.to_string(),
                });
            }
        }
    }
    // Finish an add.
    for &id in configured.keys() {
        if map.node(id).is_some() && !is_voter(&id) {
            return Some(MembershipStep::AddVoter(id));
        }
    }
    // Start an add.
    configured
        .values()
        .find(|p| {
            p.id != me && map.node(p.id).is_none() && !is_voter(&p.id) && waiting_to_join(p.id)
        })
        .map(|p| MembershipStep::AddToMap(p.clone()))
        .or(waiting)
}

/// Who should lead the map instead of `me`: a live peer marked up, lowest id first.
pub fn successor(
    me: NodeId,
    map: &PartitionMap,
    detector: &FailureDetector,
    now_ms: u64,
) -> Option<NodeId> {
    map.nodes().iter().find_map(|(&id, info)| {
        let alive = matches!(detector.liveness(id, now_ms), Liveness::Alive { .. });
        (id != me && info.status == NodeStatus::Up && alive).then_some(id)
    })
}

/// Whether `me`, leading the map, should hand leadership to a [`successor`]: it is draining.
/// A drained node is about to leave; once the others' configurations drop it, it no longer
/// hears them, so while it kept leading (it still has a quorum among the nodes not yet
/// restarted) a restarted peer would never be marked up and a rolling restart would stall.
pub fn hands_off_leadership(me: NodeId, map: &PartitionMap) -> bool {
    map.node(me).is_some_and(|i| i.status.is_draining())
}

/// Whether `id` is leaving the site as far as this leader knows: the operator drained it and
/// this leader's configuration (`configured`; empty on a standalone node) dropped it. The leader
/// removes such a node once its stand-ins caught up ([`membership_step`]) and must not mark it
/// down meanwhile (it may no longer reach it): that would fence its in-sync copies, which may
/// still be some partition's only complete backup.
pub fn leaving(map: &PartitionMap, configured: &BTreeMap<NodeId, PeerSpec>, id: NodeId) -> bool {
    !configured.is_empty()
        && !configured.contains_key(&id)
        && map.node(id).map(|i| i.status) == Some(NodeStatus::Draining)
}

/// The planner's `commands` as the leader proposes them: without a `MarkDown` of a node that
/// is [`leaving`].
pub fn planned_for_membership(
    commands: Vec<MapCommand>,
    map: &PartitionMap,
    configured: &BTreeMap<NodeId, PeerSpec>,
) -> Vec<MapCommand> {
    commands
        .into_iter()
        .filter(|c| !matches!(c, MapCommand::MarkDown { id } if leaving(map, configured, *id)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> NodeId {
        NodeId::new(n).expect("test ids are non-zero")
    }

    fn spec(n: u64) -> PeerSpec {
        PeerSpec {
            id: id(n),
            addr: format!("h{n}:7000"),
            zone: None,
        }
    }

    fn configured(ns: &[u64]) -> BTreeMap<NodeId, PeerSpec> {
        ns.iter().map(|&n| (id(n), spec(n))).collect()
    }

    /// Every node registered (incarnation 1).
    fn map_of(ns: &[u64]) -> PartitionMap {
        let mut map = PartitionMap::bootstrap(8, 1, ns.iter().map(|&n| spec(n)));
        for &n in ns {
            map.apply(&MapCommand::MarkUp {
                id: id(n),
                incarnation: 1,
            })
            .expect("register");
        }
        map
    }

    /// `map_of(ns)` with node `n` drained and, when `hand_over`, primary nowhere.
    fn drained(ns: &[u64], n: u64, hand_over: bool) -> PartitionMap {
        let mut map = map_of(ns);
        map.apply(&MapCommand::Drain { id: id(n) }).expect("drain");
        if hand_over {
            for p in 0..map.partition_count() {
                let partition = crate::core::PartitionId(p);
                let a = map.assignment(partition).expect("partition").clone();
                if a.primary != Some(id(n)) {
                    continue;
                }
                let to = a
                    .replicas
                    .iter()
                    .copied()
                    .find(|&r| r != id(n))
                    .expect("a backup");
                let caught_up = MapCommand::CaughtUp {
                    partition,
                    epoch: a.epoch,
                    node: to,
                    sync_generation: a.sync_generation,
                };
                map.apply(&caught_up).expect("caught up");
                let epoch = a.epoch;
                map.apply(&MapCommand::StartHandover {
                    partition,
                    epoch,
                    to,
                })
                .expect("start");
                map.apply(&MapCommand::CompleteHandover {
                    partition,
                    epoch,
                    to,
                    last_seq: 0,
                })
                .expect("complete");
            }
        }
        map
    }

    /// `map` with every replica caught up (stand-ins included), so a draining node's copies
    /// are no longer needed.
    fn caught_up(mut map: PartitionMap) -> PartitionMap {
        for p in 0..map.partition_count() {
            let partition = crate::core::PartitionId(p);
            // Each catch-up may drop a leaving copy; the stand-ins stay, so this terminates.
            while let Some(command) = map.assignment(partition).and_then(|a| {
                let node = a
                    .replicas
                    .iter()
                    .find(|&&r| Some(r) != a.primary && !a.in_sync.contains(&r))?;
                Some(MapCommand::CaughtUp {
                    partition,
                    epoch: a.epoch,
                    node: *node,
                    sync_generation: a.sync_generation,
                })
            }) {
                map.apply(&command).expect("caught up");
            }
        }
        map
    }

    /// `map` after `MarkDown` of node `n`.
    fn down(mut map: PartitionMap, n: u64) -> PartitionMap {
        map.apply(&MapCommand::MarkDown { id: id(n) })
            .expect("mark down");
        map
    }

    #[test]
    fn membership_steps_follow_the_configuration() {
        let ids = |ns: &[u64]| ns.iter().map(|&n| id(n)).collect::<Vec<_>>();
        let cases: Vec<(
            &str,
            &[u64],
            Vec<NodeId>,
            PartitionMap,
            bool,
            Option<MembershipStep>,
        )> = vec![
            (
                "steady",
                &[1, 2, 3],
                ids(&[1, 2, 3]),
                map_of(&[1, 2, 3]),
                false,
                None,
            ),
            (
                "joiner heard fresh: add to the map",
                &[1, 2, 3, 4],
                ids(&[1, 2, 3]),
                map_of(&[1, 2, 3]),
                true,
                Some(MembershipStep::AddToMap(spec(4))),
            ),
            (
                "configured but never heard fresh: wait",
                &[1, 2, 3, 4],
                ids(&[1, 2, 3]),
                map_of(&[1, 2, 3]),
                false,
                None,
            ),
            (
                "in the map, not a voter: add the voter",
                &[1, 2, 3, 4],
                ids(&[1, 2, 3]),
                map_of(&[1, 2, 3, 4]),
                false,
                Some(MembershipStep::AddVoter(id(4))),
            ),
            (
                "old config mid-add leaves it alone",
                &[1, 2, 3],
                ids(&[1, 2, 3]),
                map_of(&[1, 2, 3, 4]),
                false,
                None,
            ),
            (
                "old config after the add leaves it alone",
                &[1, 2, 3],
                ids(&[1, 2, 3, 4]),
                map_of(&[1, 2, 3, 4]),
                false,
                None,
            ),
            (
                "dropped from config, not drained: kept",
                &[1, 2, 3],
                ids(&[1, 2, 3, 4]),
                map_of(&[1, 2, 3, 4]),
                false,
                None,
            ),
            (
                "drained but still primary: wait",
                &[1, 2, 3],
                ids(&[1, 2, 3, 4]),
                drained(&[1, 2, 3, 4], 4, false),
                false,
                Some(MembershipStep::Wait {
                    node: id(4),
                    reason: String::new(),
                }),
            ),
            (
                "drained, primary nowhere, its stand-ins still catching up: wait",
                &[1, 2, 3],
                ids(&[1, 2, 3, 4]),
                drained(&[1, 2, 3, 4], 4, true),
                false,
                Some(MembershipStep::Wait {
                    node: id(4),
                    reason: String::new(),
                }),
            ),
            (
                "drained and its copies replaced: remove from the map",
                &[1, 2, 3],
                ids(&[1, 2, 3, 4]),
                caught_up(drained(&[1, 2, 3, 4], 4, true)),
                false,
                Some(MembershipStep::RemoveFromMap(id(4))),
            ),
            (
                "drained but still configured: kept",
                &[1, 2, 3, 4],
                ids(&[1, 2, 3, 4]),
                caught_up(drained(&[1, 2, 3, 4], 4, true)),
                false,
                None,
            ),
            (
                "down, dropped from the config, nothing depends on it: remove from the map",
                &[1, 2, 3],
                ids(&[1, 2, 3, 4]),
                down(caught_up(map_of(&[1, 2, 3, 4])), 4),
                false,
                Some(MembershipStep::RemoveFromMap(id(4))),
            ),
            (
                "down and dropped, but partitions wait for it (only complete copy): wait",
                &[1, 2, 3],
                ids(&[1, 2, 3, 4]),
                down(map_of(&[1, 2, 3, 4]), 4),
                false,
                Some(MembershipStep::Wait {
                    node: id(4),
                    reason: String::new(),
                }),
            ),
            (
                "down but still configured: kept",
                &[1, 2, 3, 4],
                ids(&[1, 2, 3, 4]),
                down(caught_up(map_of(&[1, 2, 3, 4])), 4),
                false,
                None,
            ),
            (
                "a removal that waits does not hold up an add",
                &[1, 2, 3, 5],
                ids(&[1, 2, 3, 4]),
                down(map_of(&[1, 2, 3, 4, 5]), 4),
                false,
                Some(MembershipStep::AddVoter(id(5))),
            ),
            (
                "out of the map: remove the voter",
                &[1, 2, 3],
                ids(&[1, 2, 3, 4]),
                map_of(&[1, 2, 3]),
                false,
                Some(MembershipStep::RemoveVoter(id(4))),
            ),
            (
                "old config mid-remove does not re-add a voter",
                &[1, 2, 3, 4],
                ids(&[1, 2, 3, 4]),
                map_of(&[1, 2, 3]),
                true,
                None,
            ),
            (
                "a removed node still running is not re-added",
                &[1, 2, 3, 4],
                ids(&[1, 2, 3]),
                map_of(&[1, 2, 3]),
                false,
                None,
            ),
            (
                "never itself",
                &[2, 3],
                ids(&[1, 2, 3]),
                map_of(&[2, 3]),
                false,
                None,
            ),
            (
                "never below a configured majority",
                &[1, 5, 6],
                ids(&[1, 4]),
                map_of(&[1]),
                false,
                None,
            ),
        ];
        for (name, conf, voters, map, fresh, want) in cases {
            let got = membership_step(id(1), &configured(conf), &voters, &map, &|_| fresh);
            match (&got, &want) {
                (
                    Some(MembershipStep::Wait { node: a, .. }),
                    Some(MembershipStep::Wait { node: b, .. }),
                ) => {
                    assert_eq!(a, b, "{name}")
                }
                _ => assert_eq!(got, want, "{name}"),
            }
        }
    }

    #[test]
    fn the_planner_never_marks_down_a_leaving_node() {
        let mark_down = |n| MapCommand::MarkDown { id: id(n) };
        // (case, configured, map, planned MarkDown of node 4 kept?)
        let cases: Vec<(&str, &[u64], PartitionMap, bool)> = vec![
            (
                "drained and dropped: leaving",
                &[1, 2, 3],
                drained(&[1, 2, 3, 4], 4, true),
                false,
            ),
            (
                "drained, still configured",
                &[1, 2, 3, 4],
                drained(&[1, 2, 3, 4], 4, true),
                true,
            ),
            (
                "up and dropped (dead)",
                &[1, 2, 3],
                map_of(&[1, 2, 3, 4]),
                true,
            ),
            (
                "standalone: no configuration",
                &[],
                drained(&[1, 2, 3, 4], 4, true),
                true,
            ),
        ];
        for (name, conf, map, kept) in cases {
            let planned = vec![mark_down(4), mark_down(3)];
            let got = planned_for_membership(planned, &map, &configured(conf));
            let want = if kept {
                vec![mark_down(4), mark_down(3)]
            } else {
                vec![mark_down(3)]
            };
            assert_eq!(got, want, "{name}");
            assert_eq!(leaving(&map, &configured(conf), id(4)), !kept, "{name}");
        }
    }
}
