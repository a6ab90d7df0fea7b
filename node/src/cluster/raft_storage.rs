//! Storage of the map's Raft group.
//!
//! Two layers:
//! - [`MapStorage`]: what raft-rs reads (its `Storage` trait): raft-rs's `MemStorage` for the log
//!   and hard state, plus the latest map snapshot, so a lagging follower is sent a snapshot that
//!   actually carries the map (`MemStorage` alone would send an empty one).
//! - the persistence seam [`RaftPersistence`]: the group hands the shell [`PersistOps`] with every
//!   Ready; the shell writes them (before sending that Ready's messages) and, on restart, loads a
//!   [`PersistedState`] to rebuild the group. [`MemPersistence`] keeps them in memory (sims: a
//!   "crash" drops the group and keeps this); [`FilePersistence`] writes them to a directory.
//!
//! File layout (`FilePersistence`): `snapshot` holds one record, replaced atomically (write a
//! temporary file, fsync, rename, fsync the directory); `log` is append-only, one record per
//! persist call (entries + hard state), rewritten from memory after each snapshot (compaction).
//! A record is `len (u32 LE) | crc32 (u32 LE) | envelope(postcard)`, raft-rs types inside as their
//! protobuf bytes. A record cut short at the end of `log` is a write torn by a crash (that persist
//! never returned, so nothing depended on it) and is dropped; a checksum mismatch anywhere else is
//! corruption and refuses to load.
use crate::cluster::codec::{self, CodecError, EnvelopeKind};
use protobuf::Message as _;
use raft::prelude::{Entry, HardState, Snapshot};
use raft::storage::MemStorage;
use raft::{GetEntriesContext, RaftState, Storage, StorageError};
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// raft-rs's view of storage: `MemStorage` plus the snapshot that carries the map.
pub struct MapStorage {
    mem: MemStorage,
    snapshot: Snapshot,
}

impl std::fmt::Debug for MapStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapStorage")
            .field("snapshot_index", &self.snapshot.get_metadata().index)
            .finish()
    }
}

impl MapStorage {
    /// A founding member's first start: the bootstrap snapshot (configured voters and initial
    /// map at `BOOTSTRAP_INDEX`) as if received; the log starts after it.
    pub(crate) fn bootstrap(initial: Snapshot) -> raft::Result<Self> {
        let mem = MemStorage::new();
        mem.wl().apply_snapshot(initial.clone())?;
        Ok(Self {
            mem,
            snapshot: initial,
        })
    }

    /// A node joining a running group: no configuration and no snapshot until the leader's.
    pub(crate) fn joining() -> Self {
        Self {
            mem: MemStorage::new(),
            snapshot: Snapshot::default(),
        }
    }

    /// Restart: the persisted snapshot, then the entries after it, then the hard state.
    pub(crate) fn restore(state: &PersistedState) -> raft::Result<Self> {
        let mem = MemStorage::new();
        let meta = state.snapshot.get_metadata();
        if meta.index == 0 {
            mem.initialize_with_conf_state(meta.get_conf_state().clone());
        } else {
            mem.wl().apply_snapshot(state.snapshot.clone())?;
        }
        let entries: Vec<Entry> = state
            .entries
            .iter()
            .filter(|e| e.index > meta.index)
            .cloned()
            .collect();
        mem.wl().append(&entries)?;
        let mut hs = state.hard_state.clone();
        // A crash between writing the snapshot and rewriting the log can leave an older hard state.
        hs.term = hs.term.max(meta.term);
        hs.commit = hs.commit.max(meta.index);
        mem.wl().set_hardstate(hs);
        Ok(Self {
            mem,
            snapshot: state.snapshot.clone(),
        })
    }

    pub(crate) fn mem(&self) -> &MemStorage {
        &self.mem
    }

