//! The cluster actor: this node's membership in its site. It drives the map's [`RaftGroup`]
//! (persist, then send, then apply, then advance), the [`FailureDetector`] (heartbeats on the
//! Control channel), the planner on the Raft leader, map proposals from local replicas and
//! operators (forwarded to the leader when this node is not), and hands every applied map to
//! every local partition actor, the router and the status hub.
//!
//! On the Raft leader it also carries out membership changes from the configured peer list
//! ([`membership_step`], decided in `cluster::membership`; docs/design/site-ha.md,
//! "Membership").
//!
//! A standalone node runs the same actor over a [`MapLog::Local`]: a one-node map whose
//! commands apply at once, no transport, no detector.
use super::actor::{Assign, PartitionActor, ProposeMap};
use super::board::ReplicaBoard;
use super::forward::Forwarder;
use super::map_view::MapView;
use super::peers::Peers;
use super::routes::Routes;
use super::status::{StatusInput, build_status};
use super::wire::{self, ControlMessage, WireKind};
use crate::admin::{AdminRequest, AdminRequestError, StatusHub};
use crate::cluster::membership::{
    MembershipStep, hands_off_leadership, membership_step, planned_for_membership, successor,
};
use crate::cluster::{
    ClusterTimings, FailureDetector, FilePersistence, MapCommand, NodeId, NodeStatus, PartitionMap,
    PeerSpec, RaftGroup, RaftPersistence,
};
use crate::core::PartitionId;
use crate::transport::Channel;
use actix::{Actor, ActorContext, Addr, AsyncContext, Context, Handler, Message};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Where applied map commands come from.
pub enum MapLog {
    /// A one-node site: commands apply at once.
    Local(PartitionMap),
    /// The site's Raft group and its durable state.
    Raft {
        group: Box<RaftGroup>,
        persistence: FilePersistence,
    },
}

impl std::fmt::Debug for MapLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local(map) => f.debug_tuple("Local").field(&map.map_version()).finish(),
            Self::Raft { group, .. } => f.debug_tuple("Raft").field(group).finish(),
        }
    }
}

impl MapLog {
    pub fn map(&self) -> &PartitionMap {
        match self {
            Self::Local(map) => map,
            Self::Raft { group, .. } => group.map(),
        }
    }
}

/// A message on the Control channel from node `from`.
#[derive(Debug)]
pub struct ControlIn {
    pub from: NodeId,
    pub message: ControlMessage,
}

impl Message for ControlIn {
    type Result = ();
}

/// An operator request (admin HTTP).
#[derive(Debug)]
pub struct Admin(pub AdminRequest);

impl Message for Admin {
    type Result = ();
}

/// Graceful shutdown: drain this node, answer once it holds no primaries.
#[derive(Debug)]
pub struct DrainSelf {
    pub reply: oneshot::Sender<()>,
}

impl Message for DrainSelf {
    type Result = ();
}

/// Stop the actor (node shutting down).
#[derive(Debug)]
pub struct StopCluster;

impl Message for StopCluster {
    type Result = ();
}

/// Everything the cluster actor is built from.
#[derive(Debug)]
pub struct ClusterParts {
    pub me: NodeId,
    pub incarnation: u64,
    pub log: MapLog,
    pub peers: Arc<Peers>,
    pub forwarder: Option<Arc<Forwarder>>,
    pub partitions: Vec<Addr<PartitionActor>>,
    pub routes: Arc<Routes>,
    pub board: Arc<ReplicaBoard>,
    pub hub: StatusHub,
    pub status: StatusInput,
    pub timings: ClusterTimings,
    pub planner_repropose_ms: u64,
    /// The site's members as this node's configuration lists them (this node included); the
    /// Raft leader adds and removes nodes to match. Empty for a standalone node.
    pub configured: Vec<PeerSpec>,
}

