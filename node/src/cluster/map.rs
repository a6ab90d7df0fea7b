//! The site's partition map: which node holds which partition replica, who is primary at which
//! epoch, who is in sync. Replicated by Raft: every node applies the same `MapCommand`s in the same
//! order, and `apply` is a pure function of (map, command), so every node ends with the same map.
//!
//! Commands are *conditional*: partition commands name the epoch they expect and node commands
//! must change the node's state, so a stale or duplicate proposal is rejected with a reason instead
//! of being applied out of context. Safety rules enforced here (and checked by
//! [`PartitionMap::check_invariants`]): epochs only rise; the primary is never in `in_sync`; only
//! an in-sync backup is ever promoted; losing the primary with no in-sync backup leaves the
//! partition without a primary rather than promote a replica that may miss acknowledged writes.
//!
//! Incarnations: a node's data lives in memory, so a restarted node has lost it even if it came
//! back before anyone noticed the silence. Each node boots with a fresh incarnation number (sent in
//! its heartbeats) and the map records the one it knows; a node only acts as primary or in-sync
//! backup while the map records its current incarnation. `MarkUp` with a new incarnation of a node
//! that was already registered fences the old one exactly like `MarkDown`.
use crate::cluster::codec::{self, CodecError, EnvelopeKind};
use crate::cluster::ids::NodeId;
use crate::cluster::placement::{self, PlacementNode};
use crate::core::PartitionId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The primary's term of a partition. Only rises.
pub type Epoch = u64;

/// A node's state in the map. Postcard encodes the variant index, so variants are only ever
/// appended: maps persisted by older builds (without `DownDraining`) still decode.
///
/// Liveness questions ("may it be primary, in sync, a handover target?") go through
/// [`NodeStatus::is_down`]; "is the operator's drain in force?" through
/// [`NodeStatus::is_draining`]. The drain survives `Down` only for the same incarnation: a node
/// heard again with the incarnation it went down with was cut off (a network blip) and comes
/// back `Draining`; one heard with a new incarnation restarted and comes back `Up` as a fresh
/// member (a rolling restart drains in preStop and relies on the restarted node being `Up`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeStatus {
    Up,
    Down,
    /// Up, but leaving: it gets no primaries (the planner hands them over) and no new copies;
    /// each partition where it holds one gets a stand-in on an up node, and its copy is dropped
    /// once the partition has its full complement of in-sync backups without it.
    Draining,
    /// Marked down while draining: down in every respect (fenced, no primary, no copy, never
    /// in sync, removable like a `Down` node), and the drain is remembered so that `MarkUp`
    /// with the same incarnation makes it `Draining` again instead of `Up`. `Undrain` makes it
    /// plain `Down`. Appended last: see the enum's doc.
    DownDraining,
}

impl NodeStatus {
    /// Marked down (fenced until `MarkUp`), whether or not it was draining.
    pub fn is_down(self) -> bool {
        matches!(self, Self::Down | Self::DownDraining)
    }

    /// The operator's drain is in force (the node is leaving), whether or not it is down.
    pub fn is_draining(self) -> bool {
        matches!(self, Self::Draining | Self::DownDraining)
    }

    /// The status after `Drain`, `None` when the node cannot be drained from `self` (only an
    /// up node can: a down one is fenced already and leaves by `RemoveNode`).
    pub fn drained(self) -> Option<Self> {
        (self == Self::Up).then_some(Self::Draining)
    }

    /// The status after `Undrain`, `None` when no drain is in force. A node undrained while
    /// down stays down and comes back `Up` on `MarkUp`.
    pub fn undrained(self) -> Option<Self> {
        match self {
            Self::Draining => Some(Self::Up),
            Self::DownDraining => Some(Self::Down),
            Self::Up | Self::Down => None,
        }
    }

    /// The status after `MarkDown`, `None` when already down.
    pub fn marked_down(self) -> Option<Self> {
        match self {
            Self::Up => Some(Self::Down),
            Self::Draining => Some(Self::DownDraining),
            Self::Down | Self::DownDraining => None,
        }
    }

