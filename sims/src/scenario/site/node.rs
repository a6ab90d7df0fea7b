//! One simulated site node: the shell around the sans-IO cores, written as the production actix
//! shell must be written. Everything here is a rule the real shell follows too; the sims only
//! replace sockets with `Msg`s and the wall clock with the host's simulated clock.
//!
//! A node owns: the map's [`RaftGroup`] (persisting to [`MemPersistence`], which survives a
//! crash as a disk would), a [`FailureDetector`], one [`ReplicaCore`] per partition of the site
//! (`Idle` where the node holds no replica) and a request forwarder.
//!
//! # Rules
//!
//! 1. **Raft Ready protocol.** After every input: `poll_ready` → persist → send → apply →
//!    `advance`, until Raft has nothing left (`drain_raft`).
//! 2. **Every committed map command reaches every local replica.** The shell keeps its own copy
//!    of the map and replays each committed command on it (a snapshot from the leader replaces
//!    the copy), and after *every* command — even one the map rejected, which is how a primary
//!    learns its proposal had no effect — hands each replica its partition's facts
//!    (`handle_assignment`). The copy must equal the group's map after each Ready.
//! 3. **Incarnation rule.** A node boots with a fresh incarnation (persisted counter + 1). It
//!    acts as primary or in-sync backup only while the map records that incarnation for it:
//!    until the map does, its facts drop it from `primary` and `in_sync`, because the map's
//!    trust was in the previous incarnation, whose data died with it.
//! 4. **Proposals go to the Raft leader.** A replica's `MapProposal` becomes a `MapCommand` for
//!    its partition; proposed directly on the leader, else sent to the leader hint (dropped when
//!    there is none: every replica proposal is retried by the replica).
//! 5. **Heartbeats and planner.** Every tick: heartbeats when the detector says they are due;
//!    on the Raft leader, `plan(map, liveness)` and propose what it returns (a command proposed
//!    within `planner_repropose_ms` is not proposed again: it is probably still in flight, and a
//!    duplicate would only be rejected).
//! 6. **Request ids.** Each client command gets `RequestId { origin: this node, counter }` with
//!    the incarnation in the counter's high bits, so an id is never reused across restarts (the
//!    primaries' dedup tables would answer a reused id with another request's results).
//! 7. **Forwarding.** The origin sends the request to the primary its map names (itself
//!    included). On a redirect it waits until its map reaches the redirect's epoch (or uses the
//!    redirect's hint when its map is older), on no answer within `forward_attempt_timeout_ms`
//!    it tries again, always with the *same* id; after `forward_retry_ms_max` it answers
//!    `-TRYAGAIN`. Only the current attempt's reply counts: a retry abandons the earlier attempt
//!    (in production: its connection is reset, so its late answer is never read). This matters:
//!    a write that changed nothing is remembered only by the primary that ran it (it has no
//!    record to replicate with), so a late answer to an abandoned attempt of, say, a `SET NX`
//!    that did not apply on one primary may contradict a retry that did on the next.
//! 8. **Answers go back the way the request came.** Each attempt delivered to a local replica
//!    is queued per (partition, id); the replica answers or redirects every request exactly
//!    once, in arrival order, so its outputs are matched to attempts first-in first-out.
//! 9. **The configured peers are the transport's allow-list.** A node sends only to the peers
//!    its configuration lists and drops whatever comes from any other node (mutual TLS refuses
//!    the connection), so two nodes talk only while each lists the other. The failure detector
//!    watches the map's nodes and the configured peers (a joiner is heard before the map lists
//!    it); each heartbeat's map version is remembered (0: a node that never had a map).
//! 10. **Membership** (docs/design/site-ha.md, "Membership"). On the Raft leader, before the
//!     planner: [`membership_step`] towards the configured peers, at most one step every
//!     `planner_repropose_ms` and none while a Raft configuration change is pending or
//!     leadership is being transferred; a configured node counts as waiting to join while its
//!     latest heartbeat, heard within `node_failure_timeout_ms`, carried map version 0. The
//!     planner's commands go through [`planned_for_membership`] (a drained node this leader's
//!     configuration dropped is never marked down). A node started with `join_existing` and no
//!     persisted Raft state starts with no voters and an empty map and waits for the leader's
//!     snapshot. An operator's `Drain`/`Undrain` of a node ([`SiteNode::handle_admin`]) is
//!     checked against this node's map and proposed like a replica's proposal (rule 4).
//! 11. **A draining node does not lead the map.** On the Raft leader, when the map marks this
//!     node `Draining` ([`hands_off_leadership`]), leadership goes to [`successor`] (a live up
//!     peer, lowest id first). Without it, a drained node whose removal is under way keeps
//!     leading (the nodes not yet restarted give it a quorum) while the restarted ones, whose
//!     configuration dropped it, are never heard, so never marked up: the rolling restart
//!     stalls. The actix shell does this only for its own graceful drain (`DrainSelf`), not
//!     after an operator's `Drain`: see `draining_leader_hands_off`.
//!
//! A rolling configuration change is a restart with another peer list: the configuration is
//! read at start only, as in production.
use super::msg::{ClientReply, ForwardReply, Msg};
use crate::net::HostId;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use tern_conflict::SiteId;
use tern_node::cluster::membership::{
    MembershipStep, hands_off_leadership, membership_step, planned_for_membership, successor,
};
use tern_node::cluster::{
    Applied, ClusterTimings, FailureDetector, MapCommand, MemPersistence, NodeId, NodeStatus,
    PartitionMap, PeerSpec, RaftGroup, RaftGroupConfig, RaftPersistence, Rejected, discard_logger,
    plan,
};
use tern_node::core::{
    AssignmentFacts, Command, CommandResult, Keyspace, MapProposal, PartitionConfig, PartitionId,
    ReplicaCore, ReplicationLimits, ReplicationMessage, Request, RequestId, Role,
};
use tern_node::limits::Limits;