/// What one Raft Ready applied.
#[derive(Default)]
struct RaftRound {
    snapshot_map: Option<PartitionMap>,
    commands: Vec<MapCommand>,
    /// The group's map after the round, when the round applied anything.
    final_map: Option<PartitionMap>,
}

/// An admin request waiting for its command to show in the map.
#[derive(Debug)]
struct AdminWait {
    node: NodeId,
    drain: bool,
    deadline_ms: u64,
    reply: oneshot::Sender<Result<(), AdminRequestError>>,
}

/// An operator's `ForcePrimary` waiting for the map to apply or reject it.
#[derive(Debug)]
struct ForceWait {
    /// Exactly as proposed (with the epoch it was checked at), to recognise it when committed.
    command: MapCommand,
    deadline_ms: u64,
    reply: oneshot::Sender<Result<(), AdminRequestError>>,
}

/// How long an admin request waits for its command to commit.
const ADMIN_WAIT_MS: u64 = 5_000;
/// How often the cluster actor wakes up; the Raft tick and heartbeats keep their own periods.
const CLUSTER_TICK_MS_MAX: u64 = 25;

#[derive(Debug)]
pub struct ClusterActor {
    me: NodeId,
    incarnation: u64,
    log: MapLog,
    /// The map as replayed command by command (rule: every applied command reaches every
    /// replica), equal to the log's map after each Ready.
    view: Arc<MapView>,
    detector: Option<FailureDetector>,
    peers: Arc<Peers>,
    forwarder: Option<Arc<Forwarder>>,
    partitions: Vec<Addr<PartitionActor>>,
    routes: Arc<Routes>,
    board: Arc<ReplicaBoard>,
    hub: StatusHub,
    status: StatusInput,
    timings: ClusterTimings,
    planner_repropose_ms: u64,
    configured: BTreeMap<NodeId, PeerSpec>,
    /// The map version each peer's latest heartbeat carried, and when it came (local clock):
    /// 0 means a node that never had a map, i.e. one waiting to join.
    peer_maps: BTreeMap<NodeId, (u64, u64)>,
    next_membership_ms: u64,
    /// Planned commands proposed recently, with when.
    recent: Vec<(MapCommand, u64)>,
    admin_waits: Vec<AdminWait>,
    force_waits: Vec<ForceWait>,
    drain_waits: Vec<oneshot::Sender<()>>,
    failovers_total: u64,
    epoch_origin: Instant,
    next_raft_tick_ms: u64,
    next_publish_ms: u64,
    next_sweep_ms: u64,
    next_drain_ms: u64,
}

impl ClusterActor {
    pub fn new(parts: ClusterParts) -> Self {
        let epoch_origin = Instant::now();
        let detector = match &parts.log {
            MapLog::Local(_) => None,
            MapLog::Raft { .. } => Some(FailureDetector::new(
                parts.me,
                parts.incarnation,
                parts.peers.ids(),
                parts.timings.clone(),
                0,
            )),
        };
        let view = Arc::new(MapView::new(
            parts.log.map().clone(),
            parts.me,
            parts.incarnation,
        ));
        Self {
            me: parts.me,
            incarnation: parts.incarnation,
            log: parts.log,
            view,
            detector,
            peers: parts.peers,
            forwarder: parts.forwarder,
            partitions: parts.partitions,
            routes: parts.routes,
            board: parts.board,
            hub: parts.hub,
            status: parts.status,
            timings: parts.timings,
            planner_repropose_ms: parts.planner_repropose_ms,
            configured: parts.configured.into_iter().map(|p| (p.id, p)).collect(),
            peer_maps: BTreeMap::new(),
            next_membership_ms: 0,
            recent: Vec::new(),
            admin_waits: Vec::new(),
            force_waits: Vec::new(),
            drain_waits: Vec::new(),
            failovers_total: 0,
            epoch_origin,
            next_raft_tick_ms: 0,
            next_publish_ms: 0,
            next_sweep_ms: 0,
            next_drain_ms: 0,
        }
    }

