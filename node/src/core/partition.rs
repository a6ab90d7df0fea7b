//! One partition replica's state machine: applies client commands at a given `now_ms`, assigns
//! versions, keeps TTLs, and appends every committed change to the partition's change log.
//!
//! Expiry is evaluated by each replica against the time it is handed; it never creates a change
//! record (the deadline itself was replicated with the write). An expired value turns into a
//! tombstone that keeps its version, so a late concurrent write is resolved against it the same
//! way everywhere, and the tombstone is purged after `tombstone_retention_ms`.
use super::change_log::{ChangeLog, record_bytes};
pub use super::change_log::{ChangeRecord, LogTruncated, SeqGap};
use super::command::{
    Command, CommandError, CommandResult, Expiry, Response, SetCondition, TtlUnit, WanChangesPage,
    WanDumpPage,
};
use super::glob::glob_match;
use super::integer::parse_strict_i64;
use super::keyspace::PartitionId;
use crate::limits::Limits;
use bytes::Bytes;
use foldhash::fast::FixedState;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use tern_conflict::{
    ConflictResolver, Hlc, HlcError, KeyspaceResolvers, Outcome, PnCounter, SiteId, Value, Version,
    Versioned, Writer, reconcile_into,
};

#[derive(Clone, Debug)]
pub struct PartitionConfig {
    pub partition: PartitionId,
    pub site: SiteId,
    pub limits: Limits,
    /// Seed for the in-memory hash table's hasher: chosen randomly by the shell (so clients
    /// cannot aim collisions at it), from the run's seed by sims/.
    pub hash_seed: u64,
}

/// A key's place in SCAN order (and in the WAN repair digest tree): the top 48 bits of the key's
/// FNV-1a hash after a MurmurHash3 `fmix64` finalizer. Stable across processes and nodes (unlike
/// the table's seeded hasher), so a cursor stays meaningful after a failover. The finalizer
/// matters: FNV's top bits barely move when only a key's last bytes differ, which crowded
/// `key:1..key:100000` into 15% of the repair tree's leaves.
pub fn scan_position(key: &[u8]) -> u64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = key.iter().fold(FNV_OFFSET, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    });
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^= hash >> 33;
    hash >> 16
}

/// The largest scan position plus one; cursors encode positions below it.
pub const SCAN_POSITION_END: u64 = 1 << 48;

#[derive(Debug)]
pub struct PartitionCore {
    config: PartitionConfig,
    hlc: Hlc,
    /// Every stored entry: live values, values whose TTL passed but are not swept yet, and
    /// tombstones. Boxed: the table keeps between 7/16 and 7/8 of its slots full, and an empty
    /// slot costs its full width; at 40 bytes a slot instead of 184 the table's own overhead
    /// stays small whatever its load (at 15k keys in a partition, just past a doubling: ~408 →
    /// ~220 bytes per key for slots and boxes; a node's RSS per key fell 897 → 678 with the
    /// smaller version vector), for one more pointer to follow per lookup.
    entries: HashMap<Bytes, Box<Versioned>, FixedState>,
    /// All stored keys in SCAN order.
    scan_index: BTreeSet<(u64, Bytes)>,
    /// Live values with a TTL, by deadline: when due they turn into tombstones.
    value_deadlines: BTreeSet<(u64, Bytes)>,
    /// Tombstones by purge time: when due they are removed for good.
    purge_deadlines: BTreeSet<(u64, Bytes)>,
    /// Entries holding a value (not a tombstone), including not-yet-swept expired ones.
    value_entries: usize,
    /// [`stored_bytes`] of every entry, tombstones included: what this copy of the partition
    /// costs, summed by the shell against the node's `data_bytes_max`.
    data_bytes: usize,
    /// Input from the shell: the node is over `data_bytes_max`; client writes that store a value
    /// are refused ([`CommandError::OutOfMemory`]).
    memory_full: bool,
    /// Client writes refused because of [`Self::memory_full`] (for the node's metrics).
    memory_writes_refused: u64,
    log: ChangeLog,
    /// Which resolver settles concurrent versions of which key, for [`Command::WanApply`]. Only
    /// the primary uses it: backups replicate the resolved entry.
    resolvers: Arc<KeyspaceResolvers>,
    /// The lineage of this copy's data line: its writes are versioned and its increments
    /// counted under `Writer { site, lineage }`. Stamped from the HLC by the first write of a
    /// line that has none, and mirrored by backups from their primary's replication messages,
    /// so a promoted backup writes on as the same writer while a copy that starts empty (a
    /// wiped site) never does (see [`Writer`]).
    lineage: Option<u64>,
    /// The WAN gateway's hold on the change log (`overflow = "block_writes"`), if one was asked.
    wan_hold: Option<WanHold>,
    /// Local writes refused because of [`Self::wan_hold`] (for the node's metrics).
    wan_writes_refused: u64,
}

