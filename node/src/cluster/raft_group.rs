//! The Raft group replicating the partition map: a sans-IO wrapper around raft-rs `RawNode` whose
//! applied state machine is a [`PartitionMap`].
//!
//! The shell drives it:
//! ```text
//! on timer every raft_tick_ms:  group.handle_tick()
//! on a peer's Raft bytes:       group.handle_message_bytes(&bytes)?
//! on the leader's planner:      group.propose(command)            // Err(NotLeader { leader_hint })
//! after any of these:           while let Some(out) = group.poll_ready()? {
//!                                   persistence.persist(&out.to_persist)?;   // 1. durable first
//!                                   send(out.messages);                       // 2. then send
//!                                   react_to(out.committed);                  // map already applied
//!                                   group.advance();                          // 3. then advance
//!                               }
//! ```
//! This follows raft-rs's Ready protocol: a Ready's snapshot, entries and hard state are written
//! to raft-rs's storage inside `poll_ready` and handed to the shell as [`PersistOps`]; every
//! message of a [`ReadyOut`] is sent only after those ops are durable (the simple and always-safe
//! order: the leader's appends wait for its own disk write too). `advance` hands the Ready back to
//! raft-rs; what that yields (the `LightReady`'s commit, committed entries and messages) comes out
//! of the next `poll_ready`. Inputs arriving between `poll_ready` and `advance` are queued and
//! stepped after `advance`.
//!
//! Committed commands are applied to the group's map in log order on every node; an `Err` outcome
//! (a stale conditional command) is deterministic and identical everywhere. Every
//! `raft_snapshot_entries` applied entries the group snapshots the map and compacts its log.
//!
//! Randomness: raft-rs draws election timeouts from the thread RNG. The group pins its range to a
//! single value (`min_election_tick = election_tick`, `max = election_tick + 1`) and instead a
//! follower or candidate ignores each tick with `raft_election_jitter_percent` chance, drawn from
//! an RNG seeded by [`RaftGroupConfig::seed`] — so elections still break ties and a run is
//! reproducible from its seed.
//!
//! Membership: the configured voters form the Raft configuration at a node's first start (the
//! same list on every node); a restarted node reloads its persisted state instead. Changing the
//! Raft voter set at runtime is not supported yet (the map's `AddNode` is independent of it).
use crate::cluster::ids::NodeId;
use crate::cluster::map::{Applied, MapCommand, PartitionMap, Rejected};
use crate::cluster::raft_storage::{MapStorage, PersistOps, PersistedState};
use crate::cluster::timings::ClusterTimings;
use bytes::Bytes;
use protobuf::Message as _;
use raft::prelude::{
    ConfChange, ConfChangeV2, ConfState, Entry, EntryType, Message, MessageType, Snapshot,
};
use raft::{Config, RawNode, SnapshotStatus, StateRole, Storage};
use std::collections::VecDeque;

#[derive(Clone, Debug)]
pub struct RaftGroupConfig {
    pub id: NodeId,
    /// The voters at first start: every configured peer, this node included.
    pub voters: Vec<NodeId>,
    pub timings: ClusterTimings,
    /// Seeds the election jitter; give each node its own (e.g. sim seed ^ node id).
    pub seed: u64,
}

/// A committed map command and what applying it did (identical on every node).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    pub index: u64,
    pub command: MapCommand,
    pub outcome: Result<Applied, Rejected>,
}

/// One round of work for the shell: persist `to_persist`, then send `messages`, then `advance`.
#[derive(Debug, Default)]
pub struct ReadyOut {
    /// Raft messages (protobuf bytes) to peers.
    pub messages: Vec<(NodeId, Bytes)>,
    pub to_persist: PersistOps,
    /// Commands applied to [`RaftGroup::map`] since the last round, in log order.
    pub committed: Vec<Committed>,
    /// The map changed since the last round (commands or a snapshot from the leader).
    pub map_changed: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("not the Raft leader (leader: {leader_hint:?})")]
    NotLeader { leader_hint: Option<NodeId> },
    #[error("proposal dropped by Raft (leadership transfer in progress)")]
    Dropped,
    #[error("encode the command: {0}")]
    Encode(String),
}