    /// Monotonic milliseconds since the actor started: the detector and timers only compare
    /// local times, so they must not jump with the wall clock.
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch_origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn tick(&mut self) {
        let now_ms = self.now_ms();
        if let MapLog::Raft { group, .. } = &mut self.log
            && now_ms >= self.next_raft_tick_ms
        {
            group.handle_tick();
            // Next slot after now; a stalled loop ticks once, not a burst.
            let period = self.timings.raft_tick_ms.max(1);
            self.next_raft_tick_ms = (now_ms / period + 1) * period;
        }
        if let Some(detector) = &mut self.detector {
            let map_version = self.view.map.map_version();
            let due = detector.poll_heartbeats(now_ms);
            if !due.is_empty() {
                let heartbeat = ControlMessage::Heartbeat(detector.heartbeat(map_version));
                match wire::encode(WireKind::Control, &heartbeat) {
                    Ok(frame) => {
                        for peer in due {
                            self.peers.send(peer, Channel::Control, frame.clone());
                        }
                    }
                    Err(e) => tracing::error!("encode a heartbeat: {e}"),
                }
            }
        }
        // A drained node must not keep leading: once the others' configurations drop it, it
        // no longer hears them and would never mark a restarted peer up (the site-membership
        // simulation stalls without this rule).
        if hands_off_leadership(self.me, &self.view.map) {
            self.hand_off_leadership(now_ms);
        }
        // Before the planner: a drained node leaving the site is removed before the planner
        // could mark it down (a `Down` node is no longer known to be drained).
        self.run_membership(now_ms);
        self.run_planner(now_ms);
        self.repropose_drain(now_ms);
        if !self.drain_waits.is_empty() {
            // Leadership moves without a map change.
            self.check_waits();
        }
        self.pump();
        self.expire_admin_waits(now_ms);
        if now_ms >= self.next_sweep_ms {
            self.next_sweep_ms = now_ms + 1000;
            if let Some(forwarder) = &self.forwarder {
                forwarder.sweep();
            }
        }
        if now_ms >= self.next_publish_ms {
            self.publish();
        }
    }

    /// Rule: on the Raft leader, propose what the planner says, except commands proposed within
    /// `planner_repropose_ms` (probably still in flight; a duplicate would only be rejected).
    fn run_planner(&mut self, now_ms: u64) {
        let (MapLog::Raft { group, .. }, Some(detector)) = (&mut self.log, &self.detector) else {
            return;
        };
        if !group.is_leader() {
            return;
        }
        let repropose_ms = self.planner_repropose_ms;
        self.recent
            .retain(|(_, at)| now_ms.saturating_sub(*at) < repropose_ms);
        let commands = crate::cluster::plan(group.map(), &|n| detector.liveness(n, now_ms));
        // A drained node this leader's configuration dropped is leaving: not marked down.
        let commands = planned_for_membership(commands, group.map(), &self.configured);
        for command in commands {
            if self.recent.iter().any(|(c, _)| *c == command) {
                continue;
            }
            tracing::info!(node = %self.me, ?command, "planner proposes");
            if let Err(e) = group.propose(&command) {
                tracing::debug!(node = %self.me, "planner proposal refused: {e}");
            }
            self.recent.push((command, now_ms));
        }
    }