    pub(crate) fn snapshot_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }

    /// A snapshot received from the leader replaces the whole log.
    pub(crate) fn apply_received_snapshot(&mut self, snapshot: Snapshot) -> raft::Result<()> {
        self.mem.wl().apply_snapshot(snapshot.clone())?;
        self.snapshot = snapshot;
        Ok(())
    }

    /// Our own snapshot of the applied map at `snapshot`'s index: entries up to it are dropped
    /// (the entry at the index itself stays so its term can still be read).
    pub(crate) fn compact_to(&mut self, snapshot: Snapshot) -> raft::Result<()> {
        self.mem.wl().compact(snapshot.get_metadata().index)?;
        self.snapshot = snapshot;
        Ok(())
    }
}

impl Storage for MapStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.mem.initial_state()
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.mem.entries(low, high, max_size, context)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.mem.term(idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        self.mem.first_index()
    }

    fn last_index(&self) -> raft::Result<u64> {
        self.mem.last_index()
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if self.snapshot.get_metadata().index >= request_index
            && self.snapshot.get_metadata().index > 0
        {
            Ok(self.snapshot.clone())
        } else {
            Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ))
        }
    }
}

/// What one Ready asks the shell to make durable, in this order: snapshot, entries, hard state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PersistOps {
    /// A snapshot to store; log entries at or below its index become obsolete.
    pub snapshot: Option<Snapshot>,
    /// With `snapshot`: it came from the leader and replaces every stored entry.
    pub snapshot_replaces_log: bool,
    /// Entries to append; an entry's index at or below the last stored one overwrites that
    /// suffix of the log (a new leader's entries replacing uncommitted ones).
    pub entries: Vec<Entry>,
    pub hard_state: Option<HardState>,
}

impl PersistOps {
    pub fn is_empty(&self) -> bool {
        self.snapshot.is_none() && self.entries.is_empty() && self.hard_state.is_none()
    }

    /// Folds `later` into `self` as if both were persisted in order.
    pub(crate) fn merge(&mut self, later: PersistOps) {
        if let Some(snapshot) = later.snapshot {
            let index = snapshot.get_metadata().index;
            self.entries
                .retain(|e| e.index > index && !later.snapshot_replaces_log);
            self.snapshot_replaces_log |= later.snapshot_replaces_log;
            self.snapshot = Some(snapshot);
        }
        if let Some(first) = later.entries.first() {
            let first = first.index;
            self.entries.retain(|e| e.index < first);
        }
        self.entries.extend(later.entries);
        if later.hard_state.is_some() {
            self.hard_state = later.hard_state;
        }
    }
}

/// Everything a node needs to rebuild its Raft group after a restart.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PersistedState {
    /// Always present once persisted: index 0 holds the bootstrap map and voters.
    pub snapshot: Snapshot,
    /// Entries after the snapshot.
    pub entries: Vec<Entry>,
    pub hard_state: HardState,
}

impl PersistedState {
    /// Applies `ops` with the same semantics as the shell's durable write.
    pub fn apply(&mut self, ops: &PersistOps) {
        if let Some(snapshot) = &ops.snapshot {
            let index = snapshot.get_metadata().index;
            if ops.snapshot_replaces_log {
                self.entries.clear();
            } else {
                self.entries.retain(|e| e.index > index);
            }
            self.snapshot = snapshot.clone();
        }
        if let Some(first) = ops.entries.first() {
            let first = first.index;
            self.entries.retain(|e| e.index < first);
            self.entries.extend(ops.entries.iter().cloned());
        }
        if let Some(hs) = &ops.hard_state {
            self.hard_state = hs.clone();
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("read {path}: record at byte {offset} is corrupt ({reason})")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("read {path}: {source}")]
    Codec { path: PathBuf, source: CodecError },
    #[error("read {path}: log entries but no snapshot")]
    MissingSnapshot { path: PathBuf },
    #[error("persist to {path}: load the existing state first")]
    NotLoaded { path: PathBuf },
}

/// Where the shell makes Raft state durable.
pub trait RaftPersistence {
    /// Makes `ops` durable; when it returns, the Ready's messages may be sent.
    fn persist(&mut self, ops: &PersistOps) -> Result<(), PersistError>;
    /// The state to restart from; `None` on a node's first start.
    fn load(&mut self) -> Result<Option<PersistedState>, PersistError>;
}

/// Persistence in memory: survives dropping the `RaftGroup` (a simulated crash), not the process.
#[derive(Clone, Debug, Default)]
pub struct MemPersistence {
    state: Option<PersistedState>,
}

impl MemPersistence {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn state(&self) -> Option<&PersistedState> {
        self.state.as_ref()
    }
}

impl RaftPersistence for MemPersistence {
    fn persist(&mut self, ops: &PersistOps) -> Result<(), PersistError> {
        if !ops.is_empty() {
            self.state
                .get_or_insert_with(PersistedState::default)
                .apply(ops);
        }
        Ok(())
    }

