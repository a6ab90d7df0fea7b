//! [`SnapshotReplica`]: the in-memory partition copy one repair session works on.
use crate::repair::{ApplyEffect, Replica};
use crate::wire::PositionRange;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::Arc;
use tern_conflict::{KeyspaceResolvers, Outcome, Versioned, reconcile_into};
use tern_node::core::PartitionId;
use tern_node::core::partition::scan_position;

/// Entries of one partition in scan order, as `WanDump` pages them.
pub type DumpEntries = Vec<(u64, Bytes, Versioned)>;

/// `apply_remote`) and records every entry that changed it, for [`Self::take_pushes`].
pub struct SnapshotReplica {
    partition: PartitionId,
    entries: BTreeMap<(u64, Bytes), Versioned>,
    resolvers: Arc<KeyspaceResolvers>,
    pushes: Vec<(Bytes, Versioned)>,
}

impl std::fmt::Debug for SnapshotReplica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotReplica")
            .field("partition", &self.partition)
            .field("entries", &self.entries.len())
            .field("pushes", &self.pushes.len())
            .finish_non_exhaustive()
    }
}

impl SnapshotReplica {
    pub fn new(
        partition: PartitionId,
        resolvers: Arc<KeyspaceResolvers>,
        entries: impl IntoIterator<Item = (u64, Bytes, Versioned)>,
    ) -> Self {
        Self {
            partition,
            entries: entries
                .into_iter()
                .map(|(position, key, entry)| ((position, key), entry))
                .collect(),
            resolvers,
            pushes: Vec::new(),
        }
    }

    #[cfg(test)]
    pub fn get(&self, key: &[u8]) -> Option<&Versioned> {
        self.entries
            .get(&(scan_position(key), Bytes::copy_from_slice(key)))
    }

    /// Entries that changed the copy since the last call, as received: the real partition
    /// reconciles each the same way.
    pub fn take_pushes(&mut self) -> Vec<(Bytes, Versioned)> {
        std::mem::take(&mut self.pushes)
    }
}

impl Replica for SnapshotReplica {
    fn partition(&self) -> PartitionId {
        self.partition
    }

    fn visit(&self, range: PositionRange, visit: &mut dyn FnMut(u64, &Bytes, &Versioned) -> bool) {
        for ((position, key), entry) in self.entries.range((range.from, Bytes::new())..) {
            if *position >= range.to || !visit(*position, key, entry) {
                return;
            }
        }
    }

    fn apply(&mut self, key: Bytes, entry: Versioned, _now_ms: u64) -> ApplyEffect {
        let slot_key = (scan_position(&key), key.clone());
        let mut slot = self.entries.get(&slot_key).cloned();
        let resolver = Arc::clone(self.resolvers.for_key(&key));
        let outcome = reconcile_into(resolver.as_ref(), &key, &mut slot, entry.clone());
        match (outcome, slot) {
            (Outcome::Unchanged, _) | (_, None) => ApplyEffect::default(),
            (outcome, Some(merged)) => {
                self.entries.insert(slot_key, merged);
                self.pushes.push((key, entry));
                ApplyEffect {
                    changed: true,
                    conflict: matches!(outcome, Outcome::Resolved(_)),
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "snapshot_tests.rs"]
mod tests;