    /// The status after an accepted `MarkUp`; `restarted`: the node was registered before and
    /// now has a new incarnation. A restarted node is a fresh member (`Up`); a node cut off
    /// and heard again with its incarnation, or registering for the first time, keeps a drain
    /// the operator asked for.
    pub fn marked_up(self, restarted: bool) -> Self {
        if self.is_draining() && !restarted {
            Self::Draining
        } else {
            Self::Up
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Where peers reach the node (QUIC), as configured.
    pub addr: String,
    pub zone: Option<String>,
    pub status: NodeStatus,
    /// The node's boot incarnation as last registered by `MarkUp`; 0 = never registered (the
    /// node has never acted on this map, so registering it needs no fencing).
    pub incarnation: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// 0 = the partition never had a primary (no data anywhere yet).
    pub epoch: Epoch,
    pub primary: Option<NodeId>,
    /// Nodes holding or receiving a copy: the primary, backups (in sync or catching up).
    pub replicas: Vec<NodeId>,
    /// Backups that hold every acknowledged write; never contains the primary.
    pub in_sync: BTreeSet<NodeId>,
    /// Placement's order; `preferred[0]` is the preferred primary (failback target).
    pub preferred: Vec<NodeId>,
    /// A graceful primary move in progress, to this in-sync backup.
    pub handover: Option<NodeId>,
    /// The last primary (node, incarnation), when it was fenced with no in-sync backup to
    /// promote: it alone holds every acknowledged write, so the partition waits without primary
    /// and it takes the partition back if it returns with the same incarnation (it was cut off,
    /// not restarted). A new incarnation means that data is gone.
    pub orphaned_by: Option<(NodeId, u64)>,
    /// Bumped by every accepted `ShrinkInSync`. A `CaughtUp` names the value its primary saw when
    /// it proposed, so one that was overtaken by a shrink of the same backup (the primary stopped
    /// waiting on that backup in between) is rejected instead of putting back in sync a backup
    /// that may miss acknowledged writes.
    pub sync_generation: u64,
}

/// A replica's role in one partition, as the map says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapRole {
    Primary {
        epoch: Epoch,
    },
    Backup {
        epoch: Epoch,
        primary: Option<NodeId>,
        in_sync: bool,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MapCommand {
    AddNode {
        id: NodeId,
        addr: String,
        zone: Option<String>,
    },
    /// Only for a node nothing depends on any more: see [`PartitionMap::check_removable`].
    RemoveNode {
        id: NodeId,
    },
    MarkDown {
        id: NodeId,
    },
    /// Node heard again (`Down` → `Up`, `DownDraining` → `Draining` with the same
    /// incarnation), or heard with a new incarnation (restart: fenced first, then `Up` even if
    /// it was draining). Incarnations only rise: an older one than registered is rejected.
    MarkUp {
        id: NodeId,
        incarnation: u64,
    },
    ShrinkInSync {
        partition: PartitionId,
        epoch: Epoch,
        remove: NodeId,
    },
    /// `sync_generation`: the partition's `Assignment::sync_generation` in the map the
    /// proposing primary acted on.
    CaughtUp {
        partition: PartitionId,
        epoch: Epoch,
        node: NodeId,
        sync_generation: u64,
    },
    StartHandover {
        partition: PartitionId,
        epoch: Epoch,
        to: NodeId,
    },
    CompleteHandover {
        partition: PartitionId,
        epoch: Epoch,
        to: NodeId,
        last_seq: u64,
    },
    Drain {
        id: NodeId,
    },
    Undrain {
        id: NodeId,
    },
    /// Operator only, never planned: a partition left without primary and without an in-sync
    /// copy (its last primary is gone for good) restarts on `to`, accepting that the writes only
    /// that primary held are lost. Without it such a partition stays unavailable.
    ForcePrimary {
        partition: PartitionId,
        epoch: Epoch,
        to: NodeId,
    },
}

/// What an accepted command changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The map's version after the command.
    pub map_version: u64,
    /// Partitions whose assignment changed, ascending.
    pub changed_partitions: Vec<PartitionId>,
}

/// Why a command was not applied; the map is unchanged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("node {0} is not in the map")]
    UnknownNode(NodeId),
    #[error("node {0} is already in the map")]
    NodeExists(NodeId),
    #[error("partition {0} does not exist")]
    UnknownPartition(PartitionId),
    #[error("partition {partition}: command expects epoch {expected}, map is at {current}")]
    StaleEpoch {
        partition: PartitionId,
        expected: Epoch,
        current: Epoch,
    },
    #[error("partition {0} has no primary")]
    NoPrimary(PartitionId),
    #[error("partition {partition}: {node} is not a replica")]
    NotAReplica {
        partition: PartitionId,
        node: NodeId,
    },
    #[error("partition {partition}: {node} is not in sync")]
    NotInSync {
        partition: PartitionId,
        node: NodeId,
    },
    #[error(
        "partition {partition}: caught-up proposal predates a shrink (sync generation {expected}, map is at {current})"
    )]
    StaleSyncGeneration {
        partition: PartitionId,
        expected: u64,
        current: u64,
    },
    #[error("partition {partition}: {node} is already in sync")]
    AlreadyInSync {
        partition: PartitionId,
        node: NodeId,
    },
    #[error("partition {partition}: {node} is the primary")]
    IsPrimary {
        partition: PartitionId,
        node: NodeId,
    },
    #[error("partition {partition}: a handover to {to} is already in progress")]
    HandoverInProgress { partition: PartitionId, to: NodeId },
    #[error("partition {partition}: no handover to {to} in progress")]
    NoSuchHandover { partition: PartitionId, to: NodeId },
    #[error("node {node} is {status:?}, the command needs {needed:?}")]
    WrongStatus {
        node: NodeId,
        status: NodeStatus,
        needed: NodeStatus,
    },
    #[error("node {node} already has incarnation {incarnation} and is up")]
    AlreadyUp { node: NodeId, incarnation: u64 },
    #[error("partition {0} has a primary")]
    HasPrimary(PartitionId),
    #[error("node {0} has not registered an incarnation yet (MarkUp)")]
    NotRegistered(NodeId),
    #[error("node {node}: incarnation {got} is older than the registered {known}")]
    StaleIncarnation { node: NodeId, known: u64, got: u64 },
    #[error("node {node} is primary of {partition}; drain it or mark it down first")]
    StillPrimary {
        node: NodeId,
        partition: PartitionId,
    },
    #[error("node {node} is receiving partition {partition} by handover")]
    ReceivingHandover {
        node: NodeId,
        partition: PartitionId,
    },
    #[error(
        "partition {partition} waits for node {node}, its last primary and only complete copy; \
         bring the node back or force a primary"
    )]
    WaitedFor {
        node: NodeId,
        partition: PartitionId,
    },
    #[error(
        "node {node} holds a copy of partition {partition}, which has {in_sync_elsewhere} in-sync \
         backups elsewhere and needs {needed}; wait until its stand-ins catch up"
    )]
    StillNeeded {
        node: NodeId,
        partition: PartitionId,
        in_sync_elsewhere: usize,
        needed: usize,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionMap {
    map_version: u64,
    backups_per_partition: u8,
    nodes: BTreeMap<NodeId, NodeInfo>,
    partitions: Vec<Assignment>,
}

/// A configured peer, for [`PartitionMap::bootstrap`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerSpec {
    pub id: NodeId,
    pub addr: String,
    pub zone: Option<String>,
}

