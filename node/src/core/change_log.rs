//! The per-partition change log: committed changes in order, retained up to a byte budget so
//! backups and the WAN delegator can read from their own cursor.
use super::keyspace::PartitionId;
use bytes::Bytes;
use std::collections::VecDeque;
use tern_conflict::{SiteCounts, Value, Versioned, Writer};

/// One committed change, in partition order. Carries the entry's full new state (not the
/// operation), so applying it twice, or after a newer one, is harmless.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeRecord {
    pub partition: PartitionId,
    /// 1, 2, 3, ... with no gaps within a partition.
    pub seq: u64,
    pub key: Bytes,
    pub entry: Versioned,
}

/// Memory a record of `key` holding `value` keeps alive, for the retention budget: the record
/// itself (inline version vector included), its deque slot, and the key and value buffers it
/// holds a reference to (shared with the live entry until that is overwritten, then the
/// record's alone — which is the steady state under overwrites, so it is what is charged).
/// Depends only on the key and value, so a write can be sized before it is applied.
pub(crate) fn record_bytes(key: &[u8], value: &Value) -> usize {
    const ALLOCATION_OVERHEAD_BYTES: usize = 16;
    let value_bytes = match value {
        Value::Bytes(b) => b.len() + ALLOCATION_OVERHEAD_BYTES,
        Value::Counter(c) => std::mem::size_of::<(Writer, SiteCounts)>() * c.writers().count() + 48,
        Value::Tombstone => 0,
    };
    std::mem::size_of::<ChangeRecord>() + key.len() + ALLOCATION_OVERHEAD_BYTES + value_bytes
}

/// A retained record with its charge and where it ends in the running total of bytes ever
/// appended, so the bytes after any seq are one subtraction away (no walk over the log).
#[derive(Debug)]
struct Retained {
    record: ChangeRecord,
    bytes: usize,
    end_offset: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "change log no longer holds records after seq {requested_after}; oldest retained is \
     {oldest_retained}"
)]
pub struct LogTruncated {
    pub requested_after: u64,
    pub oldest_retained: u64,
}

/// A replicated record that does not directly follow the last one applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("replicated record has seq {got}, expected {expected}")]
pub struct SeqGap {
    pub expected: u64,
    pub got: u64,
}

#[derive(Debug)]
pub(crate) struct ChangeLog {
    partition: PartitionId,
    records: VecDeque<Retained>,
    retained_bytes: usize,
    /// Bytes of every record appended since the log was created or reset (the offsets of
    /// [`Retained::end_offset`] count from there).
    appended_bytes: u64,
    retained_bytes_max: usize,
    last_seq: u64,
}

impl ChangeLog {
    pub(crate) fn new(partition: PartitionId, retained_bytes_max: usize) -> Self {
        Self {
            partition,
            records: VecDeque::new(),
            retained_bytes: 0,
            appended_bytes: 0,
            retained_bytes_max,
            last_seq: 0,
        }
    }

    pub(crate) fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Append the next change; returns its sequence number. The newest record is always kept,
    /// even if it alone exceeds the budget.
    pub(crate) fn append(&mut self, key: Bytes, entry: Versioned) -> u64 {
        self.last_seq += 1;
        let record = ChangeRecord {
            partition: self.partition,
            seq: self.last_seq,
            key,
            entry,
        };
        let bytes = record_bytes(&record.key, &record.entry.value);
        self.retained_bytes += bytes;
        self.appended_bytes += bytes as u64;
        self.records.push_back(Retained {
            record,
            bytes,
            end_offset: self.appended_bytes,
        });
        while self.retained_bytes > self.retained_bytes_max && self.records.len() > 1 {
            if let Some(old) = self.records.pop_front() {
                self.retained_bytes -= old.bytes;
            }
        }
        self.last_seq
    }

    /// Bytes of the retained records with seq > `after_seq` (all of them if the log no longer
    /// reaches back to `after_seq + 1`).
    pub(crate) fn bytes_after(&self, after_seq: u64) -> usize {
        let Some(oldest) = self.records.front() else {
            return 0;
        };
        if after_seq >= self.last_seq {
            return 0;
        }
        if after_seq < oldest.record.seq {
            return self.retained_bytes;
        }
        // Records are contiguous: the one with seq `after_seq` is at a computable index.
        let index = usize::try_from(after_seq - oldest.record.seq).unwrap_or(usize::MAX);
        let end = self
            .records
            .get(index)
            .map_or(self.appended_bytes, |r| r.end_offset);
        usize::try_from(self.appended_bytes - end).unwrap_or(usize::MAX)
    }

    /// Whether appending records of `added_bytes` in total would drop a record already in the
    /// log with seq > `after_seq`. Appending drops the oldest records until the log fits its
    /// budget (keeping at least the newest), and those records are older than the new ones, so
    /// that happens exactly when they exist and they plus the new ones do not fit.
    pub(crate) fn would_drop_after(&self, after_seq: u64, added_bytes: usize) -> bool {
        let kept = self.bytes_after(after_seq);
        kept > 0 && kept.saturating_add(added_bytes) > self.retained_bytes_max
    }

