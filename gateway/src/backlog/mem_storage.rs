//! An in-memory [`SegmentStorage`] with deterministic disk faults, for tests and simulators.
//!
//! The model: each file has bytes and a synced prefix. A [`MemStorage::crash`] keeps the synced
//! prefix of every file plus (with `torn_writes`) a seeded random part of the unsynced rest, as
//! a power cut would. Creates, renames and removes are durable at once (a journaling file
//! system's metadata). Faults are drawn from a seeded generator, so the same seed and the same
//! calls give the same faults.
use super::storage::SegmentStorage;
use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

/// Which faults [`MemStorage`] injects, as chances per million calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemFaults {
    /// A crash keeps a random prefix of each file's unsynced bytes (else none of them).
    pub torn_writes: bool,
    /// `sync` fails (the data stays unsynced).
    pub sync_failures_per_million: u32,
    /// `append` writes a random prefix of its bytes, then fails.
    pub append_failures_per_million: u32,
}

/// Counters of what [`MemStorage`] did, for test assertions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemStorageCounters {
    pub appends: u64,
    pub syncs: u64,
    pub dir_syncs: u64,
    pub failed_syncs: u64,
    pub failed_appends: u64,
    pub crashes: u64,
    /// Unsynced bytes lost in crashes.
    pub bytes_lost: u64,
}

#[derive(Debug, Default)]
struct MemFile {
    data: Vec<u8>,
    synced_len: usize,
}

#[derive(Debug)]
struct MemDisk {
    files: BTreeMap<String, MemFile>,
    rng: SplitMix64,
    faults: MemFaults,
    fail_next_sync: bool,
    fail_next_append: bool,
    counters: MemStorageCounters,
}

/// A handle on a shared in-memory disk: clones see the same files, so a test can "crash" the
/// disk under a backlog and open a new backlog on it.
#[derive(Clone, Debug)]
pub struct MemStorage {
    disk: Arc<Mutex<MemDisk>>,
}

impl MemStorage {
    /// An empty disk without faults; `seed` drives every random choice.
    pub fn new(seed: u64) -> Self {
        Self::with_faults(seed, MemFaults::default())
    }

    pub fn with_faults(seed: u64, faults: MemFaults) -> Self {
        Self {
            disk: Arc::new(Mutex::new(MemDisk {
                files: BTreeMap::new(),
                rng: SplitMix64(seed),
                faults,
                fail_next_sync: false,
                fail_next_append: false,
                counters: MemStorageCounters::default(),
            })),
        }
    }

    fn disk(&self) -> MutexGuard<'_, MemDisk> {
        // A panic while holding the lock can only come from a test assertion; the disk's
        // state is still consistent (every method updates it in one step).
        self.disk
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn set_faults(&self, faults: MemFaults) {
        self.disk().faults = faults;
    }

    /// The next `sync` fails.
    pub fn fail_next_sync(&self) {
        self.disk().fail_next_sync = true;
    }

    /// The next `append` writes a random prefix and fails.
    pub fn fail_next_append(&self) {
        self.disk().fail_next_append = true;
    }

    /// Lose unsynced data as a power cut would (see the module docs). Returns bytes lost.
    pub fn crash(&self) -> u64 {
        let mut disk = self.disk();
        let torn = disk.faults.torn_writes;
        let mut lost = 0u64;
        let names: Vec<String> = disk.files.keys().cloned().collect();
        for name in names {
            let unsynced = disk
                .files
                .get(&name)
                .map_or(0, |f| f.data.len() - f.synced_len);
            let kept = if torn && unsynced > 0 {
                disk.rng.below(unsynced as u64 + 1) as usize
            } else {
                0
            };
            if let Some(file) = disk.files.get_mut(&name) {
                let keep = file.synced_len + kept;
                lost += (file.data.len() - keep) as u64;
                file.data.truncate(keep);
                file.synced_len = keep;
            }
        }
        disk.counters.crashes += 1;
        disk.counters.bytes_lost += lost;
        lost
    }

    /// XOR the byte at `offset` of `name` with `mask` (simulated bit rot). False if out of range.
    pub fn corrupt_byte(&self, name: &str, offset: u64, mask: u8) -> bool {
        let mut disk = self.disk();
        match disk
            .files
            .get_mut(name)
            .and_then(|f| f.data.get_mut(offset as usize))
        {
            Some(byte) => {
                *byte ^= mask;
                true
            }
            None => false,
        }
    }