impl PartitionMap {
    /// An empty map: no nodes, `partition_count` partitions without replicas.
    pub fn new(partition_count: u16, backups_per_partition: u8) -> Self {
        Self {
            map_version: 0,
            backups_per_partition,
            nodes: BTreeMap::new(),
            partitions: vec![Assignment::default(); usize::from(partition_count)],
        }
    }

    /// The map every node of a new site starts from: all configured peers `Up` (incarnation not
    /// yet registered), placement over them, each partition's preferred primary at epoch 1 and
    /// its backups catching up (not in sync). Deterministic: every node computes the same map
    /// from the same configuration.
    pub fn bootstrap(
        partition_count: u16,
        backups_per_partition: u8,
        peers: impl IntoIterator<Item = PeerSpec>,
    ) -> Self {
        let mut map = Self::new(partition_count, backups_per_partition);
        for peer in peers {
            map.nodes.insert(
                peer.id,
                NodeInfo {
                    addr: peer.addr,
                    zone: peer.zone,
                    status: NodeStatus::Up,
                    incarnation: 0,
                },
            );
        }
        map.rebalance();
        map.map_version = 1;
        map
    }

    pub fn map_version(&self) -> u64 {
        self.map_version
    }

    pub fn backups_per_partition(&self) -> u8 {
        self.backups_per_partition
    }

    pub fn partition_count(&self) -> u16 {
        // `new` takes a u16 count and nothing adds partitions.
        u16::try_from(self.partitions.len()).unwrap_or(u16::MAX)
    }

    pub fn nodes(&self) -> &BTreeMap<NodeId, NodeInfo> {
        &self.nodes
    }

    pub fn node(&self, id: NodeId) -> Option<&NodeInfo> {
        self.nodes.get(&id)
    }

    pub fn partitions(&self) -> &[Assignment] {
        &self.partitions
    }

    pub fn assignment(&self, partition: PartitionId) -> Option<&Assignment> {
        self.partitions.get(usize::from(partition.0))
    }

    /// The current primary of `partition` and its epoch; `None` while it has none.
    pub fn primary_of(&self, partition: PartitionId) -> Option<(NodeId, Epoch)> {
        let a = self.assignment(partition)?;
        a.primary.map(|p| (p, a.epoch))
    }

    /// Partitions of which `node` holds a replica (primary or backup), ascending.
    pub fn replicas_on(&self, node: NodeId) -> Vec<PartitionId> {
        self.partition_ids()
            .filter(|&p| self.partitions[usize::from(p.0)].replicas.contains(&node))
            .collect()
    }

    /// `node`'s role in `partition`, `None` if it holds no replica there.
    pub fn role_of(&self, node: NodeId, partition: PartitionId) -> Option<MapRole> {
        let a = self.assignment(partition)?;
        if a.primary == Some(node) {
            Some(MapRole::Primary { epoch: a.epoch })
        } else if a.replicas.contains(&node) {
            Some(MapRole::Backup {
                epoch: a.epoch,
                primary: a.primary,
                in_sync: a.in_sync.contains(&node),
            })
        } else {
            None
        }
    }

    fn partition_ids(&self) -> impl Iterator<Item = PartitionId> + use<> {
        (0..self.partition_count()).map(PartitionId)
    }

    /// Applies `command` if it is valid on this map; on rejection the map is unchanged.
    pub fn apply(&mut self, command: &MapCommand) -> Result<Applied, Rejected> {
        let before = self.partitions.clone();
        match command {
            MapCommand::AddNode { id, addr, zone } => self.add_node(*id, addr, zone)?,
            MapCommand::RemoveNode { id } => self.remove_node(*id)?,
            MapCommand::MarkDown { id } => self.mark_down(*id)?,
            MapCommand::MarkUp { id, incarnation } => self.mark_up(*id, *incarnation)?,
            MapCommand::ShrinkInSync {
                partition,
                epoch,
                remove,
            } => self.shrink_in_sync(*partition, *epoch, *remove)?,
            MapCommand::CaughtUp {
                partition,
                epoch,
                node,
                sync_generation,
            } => self.caught_up(*partition, *epoch, *node, *sync_generation)?,
            MapCommand::StartHandover {
                partition,
                epoch,
                to,
            } => self.start_handover(*partition, *epoch, *to)?,
            MapCommand::CompleteHandover {
                partition,
                epoch,
                to,
                last_seq: _,
            } => self.complete_handover(*partition, *epoch, *to)?,
            MapCommand::ForcePrimary {
                partition,
                epoch,
                to,
            } => self.force_primary(*partition, *epoch, *to)?,
            MapCommand::Drain { id } => self.set_draining(*id, true)?,
            MapCommand::Undrain { id } => self.set_draining(*id, false)?,
        }
        // Every accepted command changes something (no-ops are rejected), so the version bumps.
        self.map_version += 1;
        let changed_partitions = self
            .partitions
            .iter()
            .zip(&before)
            .enumerate()
            .filter(|(_, (now, was))| now != was)
            .filter_map(|(i, _)| u16::try_from(i).ok().map(PartitionId))
            .collect();
        Ok(Applied {
            map_version: self.map_version,
            changed_partitions,
        })
    }