    /// Append a change the primary committed as `seq` (a backup's copy of the primary's log), so
    /// the log continues with the same numbering after a promotion.
    pub(crate) fn append_at(
        &mut self,
        seq: u64,
        key: Bytes,
        entry: Versioned,
    ) -> Result<(), SeqGap> {
        if seq != self.last_seq + 1 {
            return Err(SeqGap {
                expected: self.last_seq + 1,
                got: seq,
            });
        }
        self.append(key, entry);
        Ok(())
    }

    /// Forget every record and continue numbering after `last_seq` (after a snapshot install).
    pub(crate) fn reset_to(&mut self, last_seq: u64) {
        self.records.clear();
        self.retained_bytes = 0;
        self.appended_bytes = 0;
        self.last_seq = last_seq;
    }

    pub(crate) fn since(
        &self,
        after_seq: u64,
    ) -> Result<impl Iterator<Item = &ChangeRecord>, LogTruncated> {
        let oldest_retained = self
            .records
            .front()
            .map_or(self.last_seq + 1, |r| r.record.seq);
        if after_seq + 1 < oldest_retained {
            return Err(LogTruncated {
                requested_after: after_seq,
                oldest_retained,
            });
        }
        // Records are contiguous, so the start index is arithmetic, not a search.
        let skip = usize::try_from(after_seq + 1 - oldest_retained).unwrap_or(usize::MAX);
        Ok(self.records.iter().skip(skip).map(|r| &r.record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_conflict::{HlcTimestamp, SiteId, Version};

    fn entry(value: &'static [u8]) -> Versioned {
        Versioned {
            value: Value::Bytes(Bytes::from_static(value)),
            version: Version::first(SiteId(1), HlcTimestamp::new(1, 0)),
            expires_at_ms: None,
        }
    }

    #[test]
    fn sequence_numbers_are_gap_free_and_reads_start_after_the_cursor() {
        let mut log = ChangeLog::new(PartitionId(0), 1 << 20);
        for i in 1..=5 {
            assert_eq!(log.append(Bytes::from(format!("k{i}")), entry(b"v")), i);
        }
        let seqs: Vec<u64> = log
            .since(2)
            .map(|it| it.map(|r| r.seq).collect())
            .unwrap_or_default();
        assert_eq!(seqs, vec![3, 4, 5]);
        assert_eq!(log.since(5).map(|it| it.count()), Ok(0));
    }

    #[test]
    fn a_full_budget_drops_the_oldest_and_reports_truncation() {
        let mut log = ChangeLog::new(PartitionId(0), 600);
        for i in 0..20 {
            log.append(Bytes::from(format!("key-{i}")), entry(b"0123456789"));
        }
        assert!(log.retained_bytes <= 600);
        let oldest = log.records.front().map(|r| r.record.seq).unwrap_or(0);
        assert!(oldest > 1);
        assert_eq!(
            log.since(0).err(),
            Some(LogTruncated {
                requested_after: 0,
                oldest_retained: oldest
            })
        );
        assert_eq!(
            log.since(oldest - 1).map(|it| it.count()).ok(),
            Some((20 - oldest + 1) as usize)
        );
    }

    #[test]
    fn the_newest_record_survives_even_when_larger_than_the_budget() {
        let mut log = ChangeLog::new(PartitionId(0), 10);
        log.append(Bytes::from_static(b"a"), entry(b"big value"));
        log.append(Bytes::from_static(b"b"), entry(b"big value"));
        assert_eq!(
            log.since(1).map(|it| it.map(|r| r.seq).collect::<Vec<_>>()),
            Ok(vec![2])
        );
    }

    #[test]
    fn bytes_after_a_seq_match_the_records_it_would_read() {
        let mut log = ChangeLog::new(PartitionId(0), 1 << 20);
        for i in 1..=4 {
            log.append(Bytes::from(format!("k{i}")), entry(b"value"));
        }
        let one = record_bytes(b"k1", &entry(b"value").value);
        // (after_seq, records after it still retained)
        for (after_seq, records) in [(0, 4), (1, 3), (3, 1), (4, 0), (9, 0)] {
            assert_eq!(
                log.bytes_after(after_seq),
                records * one,
                "after {after_seq}"
            );
        }
    }

    #[test]
    fn would_drop_after_predicts_what_append_drops() {
        let one = record_bytes(b"k1", &entry(b"value").value);
        // (budget in records, records appended, reader's cursor, records to add)
        let cases = [
            (4, 4, 2, 2),
            (4, 4, 2, 3),
            (4, 2, 0, 2),
            (4, 2, 0, 3),
            (4, 4, 4, 9),
        ];
        for (budget, appended, after_seq, adding) in cases {
            let mut log = ChangeLog::new(PartitionId(0), budget * one);
            for i in 1..=appended {
                log.append(Bytes::from(format!("k{i}")), entry(b"value"));
            }
            let predicted = log.would_drop_after(after_seq, adding * one);
            for i in 0..adding {
                log.append(Bytes::from(format!("n{i}")), entry(b"value"));
            }
            // Only records already in the log count: a write's own records are not "held".
            let dropped = appended > after_seq && log.since(after_seq).is_err();
            assert_eq!(
                predicted, dropped,
                "budget {budget}, appended {appended}, after {after_seq}, adding {adding}"
            );
        }
    }
}
