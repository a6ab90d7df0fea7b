//! [`RepairShared`]: what initiators and responders share — the snapshot loads and the push
//! queues, both handed to the shell as requests ([`RepairLoad`], [`RepairPush`]) and answered
//! through [`crate::site::SiteGateway::handle_repair_loaded`] /
//! [`crate::site::SiteGateway::handle_repair_pushed`].
use super::snapshot::{DumpEntries, SnapshotReplica};
use crate::bootstrap::Pacer;
use crate::limits::GatewayLimits;
use crate::site::limits::{NON_BYTES_VALUE_BYTES, REPAIR_BURST_MS};
use crate::wire::Message;
use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use tern_conflict::{KeyspaceResolvers, Versioned};
use tern_node::core::{CommandResult, PartitionId, Response};

/// Who asked for a snapshot load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoadOwner {
    Initiator {
        target: String,
        partition: PartitionId,
    },
    Responder {
        source: String,
        session: u64,
        partition: PartitionId,
    },
}

/// A request for the shell: read `partition`'s entries in scan order (the host pages
/// `WanDump` through the router) and answer with `token`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepairLoad {
    pub token: u64,
    pub partition: PartitionId,
}

/// A request for the shell: reconcile `entries` into `partition` (the host sends `WanApply`
/// through the router, retrying while the router fails) and answer with the results.
#[derive(Clone, Debug, PartialEq)]
pub struct RepairPush {
    pub partition: PartitionId,
    pub entries: Vec<(Bytes, Versioned)>,
}

/// WanApply pushes of one partition, applied in order, one request in flight.
#[derive(Debug, Default)]
struct PushQueue {
    queued: VecDeque<(Bytes, Versioned)>,
    inflight: bool,
    /// Entries ever queued / ever finished (applied or refused): a session waits until
    /// `done_total` reaches what was queued when it finished.
    queued_total: u64,
    done_total: u64,
}

/// What initiators and responders share: loads and push queues.
pub struct RepairShared {
    pub limits: GatewayLimits,
    resolvers: Arc<KeyspaceResolvers>,
    pub(super) tombstone_retention_ms: u64,
    push_records_max: usize,
    push_bytes_max: usize,
    /// Every partition of the keyspace (fixed for the process).
    pub(super) partitions: Arc<[PartitionId]>,
    next_token: u64,
    loads: BTreeMap<u64, LoadOwner>,
    pushes: BTreeMap<PartitionId, PushQueue>,
    load_requests: VecDeque<RepairLoad>,
    push_requests: VecDeque<RepairPush>,
    pub push_errors_total: u64,
}

impl std::fmt::Debug for RepairShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepairShared")
            .field("loads", &self.loads.len())
            .field("pushes", &self.pushes.len())
            .field("push_errors_total", &self.push_errors_total)
            .finish_non_exhaustive()
    }
}

impl RepairShared {
    pub fn new(
        limits: GatewayLimits,
        partitions: Arc<[PartitionId]>,
        resolvers: Arc<KeyspaceResolvers>,
        tombstone_retention_ms: u64,
        push_records_max: u32,
        push_bytes_max: u32,
    ) -> Self {
        Self {
            limits,
            partitions,
            resolvers,
            tombstone_retention_ms,
            push_records_max: push_records_max.max(1) as usize,
            push_bytes_max: push_bytes_max as usize,
            next_token: 1,
            loads: BTreeMap::new(),
            pushes: BTreeMap::new(),
            load_requests: VecDeque::new(),
            push_requests: VecDeque::new(),
            push_errors_total: 0,
        }
    }

    pub(super) fn is_partition(&self, partition: PartitionId) -> bool {
        self.partitions.contains(&partition)
    }

    /// Asks for `partition`'s snapshot; the answer comes to `take_load` with the returned
    /// token (also the session id of an initiator).
    pub(super) fn load(&mut self, partition: PartitionId, owner: LoadOwner) -> u64 {
        let token = self.next_token;
        self.next_token += 1;
        self.loads.insert(token, owner);
        self.load_requests
            .push_back(RepairLoad { token, partition });
        token
    }