    fn info(&self, id: NodeId) -> Result<&NodeInfo, Rejected> {
        self.nodes.get(&id).ok_or(Rejected::UnknownNode(id))
    }

    /// The partition at `epoch`, for a conditional partition command.
    fn current(&self, partition: PartitionId, epoch: Epoch) -> Result<&Assignment, Rejected> {
        let a = self
            .assignment(partition)
            .ok_or(Rejected::UnknownPartition(partition))?;
        if a.epoch != epoch {
            return Err(Rejected::StaleEpoch {
                partition,
                expected: epoch,
                current: a.epoch,
            });
        }
        Ok(a)
    }

    fn add_node(&mut self, id: NodeId, addr: &str, zone: &Option<String>) -> Result<(), Rejected> {
        if self.nodes.contains_key(&id) {
            return Err(Rejected::NodeExists(id));
        }
        let info = NodeInfo {
            addr: addr.to_string(),
            zone: zone.clone(),
            status: NodeStatus::Up,
            incarnation: 0,
        };
        self.nodes.insert(id, info);
        self.rebalance();
        Ok(())
    }

    /// Whether `id` may leave the map (`RemoveNode`), and if not, why. Nothing may depend on it:
    /// - it is primary nowhere and receives no handover (drain it, or let it be marked down);
    /// - no partition waits for it as its only complete copy (`orphaned_by`);
    /// - every partition where it holds a copy has, without it, as many in-sync backups as the
    ///   remaining nodes can hold: `min(N, nodes - 2)` (all nodes but it and the primary, down
    ///   ones included since they may come back). A draining node's copies reach that once its
    ///   stand-ins caught up; a down node holds none (fencing dropped them).
    ///
    /// The leader's membership step proposes `RemoveNode` only when this holds; `apply` checks
    /// it again, so a proposal that raced a change is rejected.
    pub fn check_removable(&self, id: NodeId) -> Result<(), Rejected> {
        self.info(id)?;
        let indexed = || self.partition_ids().zip(&self.partitions);
        if let Some((partition, _)) = indexed().find(|(_, a)| a.primary == Some(id)) {
            return Err(Rejected::StillPrimary {
                node: id,
                partition,
            });
        }
        if let Some((partition, _)) = indexed().find(|(_, a)| a.handover == Some(id)) {
            return Err(Rejected::ReceivingHandover {
                node: id,
                partition,
            });
        }
        if let Some((partition, _)) =
            indexed().find(|(_, a)| a.orphaned_by.is_some_and(|(n, _)| n == id))
        {
            return Err(Rejected::WaitedFor {
                node: id,
                partition,
            });
        }
        let needed =
            usize::from(self.backups_per_partition).min(self.nodes.len().saturating_sub(2));
        for (partition, a) in indexed() {
            if !a.replicas.contains(&id) {
                continue;
            }
            let in_sync_elsewhere = a.in_sync.iter().filter(|&&n| n != id).count();
            if in_sync_elsewhere < needed {
                return Err(Rejected::StillNeeded {
                    node: id,
                    partition,
                    in_sync_elsewhere,
                    needed,
                });
            }
        }
        Ok(())
    }

    fn remove_node(&mut self, id: NodeId) -> Result<(), Rejected> {
        self.check_removable(id)?;
        self.nodes.remove(&id);
        for a in &mut self.partitions {
            a.replicas.retain(|&n| n != id);
            a.in_sync.remove(&id);
            a.preferred.retain(|&n| n != id);
            if a.handover == Some(id) {
                a.handover = None;
            }
            if a.orphaned_by.is_some_and(|(n, _)| n == id) {
                a.orphaned_by = None;
            }
        }
        self.rebalance();
        Ok(())
    }

    fn mark_down(&mut self, id: NodeId) -> Result<(), Rejected> {
        let status = self.info(id)?.status;
        let Some(next) = status.marked_down() else {
            return Err(Rejected::WrongStatus {
                node: id,
                status,
                needed: NodeStatus::Up,
            });
        };
        self.fence(id);
        if let Some(info) = self.nodes.get_mut(&id) {
            info.status = next;
        }
        self.reconcile_all();
        Ok(())
    }