    fn load(&mut self) -> Result<Option<PersistedState>, PersistError> {
        Ok(self.state.clone())
    }
}

/// One record of the files, raft-rs types as protobuf bytes.
#[derive(Debug, Serialize, Deserialize)]
enum Record {
    Snapshot(Vec<u8>),
    Append {
        entries: Vec<Vec<u8>>,
        hard_state: Option<Vec<u8>>,
    },
}

/// Persistence in a directory (see the module docs for the layout). Keeps a mirror of the state
/// in memory (the log between snapshots is short) so compaction can rewrite the log file.
#[derive(Debug)]
pub struct FilePersistence {
    dir: PathBuf,
    log: Option<File>,
    mirror: PersistedState,
    /// Whether anything was ever persisted (a snapshot is always first).
    started: bool,
    /// `load` ran: persisting before it would rewrite the log from an empty mirror.
    loaded: bool,
}

const SNAPSHOT_FILE: &str = "snapshot";
const LOG_FILE: &str = "log";
const INCARNATION_FILE: &str = "incarnation";

impl FilePersistence {
    /// Uses `dir` (created if missing). Call [`RaftPersistence::load`] before the first persist.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, PersistError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io("create directory", &dir))?;
        Ok(Self {
            dir,
            log: None,
            mirror: PersistedState::default(),
            started: false,
            loaded: false,
        })
    }