/// "The WAN gateway still needs every record after `after_seq`, until `until_ms`": set by a
/// [`Command::WanChanges`] read with `hold_ms > 0`. While it lasts, a local write that would
/// make the change log drop one of those records is refused ([`CommandError::WanBacklogFull`]).
///
/// Only local writes are refused. A remote entry (`WanApply`) still commits: refusing it could
/// deadlock two sites whose backlogs to each other are both full (each waits for the other's
/// acknowledgements, which need the applies it refuses); a record it pushes out is found
/// missing by the gateway, which marks the partition for repair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WanHold {
    pub after_seq: u64,
    pub until_ms: u64,
}

impl PartitionCore {
    pub fn new(config: PartitionConfig) -> Self {
        let hlc = Hlc::new(config.limits.hlc_offset_ms_max);
        let log = ChangeLog::new(config.partition, config.limits.change_log_bytes_max);
        let entries = HashMap::with_hasher(FixedState::with_seed(config.hash_seed));
        Self {
            config,
            hlc,
            entries,
            scan_index: BTreeSet::new(),
            value_deadlines: BTreeSet::new(),
            purge_deadlines: BTreeSet::new(),
            value_entries: 0,
            data_bytes: 0,
            memory_full: false,
            memory_writes_refused: 0,
            log,
            resolvers: Arc::default(),
            lineage: None,
            wan_hold: None,
            wan_writes_refused: 0,
        }
    }

    /// Use `resolvers` for [`Command::WanApply`] instead of the default (every key
    /// last-writer-wins). Kept out of [`PartitionConfig`] so the many places that build a
    /// config need not care; the shell builds one table per node and shares it.
    #[must_use]
    pub fn with_resolvers(mut self, resolvers: Arc<KeyspaceResolvers>) -> Self {
        self.resolvers = resolvers;
        self
    }

    pub fn partition(&self) -> PartitionId {
        self.config.partition
    }

    /// Execute one client command at physical time `now_ms` (unix milliseconds).
    pub fn handle_command(&mut self, command: Command, now_ms: u64) -> CommandResult {
        if self.memory_full && matches!(command, Command::Set { .. } | Command::IncrBy { .. }) {
            // Like Redis's `noeviction`: refuse what stores a value, before looking at the key
            // (so a write that would shrink the data is refused too: the rule stays simple to
            // predict); reads, DEL, EXPIRE and FLUSHALL still run and are how room is made.
            self.memory_writes_refused += 1;
            return Err(CommandError::OutOfMemory);
        }
        match command {
            Command::Get { key } => Ok(Response::Value(self.live(&key, now_ms).map(render))),
            Command::Set {
                key,
                value,
                condition,
                expiry,
                get,
            } => self.set(key, value, condition, expiry, get, now_ms),
            Command::Del { key } => self.del(key, now_ms),
            Command::Exists { key } => {
                Ok(Response::Int(i64::from(self.live(&key, now_ms).is_some())))
            }
            Command::IncrBy { key, delta } => self.incr_by(key, delta, now_ms),
            Command::Expire { key, expiry } => self.expire(key, expiry, now_ms),
            Command::Ttl { key, unit } => Ok(Response::Int(self.ttl(&key, unit, now_ms))),
            Command::Scan {
                from,
                count,
                pattern,
            } => Ok(self.scan(from, count, pattern.as_deref(), now_ms)),
            Command::DbSize => Ok(Response::Int(
                i64::try_from(self.live_keys_at(now_ms)).unwrap_or(i64::MAX),
            )),
            Command::ExpiringKeys => Ok(Response::Int(
                i64::try_from(self.expiring_keys_at(now_ms)).unwrap_or(i64::MAX),
            )),
            Command::FlushAll => {
                self.flush_all(now_ms)?;
                Ok(Response::Ok)
            }
            Command::WanApply {
                key,
                entry,
                resolver,
            } => self.wan_apply(key, entry, resolver.as_deref(), now_ms),
            Command::WanChanges {
                after_seq,
                records_max,
                bytes_max,
                hold_ms,
            } => {
                self.hold_for_wan(after_seq, hold_ms, now_ms);
                Ok(Response::WanChanges(self.wan_changes(
                    after_seq,
                    records_max,
                    bytes_max,
                )))
            }
            Command::WanDump {
                from_position,
                entries_max,
                bytes_max,
            } => Ok(Response::WanDump(self.wan_dump(
                from_position,
                entries_max,
                bytes_max,
            ))),
        }
    }

    /// Periodic housekeeping at `now_ms`: turn due values into tombstones, then purge tombstones
    /// past retention; at most `expiry_sweep_keys_max` keys per call so a tick stays short.
    pub fn handle_tick(&mut self, now_ms: u64) {
        let mut budget = self.config.limits.expiry_sweep_keys_max;
        while budget > 0 {
            let Some((deadline, key)) = first_due(&self.value_deadlines, now_ms) else {
                break;
            };
            self.expire_value(&key, deadline);
            budget -= 1;
        }
        while budget > 0 {
            let Some((_, key)) = first_due(&self.purge_deadlines, now_ms) else {
                break;
            };
            self.purge(&key);
            budget -= 1;
        }
    }

