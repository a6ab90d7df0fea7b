//! Request dedup: the answers of the last `dedup_requests_max` write requests, by request id, in
//! execution order. The primary fills it as it executes; backups fill it from `Replicate`, so a
//! promoted backup answers a retried request with the original result.
use super::messages::RequestOutcome;
use super::types::RequestId;
use crate::core::command::CommandResult;
use std::collections::{BTreeMap, VecDeque};

#[derive(Debug)]
pub(crate) struct DedupTable {
    capacity: usize,
    /// Outcomes sorted by seq (execution order), oldest first: FIFO eviction and range reads.
    order: VecDeque<RequestOutcome>,
    /// Request id → seq of its outcome in `order`.
    index: BTreeMap<RequestId, u64>,
}

impl DedupTable {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            order: VecDeque::new(),
            index: BTreeMap::new(),
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
        if self.capacity == 0 || self.index.contains_key(&outcome.id) {
            return;
        }
        self.index.insert(outcome.id, outcome.seq);
        // Outcomes arrive in seq order; the search only matters after a resend reordered them.
        let at = self.order.partition_point(|o| o.seq <= outcome.seq);
        self.order.insert(at, outcome);
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

    fn position_of_seq(&self, seq: u64) -> usize {
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
}