/// The shell's knobs (the design's timings; the production shell reads them from config).
#[derive(Clone, Debug)]
pub struct ShellConfig {
    /// The site's members as this node's configuration lists them (this node included): the
    /// founding voters and initial map on a first start, the transport's allow-list (rule 9)
    /// and the membership the Raft leader moves the site towards (rule 10).
    pub nodes: Vec<NodeId>,
    /// `cluster.join_existing`: on a first start (nothing persisted), join a running site
    /// instead of bootstrapping one.
    pub join_existing: bool,
    pub partitions: u16,
    pub backups: u8,
    pub timings: ClusterTimings,
    pub replication: ReplicationLimits,
    pub partition_limits: Limits,
    /// The node's tick period; a Raft tick every `timings.raft_tick_ms / node_tick_ms` ticks.
    pub node_tick_ms: u64,
    pub forward_retry_ms_max: u64,
    pub forward_attempt_timeout_ms: u64,
    /// Pause before retrying after a redirect.
    pub forward_backoff_ms: u64,
    pub planner_repropose_ms: u64,
    /// Rule 11 (off: as the actix shell after an operator's `Drain`, which keeps leading).
    pub draining_leader_hands_off: bool,
    /// A deliberately broken rule, to prove the checkers catch it.
    pub fault: Option<ShellFault>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShellFault {
    /// Break rule 3: a restarted node trusts the map's view of its previous incarnation.
    IgnoreIncarnation,
    /// An unsafe promotion: when the map leaves a partition without primary, every node
    /// treats its first live replica as primary, in sync or not.
    PromoteAnyReplica,
}

/// What survives a crash: Raft's persisted state and the incarnation counter (on disk in
/// production: `FilePersistence` and its `incarnation` file).
#[derive(Debug, Default)]
pub struct Durable {
    pub persistence: MemPersistence,
    pub last_incarnation: u64,
}

/// What a node reports for the checkers and the run's statistics.
#[derive(Clone, Debug)]
pub enum Observation {
    /// A replica released an answer. `exec_seq`: the partition's last seq when the request
    /// executed (known when it executed on arrival), which every in-sync backup now holds.
    Released {
        partition: PartitionId,
        epoch: u64,
        exec_seq: Option<u64>,
        /// That execution changed state (a write that took effect).
        changed: bool,
        id: RequestId,
        results: Vec<CommandResult>,
    },
    /// A map command this node applied at Raft index `index`.
    Committed {
        index: u64,
        command: MapCommand,
        outcome: Result<Applied, Rejected>,
    },
    /// The shell's replayed map broke `PartitionMap::check_invariants` or differs from the
    /// group's map.
    MapBroken { detail: String },
    /// Rule 7 retried a request (`redirect`: after a redirect, else after a timeout).
    Retried { redirect: bool },
    /// A request was answered `-TRYAGAIN`.
    GaveUp,
    /// Rule 10: the Raft leader proposed a membership change.
    Membership { step: MembershipStep },
}

/// What an operator's `Drain`/`Undrain` request got at once (the real shell then waits for the
/// map to show the new status; the sims' operator watches the map instead).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminAnswer {
    /// The node already has the wanted status.
    Already,
    /// Proposed (to the leader, or dropped when none is known: the operator asks again).
    Proposed,
    /// Refused with this reason (unknown node, or not in the status the request needs).
    Rejected(String),
}

#[derive(Debug, Default)]
pub struct Outbox {
    pub to_peers: Vec<(NodeId, Msg)>,
    pub to_clients: Vec<(HostId, u64, ClientReply)>,
    pub observations: Vec<Observation>,
}

