//! [`RepairResponder`]: the answering side of repair sessions, for any number of peers.
use super::digest::{entry_digest, view};
use super::entries::{MESSAGE_OVERHEAD_BYTES, read_ranges, split_by_bytes};
use super::replica::Replica;
use super::tree::{DigestTree, TreeShape};
use super::{RepairError, nodes_per_request};
use crate::limits::GatewayLimits;
use crate::wire::{
    Digest, DigestParams, DigestReply, DigestRequest, Message, RangeEntries, RangeRequest,
    SyncEntry,
};
use bytes::Bytes;
use std::collections::BTreeMap;
use tern_conflict::{SiteId, Versioned};
use tern_node::core::keyspace::PartitionId;
use tern_node::core::partition::SCAN_POSITION_END;

/// Counters for metrics and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResponderStats {
    pub trees_built: u64,
    pub digest_requests: u64,
    pub in_sync_answers: u64,
    pub range_requests: u64,
    pub entries_received: u64,
    /// Received entries that changed the local replica.
    pub entries_changed: u64,
    pub conflicts: u64,
    pub entries_sent: u64,
    /// Sessions forgotten because idle, or to make room for a new one.
    pub sessions_evicted: u64,
}

#[derive(Debug)]
struct Cached {
    params: DigestParams,
    tree: DigestTree,
    last_used_ms: u64,
}

type SessionKey = (SiteId, u64, PartitionId);

/// Answers [`DigestRequest`]s and [`RangeRequest`]s. Sans-IO: [`RepairResponder::handle_message`]
/// returns the answers to send back to that peer.
///
/// Digest trees are cached per session (a session descends over several round trips) and
/// rebuilt on a miss, so a restarted or evicting responder still answers correctly: range
/// requests carry everything they need. A session is forgotten on its `last` range request,
/// when its root is in sync, after `repair_responder_idle_ms_max`, or when
/// `repair_responder_sessions_max` others are newer.
#[derive(Debug)]
pub struct RepairResponder {
    message_bytes_max: usize,
    frame_bytes_max: usize,
    idle_ms_max: u64,
    sessions_max: usize,
    sessions: BTreeMap<SessionKey, Cached>,
    stats: ResponderStats,
}

impl RepairResponder {
    pub fn new(limits: &GatewayLimits) -> Self {
        Self {
            message_bytes_max: limits.repair_message_bytes_max,
            frame_bytes_max: limits.frame_bytes_max,
            idle_ms_max: limits.repair_responder_idle_ms_max,
            sessions_max: limits.repair_responder_sessions_max.max(1),
            sessions: BTreeMap::new(),
            stats: ResponderStats::default(),
        }
    }

    /// A repair request from `peer` about `replica`'s partition. Returns the answers, in
    /// order. Entries the request carries are applied to `replica` first. A malformed request
    /// is an `Err` (the shell logs it; the initiator times out).
    pub fn handle_message(
        &mut self,
        peer: SiteId,
        message: Message,
        replica: &mut dyn Replica,
        now_ms: u64,
    ) -> Result<Vec<Message>, RepairError> {
        match message {
            Message::DigestRequest(request) => self.digests(peer, request, replica, now_ms),
            Message::RangeRequest(request) => Ok(self.ranges(peer, request, replica, now_ms)?),
            other => Err(RepairError::Protocol(format!(
                "repair responder got an unexpected {:?}",
                other.kind()
            ))),
        }
    }

