//! What each local replica reports about itself for status and metrics (role, epoch, log
//! position, backups' acknowledged positions): written by its partition actor after each
//! assignment and tick, read by the cluster actor when it publishes a `NodeStatus`.
use crate::core::{PartitionId, ReplicaCore, Role};
use std::sync::{Mutex, PoisonError};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaReport {
    pub role: Role,
    pub epoch: u64,
    pub last_seq: u64,
    /// `(backup, acknowledged seq)` while this replica is primary.
    pub backups_acked: Vec<(u64, u64)>,
    /// The core panicked; the partition no longer serves.
    pub failed: bool,
}

impl Default for ReplicaReport {
    fn default() -> Self {
        Self {
            role: Role::Idle,
            epoch: 0,
            last_seq: 0,
            backups_acked: Vec::new(),
            failed: false,
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
        }
    }
}

#[derive(Debug)]
pub struct ReplicaBoard {
    reports: Box<[Mutex<ReplicaReport>]>,
}

impl ReplicaBoard {
    pub fn new(partitions: u16) -> Self {
        Self {
            reports: (0..partitions)
                .map(|_| Mutex::new(ReplicaReport::default()))
                .collect(),
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