    /// A fresh boot incarnation for this node: one more than the last, kept in the file
    /// `incarnation` next to the Raft state, so it rises across restarts whatever the clock does.
    pub fn next_incarnation(&self) -> Result<u64, PersistError> {
        let path = self.path(INCARNATION_FILE);
        let last = match read_if_exists(&path)? {
            Some(bytes) => std::str::from_utf8(&bytes)
                .ok()
                .and_then(|text| text.trim().parse::<u64>().ok())
                .ok_or_else(|| corrupt(&path, 0, "not a number"))?,
            None => 0,
        };
        let next = last + 1;
        write_atomically(&self.dir, INCARNATION_FILE, next.to_string().as_bytes())?;
        Ok(next)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn write_snapshot(&self, snapshot: &Snapshot) -> Result<(), PersistError> {
        let bytes = snapshot
            .write_to_bytes()
            .map_err(|e| self.encode_error(e))?;
        let record = frame(&Record::Snapshot(bytes)).map_err(|source| PersistError::Codec {
            path: self.path(SNAPSHOT_FILE),
            source,
        })?;
        write_atomically(&self.dir, SNAPSHOT_FILE, &record)
    }

    /// Rewrites the log with the mirror's entries and hard state (after a snapshot).
    fn rewrite_log(&mut self) -> Result<(), PersistError> {
        let record = self.append_record(&self.mirror.entries, Some(&self.mirror.hard_state))?;
        self.log = None;
        write_atomically(&self.dir, LOG_FILE, &record)
    }

    fn append_record(
        &self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<Vec<u8>, PersistError> {
        let entries = entries
            .iter()
            .map(|e| e.write_to_bytes().map_err(|e| self.encode_error(e)))
            .collect::<Result<Vec<_>, _>>()?;
        let hard_state = hard_state
            .map(|hs| hs.write_to_bytes().map_err(|e| self.encode_error(e)))
            .transpose()?;
        frame(&Record::Append {
            entries,
            hard_state,
        })
        .map_err(|source| PersistError::Codec {
            path: self.path(LOG_FILE),
            source,
        })
    }

    fn encode_error(&self, e: protobuf::ProtobufError) -> PersistError {
        PersistError::Corrupt {
            path: self.dir.clone(),
            offset: 0,
            reason: format!("encode: {e}"),
        }
    }

    fn log_file(&mut self) -> Result<&mut File, PersistError> {
        let path = self.path(LOG_FILE);
        if self.log.is_none() {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io("open", &path))?;
            self.log = Some(file);
        }
        self.log
            .as_mut()
            .ok_or(PersistError::MissingSnapshot { path })
    }
}

impl RaftPersistence for FilePersistence {
    fn persist(&mut self, ops: &PersistOps) -> Result<(), PersistError> {
        if ops.is_empty() {
            return Ok(());
        }
        if !self.loaded {
            return Err(PersistError::NotLoaded {
                path: self.dir.clone(),
            });
        }
        self.mirror.apply(ops);
        if let Some(snapshot) = &ops.snapshot {
            self.write_snapshot(snapshot)?;
            self.started = true;
            return self.rewrite_log();
        }
        if !self.started {
            return Err(PersistError::MissingSnapshot {
                path: self.path(SNAPSHOT_FILE),
            });
        }
        let record = self.append_record(&ops.entries, ops.hard_state.as_ref())?;
        let path = self.path(LOG_FILE);
        let file = self.log_file()?;
        file.write_all(&record).map_err(io("append to", &path))?;
        file.sync_data().map_err(io("sync", &path))
    }