    /// Rule: on the Raft leader, one step at a time towards the configured membership (see
    /// [`membership_step`]), at most every `planner_repropose_ms` and never while a Raft
    /// configuration change is still pending.
    fn run_membership(&mut self, now_ms: u64) {
        let MapLog::Raft { group, .. } = &mut self.log else {
            return;
        };
        if !group.is_leader()
            || group.membership_change_pending()
            || group.transferring_leadership()
            || now_ms < self.next_membership_ms
        {
            return;
        }
        let fresh_for_ms = self.timings.node_failure_timeout_ms;
        let peer_maps = &self.peer_maps;
        let waiting_to_join = |id: NodeId| {
            peer_maps.get(&id).is_some_and(|&(version, heard_ms)| {
                version == 0 && now_ms.saturating_sub(heard_ms) < fresh_for_ms
            })
        };
        let voters = group.voters();
        let Some(step) = membership_step(
            self.me,
            &self.configured,
            &voters,
            group.map(),
            &waiting_to_join,
        ) else {
            return;
        };
        self.next_membership_ms = now_ms + self.planner_repropose_ms.max(1);
        tracing::info!(node = %self.me, ?step, ?voters, "membership");
        let proposed = match step {
            MembershipStep::AddToMap(peer) => group.propose(&MapCommand::AddNode {
                id: peer.id,
                addr: peer.addr,
                zone: peer.zone,
            }),
            MembershipStep::AddVoter(id) => group.propose_add_voter(id),
            MembershipStep::RemoveFromMap(id) => group.propose(&MapCommand::RemoveNode { id }),
            MembershipStep::RemoveVoter(id) => group.propose_remove_voter(id),
            MembershipStep::Wait { .. } => Ok(()),
        };
        if let Err(e) = proposed {
            tracing::info!(node = %self.me, "membership change refused for now: {e}");
        }
    }

    /// While a graceful shutdown waits, keep asking for this node's drain: a proposal made
    /// while the Raft leader changed may have been lost.
    fn repropose_drain(&mut self, now_ms: u64) {
        if self.drain_waits.is_empty() || now_ms < self.next_drain_ms {
            return;
        }
        self.next_drain_ms = now_ms + self.planner_repropose_ms.max(1);
        if self.view.map.node(self.me).map(|i| i.status) == Some(NodeStatus::Up) {
            self.propose(MapCommand::Drain { id: self.me });
        }
        // After the proposal: raft-rs drops proposals while a transfer runs, but one already
        // in the log is committed by the new leader.
        self.hand_off_leadership(now_ms);
    }

    /// A node stopping should not lead the map: once it exits, the site would wait out an
    /// election timeout before any map command (the restarted node's `MarkUp`, a failover)
    /// can commit. Hands leadership to a live peer marked up (lowest id first).
    fn hand_off_leadership(&mut self, now_ms: u64) {
        let (MapLog::Raft { group, .. }, Some(detector)) = (&mut self.log, &self.detector) else {
            return;
        };
        if !group.is_leader() || group.transferring_leadership() {
            return;
        }
        if let Some(to) = successor(self.me, &self.view.map, detector, now_ms) {
            tracing::info!(node = %self.me, to = %to, "draining: handing Raft leadership over");
            group.transfer_leadership(to);
        }
    }

    /// A command for the map: applied at once on a standalone node, proposed on the Raft
    /// leader, else sent to the leader (dropped when none is known: every proposer retries).
    fn propose(&mut self, command: MapCommand) {
        match &mut self.log {
            MapLog::Local(map) => {
                let outcome = map.apply(&command);
                let applied = map.clone();
                tracing::debug!(?command, ?outcome, "local map command");
                self.apply_committed(&[command], applied);
            }
            MapLog::Raft { group, .. } => {
                if group.is_leader() {
                    if let Err(e) = group.propose(&command) {
                        tracing::debug!(node = %self.me, "proposal refused: {e}");
                    }
                } else if let Some(leader) = group.leader().filter(|&l| l != self.me) {
                    match wire::encode(WireKind::Control, &ControlMessage::Propose(command)) {
                        Ok(frame) => {
                            self.peers.send(leader, Channel::Control, frame);
                        }
                        Err(e) => tracing::error!("encode a proposal: {e}"),
                    }
                }
            }
        }
    }