    /// Registers `incarnation` of `id` and makes it live again. A drain survives only when the
    /// node did not restart (same incarnation, or its first registration): a node cut off long
    /// enough to be marked down comes back `Draining`, so the planner never hands primaries
    /// back to a node the operator is removing. A new incarnation is a fresh member and comes
    /// back `Up` (see [`NodeStatus`]).
    fn mark_up(&mut self, id: NodeId, incarnation: u64) -> Result<(), Rejected> {
        let info = self.info(id)?.clone();
        if incarnation < info.incarnation {
            return Err(Rejected::StaleIncarnation {
                node: id,
                known: info.incarnation,
                got: incarnation,
            });
        }
        // Registered before and now a different incarnation: it restarted and lost its data.
        let restarted = info.incarnation != 0 && info.incarnation != incarnation;
        match info.status {
            // Fenced when it was marked down.
            NodeStatus::Down | NodeStatus::DownDraining => {}
            NodeStatus::Up | NodeStatus::Draining if info.incarnation == incarnation => {
                return Err(Rejected::AlreadyUp {
                    node: id,
                    incarnation,
                });
            }
            NodeStatus::Up | NodeStatus::Draining if restarted => self.fence(id),
            NodeStatus::Up | NodeStatus::Draining => {}
        }
        if let Some(info) = self.nodes.get_mut(&id) {
            info.status = info.status.marked_up(restarted);
            info.incarnation = incarnation;
        }
        for a in &mut self.partitions {
            match a.orphaned_by {
                // Cut off, not restarted: it still holds every acknowledged write.
                Some((n, inc)) if n == id && inc == incarnation && a.primary.is_none() => {
                    a.primary = Some(id);
                    a.epoch += 1;
                    a.orphaned_by = None;
                    a.in_sync.remove(&id);
                }
                // Restarted: the only complete copy is gone.
                Some((n, _)) if n == id => a.orphaned_by = None,
                _ => {}
            }
        }
        self.reconcile_all();
        Ok(())
    }

    /// Takes every trust away from `id`: out of every in-sync set, no longer primary anywhere
    /// (its partitions promote an in-sync backup, or stay without primary), handovers to it
    /// cancelled. Each partition it was primary of moves to epoch + 1, fencing it.
    fn fence(&mut self, id: NodeId) {
        let nodes = &self.nodes;
        let incarnation = nodes.get(&id).map_or(0, |i| i.incarnation);
        for a in &mut self.partitions {
            a.in_sync.remove(&id);
            if a.handover == Some(id) {
                a.handover = None;
            }
            if a.primary != Some(id) {
                continue;
            }
            let status = |n: &NodeId| nodes.get(n).map(|i| i.status);
            let candidates = a
                .preferred
                .iter()
                .chain(&a.replicas)
                .filter(|n| a.in_sync.contains(n));
            let mut promoted = candidates
                .clone()
                .find(|n| status(n) == Some(NodeStatus::Up))
                .or_else(|| {
                    candidates
                        .clone()
                        .find(|n| status(n) == Some(NodeStatus::Draining))
                })
                .copied();
            if promoted.is_none() && incarnation == 0 {
                // An unregistered primary never acted, so no write was ever acknowledged here:
                // any live replica may take over.
                // Up nodes first: a draining one is leaving.
                let live_replica = |wanted: NodeStatus| {
                    a.preferred
                        .iter()
                        .chain(&a.replicas)
                        .find(|&&n| n != id && status(&n) == Some(wanted))
                        .copied()
                };
                promoted =
                    live_replica(NodeStatus::Up).or_else(|| live_replica(NodeStatus::Draining));
            }
            if let Some(new) = promoted {
                a.in_sync.remove(&new);
            } else if incarnation != 0 {
                a.orphaned_by = Some((id, incarnation));
            }
            a.primary = promoted;
            a.epoch += 1;
            a.handover = None;
        }
    }

    fn shrink_in_sync(
        &mut self,
        partition: PartitionId,
        epoch: Epoch,
        remove: NodeId,
    ) -> Result<(), Rejected> {
        let a = self.current(partition, epoch)?;
        // A backup outside the in-sync set may still have a `CaughtUp` in flight that its
        // primary has given up on: the shrink is accepted as a revocation of that proposal.
        let revokes = a.replicas.contains(&remove) && a.primary != Some(remove);
        if !a.in_sync.contains(&remove) && !revokes {
            return Err(Rejected::NotInSync {
                partition,
                node: remove,
            });
        }
        let a = &mut self.partitions[usize::from(partition.0)];
        a.sync_generation += 1;
        a.in_sync.remove(&remove);
        if a.handover == Some(remove) {
            a.handover = None;
        }
        self.reconcile(partition);
        Ok(())
    }

    fn caught_up(
        &mut self,
        partition: PartitionId,
        epoch: Epoch,
        node: NodeId,
        sync_generation: u64,
    ) -> Result<(), Rejected> {
        let a = self.current(partition, epoch)?;
        if a.primary.is_none() {
            return Err(Rejected::NoPrimary(partition));
        }
        if a.sync_generation != sync_generation {
            return Err(Rejected::StaleSyncGeneration {
                partition,
                expected: sync_generation,
                current: a.sync_generation,
            });
        }
        if a.primary == Some(node) {
            return Err(Rejected::IsPrimary { partition, node });
        }
        if !a.replicas.contains(&node) {
            return Err(Rejected::NotAReplica { partition, node });
        }
        if a.in_sync.contains(&node) {
            return Err(Rejected::AlreadyInSync { partition, node });
        }
        let info = self.info(node)?;
        if info.status.is_down() {
            return Err(Rejected::WrongStatus {
                node,
                status: info.status,
                needed: NodeStatus::Up,
            });
        }
        if info.incarnation == 0 {
            return Err(Rejected::NotRegistered(node));
        }
        self.partitions[usize::from(partition.0)]
            .in_sync
            .insert(node);
        self.reconcile(partition);
        Ok(())
    }