    fn load(&mut self) -> Result<Option<PersistedState>, PersistError> {
        let snapshot_path = self.path(SNAPSHOT_FILE);
        let log_path = self.path(LOG_FILE);
        let snapshot_bytes = read_if_exists(&snapshot_path)?;
        let log_bytes = read_if_exists(&log_path)?;
        let Some(snapshot_bytes) = snapshot_bytes else {
            if log_bytes.as_ref().is_some_and(|b| !b.is_empty()) {
                return Err(PersistError::MissingSnapshot {
                    path: snapshot_path,
                });
            }
            self.loaded = true;
            return Ok(None);
        };
        let mut state = PersistedState::default();
        let (records, _) = parse_records(&snapshot_path, &snapshot_bytes)?;
        match records.as_slice() {
            [Record::Snapshot(bytes)] => {
                state.snapshot =
                    Snapshot::parse_from_bytes(bytes).map_err(|e| corrupt(&snapshot_path, 0, e))?;
            }
            _ => {
                return Err(corrupt(
                    &snapshot_path,
                    0,
                    "expected exactly one snapshot record",
                ));
            }
        }
        let log_bytes = log_bytes.unwrap_or_default();
        let (records, good_len) = parse_records(&log_path, &log_bytes)?;
        for record in records {
            let Record::Append {
                entries,
                hard_state,
            } = record
            else {
                return Err(corrupt(&log_path, 0, "snapshot record inside the log"));
            };
            let entries = entries
                .iter()
                .map(|b| Entry::parse_from_bytes(b).map_err(|e| corrupt(&log_path, 0, e)))
                .collect::<Result<Vec<_>, _>>()?;
            let hard_state = hard_state
                .map(|b| HardState::parse_from_bytes(&b).map_err(|e| corrupt(&log_path, 0, e)))
                .transpose()?;
            state.apply(&PersistOps {
                snapshot: None,
                snapshot_replaces_log: false,
                entries,
                hard_state,
            });
        }
        let index = state.snapshot.get_metadata().index;
        state.entries.retain(|e| e.index > index);
        if good_len < log_bytes.len() {
            // Drop the torn tail so later appends follow the last complete record.
            let file = OpenOptions::new()
                .write(true)
                .open(&log_path)
                .map_err(io("open", &log_path))?;
            file.set_len(good_len as u64)
                .map_err(io("truncate", &log_path))?;
            file.sync_all().map_err(io("sync", &log_path))?;
        }
        self.mirror = state.clone();
        self.started = true;
        self.loaded = true;
        self.log = None;
        Ok(Some(state))
    }
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PersistError + use<> {
    let path = path.to_path_buf();
    move |source| PersistError::Io {
        action,
        path,
        source,
    }
}

fn corrupt(path: &Path, offset: u64, reason: impl std::fmt::Display) -> PersistError {
    PersistError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason: reason.to_string(),
    }
}

fn frame(record: &Record) -> Result<Vec<u8>, CodecError> {
    let payload = codec::encode(EnvelopeKind::LogRecord, record)?;
    let len = u32::try_from(payload.len()).map_err(|_| CodecError::Encode {
        kind: EnvelopeKind::LogRecord,
        reason: "record over 4 GiB".into(),
    })?;
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Parses complete records; returns them and the length of the well-formed prefix (a record
/// running past the end is a torn write and ends the prefix).
fn parse_records(path: &Path, bytes: &[u8]) -> Result<(Vec<Record>, usize), PersistError> {
    let mut records = Vec::new();
    let mut at = 0usize;
    while let Some(header) = bytes.get(at..at + 8) {
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let Some(payload) = bytes.get(at + 8..at + 8 + len) else {
            break;
        };
        if crc32fast::hash(payload) != crc {
            return Err(corrupt(path, at as u64, "checksum mismatch"));
        }
        let record = codec::decode(EnvelopeKind::LogRecord, payload).map_err(|source| {
            PersistError::Codec {
                path: path.to_path_buf(),
                source,
            }
        })?;
        records.push(record);
        at += 8 + len;
    }
    Ok((records, at))
}

fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, PersistError> {
    match File::open(path) {
        Ok(mut file) => {
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes).map_err(io("read", path))?;
            Ok(Some(bytes))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("open", path)(e)),
    }
}

fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), PersistError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let mut file = File::create(&tmp).map_err(io("create", &tmp))?;
    file.write_all(bytes).map_err(io("write", &tmp))?;
    file.sync_all().map_err(io("sync", &tmp))?;
    fs::rename(&tmp, &path).map_err(io("rename", &tmp))?;
    // The rename is durable only once the directory entry is.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: bytes::Bytes::from(vec![index as u8; 3]),
            ..Default::default()
        }
    }

    fn snapshot(index: u64, term: u64) -> Snapshot {
        let mut s = Snapshot::default();
        s.mut_metadata().index = index;
        s.mut_metadata().term = term;
        s.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
        s.data = bytes::Bytes::from_static(b"map");
        s
    }

    fn hs(term: u64, commit: u64) -> HardState {
        HardState {
            term,
            vote: 1,
            commit,
            ..Default::default()
        }
    }

    /// The same sequence of ops through memory and files, reloaded, gives the same state.
    #[test]
    fn file_and_memory_agree_across_reloads() {
        let dir = tempfile::tempdir().expect("temp dir");
        let steps: Vec<PersistOps> = vec![
            PersistOps {
                snapshot: Some(snapshot(0, 0)),
                snapshot_replaces_log: true,
                ..Default::default()
            },
            PersistOps {
                entries: vec![entry(1, 1), entry(2, 1), entry(3, 1)],
                hard_state: Some(hs(1, 1)),
                ..Default::default()
            },
            // A new leader overwrites the uncommitted suffix.
            PersistOps {
                entries: vec![entry(3, 2), entry(4, 2)],
                hard_state: Some(hs(2, 3)),
                ..Default::default()
            },
            // Compaction snapshot keeps later entries.
            PersistOps {
                snapshot: Some(snapshot(3, 2)),
                ..Default::default()
            },
            PersistOps {
                entries: vec![entry(5, 2)],
                hard_state: Some(hs(2, 5)),
                ..Default::default()
            },
        ];
        let mut mem = MemPersistence::new();
        let mut file = FilePersistence::open(dir.path()).expect("open");
        assert_eq!(file.load().expect("load"), None, "first start");
        for (i, ops) in steps.iter().enumerate() {
            mem.persist(ops).expect("mem");
            file.persist(ops).expect("file");
            let mut reopened = FilePersistence::open(dir.path()).expect("reopen");
            assert_eq!(
                reopened.load().expect("reload"),
                mem.load().expect("mem load"),
                "after step {i}"
            );
        }
        let state = mem.load().expect("mem").expect("state");
        assert_eq!(
            state
                .entries
                .iter()
                .map(|e| (e.index, e.term))
                .collect::<Vec<_>>(),
            vec![(4, 2), (5, 2)]
        );
        // A received snapshot replaces the log.
        let ops = PersistOps {
            snapshot: Some(snapshot(9, 3)),
            snapshot_replaces_log: true,
            ..Default::default()
        };
        file.persist(&ops).expect("file");
        let reloaded = FilePersistence::open(dir.path())
            .expect("reopen")
            .load()
            .expect("load")
            .expect("state");
        assert!(reloaded.entries.is_empty());
        assert_eq!(reloaded.snapshot.get_metadata().index, 9);
    }

    #[test]
    fn torn_tail_is_dropped_and_corruption_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut file = FilePersistence::open(dir.path()).expect("open");
        assert_eq!(file.load().expect("first start"), None);
        file.persist(&PersistOps {
            snapshot: Some(snapshot(0, 0)),
            snapshot_replaces_log: true,
            ..Default::default()
        })
        .expect("snapshot");
        file.persist(&PersistOps {
            entries: vec![entry(1, 1)],
            hard_state: Some(hs(1, 1)),
            ..Default::default()
        })
        .expect("append");
        file.persist(&PersistOps {
            entries: vec![entry(2, 1)],
            ..Default::default()
        })
        .expect("append");
        let log = dir.path().join(LOG_FILE);
        let full = fs::read(&log).expect("read log");
        // Torn: cut the last record short.
        fs::write(&log, &full[..full.len() - 3]).expect("tear");
        let state = FilePersistence::open(dir.path())
            .expect("open")
            .load()
            .expect("load")
            .expect("state");
        assert_eq!(
            state.entries.iter().map(|e| e.index).collect::<Vec<_>>(),
            vec![1]
        );
        assert!(
            fs::read(&log).expect("read").len() < full.len() - 3,
            "tail truncated on load"
        );
        // Corrupt: flip a payload byte of the first log record.
        let mut bad = fs::read(&log).expect("read log");
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        fs::write(&log, &bad).expect("corrupt");
        let err = FilePersistence::open(dir.path())
            .expect("open")
            .load()
            .expect_err("corrupt");
        assert!(err.to_string().contains("checksum mismatch"), "{err}");
    }

    #[test]
    fn log_without_snapshot_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut file = FilePersistence::open(dir.path()).expect("open");
        let append = PersistOps {
            entries: vec![entry(1, 1)],
            ..Default::default()
        };
        assert!(matches!(
            file.persist(&append),
            Err(PersistError::NotLoaded { .. })
        ));
        assert_eq!(file.load().expect("first start"), None);
        assert!(matches!(
            file.persist(&append),
            Err(PersistError::MissingSnapshot { .. })
        ));
        assert_eq!(file.next_incarnation().expect("incarnation"), 1);
        assert_eq!(
            FilePersistence::open(dir.path())
                .expect("reopen")
                .next_incarnation()
                .expect("incarnation"),
            2,
            "incarnations rise across restarts"
        );
        fs::write(dir.path().join(LOG_FILE), b"junk").expect("write");
        assert!(matches!(
            file.load(),
            Err(PersistError::MissingSnapshot { .. })
        ));
    }
}