    /// Raft's Ready protocol until it has nothing left: persist, send, advance, then hand the
    /// applied commands to the replicas.
    fn pump(&mut self) {
        for _ in 0..1000 {
            let Some(round) = self.raft_round() else {
                return;
            };
            if let Some(map) = round.snapshot_map {
                self.broadcast(map);
            }
            if let Some(final_map) = round.final_map {
                self.apply_committed(&round.commands, final_map);
            }
        }
        tracing::warn!(node = %self.me, "Raft kept producing work; yielding");
    }

    /// One Ready: persisted, sent and advanced; what it applied.
    fn raft_round(&mut self) -> Option<RaftRound> {
        let MapLog::Raft { group, persistence } = &mut self.log else {
            return None;
        };
        let out = match group.poll_ready() {
            Ok(Some(out)) => out,
            Ok(None) => return None,
            Err(e) => {
                tracing::error!(node = %self.me, "Raft poll_ready: {e}");
                return None;
            }
        };
        if let Err(e) = persistence.persist(&out.to_persist) {
            // Sending now could acknowledge what is not durable: stay silent this round (Raft
            // retransmits); a node whose disk keeps failing stops counting towards quorums.
            tracing::error!(node = %self.me, "persist Raft state: {e}");
            group.advance();
            return Some(RaftRound::default());
        }
        for (to, bytes) in out.messages {
            match wire::encode(WireKind::Control, &ControlMessage::Raft(bytes)) {
                Ok(frame) => {
                    self.peers.send(to, Channel::Control, frame);
                }
                Err(e) => tracing::error!("encode a Raft message: {e}"),
            }
        }
        // A snapshot from the leader replaces the map; commands up to its index are in it.
        let snapshot = out
            .to_persist
            .snapshot
            .as_ref()
            .filter(|_| out.to_persist.snapshot_replaces_log)
            .and_then(|s| match PartitionMap::decode(&s.data) {
                Ok(map) => Some((s.get_metadata().index, map)),
                Err(e) => {
                    tracing::error!(node = %self.me, "a Raft snapshot's map does not decode: {e}");
                    None
                }
            });
        let applied_from = snapshot.as_ref().map_or(0, |(index, _)| *index);
        let commands: Vec<MapCommand> = out
            .committed
            .into_iter()
            .filter(|c| c.index > applied_from)
            .map(|c| c.command)
            .collect();
        group.advance();
        let moved = out.map_changed
            || snapshot.is_some()
            || group.map().map_version() != self.view.map.map_version();
        let final_map = (moved || !commands.is_empty()).then(|| group.map().clone());
        Some(RaftRound {
            snapshot_map: snapshot.map(|(_, map)| map),
            commands,
            final_map,
        })
    }

    /// Replays `commands` on the current view (one assignment round per command, even for a
    /// rejected one: that is how a primary learns its proposal had no effect), then makes sure
    /// the result is `final_map`.
    fn apply_committed(&mut self, commands: &[MapCommand], final_map: PartitionMap) {
        let mut map = self.view.map.clone();
        for command in commands {
            let before = map.clone();
            let outcome = map.apply(command);
            if outcome.is_ok() {
                self.count_failovers(command, &before, &map);
            }
            if matches!(command, MapCommand::ForcePrimary { .. }) {
                self.settle_force_waits(command, outcome.map(|_| ()).map_err(|e| e.to_string()));
            }
            self.broadcast(map.clone());
        }
        if map != final_map {
            self.broadcast(final_map);
        }
        self.routes.update(&self.view);
        if let Some(detector) = &mut self.detector {
            // Configured peers too: a node joining must be heard (and hear us) before the map
            // lists it, and a joiner's own map is empty until it is added.
            let peers: Vec<NodeId> = self.peers.ids().collect();
            detector.set_peers(self.view.map.nodes().keys().copied().chain(peers));
        }
        self.check_waits();
        self.publish();
    }

    fn broadcast(&mut self, map: PartitionMap) {
        let view = Arc::new(MapView::new(map, self.me, self.incarnation));
        for actor in &self.partitions {
            actor.do_send(Assign(Arc::clone(&view)));
        }
        self.view = view;
    }