    /// Cut `name` to `len` bytes as if the rest had never reached the disk.
    pub fn cut_file(&self, name: &str, len: u64) {
        if let Some(file) = self.disk().files.get_mut(name) {
            file.data.truncate(len as usize);
            file.synced_len = file.synced_len.min(file.data.len());
        }
    }

    pub fn file_names(&self) -> Vec<String> {
        self.disk().files.keys().cloned().collect()
    }

    pub fn file_bytes(&self, name: &str) -> Option<Vec<u8>> {
        self.disk().files.get(name).map(|f| f.data.clone())
    }

    /// Bytes of `name` not yet synced.
    pub fn unsynced_bytes(&self, name: &str) -> Option<u64> {
        self.disk()
            .files
            .get(name)
            .map(|f| (f.data.len() - f.synced_len) as u64)
    }

    pub fn counters(&self) -> MemStorageCounters {
        self.disk().counters
    }
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("no file `{name}`"))
}

impl MemDisk {
    fn file(&mut self, name: &str) -> io::Result<&mut MemFile> {
        self.files.get_mut(name).ok_or_else(|| not_found(name))
    }

    fn chance(&mut self, per_million: u32) -> bool {
        per_million > 0 && self.rng.below(1_000_000) < u64::from(per_million)
    }
}

impl SegmentStorage for MemStorage {
    fn list(&mut self) -> io::Result<Vec<String>> {
        Ok(self.file_names())
    }

    fn create(&mut self, name: &str) -> io::Result<()> {
        self.disk()
            .files
            .insert(name.to_string(), MemFile::default());
        Ok(())
    }

    fn open(&mut self, name: &str) -> io::Result<u64> {
        Ok(self.disk().file(name)?.data.len() as u64)
    }

    fn append(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let mut disk = self.disk();
        disk.file(name)?;
        disk.counters.appends += 1;
        let per_million = disk.faults.append_failures_per_million;
        let fail = std::mem::take(&mut disk.fail_next_append) || disk.chance(per_million);
        let written = if fail {
            disk.rng.below(bytes.len() as u64 + 1) as usize
        } else {
            bytes.len()
        };
        disk.file(name)?.data.extend_from_slice(&bytes[..written]);
        if fail {
            disk.counters.failed_appends += 1;
            return Err(io::Error::other(
                "injected write failure after a partial write",
            ));
        }
        Ok(())
    }

    fn read(&mut self, name: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut disk = self.disk();
        let data = &disk.file(name)?.data;
        let start = (offset as usize).min(data.len());
        let end = start.saturating_add(len).min(data.len());
        Ok(data[start..end].to_vec())
    }

    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()> {
        let mut disk = self.disk();
        let file = disk.file(name)?;
        file.data.truncate(len as usize);
        // A truncation is a metadata change: durable at once in this model.
        file.synced_len = file.synced_len.min(file.data.len());
        Ok(())
    }

    fn sync(&mut self, name: &str) -> io::Result<()> {
        let mut disk = self.disk();
        disk.file(name)?;
        disk.counters.syncs += 1;
        let per_million = disk.faults.sync_failures_per_million;
        if std::mem::take(&mut disk.fail_next_sync) || disk.chance(per_million) {
            disk.counters.failed_syncs += 1;
            return Err(io::Error::other("injected fsync failure"));
        }
        let file = disk.file(name)?;
        file.synced_len = file.data.len();
        Ok(())
    }

    fn sync_dir(&mut self) -> io::Result<()> {
        self.disk().counters.dir_syncs += 1;
        Ok(())
    }

    fn rename(&mut self, from: &str, to: &str) -> io::Result<()> {
        let mut disk = self.disk();
        let file = disk.files.remove(from).ok_or_else(|| not_found(from))?;
        disk.files.insert(to.to_string(), file);
        Ok(())
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.disk()
            .files
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| not_found(name))
    }
}

/// A small seeded generator (SplitMix64): deterministic, no dependency.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-enough in `0..n` (n > 0); 0 when n is 0.
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}