    /// Sequence number of the latest committed change (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.log.last_seq()
    }

    /// Retained change records with `seq > after_seq`, oldest first.
    pub fn changes_since(
        &self,
        after_seq: u64,
    ) -> Result<impl Iterator<Item = &ChangeRecord>, LogTruncated> {
        self.log.since(after_seq)
    }

    /// The WAN gateway's hold on the change log, if one is live at `now_ms`.
    pub fn wan_hold(&self, now_ms: u64) -> Option<WanHold> {
        self.wan_hold.filter(|hold| now_ms < hold.until_ms)
    }

    /// Local writes refused so far because the WAN gateway held the change log.
    pub fn wan_writes_refused(&self) -> u64 {
        self.wan_writes_refused
    }

    /// The stored entry for `key`, tombstones and expired entries included (for replication,
    /// checkers and tests; clients go through `handle_command`).
    pub fn entry(&self, key: &[u8]) -> Option<&Versioned> {
        self.entries.get(key).map(|entry| &**entry)
    }

    /// What the stored entries cost, by [`stored_bytes`].
    pub fn data_bytes(&self) -> usize {
        self.data_bytes
    }

    /// Client writes refused so far because the node was over its data cap.
    pub fn memory_writes_refused(&self) -> u64 {
        self.memory_writes_refused
    }

    /// Whether the shell last said the node is over its data cap.
    pub fn set_memory_full(&mut self, full: bool) {
        self.memory_full = full;
    }

    /// Entries holding a value, including ones whose TTL has passed but that no command or tick
    /// has swept yet (DBSIZE is exact: it uses [`Self::live_keys_at`]).
    pub fn live_keys(&self) -> usize {
        self.value_entries
    }

    /// Keys that are live at `now_ms`.
    pub fn live_keys_at(&self, now_ms: u64) -> usize {
        self.value_entries - self.values_due_at(now_ms)
    }

    /// Live keys with a TTL at `now_ms` (expired ones not swept yet are not counted).
    pub fn expiring_keys_at(&self, now_ms: u64) -> usize {
        self.value_deadlines.len() - self.values_due_at(now_ms)
    }

    /// Values whose TTL has passed at `now_ms` but that the sweep has not removed yet.
    fn values_due_at(&self, now_ms: u64) -> usize {
        self.value_deadlines
            .range(..(now_ms.saturating_add(1), Bytes::new()))
            .count()
    }

    // --- entries from other sites (the WAN sink's path) ---

    /// Apply an entry another site committed: reconcile it with the local entry (causal order
    /// first, `resolver` only for real concurrency). If the stored entry changes, it is committed
    /// like a local write — a change record with the merged entry, so backups replicate it and
    /// the delegators relay it (they never ship a record back to its origin). A remote HLC too
    /// far ahead is reported, not absorbed, and the entry still applies: convergence rests on
    /// version vectors, not on clocks.
    pub fn apply_remote(
        &mut self,
        key: Bytes,
        incoming: Versioned,
        resolver: &dyn ConflictResolver,
        now_ms: u64,
    ) -> RemoteApplied {
        let clock = self.hlc.observe(incoming.version.hlc, now_ms).map(|_| ());
        let mut slot = self.entries.get(&key).map(|entry| Versioned::clone(entry));
        let outcome = reconcile_into(resolver, &key, &mut slot, incoming);
        let seq = match (outcome, slot) {
            (Outcome::Unchanged, _) | (_, None) => None,
            (_, Some(entry)) => {
                self.store(&key, entry.clone());
                Some(self.log.append(key, entry))
            }
        };
        RemoteApplied {
            outcome,
            clock,
            seq,
        }
    }

    /// [`Command::WanApply`]: [`Self::apply_remote`] with the named resolver (else the
    /// keyspace's resolver for `key`), after the same size checks a client write gets.
    fn wan_apply(
        &mut self,
        key: Bytes,
        entry: Versioned,
        resolver: Option<&str>,
        now_ms: u64,
    ) -> CommandResult {
        self.check_key(&key)?;
        let limit = self.config.limits.value_bytes_max;
        if let Value::Bytes(value) = &entry.value
            && value.len() > limit
        {
            return Err(CommandError::ValueTooLarge {
                len: value.len(),
                max: limit,
            });
        }
        let resolver = match resolver {
            Some(name) => {
                self.resolvers
                    .by_name(name)
                    .map_err(|_| CommandError::UnknownResolver {
                        name: name.to_owned(),
                    })?
            }
            None => Arc::clone(self.resolvers.for_key(&key)),
        };
        let applied = self.apply_remote(key, entry, resolver.as_ref(), now_ms);
        Ok(Response::WanApplied {
            changed: applied.seq.is_some(),
            conflict: applied.is_conflict(),
            clock_rejected: applied.clock.is_err(),
        })
    }

    /// [`Command::WanChanges`] with `hold_ms > 0`: hold the log after `after_seq` until
    /// `now_ms + hold_ms` (at most `wan_hold_ms_max`). The latest read replaces the hold, so it
    /// follows the gateway's cursor forward; `hold_ms = 0` (another policy, or another reader)
    /// leaves it to expire.
    fn hold_for_wan(&mut self, after_seq: u64, hold_ms: u32, now_ms: u64) {
        let hold_ms = u64::from(hold_ms).min(self.config.limits.wan_hold_ms_max);
        if hold_ms == 0 {
            return;
        }
        self.wan_hold = Some(WanHold {
            after_seq,
            until_ms: now_ms.saturating_add(hold_ms),
        });
    }

    /// Refuse a local write whose change records (`added_bytes` in all) would make the log
    /// drop a record the WAN gateway holds. Called before anything is applied.
    ///
    /// A write that alone exceeds the whole log (a value near `change_log_bytes_max`, or
    /// FLUSHALL of more keys than the log holds) is refused only while the gateway has unread
    /// records: once it has read everything before it, the write goes in and drops only its
    /// own older records, which the gateway finds missing and repairs. So it waits for the WAN
    /// like any write, but never forever.
    fn check_wan_hold(&mut self, added_bytes: usize, now_ms: u64) -> Result<(), CommandError> {
        let Some(hold) = self.wan_hold else {
            return Ok(());
        };
        if now_ms >= hold.until_ms {
            // Lapsed: the gateway stopped reading (dead, moved, or no longer blocking).
            self.wan_hold = None;
            return Ok(());
        }
        if self.log.would_drop_after(hold.after_seq, added_bytes) {
            self.wan_writes_refused += 1;
            return Err(CommandError::WanBacklogFull);
        }
        Ok(())
    }

    /// [`Command::WanChanges`]: a page of the change log after `after_seq`. No limit of its own
    /// is needed: the retained log is bounded by `change_log_bytes_max`.
    fn wan_changes(&self, after_seq: u64, records_max: u32, bytes_max: u32) -> WanChangesPage {
        let last_seq = self.log.last_seq();
        let mut records = Vec::new();
        if after_seq >= last_seq {
            return WanChangesPage { records, last_seq };
        }
        // A cursor the log no longer reaches reads from the oldest retained record: the caller
        // sees the gap (first seq > after_seq + 1) and repairs.
        let retained = self
            .log
            .since(after_seq)
            .or_else(|truncated| self.log.since(truncated.oldest_retained.saturating_sub(1)));
        let records_max = usize::try_from(records_max).unwrap_or(usize::MAX).max(1);
        let bytes_max = usize::try_from(bytes_max).unwrap_or(usize::MAX);
        let mut bytes = 0usize;
        for record in retained.into_iter().flatten() {
            let size = page_bytes(record);
            if records.len() >= records_max || (!records.is_empty() && bytes + size > bytes_max) {
                break;
            }
            bytes += size;
            records.push(record.clone());
        }
        WanChangesPage { records, last_seq }
    }

    /// [`Command::WanDump`]: stored entries from `from_position` on, in scan order. The page
    /// bounds only cut between positions (a cursor cannot resume between keys sharing one), so
    /// a page may pass them by the few entries of one position.
    fn wan_dump(&self, from_position: u64, entries_max: u32, bytes_max: u32) -> WanDumpPage {
        let entries_max = usize::try_from(entries_max).unwrap_or(usize::MAX).max(1);
        let bytes_max = usize::try_from(bytes_max).unwrap_or(usize::MAX);
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        let mut last_position = None;
        for (position, key) in self.scan_index.range((from_position, Bytes::new())..) {
            let Some(entry) = self.entries.get(key) else {
                continue;
            };
            let size = entry_bytes(key, entry);
            let full = entries.len() >= entries_max || bytes.saturating_add(size) > bytes_max;
            if !entries.is_empty() && full && last_position != Some(*position) {
                return WanDumpPage {
                    entries,
                    next: Some(*position),
                };
            }
            bytes = bytes.saturating_add(size);
            last_position = Some(*position);
            entries.push((*position, key.clone(), Versioned::clone(entry)));
        }
        WanDumpPage {
            entries,
            next: None,
        }
    }

    // --- replication (backup side) and snapshots ---

    /// Apply a change record the primary committed, keeping its seq so this replica's log
    /// continues with the same numbering if it is promoted. Records carry full state, so this is
    /// a plain replace; a record that does not directly follow the last one is refused.
    pub fn apply_replicated(&mut self, record: &ChangeRecord) -> Result<(), SeqGap> {
        self.apply_replicated_owned(record.clone())
    }

    /// [`Self::apply_replicated`] taking the record, which then moves into the change log
    /// instead of being copied (the backup's hot path: one record per replicated write).
    pub fn apply_replicated_owned(&mut self, record: ChangeRecord) -> Result<(), SeqGap> {
        let expected = self.log.last_seq() + 1;
        if record.seq != expected {
            return Err(SeqGap {
                expected,
                got: record.seq,
            });
        }
        // Keep the clock ahead of every version this replica holds, so its own writes after a
        // promotion are newer than anything it replicated.
        let _ = self
            .hlc
            .observe(record.entry.version.hlc, record.entry.version.hlc.wall_ms);
        let ChangeRecord {
            seq, key, entry, ..
        } = record;
        self.store(&key, entry.clone());
        self.log.append_at(seq, key, entry)
    }

    /// Every stored entry (tombstones included) in SCAN order, for a snapshot that brings a
    /// replica up to `last_seq()` when the change log no longer reaches back far enough.
    pub fn snapshot_entries(&self) -> impl Iterator<Item = (&Bytes, &Versioned)> {
        self.scan_index
            .iter()
            .filter_map(|(_, key)| self.entries.get_key_value(key))
            .map(|(key, entry)| (key, &**entry))
    }

    /// Replace all state with a snapshot taken at `last_seq`; the change log restarts after it.
    pub fn install_snapshot(
        &mut self,
        entries: impl IntoIterator<Item = (Bytes, Versioned)>,
        last_seq: u64,
    ) {
        self.entries.clear();
        self.scan_index.clear();
        self.value_deadlines.clear();
        self.purge_deadlines.clear();
        self.value_entries = 0;
        self.data_bytes = 0;
        for (key, entry) in entries {
            let _ = self
                .hlc
                .observe(entry.version.hlc, entry.version.hlc.wall_ms);
            self.store(&key, entry);
        }
        self.log.reset_to(last_seq);
    }

    // --- commands ---

    fn set(
        &mut self,
        key: Bytes,
        value: Bytes,
        condition: SetCondition,
        expiry: Option<Expiry>,
        get: bool,
        now_ms: u64,
    ) -> CommandResult {
        self.check_key(&key)?;
        let limit = self.config.limits.value_bytes_max;
        if value.len() > limit {
            return Err(CommandError::ValueTooLarge {
                len: value.len(),
                max: limit,
            });
        }
        // Redis validates the expiry before looking at the key.
        let deadline = match expiry {
            None => Deadline::None,
            Some(Expiry::Keep) => Deadline::Keep,
            Some(Expiry::InMs(ms)) => Deadline::At(
                self.deadline_after(ms, now_ms)
                    .ok_or(CommandError::InvalidExpire { command: "set" })?,
            ),
            Some(Expiry::AtMs(at)) => match u64::try_from(at) {
                Ok(at) if at > 0 && at <= now_ms.saturating_add(self.config.limits.ttl_ms_max) => {
                    Deadline::At(at)
                }
                _ => return Err(CommandError::InvalidExpire { command: "set" }),
            },
        };
        let current = self.live(&key, now_ms);
        let old = if get { current.map(render) } else { None };
        let exists = current.is_some();
        let kept_deadline = current.and_then(|e| e.expires_at_ms);
        let applies = match condition {
            SetCondition::Always => true,
            SetCondition::IfAbsent => !exists,
            SetCondition::IfPresent => exists,
        };
        let reply = if get {
            Response::Value(old)
        } else if applies {
            Response::Ok
        } else {
            Response::Value(None)
        };
        if !applies {
            return Ok(reply);
        }
        let expires_at_ms = match deadline {
            Deadline::None => None,
            Deadline::Keep => kept_deadline,
            Deadline::At(at) if at <= now_ms => {
                // Already expired (EXAT/PXAT in the past): Redis deletes the key.
                if exists {
                    self.write_tombstone(key, now_ms)?;
                }
                return Ok(reply);
            }
            Deadline::At(at) => Some(at),
        };
        self.write(key, Value::Bytes(value), expires_at_ms, now_ms)?;
        Ok(reply)
    }

    fn del(&mut self, key: Bytes, now_ms: u64) -> CommandResult {
        if self.live(&key, now_ms).is_none() {
            return Ok(Response::Int(0));
        }
        self.write_tombstone(key, now_ms)?;
        Ok(Response::Int(1))
    }

    fn incr_by(&mut self, key: Bytes, delta: i64, now_ms: u64) -> CommandResult {
        self.check_key(&key)?;
        let site = self.config.site;
        let (mut counter, expires_at_ms) = match self.live(&key, now_ms) {
            None => (PnCounter::new(), None),
            Some(entry) => {
                let counter = match &entry.value {
                    Value::Counter(counter) => counter.clone(),
                    // Attribute the starting value to the site that wrote it, so the same
                    // conversion at two sites merges to the right sum.
                    Value::Bytes(bytes) => {
                        let start = parse_strict_i64(bytes).ok_or(CommandError::NotAnInteger)?;
                        PnCounter::starting_at(entry.version.origin, start)
                    }
                    Value::Tombstone => PnCounter::new(),
                };
                (counter, entry.expires_at_ms)
            }
        };
        let writer = Writer::new(site, self.lineage_for_write(now_ms));
        let new_value = counter
            .add(writer, delta)
            .map_err(|_| CommandError::Overflow)?;
        self.write(key, Value::Counter(counter), expires_at_ms, now_ms)?;
        Ok(Response::Int(new_value))
    }

    /// This data line's lineage, stamped now if it has none yet. Only uniqueness matters, not
    /// order: a new line is taken for an old one only if its HLC reads exactly the stamp
    /// (millisecond and logical count) the old one had when it first wrote, even if a clock
    /// step put the new line's HLC behind the old one. Lineage 0 is left to converted strings.
    fn lineage_for_write(&mut self, now_ms: u64) -> u64 {
        match self.lineage {
            Some(lineage) => lineage,
            None => {
                let lineage = self.hlc.now(now_ms).stamp().max(1);
                self.lineage = Some(lineage);
                lineage
            }
        }
    }

    /// The lineage this copy writes under, if it has written (or its primary had).
    pub fn lineage(&self) -> Option<u64> {
        self.lineage
    }

    /// A backup takes its primary's lineage with each replication message it accepts: its data
    /// is the primary's, so once promoted it writes on as the same writer.
    pub fn set_lineage(&mut self, lineage: Option<u64>) {
        self.lineage = lineage;
    }

    fn expire(&mut self, key: Bytes, expiry: Expiry, now_ms: u64) -> CommandResult {
        let invalid = CommandError::InvalidExpire { command: "expire" };
        let ttl_ms_max = self.config.limits.ttl_ms_max;
        let deadline = match expiry {
            Expiry::InMs(ms) if ms <= 0 => None,
            Expiry::InMs(ms) => Some(self.deadline_after(ms, now_ms).ok_or(invalid)?),
            Expiry::AtMs(at) => match u64::try_from(at) {
                Ok(at) if at > now_ms.saturating_add(ttl_ms_max) => return Err(invalid),
                Ok(at) if at > now_ms => Some(at),
                _ => None,
            },
            Expiry::Keep => return Err(invalid),
        };
        let Some(entry) = self.live(&key, now_ms) else {
            return Ok(Response::Int(0));
        };
        match deadline {
            // A deadline not in the future deletes the key, as in Redis.
            None => self.write_tombstone(key, now_ms)?,
            Some(at) => {
                let value = entry.value.clone();
                self.write(key, value, Some(at), now_ms)?;
            }
        }
        Ok(Response::Int(1))
    }

    fn ttl(&mut self, key: &[u8], unit: TtlUnit, now_ms: u64) -> i64 {
        let Some(entry) = self.live(key, now_ms) else {
            return -2;
        };
        let Some(deadline) = entry.expires_at_ms else {
            return -1;
        };
        let remaining_ms = deadline.saturating_sub(now_ms);
        let remaining = match unit {
            TtlUnit::Milliseconds => remaining_ms,
            TtlUnit::Seconds => remaining_ms.saturating_add(500) / 1000,
        };
        i64::try_from(remaining).unwrap_or(i64::MAX)
    }

    fn scan(&self, from: u64, count: usize, pattern: Option<&[u8]>, now_ms: u64) -> Response {
        // COUNT bounds the work (entries examined), as in Redis; a step may return no keys.
        let examine_max = count.clamp(1, self.config.limits.scan_count_max.max(1));
        let mut keys = Vec::new();
        let mut examined = 0usize;
        let mut last_position = None;
        for (position, key) in self.scan_index.range((from, Bytes::new())..) {
            // Never split keys sharing a position across steps: the cursor could not resume
            // between them.
            if examined >= examine_max && last_position != Some(*position) {
                return Response::ScanPage {
                    keys,
                    next: Some(*position),
                };
            }
            examined += 1;
            last_position = Some(*position);
            let live = self
                .entries
                .get(key)
                .is_some_and(|e| !e.is_tombstone() && !e.is_expired(now_ms));
            if live && pattern.is_none_or(|p| glob_match(p, key)) {
                keys.push(key.clone());
            }
        }
        Response::ScanPage { keys, next: None }
    }

    fn flush_all(&mut self, now_ms: u64) -> Result<(), CommandError> {
        let stored: Vec<Bytes> = self.scan_index.iter().map(|(_, key)| key.clone()).collect();
        let mut keys = Vec::new();
        for key in stored {
            if self.live(&key, now_ms).is_some() {
                keys.push(key);
            }
        }
        // All or nothing for the WAN hold: size every tombstone before writing the first.
        let tombstones_bytes = keys
            .iter()
            .map(|key| record_bytes(key, &Value::Tombstone))
            .sum();
        self.check_wan_hold(tombstones_bytes, now_ms)?;
        for key in keys {
            self.write_tombstone(key, now_ms)?;
        }
        Ok(())
    }

    // --- state helpers ---

    fn check_key(&self, key: &[u8]) -> Result<(), CommandError> {
        let max = self.config.limits.key_bytes_max;
        if key.len() > max {
            return Err(CommandError::KeyTooLarge {
                len: key.len(),
                max,
            });
        }
        Ok(())
    }

    /// `now + ms` for a positive TTL within `ttl_ms_max`; `None` if invalid.
    fn deadline_after(&self, ms: i64, now_ms: u64) -> Option<u64> {
        let ms = u64::try_from(ms)
            .ok()
            .filter(|&ms| ms > 0 && ms <= self.config.limits.ttl_ms_max)?;
        now_ms.checked_add(ms)
    }

    /// The live entry for `key` at `now_ms`; sweeps it first if its TTL has passed.
    fn live(&mut self, key: &[u8], now_ms: u64) -> Option<&Versioned> {
        let deadline = match self.entries.get(key) {
            None => return None,
            Some(entry) if entry.is_tombstone() => return None,
            Some(entry) => entry.expires_at_ms.filter(|&at| at <= now_ms),
        };
        if let Some(deadline) = deadline {
            self.expire_value(key, deadline);
            return None;
        }
        self.entries.get(key).map(|entry| &**entry)
    }

    /// Commit a client write of `value` to `key`, unless the WAN gateway's hold refuses it
    /// (then nothing changes: not the entry, the clock, nor the log).
    fn write(
        &mut self,
        key: Bytes,
        value: Value,
        expires_at_ms: Option<u64>,
        now_ms: u64,
    ) -> Result<(), CommandError> {
        self.check_wan_hold(record_bytes(&key, &value), now_ms)?;
        let writer = Writer::new(self.config.site, self.lineage_for_write(now_ms));
        let hlc = self.hlc.now(now_ms);
        let entry = self.store_with(&key, |previous| Versioned {
            value,
            version: match previous {
                Some(previous) => previous.version.successor(writer, hlc),
                None => Version::first(writer, hlc),
            },
            expires_at_ms,
        });
        self.log.append(key, entry);
        Ok(())
    }

    fn write_tombstone(&mut self, key: Bytes, now_ms: u64) -> Result<(), CommandError> {
        let purge_at = now_ms.saturating_add(self.config.limits.tombstone_retention_ms);
        self.write(key, Value::Tombstone, Some(purge_at), now_ms)
    }

    /// Replace `key`'s entry, keeping the indexes and counts in step.
    fn store(&mut self, key: &Bytes, entry: Versioned) {
        self.put(key, |_| entry, |_| ());
    }

    /// Replace `key`'s entry with the one `make` builds from the current one (if any); returns
    /// a copy for the change log.
    fn store_with(
        &mut self,
        key: &Bytes,
        make: impl FnOnce(Option<&Versioned>) -> Versioned,
    ) -> Versioned {
        self.put(key, make, Versioned::clone)
    }

    /// The one place entries are replaced: `make` builds the new entry from the current one,
    /// `copy` takes what the caller needs of it before it is stored. One lookup: on the write
    /// path the key's bytes and slot are cold (many keys per partition), so each extra probe is
    /// a cache miss. An overwrite keeps the map's own key, so the caller's key is not cloned
    /// (nor promoted to a shared buffer) here and can move into the change log.
    fn put<R>(
        &mut self,
        key: &Bytes,
        make: impl FnOnce(Option<&Versioned>) -> Versioned,
        copy: impl FnOnce(&Versioned) -> R,
    ) -> R {
        let slot = self.entries.get_mut(key);
        let entry = make(slot.as_deref().map(|entry| &**entry));
        let copied = copy(&entry);
        let new_index = deadline_index(&entry);
        let new_is_value = !entry.is_tombstone();
        let new_bytes = stored_bytes(key, &entry.value);
        let old = match slot {
            Some(slot) => Some(std::mem::replace(&mut **slot, entry)),
            None => {
                self.entries.insert(key.clone(), Box::new(entry));
                self.scan_index.insert((scan_position(key), key.clone()));
                None
            }
        };
        self.data_bytes += new_bytes;
        if let Some(old) = &old {
            self.data_bytes = self
                .data_bytes
                .saturating_sub(stored_bytes(key, &old.value));
            self.unindex(key, old);
            if !old.is_tombstone() {
                self.value_entries -= 1;
            }
        }
        if new_is_value {
            self.value_entries += 1;
        }
        match new_index {
            Some((DeadlineKind::ValueExpiry, at)) => self.value_deadlines.insert((at, key.clone())),
            Some((DeadlineKind::Purge, at)) => self.purge_deadlines.insert((at, key.clone())),
            None => false,
        };
        copied
    }

    fn unindex(&mut self, key: &Bytes, old: &Versioned) {
        match deadline_index(old) {
            Some((DeadlineKind::ValueExpiry, at)) => {
                self.value_deadlines.remove(&(at, key.clone()))
            }
            Some((DeadlineKind::Purge, at)) => self.purge_deadlines.remove(&(at, key.clone())),
            None => false,
        };
    }

    /// Turn the value at `key`, whose deadline `deadline` has passed, into a tombstone with the
    /// same version. Not a write: no new version, no change record.
    fn expire_value(&mut self, key: &[u8], deadline: u64) {
        let Some((key, mut entry)) = self.entries.remove_entry(key) else {
            return;
        };
        debug_assert_eq!(
            entry.expires_at_ms,
            Some(deadline),
            "swept value must be due"
        );
        self.value_entries -= 1;
        self.unindex(&key, &entry);
        let purge_at = deadline.saturating_add(self.config.limits.tombstone_retention_ms);
        // The same version, in the same box.
        self.data_bytes = self
            .data_bytes
            .saturating_sub(stored_bytes(&key, &entry.value))
            + stored_bytes(&key, &Value::Tombstone);
        entry.value = Value::Tombstone;
        entry.expires_at_ms = Some(purge_at);
        self.purge_deadlines.insert((purge_at, key.clone()));
        self.entries.insert(key, entry);
    }

    /// Remove a tombstone past retention for good.
    fn purge(&mut self, key: &[u8]) {
        let Some((key, entry)) = self.entries.remove_entry(key) else {
            return;
        };
        debug_assert!(entry.is_tombstone(), "only tombstones are purged");
        self.data_bytes = self
            .data_bytes
            .saturating_sub(stored_bytes(&key, &entry.value));
        self.unindex(&key, &entry);
        self.scan_index.remove(&(scan_position(&key), key));
    }
}