    fn start_handover(
        &mut self,
        partition: PartitionId,
        epoch: Epoch,
        to: NodeId,
    ) -> Result<(), Rejected> {
        let a = self.current(partition, epoch)?;
        if a.primary.is_none() {
            return Err(Rejected::NoPrimary(partition));
        }
        if let Some(current) = a.handover {
            return Err(Rejected::HandoverInProgress {
                partition,
                to: current,
            });
        }
        if a.primary == Some(to) {
            return Err(Rejected::IsPrimary {
                partition,
                node: to,
            });
        }
        if !a.in_sync.contains(&to) {
            return Err(Rejected::NotInSync {
                partition,
                node: to,
            });
        }
        let status = self.info(to)?.status;
        if status != NodeStatus::Up {
            return Err(Rejected::WrongStatus {
                node: to,
                status,
                needed: NodeStatus::Up,
            });
        }
        self.partitions[usize::from(partition.0)].handover = Some(to);
        Ok(())
    }

    fn complete_handover(
        &mut self,
        partition: PartitionId,
        epoch: Epoch,
        to: NodeId,
    ) -> Result<(), Rejected> {
        let a = self.current(partition, epoch)?;
        if a.handover != Some(to) {
            return Err(Rejected::NoSuchHandover { partition, to });
        }
        if !a.in_sync.contains(&to) {
            return Err(Rejected::NotInSync {
                partition,
                node: to,
            });
        }
        let old = a.primary;
        let old_up = old
            .and_then(|o| self.nodes.get(&o))
            .is_some_and(|i| !i.status.is_down());
        let a = &mut self.partitions[usize::from(partition.0)];
        a.in_sync.remove(&to);
        // The old primary drained every write to `to` before completing: it holds all of them.
        if let (Some(old), true) = (old, old_up) {
            a.in_sync.insert(old);
        }
        a.primary = Some(to);
        a.epoch += 1;
        a.handover = None;
        self.reconcile(partition);
        Ok(())
    }

    fn force_primary(
        &mut self,
        partition: PartitionId,
        epoch: Epoch,
        to: NodeId,
    ) -> Result<(), Rejected> {
        let a = self.current(partition, epoch)?;
        if a.primary.is_some() {
            return Err(Rejected::HasPrimary(partition));
        }
        let info = self.info(to)?;
        if info.status != NodeStatus::Up {
            return Err(Rejected::WrongStatus {
                node: to,
                status: info.status,
                needed: NodeStatus::Up,
            });
        }
        if info.incarnation == 0 {
            return Err(Rejected::NotRegistered(to));
        }
        let a = &mut self.partitions[usize::from(partition.0)];
        a.primary = Some(to);
        a.epoch += 1;
        a.orphaned_by = None;
        a.in_sync.clear();
        self.reconcile(partition);
        Ok(())
    }

    fn set_draining(&mut self, id: NodeId, drain: bool) -> Result<(), Rejected> {
        let status = self.info(id)?.status;
        let (needed, next) = if drain {
            (NodeStatus::Up, status.drained())
        } else {
            (NodeStatus::Draining, status.undrained())
        };
        let Some(next) = next else {
            return Err(Rejected::WrongStatus {
                node: id,
                status,
                needed,
            });
        };
        if let Some(info) = self.nodes.get_mut(&id) {
            info.status = next;
        }
        // Draining: stand-ins for its copies; undraining: it is a placement target again.
        self.reconcile_all();
        Ok(())
    }

    /// Recomputes every partition's `preferred` list from placement over all known nodes (down
    /// ones included, so a returning node gets its partitions back), then reconciles replicas.
    fn rebalance(&mut self) {
        let view: Vec<PlacementNode<'_>> = self
            .nodes
            .iter()
            .map(|(id, info)| PlacementNode {
                id: *id,
                zone: info.zone.as_deref(),
            })
            .collect();
        let preferred = placement::place(self.partition_count(), self.copies(), &view);
        for (a, pref) in self.partitions.iter_mut().zip(preferred) {
            a.preferred = pref;
        }
        self.reconcile_all();
    }

    fn copies(&self) -> usize {
        1 + usize::from(self.backups_per_partition)
    }

    fn reconcile_all(&mut self) {
        for p in self.partition_ids() {
            self.reconcile(p);
        }
    }

