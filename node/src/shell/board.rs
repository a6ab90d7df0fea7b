//! What each local replica reports about itself for status and metrics (role, epoch, log
//! position, backups' acknowledged positions): written by its partition actor after each
//! assignment and tick, read by the cluster actor when it publishes a `NodeStatus`.
use crate::core::{PartitionId, ReplicaCore, Role};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::watch;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaReport {
    pub role: Role,
    pub epoch: u64,
    pub last_seq: u64,
    /// `(backup, acknowledged seq)` while this replica is primary.
    pub backups_acked: Vec<(u64, u64)>,
    /// The core panicked; the partition no longer serves.
    pub failed: bool,
    /// Local writes the partition refused for the WAN gateway's hold (`block_writes`).
    pub wan_writes_refused: u64,
    /// Client writes the partition refused because the node was over `data_bytes_max`.
    pub memory_writes_refused: u64,
}

impl Default for ReplicaReport {
    fn default() -> Self {
        Self {
            role: Role::Idle,
            epoch: 0,
            last_seq: 0,
            backups_acked: Vec::new(),
            failed: false,
            wan_writes_refused: 0,
            memory_writes_refused: 0,
        }
    }
}

impl ReplicaReport {
    pub fn of(core: &ReplicaCore, failed: bool) -> Self {
        Self {
            role: core.role(),
            epoch: core.epoch(),
            last_seq: core.last_seq(),
            backups_acked: core.backup_acked_seqs(),
            failed,
            wan_writes_refused: core.partition().wan_writes_refused(),
            memory_writes_refused: core.partition().memory_writes_refused(),
        }
    }
}

#[derive(Debug)]
pub struct ReplicaBoard {
    reports: Box<[Mutex<ReplicaReport>]>,
    /// Per partition, the local replica's last seq, sent on every change: what lets the WAN
    /// gateway's feed wait for a commit instead of polling (see [`CommitWatch`]).
    commits: Box<[watch::Sender<u64>]>,
    /// Per partition, what the local copy's entries cost (`PartitionCore::data_bytes`), as its
    /// actor last published it; and their sum, the node's side of `data_bytes_max`.
    data_bytes: Box<[AtomicUsize]>,
    data_bytes_total: AtomicUsize,
    /// 0: no cap.
    data_bytes_max: usize,
}

impl ReplicaBoard {
    pub fn new(partitions: u16) -> Self {
        Self {
            reports: (0..partitions)
                .map(|_| Mutex::new(ReplicaReport::default()))
                .collect(),
            commits: (0..partitions).map(|_| watch::Sender::new(0)).collect(),
            data_bytes: (0..partitions).map(|_| AtomicUsize::new(0)).collect(),
            data_bytes_total: AtomicUsize::new(0),
            data_bytes_max: 0,
        }
    }

    /// Caps the data of all local partition copies at `max` bytes (0: no cap).
    pub fn with_data_bytes_max(mut self, max: usize) -> Self {
        self.data_bytes_max = max;
        self
    }

    /// The local copy of `partition` now costs `bytes` (called after every input).
    pub fn note_data_bytes(&self, partition: PartitionId, bytes: usize) {
        if let Some(slot) = self.data_bytes.get(usize::from(partition.0)) {
            let before = slot.swap(bytes, Ordering::Relaxed);
            if before != bytes {
                // A wrapping add of the wrapped difference moves the total down as well as up.
                self.data_bytes_total
                    .fetch_add(bytes.wrapping_sub(before), Ordering::Relaxed);
            }
        }
    }

    /// What all local partition copies cost, and the cap (0: none).
    pub fn data_bytes(&self) -> (usize, usize) {
        (
            self.data_bytes_total.load(Ordering::Relaxed),
            self.data_bytes_max,
        )
    }

    /// Whether the node has reached its data cap: primaries refuse client writes that store a
    /// value until deletes, expiries or a failover bring it below again.
    pub fn memory_full(&self) -> bool {
        let (used, max) = self.data_bytes();
        max > 0 && used >= max
    }

    /// The local replica of `partition` is at `last_seq` (called after every input; wakes
    /// watchers only when it moved).
    pub fn note_commit(&self, partition: PartitionId, last_seq: u64) {
        if let Some(sender) = self.commits.get(usize::from(partition.0)) {
            sender.send_if_modified(|seen| {
                let moved = *seen != last_seq;
                *seen = last_seq;
                moved
            });
        }
    }

    pub fn set(&self, partition: PartitionId, report: ReplicaReport) {
        if let Some(slot) = self.reports.get(usize::from(partition.0)) {
            *slot.lock().unwrap_or_else(PoisonError::into_inner) = report;
        }
    }

    pub fn get(&self, partition: PartitionId) -> ReplicaReport {
        self.reports
            .get(usize::from(partition.0))
            .map(|slot| slot.lock().unwrap_or_else(PoisonError::into_inner).clone())
            .unwrap_or_default()
    }
}

/// Subscriptions to the local replicas' commits, for code outside the node (the WAN gateway's
/// feed): a partition with a replica on this node (primary or backup) signals each change of
/// its log; one without never does, so watchers must still poll now and then.
#[derive(Clone, Debug)]
pub struct CommitWatch(pub(crate) Arc<ReplicaBoard>);

impl CommitWatch {
    pub fn subscribe(&self, partition: PartitionId) -> Option<watch::Receiver<u64>> {
        self.0
            .commits
            .get(usize::from(partition.0))
            .map(watch::Sender::subscribe)
    }
}