    /// A failover: this node became primary of a partition at a higher epoch because its
    /// previous (registered) primary was marked down, or fenced by its restart.
    fn count_failovers(
        &mut self,
        command: &MapCommand,
        before: &PartitionMap,
        after: &PartitionMap,
    ) {
        let fenced = match command {
            MapCommand::MarkDown { id } | MapCommand::MarkUp { id, .. } => *id,
            _ => return,
        };
        // An unregistered primary never served (a node slow to join a new site): taking its
        // partitions over loses nothing and is no failover.
        if before.node(fenced).is_none_or(|i| i.incarnation == 0) {
            return;
        }
        for (was, now) in before.partitions().iter().zip(after.partitions()) {
            if was.primary == Some(fenced) && now.primary == Some(self.me) && now.epoch > was.epoch
            {
                self.failovers_total += 1;
            }
        }
    }

    fn holds_primaries(&self) -> bool {
        self.view
            .map
            .partitions()
            .iter()
            .any(|a| a.primary == Some(self.me))
    }

    /// Draining is done when this node leads nothing, or when no other node is up to take
    /// over (the whole site stopping at once): waiting would only delay the stop.
    fn drained(&self) -> bool {
        let others_up = self
            .view
            .map
            .nodes()
            .iter()
            .any(|(&id, info)| id != self.me && info.status == NodeStatus::Up);
        !self.holds_primaries() || !others_up
    }

    /// Whether this node still leads the map while a live peer could take over.
    fn leads_with_successor(&self) -> bool {
        let (MapLog::Raft { group, .. }, Some(detector)) = (&self.log, &self.detector) else {
            return false;
        };
        group.is_leader() && successor(self.me, &self.view.map, detector, self.now_ms()).is_some()
    }

    fn check_waits(&mut self) {
        // A drained node that still leads waits for its leadership transfer (bounded by the
        // caller's drain timeout): stopping now would leave the site without a leader.
        if !self.drain_waits.is_empty() && self.drained() && !self.leads_with_successor() {
            for reply in self.drain_waits.drain(..) {
                let _ = reply.send(());
            }
        }
        let map = &self.view.map;
        let (done, waiting): (Vec<AdminWait>, Vec<AdminWait>) =
            std::mem::take(&mut self.admin_waits)
                .into_iter()
                .partition(|w| {
                    map.node(w.node)
                        .is_some_and(|i| i.status.is_draining() == w.drain)
                });
        self.admin_waits = waiting;
        for wait in done {
            let _ = wait.reply.send(Ok(()));
        }
        self.check_force_waits();
    }

    /// Answers the operators waiting for `command`: its outcome is the same on every node.
    fn settle_force_waits(&mut self, command: &MapCommand, outcome: Result<(), String>) {
        let (done, waiting): (Vec<ForceWait>, Vec<ForceWait>) =
            std::mem::take(&mut self.force_waits)
                .into_iter()
                .partition(|w| w.command == *command);
        self.force_waits = waiting;
        for wait in done {
            let answer = outcome.clone().map_err(AdminRequestError::Rejected);
            let _ = wait.reply.send(answer);
        }
    }

    /// A map that jumped past a waiting `ForcePrimary` (a Raft snapshot carries no commands)
    /// still tells its fate: the partition at the next epoch with that primary is ours.
    fn check_force_waits(&mut self) {
        let map = &self.view.map;
        let mut settled = Vec::new();
        for (i, wait) in self.force_waits.iter().enumerate() {
            let MapCommand::ForcePrimary {
                partition,
                epoch,
                to,
            } = &wait.command
            else {
                continue;
            };
            let Some(now) = map.assignment(*partition) else {
                continue;
            };
            if now.epoch == epoch + 1 && now.primary == Some(*to) {
                settled.push((i, Ok(())));
            } else if now.epoch > *epoch {
                settled.push((
                    i,
                    Err(format!(
                        "partition {} moved to epoch {} (primary {:?}) before the command applied",
                        partition.0,
                        now.epoch,
                        now.primary.map(|n| n.get())
                    )),
                ));
            }
        }
        for (i, outcome) in settled.into_iter().rev() {
            let wait = self.force_waits.remove(i);
            let _ = wait
                .reply
                .send(outcome.map_err(AdminRequestError::Rejected));
        }
    }