    /// Who asked for the load `token` (once; a forgotten load yields `None`).
    pub fn take_load(&mut self, token: u64) -> Option<LoadOwner> {
        self.loads.remove(&token)
    }

    pub fn poll_load(&mut self) -> Option<RepairLoad> {
        self.load_requests.pop_front()
    }

    pub fn poll_push(&mut self) -> Option<RepairPush> {
        self.push_requests.pop_front()
    }

    pub(super) fn snapshot(&self, partition: PartitionId, entries: DumpEntries) -> SnapshotReplica {
        SnapshotReplica::new(partition, Arc::clone(&self.resolvers), entries)
    }

    /// Queue `entries` for the real partition.
    pub(super) fn push(&mut self, partition: PartitionId, entries: Vec<(Bytes, Versioned)>) {
        if entries.is_empty() {
            return;
        }
        let queue = self.pushes.entry(partition).or_default();
        queue.queued_total += entries.len() as u64;
        queue.queued.extend(entries);
        self.dispatch(partition);
    }

    /// Everything ever queued for `partition` so far.
    pub(super) fn queued_total(&self, partition: PartitionId) -> u64 {
        self.pushes.get(&partition).map_or(0, |q| q.queued_total)
    }

    pub(super) fn done_total(&self, partition: PartitionId) -> u64 {
        self.pushes.get(&partition).map_or(0, |q| q.done_total)
    }

    fn dispatch(&mut self, partition: PartitionId) {
        let Some(queue) = self.pushes.get_mut(&partition) else {
            return;
        };
        if queue.inflight || queue.queued.is_empty() {
            return;
        }
        let mut chunk = Vec::new();
        let mut bytes = 0;
        while let Some((key, entry)) = queue.queued.front() {
            let size = key.len() + value_len(&entry.value);
            if !chunk.is_empty()
                && (chunk.len() >= self.push_records_max || bytes + size > self.push_bytes_max)
            {
                break;
            }
            bytes += size;
            chunk.extend(queue.queued.pop_front());
        }
        queue.inflight = true;
        self.push_requests.push_back(RepairPush {
            partition,
            entries: chunk,
        });
    }

    /// A push request finished (`results[i]` answers `entries[i]`).
    pub fn on_pushed(
        &mut self,
        partition: PartitionId,
        entries: &[(Bytes, Versioned)],
        results: &[CommandResult],
    ) {
        for ((key, _), result) in entries.iter().zip(results) {
            if !matches!(result, Ok(Response::WanApplied { .. })) {
                // Over this site's limits, say: counted and logged, like a streamed record.
                self.push_errors_total += 1;
                tracing::error!(%partition, key = ?key, ?result, "repair entry not applied");
            }
        }
        if let Some(queue) = self.pushes.get_mut(&partition) {
            queue.inflight = false;
            queue.done_total += entries.len() as u64;
        }
        self.dispatch(partition);
    }
}

/// The pacer of one link's repair messages: `bootstrap_bytes_per_sec_max`, bursts of
/// [`REPAIR_BURST_MS`] of it but at most one repair message.
pub fn link_pacer<K: Ord + Clone>(limits: &GatewayLimits, now_ms: u64) -> Pacer<K, Message> {
    let rate = limits.bootstrap_bytes_per_sec_max;
    let burst = (rate.saturating_mul(REPAIR_BURST_MS) / 1_000)
        .min(limits.repair_message_bytes_max as u64)
        .max(1);
    Pacer::new(rate, burst, now_ms)
}

/// Queue `messages` of `flow` on `pacer`, each counted at its encoded frame size.
pub(super) fn pace<K: Ord + Clone>(pacer: &mut Pacer<K, Message>, flow: K, messages: Vec<Message>) {
    for message in messages {
        let bytes = crate::wire::encoded_len(&message) as u64;
        pacer.push(flow.clone(), message, bytes);
    }
}

/// Payload bytes of a value, for sizing apply and push requests.
pub fn value_len(value: &tern_conflict::Value) -> usize {
    match value {
        tern_conflict::Value::Bytes(bytes) => bytes.len(),
        _ => NON_BYTES_VALUE_BYTES,
    }
}
