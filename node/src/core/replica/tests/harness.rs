//! A small deterministic network of replicas of one partition plus a toy partition map, driven
//! step by step by the tests (one thread, explicit time, explicit delivery).
use super::super::*;
use crate::core::command::{Command, CommandResult, SetCondition};
use crate::core::keyspace::PartitionId;
use crate::limits::Limits;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use tern_conflict::{KeyspaceResolvers, SiteId};

pub(super) const T0: u64 = 1_700_000_000_000;

pub(super) fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}
pub(super) fn set(k: &str, v: &str) -> Command {
    Command::Set {
        key: b(k),
        value: b(v),
        condition: SetCondition::Always,
        expiry: None,
        get: false,
    }
}
pub(super) fn get(k: &str) -> Command {
    Command::Get { key: b(k) }
}
pub(super) fn incr(k: &str) -> Command {
    Command::IncrBy {
        key: b(k),
        delta: 1,
    }
}
pub(super) fn del(k: &str) -> Command {
    Command::Del { key: b(k) }
}
pub(super) fn rid(counter: u64) -> RequestId {
    RequestId {
        origin: 99,
        counter,
    }
}
pub(super) fn value(v: &str) -> CommandResult {
    Ok(crate::core::command::Response::Value(Some(b(v))))
}
pub(super) fn int(i: i64) -> CommandResult {
    Ok(crate::core::command::Response::Int(i))
}

/// A deterministic xorshift, so tests that shuffle need no extra dependency.
#[derive(Debug)]
pub(super) struct Rng(u64);
impl Rng {
    pub(super) fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub(super) fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}

#[derive(Debug)]
pub(super) struct Net {
    pub now: u64,
    pub nodes: BTreeMap<ReplicaId, ReplicaCore>,
    pub crashed: BTreeSet<ReplicaId>,
    /// `(from, to, message)` in send order.
    pub in_flight: VecDeque<(ReplicaId, ReplicaId, ReplicationMessage)>,
    pub map: AssignmentFacts,
    pub responses: Vec<(ReplicaId, Answer)>,
    pub redirects: Vec<(ReplicaId, Redirect)>,
    pub proposals: Vec<(ReplicaId, MapProposal)>,
    pub partition_limits: Limits,
    pub limits: ReplicationLimits,
    /// Conflict resolvers per node (default: all last-writer-wins).
    pub resolvers: BTreeMap<ReplicaId, Arc<KeyspaceResolvers>>,
}

impl Net {
    /// Nodes `1..=n`; node 1 primary at epoch 1; the others in-sync backups.
    pub(super) fn new(n: u64) -> Self {
        Self::with_limits(n, Limits::default(), ReplicationLimits::default())
    }

    pub(super) fn with_limits(n: u64, partition_limits: Limits, limits: ReplicationLimits) -> Self {
        Self::build(n, partition_limits, limits, BTreeMap::new())
    }

    /// Like [`Self::new`], with `resolvers` for the nodes named there.
    pub(super) fn with_resolvers(
        n: u64,
        resolvers: BTreeMap<ReplicaId, Arc<KeyspaceResolvers>>,
    ) -> Self {
        Self::build(
            n,
            Limits::default(),
            ReplicationLimits::default(),
            resolvers,
        )
    }

    fn build(
        n: u64,
        partition_limits: Limits,
        limits: ReplicationLimits,
        resolvers: BTreeMap<ReplicaId, Arc<KeyspaceResolvers>>,
    ) -> Self {
        let mut net = Self {
            now: T0,
            nodes: BTreeMap::new(),
            crashed: BTreeSet::new(),
            in_flight: VecDeque::new(),
            map: AssignmentFacts {
                epoch: 1,
                primary: Some(1),
                replicas: (1..=n).collect(),
                in_sync: (2..=n).collect(),
                handover: None,
            },
            responses: Vec::new(),
            redirects: Vec::new(),
            proposals: Vec::new(),
            partition_limits,
            limits,
            resolvers,
        };
        for id in 1..=n {
            net.add_node(id);
        }
        net.publish_map();
        net.settle();
        net
    }

    pub(super) fn add_node(&mut self, id: ReplicaId) {
        let config = PartitionConfig {
            partition: PartitionId(0),
            site: SiteId(1),
            limits: self.partition_limits.clone(),
            hash_seed: 7,
        };
        let mut replica = ReplicaCore::new(id, config, self.limits.clone());
        if let Some(resolvers) = self.resolvers.get(&id) {
            replica = replica.with_resolvers(Arc::clone(resolvers));
        }
        self.nodes.insert(id, replica);
        self.crashed.remove(&id);
    }

    pub(super) fn node(&self, id: ReplicaId) -> &ReplicaCore {
        &self.nodes[&id]
    }

    pub(super) fn live(&self) -> Vec<ReplicaId> {
        self.nodes
            .keys()
            .copied()
            .filter(|id| !self.crashed.contains(id))
            .collect()
    }

    /// Hand the current map to every live node.
    pub(super) fn publish_map(&mut self) {
        let facts = self.map.clone();
        for id in self.live() {
            if let Some(node) = self.nodes.get_mut(&id) {
                node.handle_assignment(&facts, self.now);
            }
        }
        self.pump();
    }