#[derive(Debug, thiserror::Error)]
pub enum RaftGroupError {
    #[error("configure Raft: {0}")]
    Config(raft::Error),
    #[error("restore Raft storage: {0}")]
    Restore(String),
    #[error("decode a Raft message: {0}")]
    BadMessage(protobuf::ProtobufError),
    #[error("step a Raft message: {0}")]
    Step(raft::Error),
    #[error("apply a snapshot from the leader: {0}")]
    Snapshot(String),
}

/// Work that arrived while a Ready was out; stepped after `advance`.
#[derive(Debug)]
enum Deferred {
    Message(Message),
    Tick,
    Propose(Vec<u8>),
    TransferLeadership(NodeId),
}

pub struct RaftGroup {
    id: NodeId,
    raw: RawNode<MapStorage>,
    map: PartitionMap,
    applied_index: u64,
    snapshot_every: u64,
    jitter_percent: u8,
    rng: u64,
    /// The Ready handed out by `poll_ready`, awaiting `advance`.
    pending: Option<raft::Ready>,
    awaiting_advance: bool,
    out_messages: Vec<Message>,
    out_committed: Vec<Committed>,
    out_persist: PersistOps,
    out_map_changed: bool,
    deferred: VecDeque<Deferred>,
    /// Peers sent a snapshot in the pending round; reported to raft-rs after `advance`.
    snapshot_targets: Vec<u64>,
}

impl std::fmt::Debug for RaftGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftGroup")
            .field("id", &self.id)
            .field("term", &self.raw.raft.term)
            .field("role", &self.raw.raft.state)
            .field("applied_index", &self.applied_index)
            .field("map_version", &self.map.map_version())
            .finish()
    }
}

