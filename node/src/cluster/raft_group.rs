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
//! Membership: a new site's founding members all start with the same configured voters and
//! initial map, as the group's state at [`BOOTSTRAP_INDEX`] (not 0: see below); a restarted node
//! reloads its persisted state instead. A node added to a running site starts as a *joiner*
//! (empty `voters`, no persisted state): no Raft configuration, an empty map, nothing persisted;
//! it cannot campaign and only waits for the leader. The leader adds it with
//! [`RaftGroup::propose_add_voter`] (a Raft `ConfChange`, one at a time) and then, as for any
//! follower whose log it cannot serve, sends it its latest snapshot: that brings the map and the
//! voter set. Because every founding member's log starts after `BOOTSTRAP_INDEX`, a leader can
//! never send a joiner entries from index 1 (which it would apply to its empty map and diverge):
//! the joiner is always probed down to a snapshot. [`RaftGroup::propose_remove_voter`] removes
//! a voter. Which node to add or remove (and the map's `AddNode`/`RemoveNode` around it) is the
//! shell's decision from its configured peers (docs/design/site-ha.md, "Membership").
use crate::cluster::ids::NodeId;
use crate::cluster::map::{Applied, MapCommand, PartitionMap, Rejected};
use crate::cluster::raft_storage::{MapStorage, PersistOps, PersistedState};
use crate::cluster::timings::ClusterTimings;
use bytes::Bytes;
use protobuf::Message as _;
use raft::prelude::{
    ConfChange, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType, Message, MessageType,
    Snapshot,
};
use raft::{Config, RawNode, SnapshotStatus, StateRole, Storage};
use std::collections::VecDeque;

/// The log index (and term) of a founding member's bootstrap state: its log starts after it.
/// Above 0 so that a leader never holds the entry before a joiner's empty log (index 0) and must
/// send it a snapshot (as TiKV does with its initial index 5).
pub const BOOTSTRAP_INDEX: u64 = 5;
const BOOTSTRAP_TERM: u64 = 5;