    /// Collect every live node's outputs.
    pub(super) fn pump(&mut self) {
        let mut checks = Vec::new();
        for id in self.live() {
            let Some(node) = self.nodes.get_mut(&id) else {
                continue;
            };
            while let Some((to, message)) = node.poll_transmit() {
                self.in_flight.push_back((id, to, message));
            }
            let mut released = Vec::new();
            while let Some(response) = node.poll_response() {
                if std::env::var_os("REPLICA_TRACE").is_some() {
                    eprintln!("{} node {id} answers {response:?}", self.now);
                }
                released.push(response.0);
                self.responses.push((id, response));
            }
            checks.extend(released.into_iter().map(|request| (id, request)));
            while let Some(redirect) = node.poll_redirect() {
                self.redirects.push((id, redirect));
            }
            while let Some(proposal) = node.poll_map_proposal() {
                self.proposals.push((id, proposal));
            }
        }
        for (primary, request) in checks {
            self.assert_backups_hold(primary, request);
        }
    }

    /// Invariant 1, checked at the moment of every answer: each in-sync backup's log matches
    /// the answering primary's up to the request's change.
    fn assert_backups_hold(&self, primary: ReplicaId, request: RequestId) {
        let p = &self.nodes[&primary];
        let Some(seq) = p.dedup.seq_of(&request) else {
            return;
        };
        for backup in &self.map.in_sync {
            let b = &self.nodes[backup];
            // Logs that agree at some seq agree below it (epoch history); a snapshot may have
            // cut the backup's history short, so look for any agreeing seq at or above.
            let upto = b.last_seq().min(p.last_seq());
            let agrees = (seq..=upto).any(|s| {
                let theirs = b.history.epoch_of(s);
                theirs.is_some() && theirs == p.history.epoch_of(s)
            });
            assert!(
                agrees,
                "{request:?} answered by {primary} at seq {seq}, but in-sync backup {backup} \
                 does not hold it (its last seq {})",
                b.last_seq()
            );
        }
    }

    pub(super) fn request(&mut self, node: ReplicaId, id: RequestId, commands: Vec<Command>) {
        if let Some(replica) = self.nodes.get_mut(&node)
            && !self.crashed.contains(&node)
        {
            replica.handle_request(Request { id, commands }, self.now);
        }
        self.pump();
    }

    pub(super) fn deliver(&mut self, from: ReplicaId, to: ReplicaId, message: ReplicationMessage) {
        if self.crashed.contains(&to) {
            return;
        }
        if std::env::var_os("REPLICA_TRACE").is_some() {
            eprintln!("{} {from}->{to} {message:?}", self.now);
        }
        if let Some(node) = self.nodes.get_mut(&to) {
            node.handle_message(from, message, self.now);
        }
        self.pump();
    }

    /// Deliver the oldest message in flight; false if none.
    pub(super) fn step(&mut self) -> bool {
        let Some((from, to, message)) = self.in_flight.pop_front() else {
            return false;
        };
        self.deliver(from, to, message);
        true
    }

    /// Deliver until nothing is in flight (bounded).
    pub(super) fn settle(&mut self) {
        for _ in 0..100_000 {
            if !self.step() {
                return;
            }
        }
        panic!("network did not settle");
    }

    pub(super) fn tick(&mut self, ms: u64) {
        self.now += ms;
        for id in self.live() {
            if let Some(node) = self.nodes.get_mut(&id) {
                node.handle_tick(self.now);
            }
        }
        self.pump();
    }

    pub(super) fn crash(&mut self, id: ReplicaId) {
        self.crashed.insert(id);
    }

    /// The toy map applies every pending proposal that still fits (conditional on the epoch),
    /// then publishes.
    pub(super) fn apply_proposals(&mut self) {
        let proposals = std::mem::take(&mut self.proposals);
        if std::env::var_os("REPLICA_TRACE").is_some() {
            eprintln!("{} map applies {proposals:?}", self.now);
        }
        for (_, proposal) in proposals {
            match proposal {
                MapProposal::ShrinkInSync { epoch, remove } if epoch == self.map.epoch => {
                    self.map.in_sync.remove(&remove);
                }
                MapProposal::CaughtUp { epoch, node } if epoch == self.map.epoch => {
                    self.map.in_sync.insert(node);
                }
                MapProposal::CompleteHandover { epoch, to, .. }
                    if epoch == self.map.epoch && self.map.handover == Some(to) =>
                {
                    let old = self.map.primary;
                    self.map.epoch += 1;
                    self.map.primary = Some(to);
                    self.map.handover = None;
                    self.map.in_sync.remove(&to);
                    if let Some(old) = old {
                        // It holds exactly what the new primary holds.
                        self.map.in_sync.insert(old);
                    }
                }
                _ => {}
            }
        }
        self.publish_map();
    }

    /// MarkDown of the primary: promote the first in-sync backup, epoch + 1.
    pub(super) fn fail_over(&mut self) -> ReplicaId {
        let old = self.map.primary;
        let crashed = self.crashed.clone();
        let next = self
            .map
            .in_sync
            .iter()
            .copied()
            .find(|id| !crashed.contains(id))
            .expect("an in-sync backup is alive");
        self.map.epoch += 1;
        self.map.primary = Some(next);
        self.map.in_sync.remove(&next);
        if let Some(old) = old {
            self.map.in_sync.remove(&old);
        }
        self.map.in_sync.retain(|id| !crashed.contains(id));
        self.map.handover = None;
        self.publish_map();
        next
    }

    /// Answers received for `id`, from any node.
    pub(super) fn answers(&self, id: RequestId) -> Vec<Vec<CommandResult>> {
        self.responses
            .iter()
            .filter(|(_, (r, _))| *r == id)
            .map(|(_, (_, results))| results.clone())
            .collect()
    }

    /// Every stored entry of a node, for comparing replicas.
    pub(super) fn state(&self, id: ReplicaId) -> Vec<(Bytes, tern_conflict::Versioned)> {
        self.node(id)
            .partition()
            .snapshot_entries()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}