impl RaftGroup {
    /// Starts the group: from `restored` (what the node persisted) when present, else a first
    /// start with `config.voters` and `initial_map` (every node must pass the same ones).
    pub fn new(
        config: RaftGroupConfig,
        initial_map: PartitionMap,
        restored: Option<PersistedState>,
        logger: &slog::Logger,
    ) -> Result<Self, RaftGroupError> {
        let mut out_persist = PersistOps::default();
        let (storage, map, applied_index) = match restored {
            Some(state) => {
                let map = PartitionMap::decode(&state.snapshot.data)
                    .map_err(|e| RaftGroupError::Restore(e.to_string()))?;
                let storage = MapStorage::restore(&state)
                    .map_err(|e| RaftGroupError::Restore(e.to_string()))?;
                let applied = state.snapshot.get_metadata().index;
                (storage, map, applied)
            }
            None => {
                let conf_state =
                    ConfState::from((config.voters.iter().map(|v| v.get()), Vec::<u64>::new()));
                let mut snapshot = Snapshot::default();
                snapshot.mut_metadata().set_conf_state(conf_state.clone());
                snapshot.data = Bytes::from(
                    initial_map
                        .encode()
                        .map_err(|e| RaftGroupError::Restore(e.to_string()))?,
                );
                // The bootstrap state is persisted first so a restart never bootstraps again.
                out_persist.snapshot = Some(snapshot.clone());
                out_persist.snapshot_replaces_log = true;
                (MapStorage::bootstrap(conf_state, snapshot), initial_map, 0)
            }
        };
        let timings = &config.timings;
        let raft_config = Config {
            id: config.id.get(),
            election_tick: timings.raft_election_ticks,
            heartbeat_tick: timings.raft_heartbeat_ticks,
            min_election_tick: timings.raft_election_ticks,
            max_election_tick: timings.raft_election_ticks + 1,
            applied: applied_index,
            check_quorum: true,
            pre_vote: true,
            max_inflight_msgs: 256,
            max_size_per_msg: 1024 * 1024,
            ..Config::default()
        };
        raft_config.validate().map_err(RaftGroupError::Config)?;
        let raw = RawNode::new(&raft_config, storage, logger).map_err(RaftGroupError::Config)?;
        Ok(Self {
            id: config.id,
            raw,
            map,
            applied_index,
            snapshot_every: timings.raft_snapshot_entries.max(1),
            jitter_percent: timings.raft_election_jitter_percent.min(90),
            // xorshift needs a non-zero state.
            rng: (config.seed ^ config.id.get().rotate_left(32)) | 1,
            pending: None,
            awaiting_advance: false,
            out_messages: Vec::new(),
            out_committed: Vec::new(),
            out_map_changed: out_persist.snapshot.is_some(),
            out_persist,
            deferred: VecDeque::new(),
            snapshot_targets: Vec::new(),
        })
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The applied map (identical on every node at the same applied index).
    pub fn map(&self) -> &PartitionMap {
        &self.map
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// The leader this node knows of, if any.
    pub fn leader(&self) -> Option<NodeId> {
        NodeId::new(self.raw.raft.leader_id)
    }

    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// Index of the latest map snapshot (own compaction or received from the leader).
    pub fn snapshot_index(&self) -> u64 {
        self.raw.store().snapshot_index()
    }

    /// Advances Raft's logical clock by one tick; call every `raft_tick_ms`.
    pub fn handle_tick(&mut self) {
        if self.awaiting_advance {
            self.deferred.push_back(Deferred::Tick);
            return;
        }
        if !self.is_leader() && self.roll_percent() < u64::from(self.jitter_percent) {
            return;
        }
        self.raw.tick();
    }

    /// Steps a Raft message from a peer (as sent in [`ReadyOut::messages`]).
    pub fn handle_message_bytes(&mut self, bytes: &[u8]) -> Result<(), RaftGroupError> {
        let message = Message::parse_from_bytes(bytes).map_err(RaftGroupError::BadMessage)?;
        self.handle_message(message)
    }

    pub fn handle_message(&mut self, message: Message) -> Result<(), RaftGroupError> {
        if self.awaiting_advance {
            self.deferred.push_back(Deferred::Message(message));
            return Ok(());
        }
        if raft::raw_node::is_local_msg(message.get_msg_type()) {
            return Err(RaftGroupError::Step(raft::Error::StepLocalMsg));
        }
        self.raw.step(message).map_err(RaftGroupError::Step)
    }

    /// On the leader: hands leadership to `to` (raft-rs catches `to` up, then tells it to
    /// campaign at once). A node about to stop calls it so the site keeps a leader without
    /// waiting out an election timeout, and so the commands its drain needs are committed by a
    /// leader that stays. While the transfer runs (at most an election timeout) proposals are
    /// dropped; proposers retry. Ignored when not the leader or `to` is this node.
    pub fn transfer_leadership(&mut self, to: NodeId) {
        if !self.is_leader() || to == self.id {
            return;
        }
        if self.awaiting_advance {
            self.deferred.push_back(Deferred::TransferLeadership(to));
            return;
        }
        self.raw.transfer_leader(to.get());
    }

    /// Whether a leadership transfer started by [`Self::transfer_leadership`] is running.
    pub fn transferring_leadership(&self) -> bool {
        self.is_leader() && self.raw.raft.lead_transferee.is_some()
    }

    /// Proposes `command` for the log; it is applied (or rejected as stale) when committed.
    pub fn propose(&mut self, command: &MapCommand) -> Result<(), ProposeError> {
        if !self.is_leader() {
            return Err(ProposeError::NotLeader {
                leader_hint: self.leader(),
            });
        }
        let data = command
            .encode()
            .map_err(|e| ProposeError::Encode(e.to_string()))?;
        if self.awaiting_advance {
            self.deferred.push_back(Deferred::Propose(data));
            return Ok(());
        }
        self.raw
            .propose(Vec::new(), data)
            .map_err(|_| ProposeError::Dropped)
    }

    /// The next round of work, if any. After `Some`, call [`Self::advance`] before polling again
    /// (until then this returns `None`).
    pub fn poll_ready(&mut self) -> Result<Option<ReadyOut>, RaftGroupError> {
        if self.awaiting_advance {
            return Ok(None);
        }
        if self.raw.has_ready() {
            let mut ready = self.raw.ready();
            self.collect_messages(ready.take_messages());
            if !ready.snapshot().is_empty() {
                self.install_snapshot(ready.snapshot().clone())?;
            }
            let committed = ready.take_committed_entries();
            self.apply_entries(committed);
            if !ready.entries().is_empty() {
                let entries = ready.take_entries();
                // raft-rs must read them back before `advance`; the shell makes them durable.
                if let Err(e) = self.raw.mut_store().mem().wl().append(&entries) {
                    return Err(RaftGroupError::Restore(format!("append entries: {e}")));
                }
                self.out_persist.merge(PersistOps {
                    entries,
                    ..PersistOps::default()
                });
            }
            if let Some(hs) = ready.hs() {
                self.raw.mut_store().mem().wl().set_hardstate(hs.clone());
                self.out_persist.hard_state = Some(hs.clone());
            }
            self.collect_messages(ready.take_persisted_messages());
            self.pending = Some(ready);
        }
        let nothing = self.pending.is_none()
            && self.out_messages.is_empty()
            && self.out_committed.is_empty()
            && self.out_persist.is_empty()
            && !self.out_map_changed;
        if nothing {
            return Ok(None);
        }
        self.awaiting_advance = true;
        let messages = std::mem::take(&mut self.out_messages)
            .into_iter()
            .filter_map(encode_message)
            .collect();
        Ok(Some(ReadyOut {
            messages,
            to_persist: std::mem::take(&mut self.out_persist),
            committed: std::mem::take(&mut self.out_committed),
            map_changed: std::mem::take(&mut self.out_map_changed),
        }))
    }

    /// Call once the last [`ReadyOut`]'s ops are durable and its messages sent.
    pub fn advance(&mut self) {
        if !self.awaiting_advance {
            return;
        }
        self.awaiting_advance = false;
        if let Some(ready) = self.pending.take() {
            let mut light = self.raw.advance(ready);
            if let Some(commit) = light.commit_index() {
                self.raw
                    .mut_store()
                    .mem()
                    .wl()
                    .mut_hard_state()
                    .set_commit(commit);
            }
            self.collect_messages(light.take_messages());
            self.apply_entries(light.take_committed_entries());
            self.raw.advance_apply();
        }
        // Snapshots are fire-and-forget: a lost one is retried when the follower is probed again.
        for to in std::mem::take(&mut self.snapshot_targets) {
            self.raw.report_snapshot(to, SnapshotStatus::Finish);
        }
        self.maybe_compact();
        while let Some(work) = self.deferred.pop_front() {
            match work {
                Deferred::Tick => self.handle_tick(),
                Deferred::Message(message) => {
                    if let Err(e) = self.handle_message(message) {
                        tracing::debug!(node = %self.id, "drop a queued Raft message: {e}");
                    }
                }
                Deferred::TransferLeadership(to) => self.transfer_leadership(to),
                Deferred::Propose(data) => {
                    if self.raw.propose(Vec::new(), data).is_err() {
                        tracing::debug!(node = %self.id, "a queued proposal was dropped");
                    }
                }
            }
        }
    }

    fn collect_messages(&mut self, messages: Vec<Message>) {
        for message in &messages {
            if message.get_msg_type() == MessageType::MsgSnapshot {
                self.snapshot_targets.push(message.to);
            }
        }
        self.out_messages.extend(messages);
    }

    fn install_snapshot(&mut self, snapshot: Snapshot) -> Result<(), RaftGroupError> {
        let map = PartitionMap::decode(&snapshot.data)
            .map_err(|e| RaftGroupError::Snapshot(e.to_string()))?;
        let index = snapshot.get_metadata().index;
        self.raw
            .mut_store()
            .apply_received_snapshot(snapshot.clone())
            .map_err(|e| RaftGroupError::Snapshot(e.to_string()))?;
        self.map = map;
        self.applied_index = index;
        self.out_map_changed = true;
        self.out_persist.merge(PersistOps {
            snapshot: Some(snapshot),
            snapshot_replaces_log: true,
            ..PersistOps::default()
        });
        Ok(())
    }

    fn apply_entries(&mut self, entries: Vec<Entry>) {
        for entry in entries {
            self.applied_index = entry.index;
            match entry.get_entry_type() {
                EntryType::EntryNormal if entry.data.is_empty() => {} // a new leader's empty entry
                EntryType::EntryNormal => match MapCommand::decode(&entry.data) {
                    Ok(command) => {
                        let outcome = self.map.apply(&command);
                        self.out_map_changed |= outcome.is_ok();
                        self.out_committed.push(Committed {
                            index: entry.index,
                            command,
                            outcome,
                        });
                    }
                    // Identical on every node of this version; skipping keeps them in step.
                    Err(e) => {
                        tracing::error!(node = %self.id, index = entry.index, "skip a map command: {e}")
                    }
                },
                EntryType::EntryConfChange => {
                    let applied = ConfChange::parse_from_bytes(&entry.data)
                        .map_err(|e| e.to_string())
                        .and_then(|cc| self.raw.apply_conf_change(&cc).map_err(|e| e.to_string()));
                    self.set_conf_state(applied, entry.index);
                }
                EntryType::EntryConfChangeV2 => {
                    let applied = ConfChangeV2::parse_from_bytes(&entry.data)
                        .map_err(|e| e.to_string())
                        .and_then(|cc| self.raw.apply_conf_change(&cc).map_err(|e| e.to_string()));
                    self.set_conf_state(applied, entry.index);
                }
            }
        }
    }

    fn set_conf_state(&mut self, applied: Result<ConfState, String>, index: u64) {
        match applied {
            Ok(cs) => self.raw.mut_store().mem().wl().set_conf_state(cs),
            Err(e) => {
                tracing::error!(node = %self.id, index, "skip a Raft configuration change: {e}")
            }
        }
    }

    /// Every `snapshot_every` applied entries: snapshot the map at the applied index, drop the
    /// log up to it, and have the shell persist the snapshot (which compacts its log too).
    fn maybe_compact(&mut self) {
        let store = self.raw.store();
        if self.applied_index < store.snapshot_index() + self.snapshot_every {
            return;
        }
        let index = self.applied_index;
        let Ok(term) = store.term(index) else { return };
        let Ok(conf_state) = store.initial_state().map(|state| state.conf_state) else {
            return;
        };
        let data = match self.map.encode() {
            Ok(data) => data,
            Err(e) => {
                tracing::error!(node = %self.id, "snapshot the map: {e}");
                return;
            }
        };
        let mut snapshot = Snapshot::default();
        snapshot.mut_metadata().index = index;
        snapshot.mut_metadata().term = term;
        snapshot.mut_metadata().set_conf_state(conf_state);
        snapshot.data = Bytes::from(data);
        if let Err(e) = self.raw.mut_store().compact_to(snapshot.clone()) {
            tracing::error!(node = %self.id, "compact the Raft log: {e}");
            return;
        }
        self.out_persist.merge(PersistOps {
            snapshot: Some(snapshot),
            ..PersistOps::default()
        });
    }

    /// xorshift64*: a tiny seeded RNG, enough for tick jitter.
    fn roll_percent(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D) % 100
    }
}

fn encode_message(message: Message) -> Option<(NodeId, Bytes)> {
    let to = NodeId::new(message.to)?;
    match message.write_to_bytes() {
        Ok(bytes) => Some((to, Bytes::from(bytes))),
        Err(e) => {
            tracing::error!(to = %to, "encode a Raft message: {e}");
            None
        }
    }
}

/// A slog logger that forwards raft-rs's records to `tracing` (target `raft`).
pub fn tracing_logger() -> slog::Logger {
    slog::Logger::root(TracingDrain, slog::o!())
}

/// A logger that drops everything (sims run millions of steps).
pub fn discard_logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

#[derive(Debug)]
struct TracingDrain;

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(
        &self,
        record: &slog::Record<'_>,
        values: &slog::OwnedKVList,
    ) -> Result<(), slog::Never> {
        use slog::KV as _;
        let mut fields = KvText(String::new());
        let _ = record.kv().serialize(record, &mut fields);
        let _ = values.serialize(record, &mut fields);
        let fields = fields.0;
        match record.level() {
            slog::Level::Critical | slog::Level::Error => {
                tracing::error!(target: "raft", "{}{fields}", record.msg())
            }
            slog::Level::Warning => tracing::warn!(target: "raft", "{}{fields}", record.msg()),
            slog::Level::Info => tracing::info!(target: "raft", "{}{fields}", record.msg()),
            slog::Level::Debug => tracing::debug!(target: "raft", "{}{fields}", record.msg()),
            slog::Level::Trace => tracing::trace!(target: "raft", "{}{fields}", record.msg()),
        }
        Ok(())
    }
}

struct KvText(String);

impl slog::Serializer for KvText {
    fn emit_arguments(&mut self, key: slog::Key, value: &std::fmt::Arguments<'_>) -> slog::Result {
        use std::fmt::Write as _;
        let _ = write!(self.0, " {key}={value}");
        Ok(())
    }
}