#[derive(Debug)]
struct Forward {
    client: HostId,
    req: u64,
    partition: PartitionId,
    commands: Vec<Command>,
    started_ms: u64,
    attempt: u32,
    state: ForwardState,
}

#[derive(Debug)]
enum ForwardState {
    InFlight {
        deadline_ms: u64,
    },
    Waiting {
        not_before_ms: u64,
        min_epoch: u64,
        hint: Option<NodeId>,
    },
}

/// An attempt delivered to a local replica, waiting for its answer or redirect.
#[derive(Debug)]
struct Inbound {
    reply_to: NodeId,
    attempt: u32,
    exec_seq: Option<u64>,
    changed: bool,
}

#[derive(Debug)]
enum LocalWork {
    Request {
        from: NodeId,
        id: RequestId,
        attempt: u32,
        partition: PartitionId,
        commands: Vec<Command>,
    },
    Reply {
        id: RequestId,
        attempt: u32,
        reply: ForwardReply,
    },
}

pub struct SiteNode {
    id: NodeId,
    incarnation: u64,
    config: ShellConfig,
    persistence: MemPersistence,
    last_incarnation: u64,
    raft: RaftGroup,
    /// Rule 2's replayed copy of the map.
    map: PartitionMap,
    detector: FailureDetector,
    keyspace: Keyspace,
    replicas: Vec<ReplicaCore>,
    forwards: BTreeMap<RequestId, Forward>,
    inbound: BTreeMap<(PartitionId, RequestId), VecDeque<Inbound>>,
    local: VecDeque<LocalWork>,
    next_counter: u64,
    recent_proposals: Vec<(MapCommand, u64)>,
    /// Rule 9: the configured peers, this node included.
    configured: BTreeMap<NodeId, PeerSpec>,
    /// Rule 9: each peer's latest heartbeat's map version, and when it came (local clock).
    peer_maps: BTreeMap<NodeId, (u64, u64)>,
    next_membership_ms: u64,
    ticks: u64,
    now_ms: u64,
    map_moved: bool,
    out: Outbox,
}

impl std::fmt::Debug for SiteNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiteNode")
            .field("id", &self.id)
            .field("incarnation", &self.incarnation)
            .field("raft", &self.raft)
            .field("forwards", &self.forwards.len())
            .finish()
    }
}

impl SiteNode {
    /// Boot (first start or restart) from what survived; `seed` seeds Raft's election jitter
    /// and the partition tables' hashers.
    pub fn start(
        id: NodeId,
        config: ShellConfig,
        durable: Durable,
        now_ms: u64,
        seed: u64,
    ) -> Result<Self, String> {
        let Durable {
            mut persistence,
            last_incarnation,
        } = durable;
        let incarnation = last_incarnation + 1;
        let configured: BTreeMap<NodeId, PeerSpec> =
            config.nodes.iter().map(|&n| (n, peer_spec(n))).collect();
        let restored = persistence
            .load()
            .map_err(|e| format!("{id}: load Raft state: {e}"))?;
        // Rule 10: a joiner (ignored once state is persisted) waits for the leader's snapshot.
        let (voters, initial) = if config.join_existing && restored.is_none() {
            (
                Vec::new(),
                PartitionMap::new(config.partitions, config.backups),
            )
        } else {
            (
                config.nodes.clone(),
                PartitionMap::bootstrap(
                    config.partitions,
                    config.backups,
                    configured.values().cloned(),
                ),
            )
        };
        let raft = RaftGroup::new(
            RaftGroupConfig {
                id,
                voters,
                timings: config.timings.clone(),
                seed,
            },
            initial,
            restored,
            &discard_logger(),
        )
        .map_err(|e| format!("{id}: start the Raft group: {e}"))?;
        let keyspace = Keyspace::new(u32::from(config.partitions))
            .map_err(|e| format!("{id}: keyspace: {e}"))?;
        let replicas = keyspace
            .partitions()
            .map(|partition| {
                ReplicaCore::new(
                    id.get(),
                    PartitionConfig {
                        partition,
                        site: SiteId(1),
                        limits: config.partition_limits.clone(),
                        hash_seed: seed ^ u64::from(partition.0),
                    },
                    config.replication.clone(),
                )
            })
            .collect();
        let detector = FailureDetector::new(
            id,
            incarnation,
            config.nodes.iter().copied(),
            config.timings.clone(),
            now_ms,
        );
        let map = raft.map().clone();
        let mut node = Self {
            id,
            incarnation,
            config,
            persistence,
            last_incarnation: incarnation,
            raft,
            map,
            detector,
            keyspace,
            replicas,
            forwards: BTreeMap::new(),
            inbound: BTreeMap::new(),
            local: VecDeque::new(),
            next_counter: 0,
            recent_proposals: Vec::new(),
            configured,
            peer_maps: BTreeMap::new(),
            next_membership_ms: 0,
            ticks: 0,
            now_ms,
            map_moved: false,
            out: Outbox::default(),
        };
        node.assign_all();
        node.pump();
        Ok(node)
    }

