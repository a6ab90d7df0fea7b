//! Builds the [`NodeStatus`] snapshot the cluster actor publishes: the map as this node sees
//! it, plus what its own replicas report (log positions, backups' acknowledged positions).
use super::board::ReplicaBoard;
use super::forward::ForwardStats;
use super::map_view::MapView;
use crate::admin::{
    MemberState, MemberStatus, NodeStatus, PartitionStatus, ReplicaRole, ReplicaStatus,
};
use crate::cluster::{self, NodeId};
use crate::core::{PartitionId, Role};
use std::collections::BTreeMap;

/// The fixed parts of the status: names and addresses from the configuration.
#[derive(Clone, Debug, Default)]
pub struct StatusInput {
    /// Transport identity without `.tern`, e.g. `n1.a`.
    pub name: String,
    pub site: String,
    pub resp_addr: String,
    /// Per member: (identity name, RESP address).
    pub members: BTreeMap<NodeId, (String, String)>,
}

pub fn build_status(
    input: &StatusInput,
    view: &MapView,
    board: &ReplicaBoard,
    incarnation: u64,
    leader: Option<NodeId>,
    failovers_total: u64,
    forward: ForwardStats,
) -> NodeStatus {
    let me = view.me;
    let map = &view.map;
    let (data_bytes, data_bytes_max) = board.data_bytes();
    let mut ready = view.registered;
    let mut wan_writes_refused_total = 0;
    let mut memory_writes_refused_total = 0;
    let partitions = map
        .partitions()
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let partition = PartitionId(u16::try_from(i).unwrap_or(u16::MAX));
            let local = a.replicas.contains(&me).then(|| board.get(partition));
            if let Some(report) = &local {
                wan_writes_refused_total += report.wan_writes_refused;
                memory_writes_refused_total += report.memory_writes_refused;
                let caught_up = if a.primary == Some(me) {
                    report.role == Role::Primary && report.epoch == a.epoch
                } else {
                    a.in_sync.contains(&me)
                };
                ready &= caught_up && !report.failed;
            }
            // What a local primary knows about its backups.
            let acked: BTreeMap<u64, u64> = match &local {
                Some(report) if report.role == Role::Primary => {
                    report.backups_acked.iter().copied().collect()
                }
                _ => BTreeMap::new(),
            };
            let primary_seq = local
                .as_ref()
                .filter(|r| r.role == Role::Primary)
                .map(|r| r.last_seq);
            let replicas = a
                .replicas
                .iter()
                .map(|&n| {
                    let is_primary = a.primary == Some(n);
                    let last_seq = if n == me {
                        local.as_ref().map(|r| r.last_seq)
                    } else {
                        acked.get(&n.get()).copied()
                    };
                    let lag_records = match (primary_seq, last_seq) {
                        (Some(p), Some(s)) if !is_primary => Some(p.saturating_sub(s)),
                        (Some(_), Some(_)) => Some(0),
                        _ => None,
                    };
                    ReplicaStatus {
                        node_id: n.get(),
                        role: if is_primary {
                            ReplicaRole::Primary
                        } else {
                            ReplicaRole::Backup
                        },
                        in_sync: is_primary || a.in_sync.contains(&n),
                        last_seq,
                        lag_records,
                    }
                })
                .collect();
            PartitionStatus {
                partition: partition.0,
                epoch: a.epoch,
                primary: a.primary.map(NodeId::get),
                replicas,
                handover_to: a.handover.map(NodeId::get),
            }
        })
        .collect();
    let members = map
        .nodes()
        .iter()
        .map(|(&id, info)| {
            let (name, resp_addr) = input.members.get(&id).cloned().unwrap_or_default();
            MemberStatus {
                node_id: id.get(),
                name,
                resp_addr,
                zone: info.zone.clone(),
                state: match info.status {
                    cluster::NodeStatus::Up => MemberState::Up,
                    // Down while draining is down for clients and operators alike; the map
                    // only remembers the drain for the node's return.
                    cluster::NodeStatus::Down | cluster::NodeStatus::DownDraining => {
                        MemberState::Down
                    }
                    cluster::NodeStatus::Draining => MemberState::Draining,
                },
                incarnation: info.incarnation,
            }
        })
        .collect();
    NodeStatus {
        node_id: me.get(),
        name: input.name.clone(),
        site: input.site.clone(),
        resp_addr: input.resp_addr.clone(),
        incarnation,
        ready,
        map_leader: leader.map(NodeId::get),
        map_version: map.map_version(),
        partitions,
        members,
        failovers_total,
        wan_writes_refused_total,
        memory_writes_refused_total,
        forward_requests_pending: forward.pending,
        forward_requests_pending_max: forward.pending_max,
        forward_requests_refused_pending_full_total: forward.refused_pending_full_total,
        data_bytes: u64::try_from(data_bytes).unwrap_or(u64::MAX),
        data_bytes_max: u64::try_from(data_bytes_max).unwrap_or(u64::MAX),
    }
}
