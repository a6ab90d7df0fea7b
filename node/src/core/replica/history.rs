//! Which epoch wrote which part of a replica's log, as Kafka's leader-epoch cache does: two
//! replicas whose logs both hold seq `s` written in the same epoch hold identical logs up to `s`
//! (one primary per epoch writes a single sequence, and a backup only extends a log whose last
//! record matches the primary's). That is how a backup that kept records an old primary never
//! got acknowledged is detected after a failover and repaired by snapshot.

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EpochHistory {
    /// `(first_seq, epoch)`: seqs from `first_seq` up to the next entry's were written in
    /// `epoch`. Sorted; never empty.
    starts: Vec<(u64, u64)>,
    entries_max: usize,
}

impl EpochHistory {
    /// An empty log: seq 0 belongs to epoch 0 on every replica.
    pub(crate) fn new(entries_max: usize) -> Self {
        Self {
            starts: vec![(0, 0)],
            entries_max: entries_max.max(1),
        }
    }

    /// The log was replaced by a snapshot ending at `seq`, written in `epoch`.
    pub(crate) fn reset_to(&mut self, seq: u64, epoch: u64) {
        self.starts = vec![(seq, epoch)];
    }

    /// Record that `seq` (the next one in the log) was written in `epoch`.
    pub(crate) fn note(&mut self, seq: u64, epoch: u64) {
        if self.starts.last().is_some_and(|&(_, e)| e == epoch) {
            return;
        }
        self.starts.push((seq, epoch));
        if self.starts.len() > self.entries_max {
            self.starts.remove(0);
        }
    }

    /// The epoch that wrote `seq`, if this history still reaches back to it. The caller passes
    /// only seqs its log holds (`<= last_seq`).
    pub(crate) fn epoch_of(&self, seq: u64) -> Option<u64> {
        let at = self.starts.partition_point(|&(first, _)| first <= seq);
        at.checked_sub(1).map(|i| self.starts[i].1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_are_looked_up_by_their_first_seq() {
        let mut history = EpochHistory::new(3);
        history.note(1, 1);
        history.note(2, 1);
        history.note(5, 3);
        let table = [
            (0, Some(0)),
            (1, Some(1)),
            (4, Some(1)),
            (5, Some(3)),
            (90, Some(3)),
        ];
        for (seq, epoch) in table {
            assert_eq!(history.epoch_of(seq), epoch, "seq {seq}");
        }
        history.note(7, 4);
        assert_eq!(
            history.epoch_of(0),
            None,
            "the oldest boundary was forgotten"
        );
        assert_eq!(history.epoch_of(6), Some(3));
        history.reset_to(10, 4);
        assert_eq!(history.epoch_of(9), None);
        assert_eq!(history.epoch_of(10), Some(4));
    }
}