/// What [`PartitionCore::apply_remote`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteApplied {
    pub outcome: Outcome,
    /// `Err` when the remote HLC was beyond `hlc_offset_ms_max` (counted and logged by callers).
    pub clock: Result<(), HlcError>,
    /// The change record's seq when the stored entry changed.
    pub seq: Option<u64>,
}

impl RemoteApplied {
    /// A real conflict that the resolver settled (for `tern_wan_conflicts_total`).
    pub fn is_conflict(&self) -> bool {
        matches!(self.outcome, Outcome::Resolved(_))
    }
}

enum Deadline {
    None,
    Keep,
    At(u64),
}

#[derive(Clone, Copy)]
enum DeadlineKind {
    ValueExpiry,
    Purge,
}

/// Which deadline index an entry belongs in, if any.
fn deadline_index(entry: &Versioned) -> Option<(DeadlineKind, u64)> {
    let at = entry.expires_at_ms?;
    let kind = if entry.is_tombstone() {
        DeadlineKind::Purge
    } else {
        DeadlineKind::ValueExpiry
    };
    Some((kind, at))
}

/// Memory one stored entry of `key` holding `value` costs, as counted against `data_bytes_max`:
/// the key and value bytes with their allocations, plus a fixed per-entry overhead measured on
/// this store (table slot at its average load, the boxed entry with its version, the SCAN
/// index node share, the shared headers of key and value: ~315 bytes on 64-bit). An estimate,
/// deterministic so every copy of a partition counts the same; a node's RSS is this sum plus
/// its fixed buffers (change logs, dedup tables, connections).
pub fn stored_bytes(key: &[u8], value: &Value) -> usize {
    const ENTRY_OVERHEAD_BYTES: usize = 320;
    const ALLOCATION_OVERHEAD_BYTES: usize = 16;
    let value_bytes = match value {
        Value::Bytes(bytes) => bytes.len() + ALLOCATION_OVERHEAD_BYTES,
        Value::Counter(counter) => {
            std::mem::size_of::<(Writer, tern_conflict::SiteCounts)>() * counter.writers().count()
                + 48
        }
        Value::Tombstone => 0,
    };
    ENTRY_OVERHEAD_BYTES + key.len() + ALLOCATION_OVERHEAD_BYTES + value_bytes
}

