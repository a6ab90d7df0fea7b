//! What each local replica reports about itself for status and metrics (role, epoch, log
//! position, backups' acknowledged positions): written by its partition actor after each
//! assignment and tick, read by the cluster actor when it publishes a `NodeStatus`.
use crate::core::{PartitionId, ReplicaCore, Role};
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
        }
    }
}

#[derive(Debug)]
pub struct ReplicaBoard {
    reports: Box<[Mutex<ReplicaReport>]>,
    /// Per partition, the local replica's last seq, sent on every change: what lets the WAN
    /// gateway's feed wait for a commit instead of polling (see [`CommitWatch`]).
    commits: Box<[watch::Sender<u64>]>,
}

impl ReplicaBoard {
    pub fn new(partitions: u16) -> Self {
        Self {
            reports: (0..partitions)
                .map(|_| Mutex::new(ReplicaReport::default()))
                .collect(),
            commits: (0..partitions).map(|_| watch::Sender::new(0)).collect(),
        }
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
