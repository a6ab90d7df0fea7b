//! In-memory summary of the live segments: sizes, per-partition seq ranges, and which segments
//! still hold unacknowledged records. No per-record state, so memory stays small however long
//! the backlog grows.
use std::collections::{BTreeMap, VecDeque};

/// The seqs of one partition inside one segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SeqRange {
    pub first: u64,
    pub last: u64,
    pub count: u64,
}

#[derive(Clone, Debug)]
pub(crate) struct SegmentMeta {
    pub bytes: u64,
    pub records: u64,
    pub partitions: BTreeMap<u16, SeqRange>,
    /// Partitions with records above their acknowledgement here; 0 with records = deletable.
    pub pending_partitions: usize,
}

#[derive(Debug, Default)]
pub(crate) struct SegmentIndex {
    segments: BTreeMap<u64, SegmentMeta>,
    /// Per partition, the segments holding its unacknowledged records, oldest first, with the
    /// partition's last seq in each.
    pending: BTreeMap<u16, VecDeque<(u64, u64)>>,
    bytes: u64,
    records: u64,
}

impl SegmentIndex {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn records(&self) -> u64 {
        self.records
    }

    pub fn len(&self) -> usize {
        self.segments.len()
    }

    pub fn get(&self, id: u64) -> Option<&SegmentMeta> {
        self.segments.get(&id)
    }

    pub fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.segments.keys().copied()
    }

    /// The first live segment with an id at or above `id`.
    pub fn first_from(&self, id: u64) -> Option<(u64, &SegmentMeta)> {
        self.segments
            .range(id..)
            .next()
            .map(|(&id, meta)| (id, meta))
    }

    pub fn add_segment(&mut self, id: u64, header_bytes: u64) {
        self.segments.insert(
            id,
            SegmentMeta {
                bytes: header_bytes,
                records: 0,
                partitions: BTreeMap::new(),
                pending_partitions: 0,
            },
        );
        self.bytes += header_bytes;
    }

    /// Note a record of `frame_bytes` appended to segment `id`. Seqs of a partition must
    /// increase across calls (the caller checks); the record counts as unacknowledged.
    pub fn add_record(&mut self, id: u64, partition: u16, seq: u64, frame_bytes: u64) {
        let Some(meta) = self.segments.get_mut(&id) else {
            return;
        };
        meta.bytes += frame_bytes;
        meta.records += 1;
        self.bytes += frame_bytes;
        self.records += 1;
        let queue = self.pending.entry(partition).or_default();
        match meta.partitions.get_mut(&partition) {
            Some(range) => {
                range.last = seq;
                range.count += 1;
                if let Some(back) = queue.back_mut().filter(|(seg, _)| *seg == id) {
                    back.1 = seq;
                } else {
                    // Acknowledged earlier in this segment; pending again.
                    queue.push_back((id, seq));
                    meta.pending_partitions += 1;
                }
            }
            None => {
                meta.partitions.insert(
                    partition,
                    SeqRange {
                        first: seq,
                        last: seq,
                        count: 1,
                    },
                );
                queue.push_back((id, seq));
                meta.pending_partitions += 1;
            }
        }
    }

    /// Everything of `partition` up to `seq` is acknowledged: push the ids of segments left
    /// with nothing unacknowledged onto `deletable`.
    pub fn acknowledge(&mut self, partition: u16, seq: u64, deletable: &mut Vec<u64>) {
        let Some(queue) = self.pending.get_mut(&partition) else {
            return;
        };
        while let Some(&(id, last)) = queue.front() {
            if last > seq {
                break;
            }
            queue.pop_front();
            if let Some(meta) = self.segments.get_mut(&id) {
                meta.pending_partitions = meta.pending_partitions.saturating_sub(1);
                if meta.pending_partitions == 0 {
                    deletable.push(id);
                }
            }
        }
        if queue.is_empty() {
            self.pending.remove(&partition);
        }
    }

    /// Forget segment `id` (deleted or quarantined).
    pub fn remove_segment(&mut self, id: u64) -> Option<SegmentMeta> {
        let meta = self.segments.remove(&id)?;
        self.bytes -= meta.bytes;
        self.records -= meta.records;
        for partition in meta.partitions.keys() {
            if let Some(queue) = self.pending.get_mut(partition) {
                queue.retain(|(seg, _)| *seg != id);
                if queue.is_empty() {
                    self.pending.remove(partition);
                }
            }
        }
        Some(meta)
    }

    /// Unacknowledged records, given each partition's acknowledged seq: exact when seqs have
    /// no gaps, otherwise an upper bound.
    pub fn unacked_records(&self, acked: impl Fn(u16) -> Option<u64>) -> u64 {
        let mut total = 0;
        for (&partition, queue) in &self.pending {
            let ack = acked(partition);
            for &(id, _) in queue {
                if let Some(range) = self
                    .segments
                    .get(&id)
                    .and_then(|m| m.partitions.get(&partition))
                {
                    let above = match ack {
                        Some(ack) if ack >= range.first => range.last.saturating_sub(ack),
                        _ => range.count,
                    };
                    total += above.min(range.count);
                }
            }
        }
        total
    }

    /// The oldest segment with unacknowledged records, and a partition reaching back to it with
    /// its lowest unacknowledged seq (see `BacklogStats::oldest_unacked`).
    pub fn oldest_unacked(&self, acked: impl Fn(u16) -> Option<u64>) -> Option<(u64, u16, u64)> {
        let mut best: Option<(u64, u16, u64)> = None;
        for (&partition, queue) in &self.pending {
            let Some(&(id, _)) = queue.front() else {
                continue;
            };
            if best.is_some_and(|(best_id, _, _)| best_id <= id) {
                continue;
            }
            let first = self
                .segments
                .get(&id)
                .and_then(|m| m.partitions.get(&partition))
                .map_or(0, |r| r.first);
            let above_ack = acked(partition).map_or(0, |ack| ack.saturating_add(1));
            best = Some((id, partition, first.max(above_ack)));
        }
        best
    }

    pub fn clear(&mut self) {
        *self = Self::default();
    }
}