    fn expire_admin_waits(&mut self, now_ms: u64) {
        let (expired, waiting): (Vec<AdminWait>, Vec<AdminWait>) =
            std::mem::take(&mut self.admin_waits)
                .into_iter()
                .partition(|w| now_ms >= w.deadline_ms);
        self.admin_waits = waiting;
        for wait in expired {
            let _ = wait.reply.send(Err(AdminRequestError::NoLeader));
        }
        let (expired, waiting): (Vec<ForceWait>, Vec<ForceWait>) =
            std::mem::take(&mut self.force_waits)
                .into_iter()
                .partition(|w| now_ms >= w.deadline_ms);
        self.force_waits = waiting;
        for wait in expired {
            let _ = wait.reply.send(Err(AdminRequestError::NoLeader));
        }
    }

    /// An operator forces `node_id` to be primary of `partition`. Checked against this node's
    /// map first (most refusals answer at once), then proposed at the partition's current
    /// epoch, so a partition that moved meanwhile is refused rather than overwritten.
    fn force_primary(
        &mut self,
        partition: u16,
        node_id: u64,
        reply: oneshot::Sender<Result<(), AdminRequestError>>,
    ) {
        let Some(node) = NodeId::new(node_id).filter(|n| self.view.map.node(*n).is_some()) else {
            let _ = reply.send(Err(AdminRequestError::UnknownNode(node_id)));
            return;
        };
        let partition_id = PartitionId(partition);
        let Some(current) = self.view.map.assignment(partition_id) else {
            let _ = reply.send(Err(AdminRequestError::UnknownPartition(partition)));
            return;
        };
        let command = MapCommand::ForcePrimary {
            partition: partition_id,
            epoch: current.epoch,
            to: node,
        };
        let mut probe = self.view.map.clone();
        if let Err(e) = probe.apply(&command) {
            let _ = reply.send(Err(AdminRequestError::Rejected(e.to_string())));
            return;
        }
        tracing::warn!(
            node = %self.me,
            partition,
            to = node_id,
            "operator forces a primary; writes only the lost primary held are given up"
        );
        self.force_waits.push(ForceWait {
            command: command.clone(),
            deadline_ms: self.now_ms() + ADMIN_WAIT_MS,
            reply,
        });
        self.propose(command);
        self.pump();
        self.check_force_waits();
    }

    fn admin(&mut self, request: AdminRequest) {
        let (node_id, drain, reply) = match request {
            AdminRequest::Drain { node_id, reply } => (node_id, true, reply),
            AdminRequest::Undrain { node_id, reply } => (node_id, false, reply),
            AdminRequest::ForcePrimary {
                partition,
                node_id,
                reply,
            } => return self.force_primary(partition, node_id, reply),
        };
        let Some(node) = NodeId::new(node_id).filter(|n| self.view.map.node(*n).is_some()) else {
            let _ = reply.send(Err(AdminRequestError::UnknownNode(node_id)));
            return;
        };
        let Some(status) = self.view.map.node(node).map(|i| i.status) else {
            let _ = reply.send(Err(AdminRequestError::UnknownNode(node_id)));
            return;
        };
        // Already done: the drain is (or is no longer) in force, down or not.
        if status.is_draining() == drain {
            let _ = reply.send(Ok(()));
            return;
        }
        let next = if drain {
            status.drained()
        } else {
            status.undrained()
        };
        if next.is_none() {
            let needed = if drain {
                NodeStatus::Up
            } else {
                NodeStatus::Draining
            };
            let _ = reply.send(Err(AdminRequestError::Rejected(format!(
                "node {node_id} is {status:?}, the request needs {needed:?}"
            ))));
            return;
        }
        let command = if drain {
            MapCommand::Drain { id: node }
        } else {
            MapCommand::Undrain { id: node }
        };
        let deadline_ms = self.now_ms() + ADMIN_WAIT_MS;
        self.admin_waits.push(AdminWait {
            node,
            drain,
            deadline_ms,
            reply,
        });
        self.propose(command);
        self.pump();
        self.check_waits();
    }