    /// The crash: everything volatile is gone, only `Durable` stays.
    pub fn crash(self) -> Durable {
        Durable {
            persistence: self.persistence,
            last_incarnation: self.last_incarnation,
        }
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    pub fn map(&self) -> &PartitionMap {
        &self.map
    }

    pub fn raft(&self) -> &RaftGroup {
        &self.raft
    }

    pub fn replicas(&self) -> &[ReplicaCore] {
        &self.replicas
    }

    pub fn replica(&self, partition: PartitionId) -> Option<&ReplicaCore> {
        self.replicas.get(usize::from(partition.0))
    }

    pub fn pending_forwards(&self) -> usize {
        self.forwards.len()
    }

    /// The peers this node's configuration lists (itself included).
    pub fn configured(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.configured.keys().copied()
    }

    /// What the node produced since the last call. Rule 9: nothing for an unconfigured peer
    /// leaves (the transport has no connection to it).
    pub fn take_outbox(&mut self) -> Outbox {
        let mut out = std::mem::take(&mut self.out);
        let configured = &self.configured;
        out.to_peers.retain(|(to, _)| configured.contains_key(to));
        out
    }

    // --- inputs ---

    pub fn handle_tick(&mut self, now_ms: u64) {
        self.observe(now_ms);
        self.ticks += 1;
        let raft_every =
            (self.config.timings.raft_tick_ms / self.config.node_tick_ms.max(1)).max(1);
        if self.ticks.is_multiple_of(raft_every) {
            self.raft.handle_tick();
        }
        let map_version = self.map.map_version();
        for peer in self.detector.poll_heartbeats(now_ms) {
            let heartbeat = self.detector.heartbeat(map_version);
            self.out.to_peers.push((peer, Msg::Heartbeat(heartbeat)));
        }
        for replica in &mut self.replicas {
            replica.handle_tick(now_ms);
        }
        // Rule 10: before the planner, so a leaving node is removed before it could be marked
        // down.
        // Rule 11 first: raft-rs drops proposals while a transfer runs.
        self.hand_off_if_draining();
        self.run_membership();
        self.run_planner();
        self.forwarder_tick();
        self.pump();
    }

    pub fn handle_message(&mut self, from: NodeId, msg: Msg, now_ms: u64) {
        self.observe(now_ms);
        if !self.configured.contains_key(&from) {
            // Rule 9: the transport refuses an unconfigured peer.
            return;
        }
        match msg {
            Msg::Raft(bytes) => {
                // A malformed or misdirected Raft message is dropped, as the network would.
                let _ = self.raft.handle_message_bytes(&bytes);
            }
            // The sender is who the transport authenticated, whatever the body claims.
            Msg::Heartbeat(heartbeat) if heartbeat.from == from => {
                self.detector.handle_heartbeat(&heartbeat, now_ms);
                self.peer_maps.insert(from, (heartbeat.map_version, now_ms));
            }
            // Only the leader proposes; a stale hint drops it (the replica proposes again).
            Msg::Propose(command) if self.raft.is_leader() => {
                let _ = self.raft.propose(&command);
            }
            Msg::Replication { partition, message } => {
                if let Some(replica) = self.replicas.get_mut(usize::from(partition.0)) {
                    replica.handle_message(from.get(), message, now_ms);
                }
            }
            Msg::Forward {
                id,
                attempt,
                partition,
                commands,
            } => self.local.push_back(LocalWork::Request {
                from,
                id,
                attempt,
                partition,
                commands,
            }),
            Msg::ForwardReply { id, attempt, reply } => {
                self.local
                    .push_back(LocalWork::Reply { id, attempt, reply });
            }
            _ => {}
        }
        self.pump();
    }

    /// A client command arrives at this node (any node accepts any command).
    pub fn handle_client(&mut self, client: HostId, req: u64, command: Command, now_ms: u64) {
        self.observe(now_ms);
        let key = command_key(&command).cloned().unwrap_or_default();
        let partition = self.keyspace.partition_of(&key);
        self.next_counter += 1;
        let id = RequestId {
            origin: self.id.get(),
            counter: (self.incarnation << 32) | self.next_counter,
        };
        self.forwards.insert(
            id,
            Forward {
                client,
                req,
                partition,
                commands: vec![command],
                started_ms: now_ms,
                attempt: 0,
                state: ForwardState::Waiting {
                    not_before_ms: now_ms,
                    min_epoch: 0,
                    hint: None,
                },
            },
        );
        self.try_forward(id);
        self.pump();
    }

    fn observe(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
    }

    // --- rule 2 and 3: map → replicas ---

    /// The facts `partition`'s local replica acts on (rule 3 applied).
    pub fn facts(&self, partition: PartitionId) -> AssignmentFacts {
        let me = self.id.get();
        let Some(a) = self.map.assignment(partition) else {
            return AssignmentFacts::default();
        };
        let registered = self
            .map
            .node(self.id)
            .is_some_and(|info| info.incarnation == self.incarnation)
            || self.config.fault == Some(ShellFault::IgnoreIncarnation);
        let mut primary = a.primary.map(NodeId::get);
        let mut in_sync: BTreeSet<u64> = a.in_sync.iter().map(|n| n.get()).collect();
        if !registered {
            if primary == Some(me) {
                primary = None;
            }
            in_sync.remove(&me);
        }
        if primary.is_none() && self.config.fault == Some(ShellFault::PromoteAnyReplica) {
            let up = |n: &NodeId| self.map.node(*n).is_some_and(|i| !i.status.is_down());
            primary = a.replicas.iter().find(|n| up(n)).map(|n| n.get());
            if let Some(p) = primary {
                in_sync.remove(&p);
            }
        }
        AssignmentFacts {
            epoch: a.epoch,
            primary,
            replicas: a.replicas.iter().map(|n| n.get()).collect(),
            in_sync,
            handover: a.handover.map(NodeId::get),
        }
    }

    fn assign_all(&mut self) {
        let now_ms = self.now_ms;
        for p in 0..self.replicas.len() {
            let partition = PartitionId(p as u16);
            let facts = self.facts(partition);
            self.replicas[p].handle_assignment(&facts, now_ms);
        }
        self.map_moved = true;
    }

    // --- rule 1: Raft ---

    fn drain_raft(&mut self) -> bool {
        let mut progressed = false;
        loop {
            let out = match self.raft.poll_ready() {
                Ok(Some(out)) => out,
                Ok(None) => break,
                Err(e) => {
                    self.out.observations.push(Observation::MapBroken {
                        detail: format!("{}: Raft poll_ready failed: {e}", self.id),
                    });
                    break;
                }
            };
            progressed = true;
            if let Err(e) = self.persistence.persist(&out.to_persist) {
                self.out.observations.push(Observation::MapBroken {
                    detail: format!("{}: persist failed: {e}", self.id),
                });
            }
            for (to, bytes) in out.messages {
                self.out.to_peers.push((to, Msg::Raft(bytes)));
            }
            let mut applied_from = 0;
            let applied_any = out.map_changed
                || !out.committed.is_empty()
                || (out.to_persist.snapshot.is_some() && out.to_persist.snapshot_replaces_log);
            if let Some(snapshot) = &out.to_persist.snapshot
                && out.to_persist.snapshot_replaces_log
            {
                match PartitionMap::decode(&snapshot.data) {
                    Ok(map) => {
                        applied_from = snapshot.get_metadata().index;
                        self.map = map;
                        self.assign_all();
                    }
                    Err(e) => self.out.observations.push(Observation::MapBroken {
                        detail: format!("{}: a snapshot's map does not decode: {e}", self.id),
                    }),
                }
            }
            for committed in out.committed {
                if committed.index <= applied_from && applied_from > 0 {
                    continue;
                }
                let outcome = self.map.apply(&committed.command);
                if outcome != committed.outcome {
                    self.out.observations.push(Observation::MapBroken {
                        detail: format!(
                            "{}: replaying {:?} at index {} gave {outcome:?}, the group {:?}",
                            self.id, committed.command, committed.index, committed.outcome
                        ),
                    });
                }
                if let Err(detail) = self.map.check_invariants() {
                    self.out.observations.push(Observation::MapBroken {
                        detail: format!(
                            "{}: after {:?} at index {}: {detail}",
                            self.id, committed.command, committed.index
                        ),
                    });
                }
                self.assign_all();
                self.out.observations.push(Observation::Committed {
                    index: committed.index,
                    command: committed.command,
                    outcome: committed.outcome,
                });
            }
            if applied_any {
                // Rule 9: the map's nodes and the configured peers.
                let peers = self
                    .map
                    .nodes()
                    .keys()
                    .chain(self.configured.keys())
                    .copied();
                self.detector.set_peers(peers.collect::<Vec<_>>());
            }
            if self.map != *self.raft.map() {
                self.out.observations.push(Observation::MapBroken {
                    detail: format!(
                        "{}: replayed map v{} differs from the group's v{} (applied index {})",
                        self.id,
                        self.map.map_version(),
                        self.raft.map().map_version(),
                        self.raft.applied_index()
                    ),
                });
                self.map = self.raft.map().clone();
                self.assign_all();
            }
            self.raft.advance();
        }
        progressed
    }

    // --- rule 4 and 5: proposals and planner ---

    fn propose(&mut self, command: MapCommand) {
        if self.raft.is_leader() {
            let _ = self.raft.propose(&command);
        } else if let Some(leader) = self.raft.leader().filter(|&l| l != self.id) {
            self.out.to_peers.push((leader, Msg::Propose(command)));
        }
    }

    fn run_planner(&mut self) {
        if !self.raft.is_leader() {
            return;
        }
        let now_ms = self.now_ms;
        let repropose_ms = self.config.planner_repropose_ms;
        self.recent_proposals
            .retain(|(_, at)| now_ms.saturating_sub(*at) < repropose_ms && *at <= now_ms);
        let detector = &self.detector;
        let commands = plan(&self.map, &|n| detector.liveness(n, now_ms));
        // Rule 10: a drained node this leader's configuration dropped is not marked down.
        let commands = planned_for_membership(commands, &self.map, &self.configured);
        for command in commands {
            if self.recent_proposals.iter().any(|(c, _)| *c == command) {
                continue;
            }
            let _ = self.raft.propose(&command);
            self.recent_proposals.push((command, now_ms));
        }
    }

    /// Rule 10 on the Raft leader: the next step towards the configured membership.
    fn run_membership(&mut self) {
        let now_ms = self.now_ms;
        if !self.raft.is_leader()
            || self.raft.membership_change_pending()
            || self.raft.transferring_leadership()
            || now_ms < self.next_membership_ms
        {
            return;
        }
        let fresh_for_ms = self.config.timings.node_failure_timeout_ms;
        let peer_maps = &self.peer_maps;
        let waiting_to_join = |id: NodeId| {
            peer_maps.get(&id).is_some_and(|&(version, heard_ms)| {
                version == 0 && now_ms.saturating_sub(heard_ms) < fresh_for_ms
            })
        };
        let voters = self.raft.voters();
        let Some(step) = membership_step(
            self.id,
            &self.configured,
            &voters,
            self.raft.map(),
            &waiting_to_join,
        ) else {
            return;
        };
        self.next_membership_ms = now_ms + self.config.planner_repropose_ms.max(1);
        // A refused proposal (a leader change, a pending change) is simply taken again later.
        let _ = match &step {
            MembershipStep::AddToMap(peer) => self.raft.propose(&MapCommand::AddNode {
                id: peer.id,
                addr: peer.addr.clone(),
                zone: peer.zone.clone(),
            }),
            MembershipStep::AddVoter(id) => self.raft.propose_add_voter(*id),
            MembershipStep::RemoveFromMap(id) => {
                self.raft.propose(&MapCommand::RemoveNode { id: *id })
            }
            MembershipStep::RemoveVoter(id) => self.raft.propose_remove_voter(*id),
            MembershipStep::Wait { .. } => Ok(()),
        };
        if !matches!(step, MembershipStep::Wait { .. }) {
            self.out.observations.push(Observation::Membership { step });
        }
    }

    /// Rule 11.
    fn hand_off_if_draining(&mut self) {
        if !self.config.draining_leader_hands_off
            || !self.raft.is_leader()
            || self.raft.transferring_leadership()
            || !hands_off_leadership(self.id, &self.map)
        {
            return;
        }
        if let Some(to) = successor(self.id, &self.map, &self.detector, self.now_ms) {
            self.raft.transfer_leadership(to);
        }
    }

    /// An operator drains (`drain`) or undrains `node`, as the admin request of the real shell:
    /// checked against this node's map, then proposed (rule 4).
    pub fn handle_admin(&mut self, node: NodeId, drain: bool, now_ms: u64) -> AdminAnswer {
        self.observe(now_ms);
        let Some(status) = self.map.node(node).map(|i| i.status) else {
            return AdminAnswer::Rejected(format!("unknown node {node}"));
        };
        // Already done: the drain is (or is no longer) in force, down or not.
        if status.is_draining() == drain {
            return AdminAnswer::Already;
        }
        let next = if drain {
            status.drained()
        } else {
            status.undrained()
        };
        if next.is_none() {
            return AdminAnswer::Rejected(format!(
                "node {node} is {status:?}, the request needs {:?}",
                if drain {
                    NodeStatus::Up
                } else {
                    NodeStatus::Draining
                }
            ));
        }
        self.propose(if drain {
            MapCommand::Drain { id: node }
        } else {
            MapCommand::Undrain { id: node }
        });
        self.pump();
        AdminAnswer::Proposed
    }

    fn map_command(&self, partition: PartitionId, proposal: MapProposal) -> Option<MapCommand> {
        let generation = self.map.assignment(partition)?.sync_generation;
        MapCommand::from_replica_proposal(partition, proposal, generation)
    }

    // --- rules 7 and 8: forwarding ---

    fn try_forward(&mut self, id: RequestId) {
        let now_ms = self.now_ms;
        let attempt_timeout = self.config.forward_attempt_timeout_ms;
        let Some(forward) = self.forwards.get_mut(&id) else {
            return;
        };
        let ForwardState::Waiting {
            not_before_ms,
            min_epoch,
            hint,
        } = forward.state
        else {
            return;
        };
        if now_ms < not_before_ms {
            return;
        }
        let Some(a) = self.map.assignment(forward.partition) else {
            return;
        };
        let target = if a.epoch >= min_epoch {
            a.primary
        } else {
            hint
        };
        let Some(target) = target else {
            return;
        };
        forward.attempt += 1;
        forward.state = ForwardState::InFlight {
            deadline_ms: now_ms.saturating_add(attempt_timeout),
        };
        let (attempt, partition, commands) =
            (forward.attempt, forward.partition, forward.commands.clone());
        if target == self.id {
            self.local.push_back(LocalWork::Request {
                from: self.id,
                id,
                attempt,
                partition,
                commands,
            });
        } else {
            self.out.to_peers.push((
                target,
                Msg::Forward {
                    id,
                    attempt,
                    partition,
                    commands,
                },
            ));
        }
    }

    fn forwarder_tick(&mut self) {
        let now_ms = self.now_ms;
        let give_up_ms = self.config.forward_retry_ms_max;
        let mut expired = Vec::new();
        let mut due = Vec::new();
        for (&id, forward) in &mut self.forwards {
            if now_ms.saturating_sub(forward.started_ms) >= give_up_ms {
                expired.push(id);
                continue;
            }
            match forward.state {
                ForwardState::InFlight { deadline_ms } if now_ms >= deadline_ms => {
                    forward.state = ForwardState::Waiting {
                        not_before_ms: now_ms,
                        min_epoch: 0,
                        hint: None,
                    };
                    self.out
                        .observations
                        .push(Observation::Retried { redirect: false });
                    due.push(id);
                }
                ForwardState::Waiting { .. } => due.push(id),
                ForwardState::InFlight { .. } => {}
            }
        }
        for id in expired {
            if let Some(forward) = self.forwards.remove(&id) {
                self.out
                    .to_clients
                    .push((forward.client, forward.req, ClientReply::TryAgain));
                self.out.observations.push(Observation::GaveUp);
            }
        }
        for id in due {
            self.try_forward(id);
        }
    }

    fn retry_waiting(&mut self) {
        let waiting: Vec<RequestId> = self
            .forwards
            .iter()
            .filter(|(_, f)| matches!(f.state, ForwardState::Waiting { .. }))
            .map(|(&id, _)| id)
            .collect();
        for id in waiting {
            self.try_forward(id);
        }
    }

    fn on_reply(&mut self, id: RequestId, attempt: u32, reply: ForwardReply) {
        let now_ms = self.now_ms;
        let backoff = self.config.forward_backoff_ms;
        let Some(forward) = self.forwards.get_mut(&id) else {
            return;
        };
        // Rule 7: a reply to an abandoned attempt is never read.
        if attempt != forward.attempt || !matches!(forward.state, ForwardState::InFlight { .. }) {
            return;
        }
        match reply {
            ForwardReply::Answer(mut results) => {
                let result = results.pop().unwrap_or(Ok(tern_node::core::Response::Ok));
                if let Some(forward) = self.forwards.remove(&id) {
                    self.out.to_clients.push((
                        forward.client,
                        forward.req,
                        ClientReply::Done(result),
                    ));
                }
            }
            ForwardReply::Redirect { epoch, primary } => {
                forward.state = ForwardState::Waiting {
                    not_before_ms: now_ms.saturating_add(backoff),
                    min_epoch: epoch,
                    hint: primary.and_then(NodeId::new),
                };
                self.out
                    .observations
                    .push(Observation::Retried { redirect: true });
            }
        }
    }

    /// Rule 8: deliver an attempt to the local replica and remember whom to answer.
    fn deliver_request(
        &mut self,
        from: NodeId,
        id: RequestId,
        attempt: u32,
        partition: PartitionId,
        commands: Vec<Command>,
    ) {
        let now_ms = self.now_ms;
        let Some(replica) = self.replicas.get_mut(usize::from(partition.0)) else {
            return;
        };
        let queue = self.inbound.entry((partition, id)).or_default();
        queue.push_back(Inbound {
            reply_to: from,
            attempt,
            exec_seq: None,
            changed: false,
        });
        let primary_before = replica.role() == Role::Primary;
        let queued_before = replica.queued_requests();
        let seq_before = replica.last_seq();
        replica.handle_request(Request { id, commands }, now_ms);
        if primary_before && replica.queued_requests() == queued_before {
            // Executed on arrival (or answered from the dedup table): its answer is released
            // once every in-sync backup holds the partition up to this seq.
            if let Some(last) = queue.back_mut() {
                last.exec_seq = Some(replica.last_seq());
                last.changed = replica.last_seq() > seq_before;
            }
        }
    }

    fn reply(&mut self, to: NodeId, id: RequestId, attempt: u32, reply: ForwardReply) {
        if to == self.id {
            self.local
                .push_back(LocalWork::Reply { id, attempt, reply });
        } else {
            self.out
                .to_peers
                .push((to, Msg::ForwardReply { id, attempt, reply }));
        }
    }

    fn take_inbound(&mut self, partition: PartitionId, id: RequestId) -> Option<Inbound> {
        let queue = self.inbound.get_mut(&(partition, id))?;
        let inbound = queue.pop_front();
        if queue.is_empty() {
            self.inbound.remove(&(partition, id));
        }
        inbound
    }

    // --- the pump ---

    /// Collect every output until nothing moves: Raft readies, replica outputs, local work.
    fn pump(&mut self) {
        for _ in 0..10_000 {
            let mut progressed = self.drain_raft();
            for p in 0..self.replicas.len() {
                progressed |= self.drain_replica(PartitionId(p as u16));
            }
            while let Some(work) = self.local.pop_front() {
                progressed = true;
                match work {
                    LocalWork::Request {
                        from,
                        id,
                        attempt,
                        partition,
                        commands,
                    } => self.deliver_request(from, id, attempt, partition, commands),
                    LocalWork::Reply { id, attempt, reply } => self.on_reply(id, attempt, reply),
                }
            }
            if std::mem::take(&mut self.map_moved) {
                progressed = true;
                self.retry_waiting();
            }
            if !progressed {
                return;
            }
        }
        self.out.observations.push(Observation::MapBroken {
            detail: format!("{}: the shell's pump did not settle", self.id),
        });
    }

    fn drain_replica(&mut self, partition: PartitionId) -> bool {
        let mut progressed = false;
        let index = usize::from(partition.0);
        loop {
            let Some((to, message)) = self.replicas[index].poll_transmit() else {
                break;
            };
            progressed = true;
            if let Some(to) = NodeId::new(to) {
                self.send_replication(to, partition, message);
            }
        }
        while let Some((id, results)) = self.replicas[index].poll_response() {
            progressed = true;
            let epoch = self.replicas[index].epoch();
            let Some(inbound) = self.take_inbound(partition, id) else {
                continue;
            };
            self.out.observations.push(Observation::Released {
                partition,
                epoch,
                exec_seq: inbound.exec_seq,
                changed: inbound.changed,
                id,
                results: results.clone(),
            });
            self.reply(
                inbound.reply_to,
                id,
                inbound.attempt,
                ForwardReply::Answer(results),
            );
        }
        while let Some(redirect) = self.replicas[index].poll_redirect() {
            progressed = true;
            let Some(inbound) = self.take_inbound(partition, redirect.id) else {
                continue;
            };
            self.reply(
                inbound.reply_to,
                redirect.id,
                inbound.attempt,
                ForwardReply::Redirect {
                    epoch: redirect.epoch,
                    primary: redirect.primary,
                },
            );
        }
        while let Some(proposal) = self.replicas[index].poll_map_proposal() {
            progressed = true;
            if let Some(command) = self.map_command(partition, proposal) {
                self.propose(command);
            }
        }
        progressed
    }

    fn send_replication(
        &mut self,
        to: NodeId,
        partition: PartitionId,
        message: ReplicationMessage,
    ) {
        self.out
            .to_peers
            .push((to, Msg::Replication { partition, message }));
    }
}

pub fn command_key(command: &Command) -> Option<&bytes::Bytes> {
    match command {
        Command::Get { key }
        | Command::Set { key, .. }
        | Command::Del { key }
        | Command::Exists { key }
        | Command::IncrBy { key, .. }
        | Command::Expire { key, .. }
        | Command::Ttl { key, .. }
        | Command::WanApply { key, .. } => Some(key),
        Command::Scan { .. }
        | Command::DbSize
        | Command::ExpiringKeys
        | Command::FlushAll
        | Command::WanChanges { .. }
        | Command::WanDump { .. } => None,
    }
}

/// How a node's configuration names a peer (the sims have no addresses; the map keeps this).
pub fn peer_spec(id: NodeId) -> PeerSpec {
    PeerSpec {
        id,
        addr: format!("{id}"),
        zone: None,
    }
}
