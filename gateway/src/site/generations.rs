//! Log generations: what makes WAN sequence numbers keep growing when a partition's change log
//! starts again from seq 1.
//!
//! A site that loses its memory (a standalone node restarted, or every replica of a partition
//! restarted at once) restarts its partitions' change logs at seq 1, while the other sites'
//! sinks remember the seqs they already applied from it — the new records would look like
//! duplicates and never apply. So the gateway ships `wan_seq = generation << 40 | seq`: when
//! the feed finds a partition's log behind what was already read, the generation goes up
//! (persisted through [`SiteStorage::store_generations`] before any record of the new
//! generation is handed to a delegator), the delegator sees a jump (a gap: the partition is
//! marked for repair, which also brings the wiped site's data back from its peers) and the
//! stream goes on.
use super::storage::SiteStorage;
use std::collections::BTreeMap;
use tern_node::core::PartitionId;

/// Bits of a WAN seq that carry the partition's own seq (2^40 ≈ 10^12 records per generation).
pub const SEQ_BITS: u32 = 40;
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;

pub fn wan_seq(generation: u64, seq: u64) -> u64 {
    (generation << SEQ_BITS) | (seq & SEQ_MASK)
}

pub fn generation_of(wan_seq: u64) -> u64 {
    wan_seq >> SEQ_BITS
}

pub fn seq_of(wan_seq: u64) -> u64 {
    wan_seq & SEQ_MASK
}

/// The current generation of every partition whose log ever restarted (others: 0).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogGenerations {
    by_partition: BTreeMap<PartitionId, u64>,
}

impl LogGenerations {
    pub fn new(by_partition: BTreeMap<PartitionId, u64>) -> Self {
        Self { by_partition }
    }

    pub fn get(&self, partition: PartitionId) -> u64 {
        self.by_partition.get(&partition).copied().unwrap_or(0)
    }

    pub fn as_map(&self) -> &BTreeMap<PartitionId, u64> {
        &self.by_partition
    }

    /// Raises `partition`'s generation above both its current one and `at_least - 1`, and
    /// persists it through `storage` before returning it (a failed save changes nothing).
    pub fn bump(
        &mut self,
        partition: PartitionId,
        at_least: u64,
        storage: &mut impl SiteStorage,
    ) -> Result<u64, String> {
        let next = (self.get(partition) + 1).max(at_least);
        let mut raised = self.by_partition.clone();
        raised.insert(partition, next);
        storage.store_generations(&raised)?;
        self.by_partition = raised;
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::site::storage::MemSiteStorage;

    #[test]
    fn wan_seqs_order_generations_before_seqs() {
        assert!(wan_seq(1, 1) > wan_seq(0, SEQ_MASK));
        assert_eq!(seq_of(wan_seq(3, 42)), 42);
        assert_eq!(generation_of(wan_seq(3, 42)), 3);
        assert_eq!(wan_seq(0, 7), 7, "generation 0 is the plain seq");
    }

    #[test]
    fn a_bump_is_saved_before_it_counts_and_a_failed_save_changes_nothing() {
        let mut storage = MemSiteStorage::default();
        let mut gens = LogGenerations::default();
        // (at_least, expected generation)
        for (at_least, expected) in [(0, 1), (5, 5), (0, 6)] {
            let got = gens.bump(PartitionId(2), at_least, &mut storage);
            assert_eq!(got, Ok(expected));
            assert_eq!(storage.generations().get(&PartitionId(2)), Some(&expected));
        }
        storage.fail_saves(true);
        assert!(gens.bump(PartitionId(2), 0, &mut storage).is_err());
        assert_eq!(gens.get(PartitionId(2)), 6, "not raised without a save");
        assert_eq!(gens.get(PartitionId(3)), 0);
    }
}