    fn publish(&mut self) {
        let now_ms = self.now_ms();
        self.next_publish_ms = now_ms + self.timings.heartbeat_interval_ms.max(1);
        let leader = match &self.log {
            MapLog::Local(_) => Some(self.me),
            MapLog::Raft { group, .. } => group.leader(),
        };
        let status = build_status(
            &self.status,
            &self.view,
            &self.board,
            self.incarnation,
            leader,
            self.failovers_total,
            self.forwarder
                .as_ref()
                .map(|f| f.stats())
                .unwrap_or_default(),
        );
        self.hub.publish(status);
    }
}

impl Actor for ClusterActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // The partition actors booted with this map; the router already routes by it.
        self.routes.update(&self.view);
        self.pump();
        self.publish();
        let period = self
            .timings
            .raft_tick_ms
            .min(self.timings.heartbeat_interval_ms)
            .clamp(1, CLUSTER_TICK_MS_MAX);
        ctx.run_interval(Duration::from_millis(period), |actor, _| actor.tick());
    }
}

impl Handler<ControlIn> for ClusterActor {
    type Result = ();

    fn handle(&mut self, msg: ControlIn, _ctx: &mut Self::Context) {
        let now_ms = self.now_ms();
        match msg.message {
            ControlMessage::Raft(bytes) => {
                if let MapLog::Raft { group, .. } = &mut self.log
                    && let Err(e) = group.handle_message_bytes(&bytes)
                {
                    tracing::debug!(from = %msg.from, "drop a Raft message: {e}");
                }
            }
            ControlMessage::Heartbeat(heartbeat) => {
                // The sender is who the transport authenticated, whatever the body claims.
                if heartbeat.from == msg.from
                    && let Some(detector) = &mut self.detector
                {
                    detector.handle_heartbeat(&heartbeat, now_ms);
                    self.peer_maps
                        .insert(msg.from, (heartbeat.map_version, now_ms));
                }
            }
            ControlMessage::Propose(command) => {
                if let MapLog::Raft { group, .. } = &mut self.log
                    && group.is_leader()
                    && let Err(e) = group.propose(&command)
                {
                    tracing::debug!(from = %msg.from, "forwarded proposal refused: {e}");
                }
            }
        }
        self.pump();
    }
}

impl Handler<ProposeMap> for ClusterActor {
    type Result = ();

    fn handle(&mut self, msg: ProposeMap, _ctx: &mut Self::Context) {
        self.propose(msg.0);
        self.pump();
    }
}

impl Handler<Admin> for ClusterActor {
    type Result = ();

    fn handle(&mut self, msg: Admin, _ctx: &mut Self::Context) {
        self.admin(msg.0);
    }
}

impl Handler<DrainSelf> for ClusterActor {
    type Result = ();

    fn handle(&mut self, msg: DrainSelf, _ctx: &mut Self::Context) {
        if (self.drained() && !self.leads_with_successor()) || matches!(self.log, MapLog::Local(_))
        {
            let _ = msg.reply.send(());
            return;
        }
        self.drain_waits.push(msg.reply);
        self.next_drain_ms = 0;
        let now_ms = self.now_ms();
        self.repropose_drain(now_ms);
        self.pump();
    }
}

impl Handler<StopCluster> for ClusterActor {
    type Result = ();

    fn handle(&mut self, _: StopCluster, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