#[derive(Clone, Debug)]
pub struct RaftGroupConfig {
    pub id: NodeId,
    /// The voters at first start: every configured peer, this node included. Empty: this node
    /// joins a running group (see the module docs); ignored on a restart.
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
    /// A membership change refused now (another one is pending, or it would be unsafe).
    #[error("membership change refused: {0}")]
    Membership(String),
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
    ConfChange(ConfChange),
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
    /// A configuration change was applied: snapshot at the next chance, so the snapshot a
    /// joiner is sent lists it as a voter (raft-rs rejects one that does not).
    snapshot_soon: bool,
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
            None if config.voters.is_empty() => {
                // A joiner: no configuration, the caller's (empty) map, nothing to persist until
                // the leader's snapshot arrives (a restart before that simply joins again).
                (MapStorage::joining(), initial_map, 0)
            }
            None => {
                let conf_state =
                    ConfState::from((config.voters.iter().map(|v| v.get()), Vec::<u64>::new()));
                let mut snapshot = Snapshot::default();
                snapshot.mut_metadata().set_conf_state(conf_state);
                snapshot.mut_metadata().index = BOOTSTRAP_INDEX;
                snapshot.mut_metadata().term = BOOTSTRAP_TERM;
                snapshot.data = Bytes::from(
                    initial_map
                        .encode()
                        .map_err(|e| RaftGroupError::Restore(e.to_string()))?,
                );
                let storage = MapStorage::bootstrap(snapshot.clone())
                    .map_err(|e| RaftGroupError::Restore(e.to_string()))?;
                // The bootstrap state is persisted first so a restart never bootstraps again.
                out_persist.snapshot = Some(snapshot);
                out_persist.snapshot_replaces_log = true;
                (storage, initial_map, BOOTSTRAP_INDEX)
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
            snapshot_soon: false,
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

    /// The Raft voters as of the last applied configuration, ascending.
    pub fn voters(&self) -> Vec<NodeId> {
        let mut voters: Vec<NodeId> = self
            .raw
            .raft
            .prs()
            .conf()
            .to_conf_state()
            .voters
            .into_iter()
            .filter_map(NodeId::new)
            .collect();
        voters.sort();
        voters.dedup();
        voters
    }

    /// Whether a Raft configuration change is proposed and not applied yet (raft-rs allows one
    /// at a time; may be a false positive right after an election).
    pub fn membership_change_pending(&self) -> bool {
        self.raw.raft.has_pending_conf() || self.deferred_conf_change()
    }

    /// On the leader: proposes `id` as a new voter. Once applied everywhere, the leader probes
    /// it and, its log being empty, sends it the latest snapshot. Refused while another change
    /// is pending, for an existing voter, and while this leader's log still starts at index 1
    /// (a group bootstrapped before [`BOOTSTRAP_INDEX`] existed, until its first compaction):
    /// it would send the joiner entries instead of the snapshot.
    pub fn propose_add_voter(&mut self, id: NodeId) -> Result<(), ProposeError> {
        self.check_membership_change()?;
        if self.voters().contains(&id) {
            return Err(ProposeError::Membership(format!("{id} is already a voter")));
        }
        if self.raw.store().first_index().unwrap_or(1) <= 1 {
            return Err(ProposeError::Membership(
                "the log still starts at index 1; wait for the first compaction".into(),
            ));
        }
        self.propose_conf_change(id, ConfChangeType::AddNode)
    }

    /// On the leader: proposes removing voter `id`. Refused for the leader itself (transfer
    /// leadership first), for the last voter, and while another change is pending.
    pub fn propose_remove_voter(&mut self, id: NodeId) -> Result<(), ProposeError> {
        self.check_membership_change()?;
        let voters = self.voters();
        if !voters.contains(&id) {
            return Err(ProposeError::Membership(format!("{id} is not a voter")));
        }
        if id == self.id {
            return Err(ProposeError::Membership(
                "the leader does not remove itself; transfer leadership first".into(),
            ));
        }
        if voters.len() <= 1 {
            return Err(ProposeError::Membership("the last voter stays".into()));
        }
        self.propose_conf_change(id, ConfChangeType::RemoveNode)
    }

    fn check_membership_change(&self) -> Result<(), ProposeError> {
        if !self.is_leader() {
            return Err(ProposeError::NotLeader {
                leader_hint: self.leader(),
            });
        }
        if self.membership_change_pending() {
            return Err(ProposeError::Membership(
                "another membership change is pending".into(),
            ));
        }
        if self.transferring_leadership() {
            return Err(ProposeError::Dropped);
        }
        Ok(())
    }

    fn propose_conf_change(
        &mut self,
        id: NodeId,
        change_type: ConfChangeType,
    ) -> Result<(), ProposeError> {
        let mut change = ConfChange::default();
        change.set_change_type(change_type);
        change.node_id = id.get();
        if self.awaiting_advance {
            self.deferred.push_back(Deferred::ConfChange(change));
            return Ok(());
        }
        self.raw
            .propose_conf_change(Vec::new(), change)
            .map_err(|e| ProposeError::Membership(e.to_string()))
    }

    fn deferred_conf_change(&self) -> bool {
        self.deferred
            .iter()
            .any(|d| matches!(d, Deferred::ConfChange(_)))
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
                Deferred::ConfChange(change) => {
                    if let Err(e) = self.raw.propose_conf_change(Vec::new(), change) {
                        tracing::debug!(node = %self.id, "a queued membership change was dropped: {e}");
                    }
                }
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
            Ok(cs) => {
                tracing::info!(node = %self.id, index, voters = ?cs.voters, "Raft voters changed");
                self.raw.mut_store().mem().wl().set_conf_state(cs);
                self.snapshot_soon = true;
            }
            Err(e) => {
                tracing::error!(node = %self.id, index, "skip a Raft configuration change: {e}")
            }
        }
    }