    /// Forget sessions idle for `repair_responder_idle_ms_max`.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        let idle_ms_max = self.idle_ms_max;
        let before = self.sessions.len();
        self.sessions
            .retain(|_, s| now_ms < s.last_used_ms.saturating_add(idle_ms_max));
        self.stats.sessions_evicted += (before - self.sessions.len()) as u64;
    }

    pub fn poll_timeout(&self) -> Option<u64> {
        self.sessions
            .values()
            .map(|s| s.last_used_ms.saturating_add(self.idle_ms_max))
            .min()
    }

    /// Sessions whose digest tree is cached.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    pub fn stats(&self) -> &ResponderStats {
        &self.stats
    }

    fn digests(
        &mut self,
        peer: SiteId,
        request: DigestRequest,
        replica: &dyn Replica,
        now_ms: u64,
    ) -> Result<Vec<Message>, RepairError> {
        self.stats.digest_requests += 1;
        let shape = TreeShape::of(&request.params).ok_or(RepairError::BadShape {
            leaf_bits: request.params.leaf_bits,
            fanout_bits: request.params.fanout_bits,
        })?;
        self.check_digest_request(&request, shape)?;
        let key = (peer, request.session, request.partition);
        let tree = self.tree(key, &request.params, replica, now_ms)?;
        if request.level == 0 && request.root == Some(tree.root()) {
            self.sessions.remove(&key);
            self.stats.in_sync_answers += 1;
            return Ok(vec![Message::DigestReply(DigestReply {
                session: request.session,
                partition: request.partition,
                level: 0,
                nodes: request.nodes,
                hashes: Vec::new(),
                in_sync: true,
            })]);
        }
        let hashes: Vec<Digest> = request
            .nodes
            .iter()
            .flat_map(|&node| tree.children(request.level, node))
            .collect();
        Ok(vec![Message::DigestReply(DigestReply {
            session: request.session,
            partition: request.partition,
            level: request.level,
            nodes: request.nodes,
            hashes,
            in_sync: false,
        })])
    }

    fn check_digest_request(
        &self,
        request: &DigestRequest,
        shape: TreeShape,
    ) -> Result<(), RepairError> {
        let bad = |why: &str| Err(RepairError::Protocol(format!("digest request: {why}")));
        if request.level >= shape.depth() {
            return bad("level at or below the leaves");
        }
        if request.nodes.is_empty() {
            return bad("no nodes");
        }
        // Answer what a frame can carry, even from a peer with larger limits.
        let nodes_max = nodes_per_request(self.message_bytes_max, shape.fanout())
            .max(nodes_per_request(self.frame_bytes_max, shape.fanout()));
        if request.nodes.len() > nodes_max {
            return bad("more nodes than an answer can carry");
        }
        let width = shape.width(request.level);
        let ascending = request.nodes.windows(2).all(|w| w[0] < w[1]);
        if !ascending || request.nodes.iter().any(|&n| n >= width) {
            return bad("nodes not ascending within the level");
        }
        Ok(())
    }

    /// The cached tree of `key`, built if missing or built with other parameters.
    fn tree(
        &mut self,
        key: SessionKey,
        params: &DigestParams,
        replica: &dyn Replica,
        now_ms: u64,
    ) -> Result<&DigestTree, RepairError> {
        let fresh = self
            .sessions
            .get(&key)
            .is_some_and(|cached| cached.params == *params);
        if !fresh {
            if self.sessions.len() >= self.sessions_max && !self.sessions.contains_key(&key) {
                let oldest = self
                    .sessions
                    .iter()
                    .min_by_key(|(k, s)| (s.last_used_ms, **k))
                    .map(|(k, _)| *k);
                if let Some(oldest) = oldest {
                    self.sessions.remove(&oldest);
                    self.stats.sessions_evicted += 1;
                }
            }
            let tree = DigestTree::build(replica, params).ok_or(RepairError::BadShape {
                leaf_bits: params.leaf_bits,
                fanout_bits: params.fanout_bits,
            })?;
            self.stats.trees_built += 1;
            self.sessions.insert(
                key,
                Cached {
                    params: *params,
                    tree,
                    last_used_ms: now_ms,
                },
            );
        }
        let cached = self
            .sessions
            .get_mut(&key)
            .ok_or_else(|| RepairError::Protocol("session vanished".into()))?;
        cached.last_used_ms = now_ms;
        Ok(&cached.tree)
    }

    fn ranges(
        &mut self,
        peer: SiteId,
        request: RangeRequest,
        replica: &mut dyn Replica,
        now_ms: u64,
    ) -> Result<Vec<Message>, RepairError> {
        self.stats.range_requests += 1;
        let ordered = request.ranges.windows(2).all(|w| w[0].to <= w[1].from);
        let bounded = request
            .ranges
            .iter()
            .all(|r| r.from < r.to && r.to <= SCAN_POSITION_END);
        if !ordered || !bounded {
            return Err(RepairError::Protocol(
                "range request: ranges not ascending and disjoint within the position space".into(),
            ));
        }
        let key = (peer, request.session, request.partition);
        if request.last {
            self.sessions.remove(&key);
        } else if let Some(cached) = self.sessions.get_mut(&key) {
            cached.last_used_ms = now_ms;
        }
        // What the initiator holds in these ranges, as it sent it (before our merge).
        let params = request.params;
        let theirs: BTreeMap<Bytes, (Versioned, Option<Digest>)> = request
            .entries
            .iter()
            .map(|e| {
                let digest = view(&e.entry, &params).map(|v| entry_digest(&e.key, v));
                (e.key.clone(), (e.entry.clone(), digest))
            })
            .collect();
        for sent in request.entries {
            self.stats.entries_received += 1;
            let effect = replica.apply(sent.key, sent.entry, now_ms);
            self.stats.entries_changed += u64::from(effect.changed);
            self.stats.conflicts += u64::from(effect.conflict);
        }
        // Ours after the merge, where it differs from theirs: then both end with the merge.
        let mut answer: Vec<SyncEntry> = Vec::new();
        {
            let ours_in_ranges = read_ranges(&*replica, &request.ranges, usize::MAX, true);
            for ours in ours_in_ranges.entries {
                let our_digest = view(&ours.entry, &params).map(|v| entry_digest(&ours.key, v));
                let differs = match theirs.get(&ours.key) {
                    Some((entry, digest)) => {
                        entry.version != ours.entry.version || *digest != our_digest
                    }
                    // Something they lack; unless it counts as gone (a purgeable tombstone).
                    None => our_digest.is_some(),
                };
                if differs {
                    answer.push(ours);
                }
            }
        }
        self.stats.entries_sent += answer.len() as u64;
        let budget = self
            .message_bytes_max
            .saturating_sub(MESSAGE_OVERHEAD_BYTES);
        let groups = split_by_bytes(answer, budget);
        let count = groups.len();
        Ok(groups
            .into_iter()
            .enumerate()
            .map(|(i, entries)| {
                Message::RangeEntries(RangeEntries {
                    session: request.session,
                    partition: request.partition,
                    request: request.request,
                    entries,
                    done: i + 1 == count,
                })
            })
            .collect())
    }
}
