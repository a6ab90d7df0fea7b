//! A deterministic in-memory network of map Raft groups, for tests and sims: one thread, a
//! simulated millisecond clock, a seeded RNG for message delay, loss and tick phases, per-link cuts,
//! crash (drop the group, keep its persistence) and restart (reload from it).
//!
//! ```text
//! let mut net = SimNet::new(&ids, map, ClusterTimings::default(), seed)?;
//! assert!(net.run_until(5_000, |n| n.leader().is_some())?);
//! net.propose(&command)?;            // through the current leader
//! net.crash(leader); net.restart(leader)?;
//! ```
//! Each node is driven exactly like the shell drives it: tick every `raft_tick_ms`, step
//! delivered messages, then drain `poll_ready` → persist → send → `advance`.
use crate::cluster::ids::NodeId;
use crate::cluster::map::{MapCommand, PartitionMap};
use crate::cluster::raft_group::{
    Committed, ProposeError, RaftGroup, RaftGroupConfig, RaftGroupError, discard_logger,
};
use crate::cluster::raft_storage::{MemPersistence, PersistError, RaftPersistence};
use crate::cluster::timings::ClusterTimings;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("node {0} is not part of the simulation")]
    UnknownNode(NodeId),
    #[error("node {node}: {source}")]
    Group {
        node: NodeId,
        source: RaftGroupError,
    },
    #[error("node {node}: {source}")]
    Persist { node: NodeId, source: PersistError },
}

/// One simulated node: its group (`None` while crashed) and its durable state.
pub struct SimNode {
    group: Option<RaftGroup>,
    persistence: Box<dyn RaftPersistence>,
    next_tick_ms: u64,
    /// Added to a running group: starts with no voters and an empty map (see `add_joiner`).
    joiner: bool,
    /// Every command this node applied since its last (re)start, in order.
    pub committed: Vec<Committed>,
}

impl std::fmt::Debug for SimNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimNode")
            .field("group", &self.group)
            .field("next_tick_ms", &self.next_tick_ms)
            .finish()
    }
}

#[derive(Debug)]
pub struct SimNet {
    now_ms: u64,
    rng: u64,
    timings: ClusterTimings,
    initial_map: PartitionMap,
    voters: Vec<NodeId>,
    nodes: BTreeMap<NodeId, SimNode>,
    /// (deliver at, send order) → (from, to, bytes); ordered, so delivery is deterministic.
    in_flight: BTreeMap<(u64, u64), (NodeId, NodeId, Bytes)>,
    sent: u64,
    drop_percent: u8,
    delay_ms: (u64, u64),
    /// Directed links that lose everything.
    cut: BTreeSet<(NodeId, NodeId)>,
    logger: slog::Logger,
}

impl SimNet {
    /// Nodes `voters` with in-memory persistence, all starting from `initial_map`.
    pub fn new(
        voters: &[NodeId],
        initial_map: PartitionMap,
        timings: ClusterTimings,
        seed: u64,
    ) -> Result<Self, SimError> {
        Self::with_persistence(voters, initial_map, timings, seed, |_| {
            Box::new(MemPersistence::new())
        })
    }

    /// As [`Self::new`], with each node's persistence from `make` (e.g. `FilePersistence` in a
    /// temp dir). Nodes with persisted state restart from it.
    pub fn with_persistence(
        voters: &[NodeId],
        initial_map: PartitionMap,
        timings: ClusterTimings,
        seed: u64,
        mut make: impl FnMut(NodeId) -> Box<dyn RaftPersistence>,
    ) -> Result<Self, SimError> {
        let mut net = Self {
            now_ms: 0,
            rng: seed | 1,
            timings,
            initial_map,
            voters: voters.to_vec(),
            nodes: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            sent: 0,
            drop_percent: 0,
            delay_ms: (1, 5),
            cut: BTreeSet::new(),
            logger: discard_logger(),
        };
        for &id in voters {
            let node = SimNode {
                group: None,
                persistence: make(id),
                next_tick_ms: 0,
                joiner: false,
                committed: Vec::new(),
            };
            net.nodes.insert(id, node);
            net.restart(id)?;
        }
        Ok(net)
    }

    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// raft-rs logs through this logger (default: discard); e.g. `tracing_logger()`.
    pub fn set_logger(&mut self, logger: slog::Logger) {
        self.logger = logger;
    }

