//! [`Replica`]: what repair and bootstrap need from a partition, and [`CoreReplica`], its
//! implementation over the node's `PartitionCore` (the shell uses it inside the partition
//! actor that owns the core).
use crate::wire::PositionRange;
use bytes::Bytes;
use tern_conflict::{ConflictResolver, Outcome, Versioned};
use tern_node::core::keyspace::PartitionId;
use tern_node::core::partition::{PartitionCore, scan_position};

/// What applying one entry from another site did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyEffect {
    /// The stored entry changed (and was committed like a local write).
    pub changed: bool,
    /// Real concurrency, settled by the resolver.
    pub conflict: bool,
}

/// One partition replica as repair and bootstrap see it.
pub trait Replica {
    fn partition(&self) -> PartitionId;

    /// Call `visit(position, key, entry)` for every stored entry (tombstones and unswept
    /// expired values included) whose scan position lies in `range`, in scan order (position,
    /// then key); stop early when `visit` returns false.
    fn visit(&self, range: PositionRange, visit: &mut dyn FnMut(u64, &Bytes, &Versioned) -> bool);

    /// Apply an entry another site holds, with the sink's rule: causal order decides, the
    /// keyspace's resolver only for real concurrency; a version never goes back.
    fn apply(&mut self, key: Bytes, entry: Versioned, now_ms: u64) -> ApplyEffect;
}

/// [`Replica`] over a [`PartitionCore`] and the keyspace's resolver.
///
/// `visit` walks the core's SCAN order from the start (the core has no range lookup yet), so
/// each call costs O(entries); a session makes few calls.
pub struct CoreReplica<'a> {
    core: &'a mut PartitionCore,
    resolver: &'a dyn ConflictResolver,
}

impl std::fmt::Debug for CoreReplica<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreReplica")
            .field("partition", &self.core.partition())
            .finish_non_exhaustive()
    }
}

impl<'a> CoreReplica<'a> {
    pub fn new(core: &'a mut PartitionCore, resolver: &'a dyn ConflictResolver) -> Self {
        Self { core, resolver }
    }
}

impl Replica for CoreReplica<'_> {
    fn partition(&self) -> PartitionId {
        self.core.partition()
    }

    fn visit(&self, range: PositionRange, visit: &mut dyn FnMut(u64, &Bytes, &Versioned) -> bool) {
        for (key, entry) in self.core.snapshot_entries() {
            let position = scan_position(key);
            if position < range.from {
                continue;
            }
            if position >= range.to || !visit(position, key, entry) {
                return;
            }
        }
    }

    fn apply(&mut self, key: Bytes, entry: Versioned, now_ms: u64) -> ApplyEffect {
        let applied = self.core.apply_remote(key, entry, self.resolver, now_ms);
        ApplyEffect {
            changed: applied.outcome != Outcome::Unchanged,
            conflict: applied.is_conflict(),
        }
    }
}
