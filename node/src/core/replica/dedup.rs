//! Request dedup: the answers of the last `dedup_requests_max` write requests, by request id, in
//! execution order. The primary fills it as it executes; backups fill it from `Replicate`, so a
//! promoted backup answers a retried request with the original result.
use super::messages::RequestOutcome;
use super::types::RequestId;
use crate::core::command::CommandResult;
use foldhash::fast::FixedState;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};

#[derive(Debug)]
pub(crate) struct DedupTable {
    capacity: usize,
    /// Outcomes sorted by seq (execution order), oldest first: FIFO eviction and range reads.
    order: VecDeque<RequestOutcome>,
    /// Request id → seq of its outcome in `order`. A hash map (one probe per write instead of a
    /// tree walk over `dedup_requests_max` ids); never iterated, so its order affects nothing,
    /// and the fixed hasher keeps the core free of global randomness.
    index: HashMap<RequestId, u64, FixedState>,
}

impl DedupTable {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            order: VecDeque::new(),
            index: HashMap::with_hasher(FixedState::default()),
        }
    }

    pub(crate) fn get(&self, id: &RequestId) -> Option<&[CommandResult]> {
        let seq = *self.index.get(id)?;
        let at = self.position_of_seq(seq);
        self.order
            .range(at..)
            .take_while(|o| o.seq == seq)
            .find(|o| o.id == *id)
            .map(|o| o.results.as_slice())
    }

    /// The seq recorded with `id`'s outcome.
    #[cfg(test)]
    pub(crate) fn seq_of(&self, id: &RequestId) -> Option<u64> {
        self.index.get(id).copied()
    }

    /// Remember an outcome; a known id is left as it is (a duplicate delivery).
    pub(crate) fn insert(&mut self, outcome: RequestOutcome) {
        if self.capacity == 0 {
            return;
        }
        match self.index.entry(outcome.id) {
            Entry::Occupied(_) => return,
            Entry::Vacant(slot) => {
                slot.insert(outcome.seq);
            }
        }
        // Outcomes arrive in seq order (append, the hot path: one per write); the search only
        // matters after a resend reordered them.
        if self.order.back().is_none_or(|last| last.seq <= outcome.seq) {
            self.order.push_back(outcome);
        } else {
            let at = self.order.partition_point(|o| o.seq <= outcome.seq);
            self.order.insert(at, outcome);
        }
        while self.order.len() > self.capacity {
            if let Some(evicted) = self.order.pop_front() {
                self.index.remove(&evicted.id);
            }
        }
    }

    /// Outcomes with `after < seq <= upto`, oldest first.
    pub(crate) fn between(&self, after: u64, upto: u64) -> impl Iterator<Item = &RequestOutcome> {
        let start = self.position_of_seq(after + 1);
        self.order.range(start..).take_while(move |o| o.seq <= upto)
    }

    /// Every outcome with `seq <= upto` (for a snapshot taken at `upto`).
    pub(crate) fn up_to(&self, upto: u64) -> Vec<RequestOutcome> {
        self.order
            .iter()
            .take_while(|o| o.seq <= upto)
            .cloned()
            .collect()
    }

    /// Replace everything (a snapshot install).
    pub(crate) fn replace(&mut self, outcomes: Vec<RequestOutcome>) {
        self.order.clear();
        self.index.clear();
        for outcome in outcomes {
            self.insert(outcome);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }

    /// The first position whose seq is `>= seq`. Lookups are nearly always for the newest few
    /// outcomes (the next batch for a backup, a just-retried request), so look back a little
    /// from the end before searching the whole table.
    fn position_of_seq(&self, seq: u64) -> usize {
        const SCAN_FROM_BACK_MAX: usize = 32;
        let len = self.order.len();
        for (back, outcome) in self.order.iter().rev().take(SCAN_FROM_BACK_MAX).enumerate() {
            if outcome.seq < seq {
                return len - back;
            }
        }
        self.order.partition_point(|o| o.seq < seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::command::Response;

    fn outcome(counter: u64, seq: u64) -> RequestOutcome {
        RequestOutcome {
            id: RequestId { origin: 1, counter },
            seq,
            results: vec![Ok(Response::Int(counter as i64))],
        }
    }

    #[test]
    fn remembers_the_newest_and_evicts_the_oldest() {
        let mut table = DedupTable::new(3);
        for (counter, seq) in [(1, 1), (2, 2), (3, 2), (4, 5)] {
            table.insert(outcome(counter, seq));
        }
        assert_eq!(table.len(), 3);
        assert!(
            table
                .get(&RequestId {
                    origin: 1,
                    counter: 1
                })
                .is_none()
        );
        assert_eq!(
            table.get(&RequestId {
                origin: 1,
                counter: 3
            }),
            Some(&[Ok(Response::Int(3))][..])
        );
        let seqs: Vec<u64> = table.between(1, 4).map(|o| o.seq).collect();
        assert_eq!(seqs, vec![2, 2]);
        let ids: Vec<u64> = table.up_to(5).iter().map(|o| o.id.counter).collect();
        assert_eq!(ids, vec![2, 3, 4]);
    }

    #[test]
    fn a_duplicate_keeps_the_first_answer() {
        let mut table = DedupTable::new(10);
        table.insert(outcome(7, 3));
        let mut second = outcome(7, 9);
        second.results = vec![Ok(Response::Int(99))];
        table.insert(second);
        assert_eq!(table.len(), 1);
        assert_eq!(
            table.get(&RequestId {
                origin: 1,
                counter: 7
            }),
            Some(&[Ok(Response::Int(7))][..])
        );
    }
    /// The fast paths (append, look back from the end) against a plain sorted model, with
    /// resends out of order and tables longer than the look-back.
    #[test]
    fn lookups_match_a_sorted_model_with_reordered_inserts() {
        for (capacity, count) in [(5usize, 40u64), (100, 300), (1000, 200)] {
            let mut table = DedupTable::new(capacity);
            let mut model: Vec<(u64, u64)> = Vec::new(); // (seq, counter), insertion-stable
            for counter in 0..count {
                // Mostly ascending; every 7th arrives late, behind 1..=40 newer ones.
                let seq = if counter % 7 == 3 {
                    (counter * 2).saturating_sub(1 + counter % 40)
                } else {
                    counter * 2
                };
                table.insert(outcome(counter, seq));
                let at = model.partition_point(|&(s, _)| s <= seq);
                model.insert(at, (seq, counter));
                while model.len() > capacity {
                    model.remove(0);
                }
            }
            let in_table: Vec<(u64, u64)> =
                table.order.iter().map(|o| (o.seq, o.id.counter)).collect();
            assert_eq!(in_table, model, "capacity {capacity}");
            for after in (0..count * 2).step_by(5) {
                for span in [0, 1, 9, 80] {
                    let got: Vec<u64> = table
                        .between(after, after + span)
                        .map(|o| o.id.counter)
                        .collect();
                    let want: Vec<u64> = model
                        .iter()
                        .filter(|&&(s, _)| s > after && s <= after + span)
                        .map(|&(_, c)| c)
                        .collect();
                    assert_eq!(got, want, "capacity {capacity}, between({after}, +{span})");
                }
            }
            for &(_, counter) in &model {
                let id = RequestId { origin: 1, counter };
                assert_eq!(
                    table.get(&id),
                    Some(&[Ok(Response::Int(counter as i64))][..])
                );
            }
        }
    }
}
