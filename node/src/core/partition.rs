//! One partition replica's state machine.
use super::command::{Command, CommandResult};
use super::keyspace::PartitionId;
use crate::limits::Limits;
use bytes::Bytes;
use tern_conflict::{SiteId, Versioned};

#[derive(Clone, Debug)]
pub struct PartitionConfig {
    pub partition: PartitionId,
    pub site: SiteId,
    pub limits: Limits,
    /// Seed for the in-memory hash table's hasher: chosen randomly by the shell (so clients
    /// cannot aim collisions at it), from the run's seed by sims/.
    pub hash_seed: u64,
}

/// One committed change, in partition order. Carries the entry's full new state (not the
/// operation), so applying it twice or after a newer one is harmless.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeRecord {
    pub partition: PartitionId,
    /// 1, 2, 3, ... with no gaps within a partition.
    pub seq: u64,
    pub key: Bytes,
    pub entry: Versioned,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("change log no longer holds records after seq {requested_after}; oldest retained is {oldest_retained}")]
pub struct LogTruncated {
    pub requested_after: u64,
    pub oldest_retained: u64,
}

#[derive(Debug)]
pub struct PartitionCore {
    config: PartitionConfig,
}

impl PartitionCore {
    pub fn new(config: PartitionConfig) -> Self {
        Self { config }
    }

    pub fn partition(&self) -> PartitionId {
        self.config.partition
    }

    /// Execute one client command at physical time `now_ms` (unix milliseconds).
    pub fn handle_command(&mut self, command: Command, now_ms: u64) -> CommandResult {
        let _ = (command, now_ms);
        unimplemented!("partition core lands next")
    }

    /// Periodic housekeeping at `now_ms`: remove expired keys and tombstones past retention,
    /// at most `expiry_sweep_keys_max` per call.
    pub fn handle_tick(&mut self, now_ms: u64) {
        let _ = now_ms;
    }

    /// Sequence number of the latest committed change (0 before the first).
    pub fn last_seq(&self) -> u64 {
        0
    }

    /// Retained change records with `seq > after_seq`, oldest first.
    pub fn changes_since(
        &self,
        after_seq: u64,
    ) -> Result<impl Iterator<Item = &ChangeRecord>, LogTruncated> {
        let _ = after_seq;
        Ok(std::iter::empty())
    }

    /// The stored entry for `key`, tombstones and expired entries included (for replication,
    /// checkers and tests; clients go through `handle_command`).
    pub fn entry(&self, key: &[u8]) -> Option<&Versioned> {
        let _ = key;
        None
    }

    /// Number of live (not deleted, not expired at the last command/tick) keys.
    pub fn live_keys(&self) -> usize {
        0
    }
}