    /// Chance, in percent, that a message is lost.
    pub fn set_loss(&mut self, drop_percent: u8) {
        self.drop_percent = drop_percent.min(100);
    }

    /// Each message takes a uniform delay in `min..=max` ms (so messages reorder).
    pub fn set_delay(&mut self, min_ms: u64, max_ms: u64) {
        self.delay_ms = (min_ms.max(1), max_ms.max(min_ms.max(1)));
    }

    /// Starts a new node `id` (in-memory persistence) that joins the running group: no voters,
    /// an empty map, until the leader adds it ([`Self::propose_add_voter`]) and sends it a
    /// snapshot. Its restarts reload what it persisted by then (or join again).
    pub fn add_joiner(&mut self, id: NodeId) -> Result<(), SimError> {
        let node = SimNode {
            group: None,
            persistence: Box::new(MemPersistence::new()),
            next_tick_ms: 0,
            joiner: true,
            committed: Vec::new(),
        };
        self.nodes.insert(id, node);
        self.restart(id)
    }

    /// Proposes adding voter `id` through the current leader.
    pub fn propose_add_voter(&mut self, id: NodeId) -> Result<(), ProposeError> {
        self.leader_group()?.propose_add_voter(id)
    }

    /// Proposes removing voter `id` through the current leader.
    pub fn propose_remove_voter(&mut self, id: NodeId) -> Result<(), ProposeError> {
        self.leader_group()?.propose_remove_voter(id)
    }

    /// Crashes `id` and forgets it (its persistence too): a node taken out of the site.
    pub fn remove(&mut self, id: NodeId) {
        self.nodes.remove(&id);
    }

    fn leader_group(&mut self) -> Result<&mut RaftGroup, ProposeError> {
        let leader = self
            .leader()
            .ok_or(ProposeError::NotLeader { leader_hint: None })?;
        self.nodes
            .get_mut(&leader)
            .and_then(|n| n.group.as_mut())
            .ok_or(ProposeError::NotLeader { leader_hint: None })
    }

    /// Cuts every link to and from `id`.
    pub fn isolate(&mut self, id: NodeId) {
        let others: Vec<NodeId> = self.nodes.keys().copied().collect();
        for &other in &others {
            if other != id {
                self.cut.insert((id, other));
                self.cut.insert((other, id));
            }
        }
    }

    /// Cuts the directed link `from → to` (one-way partition).
    pub fn cut_link(&mut self, from: NodeId, to: NodeId) {
        self.cut.insert((from, to));
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.cut.clear();
    }

    pub fn group(&self, id: NodeId) -> Option<&RaftGroup> {
        self.nodes.get(&id).and_then(|n| n.group.as_ref())
    }

    pub fn node(&self, id: NodeId) -> Option<&SimNode> {
        self.nodes.get(&id)
    }

    /// Running nodes, ascending.
    pub fn running(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.group.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    /// The running leader with the highest term (a deposed leader may not know it yet).
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter_map(|(id, n)| n.group.as_ref().map(|g| (*id, g)))
            .filter(|(_, g)| g.is_leader())
            .max_by_key(|(id, g)| (g.term(), std::cmp::Reverse(*id)))
            .map(|(id, _)| id)
    }

    /// Proposes through the current leader.
    pub fn propose(&mut self, command: &MapCommand) -> Result<(), ProposeError> {
        self.leader_group()?.propose(command)
    }

    /// Kills `id`: its group and volatile state are gone, its persistence stays.
    pub fn crash(&mut self, id: NodeId) {
        if let Some(node) = self.nodes.get_mut(&id) {
            node.group = None;
        }
    }