fn first_due(index: &BTreeSet<(u64, Bytes)>, now_ms: u64) -> Option<(u64, Bytes)> {
    index.first().filter(|(at, _)| *at <= now_ms).cloned()
}

/// About what `record` costs in a [`WanChangesPage`] on the wire: key, value and a fixed
/// allowance for seq, version and framing.
fn page_bytes(record: &ChangeRecord) -> usize {
    entry_bytes(&record.key, &record.entry)
}

/// About what one entry costs on the wire (a change record or a dump entry): key, value and a
/// fixed overhead for the version and framing.
fn entry_bytes(key: &[u8], entry: &Versioned) -> usize {
    const RECORD_OVERHEAD_BYTES: usize = 64;
    let value_bytes = match &entry.value {
        Value::Bytes(bytes) => bytes.len(),
        // A site id, a lineage and two counts per actor.
        Value::Counter(counter) => counter.writers().count() * 28,
        Value::Tombstone => 0,
    };
    RECORD_OVERHEAD_BYTES + key.len() + value_bytes + entry.version.vv.iter().count() * 10
}

/// A value as GET returns it: counters read as their decimal value.
fn render(entry: &Versioned) -> Bytes {
    match &entry.value {
        Value::Bytes(bytes) => bytes.clone(),
        Value::Counter(counter) => Bytes::from(counter.value().unwrap_or_default().to_string()),
        Value::Tombstone => Bytes::new(),
    }
}

#[cfg(test)]
#[path = "partition_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "partition_wan_tests.rs"]
mod wan_tests;

#[cfg(test)]
#[path = "partition_dump_tests.rs"]
mod dump_tests;

#[cfg(test)]
#[path = "partition_hold_tests.rs"]
mod partition_hold_tests;

#[cfg(test)]
#[path = "partition_memory_tests.rs"]
mod partition_memory_tests;