    /// Brings a partition's replica set in line with placement, given who is down or leaving:
    /// - targets = the preferred nodes that are up (not down, not draining), topped up with
    ///   stand-ins on up nodes (re-replication); a never-assigned partition (epoch 0) takes its
    ///   first target as primary;
    /// - replicas = primary, handover target and in-sync backups (never dropped while they are
    ///   needed for durability) plus the targets;
    /// - a replica that is not a target is dropped once enough targets are in sync (or at once
    ///   when it is not in sync itself: it is a half-copied leftover of an older placement);
    /// - a draining node's in-sync copy is kept until the partition has its full complement of
    ///   N in-sync backups without it (forever if the other nodes cannot hold that many), so
    ///   the node never takes the only complete backup with it when it leaves.
    fn reconcile(&mut self, partition: PartitionId) {
        let Some(a) = self.partitions.get(usize::from(partition.0)) else {
            return;
        };
        let copies = self.copies();
        let status = |n: &NodeId| self.nodes.get(n).map(|i| i.status);
        let up = |n: &NodeId| status(n) == Some(NodeStatus::Up);
        let zone = |n: &NodeId| self.nodes.get(n).and_then(|i| i.zone.as_deref());
        let mut targets: Vec<NodeId> = a
            .preferred
            .iter()
            .copied()
            .filter(up)
            .take(copies)
            .collect();
        if targets.len() < copies {
            let chosen: Vec<(NodeId, Option<&str>)> =
                targets.iter().map(|n| (*n, zone(n))).collect();
            let candidates: Vec<PlacementNode<'_>> = self
                .nodes
                .iter()
                .filter(|(_, i)| i.status == NodeStatus::Up)
                .map(|(id, i)| PlacementNode {
                    id: *id,
                    zone: i.zone.as_deref(),
                })
                .collect();
            targets.extend(placement::stand_ins(
                partition,
                copies - targets.len(),
                &chosen,
                &candidates,
            ));
        }

        let mut a = a.clone();
        if a.epoch == 0
            && a.primary.is_none()
            && let Some(&first) = targets.first()
        {
            a.primary = Some(first);
            a.epoch = 1;
        }
        if a.primary.is_some() {
            a.orphaned_by = None;
        }
        let target_backups: Vec<NodeId> = targets
            .iter()
            .copied()
            .filter(|&n| Some(n) != a.primary)
            .collect();
        let needed = usize::from(self.backups_per_partition).min(target_backups.len());
        let durable_targets = target_backups
            .iter()
            .filter(|n| a.in_sync.contains(n))
            .count();

        let mut replicas: Vec<NodeId> = Vec::new();
        let keep = |n: NodeId, replicas: &mut Vec<NodeId>| {
            if !replicas.contains(&n) {
                replicas.push(n);
            }
        };
        if let Some(p) = a.primary {
            keep(p, &mut replicas);
        }
        for &t in &targets {
            keep(t, &mut replicas);
        }
        if let Some(h) = a.handover {
            keep(h, &mut replicas);
        }
        let draining = |n: &NodeId| status(n) == Some(NodeStatus::Draining);
        // Existing replicas keep their place in the order; surplus in-sync ones only while needed.
        for &n in &a.replicas {
            if a.in_sync.contains(&n) && !draining(&n) && durable_targets < needed {
                keep(n, &mut replicas);
            }
        }
        // Leaving copies: only as many as the partition lacks in-sync backups without them.
        let full = usize::from(self.backups_per_partition);
        let mut in_sync_kept = replicas.iter().filter(|n| a.in_sync.contains(n)).count();
        for &n in &a.replicas {
            if a.in_sync.contains(&n)
                && draining(&n)
                && !replicas.contains(&n)
                && in_sync_kept < full
            {
                keep(n, &mut replicas);
                in_sync_kept += 1;
            }
        }
        // Order: primary first, then the previous order, then new ones.
        replicas.sort_by_key(|n| {
            (
                Some(*n) != a.primary,
                a.replicas.iter().position(|r| r == n).unwrap_or(usize::MAX),
            )
        });
        a.in_sync.retain(|n| replicas.contains(n));
        a.replicas = replicas;
        self.partitions[usize::from(partition.0)] = a;
    }

    /// Checks the map's structural invariants; sims and tests call it after every command.
    pub fn check_invariants(&self) -> Result<(), String> {
        for (i, a) in self.partitions.iter().enumerate() {
            let fail = |what: &str| Err(format!("p{i}: {what}: {a:?}"));
            let distinct: BTreeSet<_> = a.replicas.iter().collect();
            if distinct.len() != a.replicas.len() {
                return fail("duplicate replica");
            }
            if let Some(p) = a.primary {
                if a.in_sync.contains(&p) {
                    return fail("primary in in_sync");
                }
                if !a.replicas.contains(&p) {
                    return fail("primary not a replica");
                }
            } else if a.handover.is_some() {
                return fail("handover without primary");
            }
            if !a.in_sync.iter().all(|n| a.replicas.contains(n)) {
                return fail("in_sync not within replicas");
            }
            if let Some(h) = a.handover
                && !a.in_sync.contains(&h)
            {
                return fail("handover target not in sync");
            }
            let known = |n: &NodeId| self.nodes.contains_key(n);
            if !a.replicas.iter().chain(&a.preferred).all(known) {
                return fail("unknown node");
            }
            let down = |n: &NodeId| self.nodes.get(n).is_some_and(|i| i.status.is_down());
            if a.in_sync.iter().any(down) || a.primary.as_ref().is_some_and(down) {
                return fail("down node primary or in sync");
            }
            // A leaving node's backup copy is a complete one, kept only while the partition
            // lacks its full complement of in-sync backups without it.
            let full = usize::from(self.backups_per_partition);
            let leaving_backup = a.replicas.iter().find(|&&n| {
                Some(n) != a.primary
                    && Some(n) != a.handover
                    && self.nodes.get(&n).map(|i| i.status) == Some(NodeStatus::Draining)
            });
            if let Some(n) = leaving_backup
                && (!a.in_sync.contains(n) || a.in_sync.len() > full)
            {
                return fail("draining node kept as a backup it is not needed for");
            }
        }
        Ok(())
    }

    /// The map as a versioned snapshot (Raft snapshot data).
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        codec::encode(EnvelopeKind::MapSnapshot, self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        codec::decode(EnvelopeKind::MapSnapshot, bytes)
    }
}