    /// (Re)starts `id` from its persistence (a first start when it holds nothing).
    pub fn restart(&mut self, id: NodeId) -> Result<(), SimError> {
        let seed = self.next_random();
        let phase = self.next_random() % self.timings.raft_tick_ms.max(1);
        let now = self.now_ms;
        let logger = self.logger.clone();
        let node = self.nodes.get_mut(&id).ok_or(SimError::UnknownNode(id))?;
        let (voters, initial_map) = if node.joiner {
            let empty = PartitionMap::new(
                self.initial_map.partition_count(),
                self.initial_map.backups_per_partition(),
            );
            (Vec::new(), empty)
        } else {
            (self.voters.clone(), self.initial_map.clone())
        };
        let config = RaftGroupConfig {
            id,
            voters,
            timings: self.timings.clone(),
            seed,
        };
        let restored = node
            .persistence
            .load()
            .map_err(|source| SimError::Persist { node: id, source })?;
        let group = RaftGroup::new(config, initial_map, restored, &logger)
            .map_err(|source| SimError::Group { node: id, source })?;
        node.group = Some(group);
        node.committed.clear();
        node.next_tick_ms = now + phase;
        self.drain(id)
    }

    /// Advances the clock by 1 ms: delivers due messages, ticks due nodes, drains their work.
    pub fn step(&mut self) -> Result<(), SimError> {
        self.now_ms += 1;
        let now = self.now_ms;
        while let Some(entry) = self.in_flight.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (_, to, bytes) = entry.remove();
            if let Some(group) = self.nodes.get_mut(&to).and_then(|n| n.group.as_mut()) {
                // Messages from peers a node does not know are simply dropped, as on a network.
                let _ = group.handle_message_bytes(&bytes);
            }
        }
        let tick = self.timings.raft_tick_ms.max(1);
        for node in self.nodes.values_mut() {
            if let Some(group) = node.group.as_mut()
                && now >= node.next_tick_ms
            {
                group.handle_tick();
                node.next_tick_ms = now + tick;
            }
        }
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.drain(id)?;
        }
        Ok(())
    }

    pub fn run_for(&mut self, ms: u64) -> Result<(), SimError> {
        for _ in 0..ms {
            self.step()?;
        }
        Ok(())
    }

    /// Steps until `done` holds (checked before each step) or `max_ms` pass; returns whether it held.
    pub fn run_until(
        &mut self,
        max_ms: u64,
        mut done: impl FnMut(&SimNet) -> bool,
    ) -> Result<bool, SimError> {
        for _ in 0..max_ms {
            if done(self) {
                return Ok(true);
            }
            self.step()?;
        }
        Ok(done(self))
    }

    /// Whether every running node has applied the same map.
    pub fn maps_agree(&self) -> bool {
        let mut maps = self
            .nodes
            .values()
            .filter_map(|n| n.group.as_ref())
            .map(|g| g.map());
        match maps.next() {
            Some(first) => maps.all(|m| m == first),
            None => true,
        }
    }

    /// Like the shell: poll → persist → send → advance, until the node has nothing left.
    fn drain(&mut self, id: NodeId) -> Result<(), SimError> {
        loop {
            let Some(node) = self.nodes.get_mut(&id) else {
                return Ok(());
            };
            let Some(group) = node.group.as_mut() else {
                return Ok(());
            };
            let Some(out) = group
                .poll_ready()
                .map_err(|source| SimError::Group { node: id, source })?
            else {
                return Ok(());
            };
            node.persistence
                .persist(&out.to_persist)
                .map_err(|source| SimError::Persist { node: id, source })?;
            node.committed.extend(out.committed);
            for (to, bytes) in out.messages {
                self.send(id, to, bytes);
            }
            if let Some(group) = self.nodes.get_mut(&id).and_then(|n| n.group.as_mut()) {
                group.advance();
            }
        }
    }

    fn send(&mut self, from: NodeId, to: NodeId, bytes: Bytes) {
        let roll = self.next_random() % 100;
        let (min, max) = self.delay_ms;
        let delay = min + self.next_random() % (max - min + 1);
        self.sent += 1;
        if roll < u64::from(self.drop_percent) || self.cut.contains(&(from, to)) {
            return;
        }
        self.in_flight
            .insert((self.now_ms + delay, self.sent), (from, to, bytes));
    }

    /// splitmix64: deterministic from the seed.
    fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}