    /// Every `snapshot_every` applied entries: snapshot the map at the applied index, drop the
    /// log up to it, and have the shell persist the snapshot (which compacts its log too).
    fn maybe_compact(&mut self) {
        let store = self.raw.store();
        let due = self.applied_index >= store.snapshot_index() + self.snapshot_every
            || (self.snapshot_soon && self.applied_index > store.snapshot_index());
        if !due {
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
        self.snapshot_soon = false;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::map::PeerSpec;
    use crate::cluster::testing::SimNet;

    fn id(n: u64) -> NodeId {
        NodeId::new(n).expect("test ids are non-zero")
    }

    fn founders() -> Vec<NodeId> {
        vec![id(1), id(2), id(3)]
    }

    fn initial_map() -> PartitionMap {
        let peers = founders().into_iter().map(|id| PeerSpec {
            id,
            addr: format!("10.0.0.{}:7000", id.get()),
            zone: None,
        });
        PartitionMap::bootstrap(8, 1, peers)
    }

    fn add_node(n: u64) -> MapCommand {
        MapCommand::AddNode {
            id: id(n),
            addr: format!("10.0.0.{n}:7000"),
            zone: None,
        }
    }

    /// Valid in order: a rising incarnation always re-registers node 1.
    fn churn(k: u64) -> MapCommand {
        MapCommand::MarkUp {
            id: id(1),
            incarnation: 100 + k,
        }
    }

    fn running_net(seed: u64) -> SimNet {
        let mut net = SimNet::new(&founders(), initial_map(), ClusterTimings::default(), seed)
            .expect("start");
        assert!(
            net.run_until(5_000, |n| n.leader().is_some())
                .expect("step")
        );
        net
    }

    /// Proposes through whoever leads until `command` shows in every running node's log.
    fn commit(net: &mut SimNet, command: &MapCommand) {
        for _ in 0..20 {
            if !net
                .run_until(3_000, |n| n.leader().is_some())
                .expect("step")
            {
                continue;
            }
            let _ = net.propose(command);
            // Every running voter (a joiner not yet added has no log to apply it to).
            let everywhere = |n: &SimNet| {
                n.running().iter().all(|&r| {
                    let voter = n.group(r).is_some_and(|g| g.voters().contains(&r));
                    !voter
                        || n.node(r)
                            .is_some_and(|s| s.committed.iter().any(|c| &c.command == command))
                })
            };
            if net.run_until(1_000, everywhere).expect("step") {
                return;
            }
        }
        panic!("{command:?} never committed everywhere");
    }

    /// Retries a membership change (refused while another is pending or leadership moves)
    /// until every running node's voters are `want`.
    fn change_voters(
        net: &mut SimNet,
        want: &[NodeId],
        mut propose: impl FnMut(&mut SimNet) -> Result<(), ProposeError>,
    ) {
        for _ in 0..20 {
            let _ = net.run_until(3_000, |n| n.leader().is_some());
            let _ = propose(net);
            let done = |n: &SimNet| {
                n.running()
                    .iter()
                    .all(|&r| n.group(r).is_some_and(|g| g.voters() == want))
            };
            if net.run_until(2_000, done).expect("step") {
                return;
            }
        }
        panic!("voters never became {want:?}");
    }

    fn converged(net: &SimNet) -> bool {
        let maps: Vec<&PartitionMap> = net
            .running()
            .iter()
            .filter_map(|&r| net.group(r))
            .map(RaftGroup::map)
            .collect();
        maps.windows(2).all(|w| w[0] == w[1])
    }

    #[test]
    fn a_joiner_alone_stays_passive_with_an_empty_map() {
        let mut net = running_net(5);
        net.add_joiner(id(4)).expect("join");
        net.run_for(5_000).expect("step");
        let joiner = net.group(id(4)).expect("running");
        assert!(!joiner.is_leader());
        assert!(joiner.voters().is_empty());
        assert_eq!(joiner.map().map_version(), 0);
        assert!(joiner.map().nodes().is_empty());
        assert_eq!(joiner.applied_index(), 0);
        // The founders never heard of it: their voters are unchanged.
        for r in founders() {
            assert_eq!(net.group(r).expect("running").voters(), founders());
        }
    }

    #[test]
    fn a_fourth_voter_starts_empty_and_catches_up_by_snapshot() {
        for seed in [1, 2, 3, 4] {
            let mut net = running_net(seed);
            net.set_delay(1, 8);
            net.set_loss(5);
            for k in 0..20 {
                commit(&mut net, &churn(k));
            }
            net.add_joiner(id(4)).expect("join");
            // The map first (placement gives it partitions), then the Raft voter.
            commit(&mut net, &add_node(4));
            let all = [id(1), id(2), id(3), id(4)];
            change_voters(&mut net, &all, |n| n.propose_add_voter(id(4)));
            assert!(
                net.run_until(10_000, converged).expect("step"),
                "seed {seed}: maps never converged"
            );
            let joiner = net.group(id(4)).expect("running");
            assert!(
                joiner.snapshot_index() > BOOTSTRAP_INDEX,
                "seed {seed}: the joiner must be brought in by a snapshot"
            );
            assert!(joiner.map().node(id(4)).is_some());
            assert!(!joiner.map().replicas_on(id(4)).is_empty());
            // It takes part: later commands reach it, and with two founders down the
            // 4-voter group has no quorum (3 of 4), with one down it still commits.
            net.crash(id(1));
            commit(&mut net, &MapCommand::MarkDown { id: id(1) });
            assert!(
                net.run_until(10_000, converged).expect("step"),
                "seed {seed}: maps never converged after the crash"
            );
            net.crash(id(2));
            net.set_loss(0);
            let _ = net.run_until(3_000, |n| n.leader().is_some());
            let before = net.group(id(4)).expect("running").map().clone();
            let _ = net.propose(&churn(999));
            net.run_for(3_000).expect("step");
            assert_eq!(
                net.group(id(4)).expect("running").map(),
                &before,
                "seed {seed}: two of four voters committed a command"
            );
        }
    }

    #[test]
    fn a_removed_voter_no_longer_counts_towards_quorum() {
        let mut net = running_net(9);
        for k in 0..5 {
            commit(&mut net, &churn(k));
        }
        let leader = net.leader().expect("leader");
        let victim = founders()
            .into_iter()
            .find(|&n| n != leader)
            .expect("a follower");
        let rest: Vec<NodeId> = founders().into_iter().filter(|&n| n != victim).collect();
        change_voters(&mut net, &rest, |n| n.propose_remove_voter(victim));
        // The map's RemoveNode is the shell's business; here only Raft: with the victim gone
        // the two remaining voters are a quorum on their own.
        net.remove(victim);
        commit(&mut net, &churn(50));
        assert!(net.run_until(5_000, converged).expect("step"));
        for r in net.running() {
            assert_eq!(net.group(r).expect("running").voters(), rest);
        }
    }

    #[test]
    fn membership_changes_are_refused_when_unsafe() {
        let mut net = running_net(13);
        commit(&mut net, &churn(1));
        let leader = net.leader().expect("leader");
        let cases: Vec<(NodeId, bool, &str)> = vec![
            (leader, false, "the leader itself"),
            (id(9), false, "not a voter"),
        ];
        for (target, add, why) in cases {
            let result = if add {
                net.propose_add_voter(target)
            } else {
                net.propose_remove_voter(target)
            };
            assert!(
                matches!(result, Err(ProposeError::Membership(_))),
                "{why}: {result:?}"
            );
        }
        assert!(matches!(
            net.propose_add_voter(leader),
            Err(ProposeError::Membership(_))
        ));
        // One change at a time: a second proposal while the first is pending is refused.
        net.propose_add_voter(id(4)).expect("first change");
        assert!(matches!(
            net.propose_add_voter(id(5)),
            Err(ProposeError::Membership(_))
        ));
    }
}
