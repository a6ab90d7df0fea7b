//! [`RepairSession`]: the initiating side of one partition's repair with one peer site.
use super::entries::{MESSAGE_OVERHEAD_BYTES, read_ranges};
use super::replica::Replica;
use super::tree::{DigestTree, TreeShape};
use super::{RepairError, RepairProgress, RepairStatus, message_bytes, nodes_per_request};
use crate::limits::GatewayLimits;
use crate::wire::{
    DigestParams, DigestReply, DigestRequest, Message, PositionRange, RangeEntries, RangeRequest,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use tern_conflict::SiteId;
use tern_node::core::keyspace::PartitionId;

/// Bytes a range adds to a [`RangeRequest`] (two varints), rounded up.
const RANGE_BYTES: usize = 20;

/// A request waiting for its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Awaited {
    /// Digests of the children of nodes at `level`, the first being `first`.
    Digests {
        level: u8,
        first: u64,
    },
    Range(u32),
}

/// One partition's repair, initiator side. Sans-IO: [`RepairSession::start`] builds the local
/// digest tree and queues the root request; feed the peer's answers to
/// [`RepairSession::handle_message`]; send what [`RepairSession::poll_transmit`] yields; call
/// [`RepairSession::handle_timeout`] at [`RepairSession::poll_timeout`].
///
/// It descends only into subtrees whose digests differ, a level per round trip, then sends its
/// entries of each differing leaf (all of them, so the responder applies what it lacks) and
/// applies the responder's entries that differ from them. Both sides apply with the sink's
/// reconcile rule, so after a session both hold the merge of both: no version moves back.
#[derive(Debug)]
pub struct RepairSession {
    id: u64,
    partition: PartitionId,
    peer: SiteId,
    params: DigestParams,
    shape: TreeShape,
    tree: DigestTree,
    message_bytes_max: usize,
    inflight_max: usize,
    reply_timeout_ms: u64,
    /// Per level, nodes known to differ whose children are still to be asked for.
    to_expand: BTreeMap<u8, BTreeSet<u64>>,
    /// Position ranges (differing leaves, merged when adjacent) still to exchange.
    to_exchange: VecDeque<PositionRange>,
    /// Requests sent and not yet (fully) answered, with when they went out.
    awaiting: BTreeMap<Awaited, u64>,
    next_request: u32,
    /// A `RangeRequest` marked `last` went out: the responder forgets the session after it.
    last_sent: bool,
    outbox: VecDeque<Message>,
    status: RepairStatus,
    progress: RepairProgress,
}