impl MapCommand {
    /// The map command that carries out what a partition replica proposed: the one translation
    /// the actix shell and the simulator share. `sync_generation` is the assignment's generation
    /// in the map the replica acted on, so a `CaughtUp` overtaken by a shrink is rejected.
    /// `None` when the proposal names no valid node (id 0).
    pub fn from_replica_proposal(
        partition: PartitionId,
        proposal: crate::core::MapProposal,
        sync_generation: u64,
    ) -> Option<MapCommand> {
        use crate::core::MapProposal;
        Some(match proposal {
            MapProposal::ShrinkInSync { epoch, remove } => MapCommand::ShrinkInSync {
                partition,
                epoch,
                remove: NodeId::new(remove)?,
            },
            MapProposal::CaughtUp { epoch, node } => MapCommand::CaughtUp {
                partition,
                epoch,
                node: NodeId::new(node)?,
                sync_generation,
            },
            MapProposal::CompleteHandover {
                epoch,
                to,
                last_seq,
            } => MapCommand::CompleteHandover {
                partition,
                epoch,
                to: NodeId::new(to)?,
                last_seq,
            },
        })
    }

    /// The command as a versioned Raft entry payload.
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        codec::encode(EnvelopeKind::MapCommand, self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        codec::decode(EnvelopeKind::MapCommand, bytes)
    }
}

#[cfg(test)]
#[path = "map_leaving_tests.rs"]
mod leaving_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> NodeId {
        NodeId::new(n).expect("non-zero")
    }

    /// Three registered nodes; partition 0 with its primary and one backup not yet in sync.
    fn registered() -> (PartitionMap, NodeId, Epoch) {
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
        let a = map.assignment(PartitionId(0)).expect("p0").clone();
        let backup = *a
            .replicas
            .iter()
            .find(|&&n| Some(n) != a.primary)
            .expect("one backup");
        (map, backup, a.epoch)
    }

    fn caught_up(map: &PartitionMap, node: NodeId) -> MapCommand {
        let a = map.assignment(PartitionId(0)).expect("p0");
        MapCommand::CaughtUp {
            partition: PartitionId(0),
            epoch: a.epoch,
            node,
            sync_generation: a.sync_generation,
        }
    }

    #[test]
    fn a_caught_up_overtaken_by_a_shrink_of_the_same_backup_is_rejected() {
        let p0 = PartitionId(0);
        // (case, the backup is in sync before the shrink)
        for (case, in_sync_first) in [
            ("revoked before it committed", false),
            ("committed, shrunk, then re-delivered", true),
        ] {
            let (mut map, backup, epoch) = registered();
            let stale = caught_up(&map, backup);
            if in_sync_first {
                map.apply(&stale).expect(case);
            }
            let shrink = MapCommand::ShrinkInSync {
                partition: p0,
                epoch,
                remove: backup,
            };
            map.apply(&shrink).expect(case);
            let a = map.assignment(p0).expect("p0").clone();
            assert!(!a.in_sync.contains(&backup), "{case}");
            assert_eq!(
                map.apply(&stale),
                Err(Rejected::StaleSyncGeneration {
                    partition: p0,
                    expected: 0,
                    current: a.sync_generation,
                }),
                "{case}"
            );
            // Proposed again from the map that shows the shrink: accepted.
            map.apply(&caught_up(&map, backup)).expect(case);
            assert!(
                map.assignment(p0).expect("p0").in_sync.contains(&backup),
                "{case}"
            );
        }
    }

    /// Postcard writes the variant index: maps persisted by builds that knew only the first
    /// three statuses must decode to the same statuses, so a new one is only ever appended.
    #[test]
    fn node_statuses_keep_their_persisted_encoding() {
        // (status, its postcard bytes)
        let cases = [
            (NodeStatus::Up, [0u8]),
            (NodeStatus::Down, [1]),
            (NodeStatus::Draining, [2]),
            (NodeStatus::DownDraining, [3]),
        ];
        for (status, bytes) in cases {
            assert_eq!(
                postcard::to_allocvec(&status).expect("encode"),
                bytes,
                "{status:?}"
            );
            assert_eq!(
                postcard::from_bytes::<NodeStatus>(&bytes),
                Ok(status),
                "{status:?}"
            );
        }
        let (mut map, _, _) = registered();
        map.apply(&MapCommand::Drain { id: id(3) }).expect("drain");
        map.apply(&MapCommand::MarkDown { id: id(3) })
            .expect("mark down");
        assert_eq!(
            map.node(id(3)).map(|i| i.status),
            Some(NodeStatus::DownDraining)
        );
        let bytes = map.encode().expect("encode");
        assert_eq!(PartitionMap::decode(&bytes), Ok(map));
    }

    #[test]
    fn a_shrink_still_refuses_a_node_that_is_no_replica() {
        let (mut map, _, epoch) = registered();
        let a = map.assignment(PartitionId(0)).expect("p0").clone();
        let outsider = (1..=3)
            .map(id)
            .find(|n| !a.replicas.contains(n))
            .expect("one node outside p0");
        let before = map.clone();
        assert_eq!(
            map.apply(&MapCommand::ShrinkInSync {
                partition: PartitionId(0),
                epoch,
                remove: outsider,
            }),
            Err(Rejected::NotInSync {
                partition: PartitionId(0),
                node: outsider,
            })
        );
        assert_eq!(map, before);
    }
}