impl RepairSession {
    /// Start repairing `replica`'s partition with `peer`. `id` must be unique among this
    /// site's sessions with `peer`; `params.as_of_ms` is normally the local clock now.
    pub fn start(
        id: u64,
        peer: SiteId,
        replica: &dyn Replica,
        params: DigestParams,
        limits: &GatewayLimits,
        now_ms: u64,
    ) -> Result<Self, RepairError> {
        let shape = TreeShape::of(&params).ok_or(RepairError::BadShape {
            leaf_bits: params.leaf_bits,
            fanout_bits: params.fanout_bits,
        })?;
        let tree = DigestTree::build(replica, &params).ok_or(RepairError::BadShape {
            leaf_bits: params.leaf_bits,
            fanout_bits: params.fanout_bits,
        })?;
        let mut session = Self {
            id,
            partition: replica.partition(),
            peer,
            params,
            shape,
            tree,
            message_bytes_max: limits.repair_message_bytes_max,
            inflight_max: limits.repair_requests_inflight_max.max(1),
            reply_timeout_ms: limits.repair_reply_timeout_ms,
            to_expand: BTreeMap::new(),
            to_exchange: VecDeque::new(),
            awaiting: BTreeMap::new(),
            next_request: 1,
            last_sent: false,
            outbox: VecDeque::new(),
            status: RepairStatus::Running,
            progress: RepairProgress::default(),
        };
        // The root request carries our root: an in-sync peer ends the session in one round trip.
        session.send_digest_request(0, vec![0], now_ms);
        Ok(session)
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn partition(&self) -> PartitionId {
        self.partition
    }

    pub fn peer(&self) -> SiteId {
        self.peer
    }

    pub fn params(&self) -> &DigestParams {
        &self.params
    }

    pub fn status(&self) -> &RepairStatus {
        &self.status
    }

    pub fn progress(&self) -> &RepairProgress {
        &self.progress
    }

    pub fn is_finished(&self) -> bool {
        self.status != RepairStatus::Running
    }

    /// An answer from the peer ([`Message::DigestReply`] or [`Message::RangeEntries`] of this
    /// session). Entries are applied to `replica` here. An `Err` also fails the session.
    pub fn handle_message(
        &mut self,
        message: Message,
        replica: &mut dyn Replica,
        now_ms: u64,
    ) -> Result<(), RepairError> {
        if self.is_finished() {
            return Ok(());
        }
        self.progress.messages_received += 1;
        self.progress.bytes_received += message_bytes(&message);
        let result = match message {
            Message::DigestReply(reply) if self.is_mine(reply.session, reply.partition) => {
                self.handle_digests(reply)
            }
            Message::RangeEntries(answer) if self.is_mine(answer.session, answer.partition) => {
                self.handle_entries(answer, replica, now_ms);
                Ok(())
            }
            other => Err(RepairError::Protocol(format!(
                "session {} of {} got an unexpected {:?}",
                self.id,
                self.partition,
                other.kind()
            ))),
        };
        match result {
            Ok(()) => {
                self.pump(replica, now_ms);
                Ok(())
            }
            Err(error) => {
                self.fail(error.clone());
                Err(error)
            }
        }
    }

    /// Call at (or after) [`Self::poll_timeout`]: a peer that stopped answering fails the
    /// session (the driver retries later).
    pub fn handle_timeout(&mut self, now_ms: u64) {
        if let Some(due) = self.poll_timeout()
            && now_ms >= due
        {
            self.fail(RepairError::TimedOut {
                waited_ms: self.reply_timeout_ms,
            });
        }
    }

    /// The link to the peer went down: the session fails (answers in flight are lost).
    pub fn handle_disconnected(&mut self) {
        if !self.is_finished() {
            self.fail(RepairError::Disconnected);
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Message> {
        let message = self.outbox.pop_front()?;
        self.progress.messages_sent += 1;
        self.progress.bytes_sent += message_bytes(&message);
        Some(message)
    }

    /// When an answer is overdue.
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.is_finished() {
            return None;
        }
        self.awaiting
            .values()
            .min()
            .map(|sent| sent.saturating_add(self.reply_timeout_ms))
    }

    // --- internals ---

    fn is_mine(&self, session: u64, partition: PartitionId) -> bool {
        session == self.id && partition == self.partition
    }

    fn fail(&mut self, error: RepairError) {
        self.outbox.clear();
        self.awaiting.clear();
        self.status = RepairStatus::Failed(error);
    }

    fn handle_digests(&mut self, reply: DigestReply) -> Result<(), RepairError> {
        let Some(&first) = reply.nodes.first() else {
            return Err(RepairError::Protocol("digest reply without nodes".into()));
        };
        let asked = Awaited::Digests {
            level: reply.level,
            first,
        };
        if self.awaiting.remove(&asked).is_none() {
            // A duplicate or a stray answer: nothing to do.
            self.progress.unexpected_answers += 1;
            return Ok(());
        }
        if reply.in_sync {
            return Ok(());
        }
        let child_level = reply.level.saturating_add(1);
        let fanout = self.shape.fanout();
        if child_level > self.shape.depth()
            || reply.hashes.len() as u64 != reply.nodes.len() as u64 * fanout
        {
            return Err(RepairError::Protocol(format!(
                "digest reply for level {} holds {} digests for {} nodes",
                reply.level,
                reply.hashes.len(),
                reply.nodes.len()
            )));
        }
        let leaves = child_level == self.shape.depth();
        for (node, digests) in reply.nodes.iter().zip(reply.hashes.chunks(fanout as usize)) {
            for (child_offset, theirs) in digests.iter().enumerate() {
                let child = node * fanout + child_offset as u64;
                self.progress.digests_compared += 1;
                if self.tree.node(child_level, child) == *theirs {
                    continue;
                }
                if leaves {
                    self.progress.leaves_differing += 1;
                    self.queue_range(self.shape.range(child_level, child));
                } else {
                    self.to_expand.entry(child_level).or_default().insert(child);
                }
            }
        }
        Ok(())
    }

    fn queue_range(&mut self, range: PositionRange) {
        match self.to_exchange.back_mut() {
            Some(last) if last.to == range.from => last.to = range.to,
            _ => self.to_exchange.push_back(range),
        }
    }

    fn handle_entries(&mut self, answer: RangeEntries, replica: &mut dyn Replica, now_ms: u64) {
        let asked = Awaited::Range(answer.request);
        if !self.awaiting.contains_key(&asked) {
            self.progress.unexpected_answers += 1;
            return;
        }
        for entry in answer.entries {
            self.progress.entries_received += 1;
            let effect = replica.apply(entry.key, entry.entry, now_ms);
            self.progress.entries_changed += u64::from(effect.changed);
            self.progress.conflicts += u64::from(effect.conflict);
        }
        if answer.done {
            self.awaiting.remove(&asked);
        }
    }

    /// Send what the window allows; finish when nothing is left.
    fn pump(&mut self, replica: &dyn Replica, now_ms: u64) {
        while self.awaiting.len() < self.inflight_max && !self.is_finished() {
            // Deepest level first: leaves (and their exchanges) come sooner, the work queue
            // stays small.
            if let Some((&level, nodes)) = self.to_expand.iter_mut().next_back() {
                let take = nodes_per_request(self.message_bytes_max, self.shape.fanout());
                let batch: Vec<u64> = nodes.iter().copied().take(take).collect();
                nodes.retain(|n| !batch.contains(n));
                if nodes.is_empty() {
                    self.to_expand.remove(&level);
                }
                self.send_digest_request(level, batch, now_ms);
                continue;
            }
            if !self.to_exchange.is_empty() {
                self.send_range_request(replica, now_ms);
                continue;
            }
            break;
        }
        let idle = self.awaiting.is_empty()
            && self.to_expand.is_empty()
            && self.to_exchange.is_empty()
            && !self.is_finished();
        if idle {
            if self.last_sent || self.progress.range_requests == 0 && self.outbox.is_empty() {
                // Everything exchanged, or nothing differed (in sync, or the differences
                // vanished on the way down: then the peer forgets the session when idle).
                self.status = RepairStatus::Done;
            } else {
                // The last exchange went out while digests were still awaited: tell the peer
                // it can forget the session.
                self.send_range_request(replica, now_ms);
            }
        }
    }

    fn send_digest_request(&mut self, level: u8, nodes: Vec<u64>, now_ms: u64) {
        let Some(&first) = nodes.first() else {
            return;
        };
        self.awaiting
            .insert(Awaited::Digests { level, first }, now_ms);
        self.progress.digest_requests += 1;
        self.outbox.push_back(Message::DigestRequest(DigestRequest {
            session: self.id,
            partition: self.partition,
            params: self.params,
            level,
            root: (level == 0).then(|| self.tree.root()),
            nodes,
        }));
    }

    /// One [`RangeRequest`] with as many queued ranges (and all our entries in them) as fit.
    fn send_range_request(&mut self, replica: &dyn Replica, now_ms: u64) {
        let budget = self
            .message_bytes_max
            .saturating_sub(MESSAGE_OVERHEAD_BYTES);
        // Each range costs a few bytes itself: take no more ranges than the budget holds.
        let candidates: Vec<PositionRange> = self
            .to_exchange
            .iter()
            .take((budget / RANGE_BYTES).max(1))
            .copied()
            .collect();
        let room = budget.saturating_sub(candidates.len() * RANGE_BYTES);
        let chunk = read_ranges(replica, &candidates, room, true);
        for covered in &chunk.covered {
            match self.to_exchange.front_mut() {
                Some(front) if covered.to < front.to => front.from = covered.to,
                Some(_) => {
                    self.to_exchange.pop_front();
                }
                None => {}
            }
        }
        let ranges = chunk.covered;
        let entries = chunk.entries;
        let request = self.next_request;
        self.next_request += 1;
        let last = self.to_exchange.is_empty()
            && self.to_expand.is_empty()
            && !self
                .awaiting
                .keys()
                .any(|a| matches!(a, Awaited::Digests { .. }));
        self.last_sent |= last;
        self.awaiting.insert(Awaited::Range(request), now_ms);
        self.progress.range_requests += 1;
        self.progress.ranges_compared += ranges.len() as u64;
        self.progress.entries_sent += entries.len() as u64;
        self.outbox.push_back(Message::RangeRequest(RangeRequest {
            session: self.id,
            partition: self.partition,
            params: self.params,
            request,
            ranges,
            entries,
            last,
        }));
    }
}
