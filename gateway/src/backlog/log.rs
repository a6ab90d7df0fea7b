//! [`Backlog`]: appends, acknowledgements, fsync policy, overflow and the cursor file.
//! Opening (recovery) lives in `recovery.rs`, reading in `read.rs`.
use super::config::{BacklogConfig, FsyncPolicy, OverflowPolicy};
use super::format::{
    CURSORS_NAME, CURSORS_TEMP_NAME, CursorState, FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES,
    encode_cursors, encode_frame, encode_segment_header, segment_name,
};
use super::index::SegmentIndex;
use super::storage::SegmentStorage;
use super::types::{
    AckOutcome, AppendOutcome, BacklogError, BacklogResult, BacklogStats, NewRecord, OverflowDrop,
    ReadCursor, RepairMark, RepairReason, TickOutcome, io_err,
};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

/// The durable backlog of one target site: a segmented append-only log of opaque records
/// tagged `(partition, seq)`, kept until the target acknowledges them. See the module docs.
#[derive(Debug)]
pub struct Backlog<S: SegmentStorage> {
    pub(super) storage: S,
    pub(super) config: BacklogConfig,
    pub(super) index: SegmentIndex,
    /// Per partition, everything up to this seq is acknowledged.
    pub(super) acked: BTreeMap<u16, u64>,
    /// Per partition, the floor for the next append: the highest seq appended, acknowledged or
    /// dropped. Appends must go above it.
    pub(super) last_appended: BTreeMap<u16, u64>,
    /// Persisted floors of records dropped (overflow, quarantine), so `last_appended` never
    /// goes back across a restart.
    pub(super) dropped_through: BTreeMap<u16, u64>,
    pub(super) repair: Option<RepairMark>,
    pub(super) repair_generation: u64,
    pub(super) next_segment_id: u64,
    /// The segment appends go to.
    pub(super) active: Option<u64>,
    /// Segments with appended bytes not yet fsynced.
    pub(super) unsynced: BTreeSet<u64>,
    pub(super) dir_unsynced: bool,
    pub(super) cursors_dirty: bool,
    pub(super) last_segment_sync_ms: u64,
    pub(super) last_cursor_persist_ms: u64,
    /// Set when a write or fsync failed: the disk state is unknown until reopened.
    pub(super) poisoned: Option<String>,
    /// Reused buffers of an append batch.
    scratch: Vec<u8>,
    pieces: Vec<Piece>,
    undo: Vec<(u16, Option<u64>)>,
}

/// A run of an append batch going into one segment.
#[derive(Debug, Clone)]
struct Piece {
    segment_id: u64,
    new_segment: bool,
    bytes: Range<usize>,
    records: Range<usize>,
}

impl<S: SegmentStorage> Backlog<S> {
    pub(super) fn empty(storage: S, config: BacklogConfig) -> Self {
        Self {
            storage,
            config,
            index: SegmentIndex::default(),
            acked: BTreeMap::new(),
            last_appended: BTreeMap::new(),
            dropped_through: BTreeMap::new(),
            repair: None,
            repair_generation: 0,
            next_segment_id: 0,
            active: None,
            unsynced: BTreeSet::new(),
            dir_unsynced: false,
            cursors_dirty: false,
            last_segment_sync_ms: 0,
            last_cursor_persist_ms: 0,
            poisoned: None,
            scratch: Vec::new(),
            pieces: Vec::new(),
            undo: Vec::new(),
        }
    }

    /// Append one record. Prefer [`Backlog::append_batch`]: one write and at most one fsync
    /// per batch.
    pub fn append(
        &mut self,
        partition: u16,
        seq: u64,
        payload: &[u8],
    ) -> BacklogResult<AppendOutcome> {
        self.append_batch(&[NewRecord {
            partition,
            seq,
            payload,
        }])
    }

    /// Append a batch of records: all or none. Per partition, seqs must increase (also across
    /// batches) and lie above [`Backlog::last_appended`]. Costs one write per segment touched
    /// (normally one) and, under `FsyncPolicy::Always`, one fsync.
    ///
    /// Past `backlog_bytes_max`: `BlockWrites` returns [`BacklogError::Full`] and writes
    /// nothing; `DropAndRepair` drops the whole backlog, sets the repair mark, appends the
    /// batch to an empty backlog and says so in [`AppendOutcome::overflow`].
    pub fn append_batch(&mut self, records: &[NewRecord<'_>]) -> BacklogResult<AppendOutcome> {
        self.check_usable()?;
        if records.is_empty() {
            return Ok(AppendOutcome {
                first_position: self.end_position(),
                ..AppendOutcome::default()
            });
        }
        self.encode_batch(records)?;
        let needed = self.scratch.len() as u64;
        if self.index.bytes() + needed > self.config.backlog_bytes_max {
            self.undo_staged();
            return match self.config.overflow_policy {
                OverflowPolicy::BlockWrites => Err(BacklogError::Full {
                    bytes_held: self.index.bytes(),
                    bytes_needed: needed,
                    backlog_bytes_max: self.config.backlog_bytes_max,
                }),
                OverflowPolicy::DropAndRepair => self.drop_and_append(records),
            };
        }
        self.write_staged(records)
    }

    /// Validate `records` and encode them into `scratch`, split into pieces per segment.
    /// Raises `last_appended` as it goes, remembering the old values in `undo`.
    fn encode_batch(&mut self, records: &[NewRecord<'_>]) -> BacklogResult<()> {
        self.scratch.clear();
        self.pieces.clear();
        self.undo.clear();
        let segment_bytes_max = self.config.segment_bytes_max;
        let record_bytes_max = self.config.record_bytes_max;
        // (segment id, its length, whether it holds records)
        let mut current = self.active.and_then(|id| {
            self.index
                .get(id)
                .map(|meta| (id, meta.bytes, meta.records > 0))
        });
        let mut next_new_id = self.next_segment_id;
        for (i, record) in records.iter().enumerate() {
            let payload_bytes = record.payload.len() as u64;
            if payload_bytes > record_bytes_max {
                self.undo_staged();
                return Err(BacklogError::RecordTooLarge {
                    bytes: payload_bytes,
                    record_bytes_max,
                });
            }
            let last = self.last_appended.insert(record.partition, record.seq);
            self.undo.push((record.partition, last));
            if let Some(last) = last.filter(|&last| record.seq <= last) {
                self.undo_staged();
                return Err(BacklogError::OutOfOrder {
                    partition: record.partition,
                    seq: record.seq,
                    last,
                });
            }
            let frame_bytes = FRAME_HEADER_BYTES + payload_bytes;
            let roll = match current {
                None => true,
                Some((_, bytes, has_records)) => {
                    has_records && bytes + frame_bytes > segment_bytes_max
                }
            };
            if roll || self.pieces.is_empty() {
                if let Some(piece) = self.pieces.last_mut() {
                    piece.bytes.end = self.scratch.len();
                    piece.records.end = i;
                }
                let (segment_id, new_segment) = match current {
                    Some((id, _, _)) if !roll => (id, false),
                    _ => {
                        next_new_id += 1;
                        (next_new_id - 1, true)
                    }
                };
                self.pieces.push(Piece {
                    segment_id,
                    new_segment,
                    bytes: self.scratch.len()..self.scratch.len(),
                    records: i..i,
                });
                if new_segment {
                    encode_segment_header(segment_id, &mut self.scratch);
                    current = Some((segment_id, SEGMENT_HEADER_BYTES, false));
                }
            }
            encode_frame(
                record.partition,
                record.seq,
                record.payload,
                &mut self.scratch,
            );
            if let Some((_, bytes, has_records)) = current.as_mut() {
                *bytes += frame_bytes;
                *has_records = true;
            }
        }
        if let Some(piece) = self.pieces.last_mut() {
            piece.bytes.end = self.scratch.len();
            piece.records.end = records.len();
        }
        Ok(())
    }

    fn undo_staged(&mut self) {
        while let Some((partition, previous)) = self.undo.pop() {
            match previous {
                Some(seq) => self.last_appended.insert(partition, seq),
                None => self.last_appended.remove(&partition),
            };
        }
    }

    /// Write what `encode_batch` staged and index it.
    fn write_staged(&mut self, records: &[NewRecord<'_>]) -> BacklogResult<AppendOutcome> {
        let pieces = std::mem::take(&mut self.pieces);
        let result = self.write_pieces(&pieces, records);
        self.pieces = pieces;
        result
    }

    fn write_pieces(
        &mut self,
        pieces: &[Piece],
        records: &[NewRecord<'_>],
    ) -> BacklogResult<AppendOutcome> {
        let policy = self.config.fsync_policy();
        let mut outcome = AppendOutcome {
            records: records.len(),
            bytes: self.scratch.len() as u64,
            ..AppendOutcome::default()
        };
        for (n, piece) in pieces.iter().enumerate() {
            let id = piece.segment_id;
            let name = segment_name(id);
            if piece.new_segment {
                self.seal_active(policy)?;
                if let Err(e) = self.storage.create(&name) {
                    return self.poison(io_err(e, format!("create segment {name}")));
                }
                self.index.add_segment(id, SEGMENT_HEADER_BYTES);
                self.active = Some(id);
                self.next_segment_id = self.next_segment_id.max(id + 1);
                self.dir_unsynced = true;
                outcome.segments_created += 1;
            }
            if n == 0 {
                outcome.first_position = ReadCursor {
                    segment_id: id,
                    offset: self
                        .index
                        .get(id)
                        .map_or(SEGMENT_HEADER_BYTES, |meta| meta.bytes),
                };
            }
            let bytes = &self.scratch[piece.bytes.clone()];
            if let Err(e) = self.storage.append(&name, bytes) {
                return self.poison(io_err(
                    e,
                    format!("append {} bytes to segment {name}", bytes.len()),
                ));
            }
            self.unsynced.insert(id);
            for record in &records[piece.records.clone()] {
                let frame_bytes = FRAME_HEADER_BYTES + record.payload.len() as u64;
                self.index
                    .add_record(id, record.partition, record.seq, frame_bytes);
            }
        }
        if policy == FsyncPolicy::Always {
            self.sync_unsynced()?;
            outcome.synced = true;
        }
        Ok(outcome)
    }

    /// Before appends move to a new segment, make the old one durable (unless `Never`), so
    /// after a crash only the newest segment can end in a torn record.
    fn seal_active(&mut self, policy: FsyncPolicy) -> BacklogResult<()> {
        if policy == FsyncPolicy::Never {
            return Ok(());
        }
        if let Some(id) = self.active.filter(|id| self.unsynced.contains(id)) {
            let name = segment_name(id);
            if let Err(e) = self.storage.sync(&name) {
                return self.poison(io_err(e, format!("fsync segment {name} before rolling")));
            }
            self.unsynced.remove(&id);
        }
        Ok(())
    }

    fn drop_and_append(&mut self, records: &[NewRecord<'_>]) -> BacklogResult<AppendOutcome> {
        let bytes_dropped = self.index.bytes();
        let records_dropped = self.index.records();
        let repair = self.set_repair(RepairReason::Overflow {
            bytes_dropped,
            records_dropped,
        });
        self.remember_dropped_floors();
        // The mark must be durable before the data goes, or a crash in between loses records
        // without anyone knowing the target needs repair.
        self.persist_cursors()?;
        self.remove_all_segments()?;
        self.encode_batch(records)?;
        let batch_dropped = self.scratch.len() as u64 > self.config.backlog_bytes_max;
        let mut outcome = if batch_dropped {
            // Too big even for an empty backlog: it goes too, and stays dropped on restart.
            self.remember_dropped_floors();
            self.persist_cursors()?;
            AppendOutcome {
                records: 0,
                first_position: self.end_position(),
                ..AppendOutcome::default()
            }
        } else {
            self.write_staged(records)?
        };
        outcome.overflow = Some(OverflowDrop {
            bytes_dropped,
            records_dropped,
            batch_dropped,
            repair,
        });
        Ok(outcome)
    }

    /// Raise the persisted dropped floors to everything appended so far.
    pub(super) fn remember_dropped_floors(&mut self) {
        for (&partition, &seq) in &self.last_appended {
            let floor = self.dropped_through.entry(partition).or_insert(seq);
            *floor = (*floor).max(seq);
        }
    }

    fn remove_all_segments(&mut self) -> BacklogResult<()> {
        let ids: Vec<u64> = self.index.ids().collect();
        for id in ids {
            let name = segment_name(id);
            if let Err(e) = self.storage.remove(&name) {
                return self.poison(io_err(e, format!("remove dropped segment {name}")));
            }
            self.index.remove_segment(id);
        }
        self.index.clear();
        self.active = None;
        self.unsynced.clear();
        self.dir_unsynced = true;
        Ok(())
    }

    pub(super) fn set_repair(&mut self, reason: RepairReason) -> RepairMark {
        self.repair_generation += 1;
        let mark = RepairMark {
            generation: self.repair_generation,
            reason,
        };
        self.repair = Some(mark.clone());
        mark
    }

    /// The target was repaired for the mark of `generation`: clear it (durably). Returns false
    /// and keeps the mark if a newer cause arrived since (it needs another repair).
    pub fn clear_repair(&mut self, generation: u64) -> BacklogResult<bool> {
        self.check_usable()?;
        if self
            .repair
            .as_ref()
            .is_none_or(|mark| mark.generation != generation)
        {
            return Ok(false);
        }
        self.repair = None;
        self.persist_cursors()?;
        Ok(true)
    }

    /// Everything of `partition` up to `seq` is acknowledged by the target. Older or repeated
    /// acknowledgements change nothing. Segments left with no unacknowledged record are
    /// deleted (after the cursors are persisted, so a restart never replays from a deleted
    /// segment's past).
    pub fn acknowledge(&mut self, partition: u16, seq: u64) -> BacklogResult<AckOutcome> {
        self.acknowledge_many(&[(partition, seq)])
    }

    /// [`Backlog::acknowledge`] for several partitions at once (one cursor write at most).
    pub fn acknowledge_many(&mut self, acks: &[(u16, u64)]) -> BacklogResult<AckOutcome> {
        self.check_usable()?;
        let mut outcome = AckOutcome::default();
        let mut deletable = Vec::new();
        for &(partition, seq) in acks {
            if self
                .acked
                .get(&partition)
                .is_some_and(|&acked| acked >= seq)
            {
                continue;
            }
            self.acked.insert(partition, seq);
            let floor = self.last_appended.entry(partition).or_insert(seq);
            *floor = (*floor).max(seq);
            outcome.advanced = true;
            self.cursors_dirty = true;
            self.index.acknowledge(partition, seq, &mut deletable);
        }
        if !deletable.is_empty() {
            self.persist_cursors()?;
            let (segments, bytes) = self.delete_segments(deletable)?;
            outcome.segments_deleted = segments;
            outcome.bytes_freed = bytes;
        }
        Ok(outcome)
    }

    pub(super) fn delete_segments(&mut self, mut ids: Vec<u64>) -> BacklogResult<(usize, u64)> {
        ids.sort_unstable();
        ids.dedup();
        let (mut segments, mut bytes) = (0, 0);
        for id in ids {
            let Some(meta) = self.index.remove_segment(id) else {
                continue;
            };
            let name = segment_name(id);
            if let Err(e) = self.storage.remove(&name) {
                return self.poison(io_err(e, format!("remove acknowledged segment {name}")));
            }
            if self.active == Some(id) {
                self.active = None;
            }
            self.unsynced.remove(&id);
            self.dir_unsynced = true;
            segments += 1;
            bytes += meta.bytes;
        }
        Ok((segments, bytes))
    }

    /// Write the cursor file atomically: temp file, fsync, rename, fsync the directory. Always
    /// fsynced whatever the policy: it is small, rare, and holds the repair mark.
    pub(super) fn persist_cursors(&mut self) -> BacklogResult<()> {
        let state = CursorState {
            acked: self.acked.iter().map(|(&p, &s)| (p, s)).collect(),
            dropped_through: self.dropped_through.iter().map(|(&p, &s)| (p, s)).collect(),
            next_segment_id: self.next_segment_id,
            repair_generation: self.repair_generation,
            repair: self.repair.as_ref().map(|mark| mark.reason.clone()),
        };
        let bytes = encode_cursors(&state);
        let written = self
            .storage
            .create(CURSORS_TEMP_NAME)
            .and_then(|()| self.storage.append(CURSORS_TEMP_NAME, &bytes))
            .and_then(|()| self.storage.sync(CURSORS_TEMP_NAME))
            .and_then(|()| self.storage.rename(CURSORS_TEMP_NAME, CURSORS_NAME))
            .and_then(|()| self.storage.sync_dir());
        if let Err(e) = written {
            return self.poison(io_err(e, "persist acknowledgement cursors".to_string()));
        }
        self.cursors_dirty = false;
        self.dir_unsynced = false;
        Ok(())
    }

    /// fsync every segment with unsynced appends (and the directory if segments came or went).
    /// Returns how many segments were synced.
    fn sync_unsynced(&mut self) -> BacklogResult<usize> {
        let ids: Vec<u64> = self.unsynced.iter().copied().collect();
        for &id in &ids {
            let name = segment_name(id);
            if let Err(e) = self.storage.sync(&name) {
                return self.poison(io_err(e, format!("fsync segment {name}")));
            }
            self.unsynced.remove(&id);
        }
        if self.dir_unsynced {
            if let Err(e) = self.storage.sync_dir() {
                return self.poison(io_err(e, "fsync backlog directory".to_string()));
            }
            self.dir_unsynced = false;
        }
        Ok(ids.len())
    }

    /// Make everything appended durable and persist the cursors, whatever the policy.
    pub fn sync(&mut self) -> BacklogResult<()> {
        self.check_usable()?;
        self.sync_unsynced()?;
        if self.cursors_dirty {
            self.persist_cursors()?;
        }
        Ok(())
    }

    /// Drive time-based work with the caller's clock: under `EveryMs(n)`, fsync unsynced data
    /// when `n` ms passed since the last fsync; persist dirty cursors every
    /// `cursor_sync_interval_ms`. Call it at least every [`Backlog::next_tick_due_ms`].
    pub fn handle_tick(&mut self, now_ms: u64) -> BacklogResult<TickOutcome> {
        self.check_usable()?;
        let mut outcome = TickOutcome::default();
        if let FsyncPolicy::EveryMs(interval_ms) = self.config.fsync_policy()
            && !self.unsynced.is_empty()
            && now_ms.saturating_sub(self.last_segment_sync_ms) >= interval_ms
        {
            outcome.segments_synced = self.sync_unsynced()?;
            self.last_segment_sync_ms = now_ms;
        }
        if self.cursors_dirty
            && now_ms.saturating_sub(self.last_cursor_persist_ms)
                >= self.config.cursor_sync_interval_ms
        {
            self.persist_cursors()?;
            self.last_cursor_persist_ms = now_ms;
            outcome.cursors_persisted = true;
        }
        Ok(outcome)
    }

    /// When [`Backlog::handle_tick`] next has work, if any is pending.
    pub fn next_tick_due_ms(&self) -> Option<u64> {
        let fsync_due = match self.config.fsync_policy() {
            FsyncPolicy::EveryMs(interval_ms) if !self.unsynced.is_empty() => {
                Some(self.last_segment_sync_ms.saturating_add(interval_ms))
            }
            _ => None,
        };
        let cursors_due = self.cursors_dirty.then(|| {
            self.last_cursor_persist_ms
                .saturating_add(self.config.cursor_sync_interval_ms)
        });
        fsync_due.into_iter().chain(cursors_due).min()
    }

    pub(super) fn check_usable(&self) -> BacklogResult<()> {
        match &self.poisoned {
            Some(cause) => Err(BacklogError::Poisoned(cause.clone())),
            None => Ok(()),
        }
    }

    pub(super) fn poison<T>(&mut self, error: BacklogError) -> BacklogResult<T> {
        self.poisoned = Some(error.to_string());
        Err(error)
    }

    /// The position after the last record appended.
    pub fn end_position(&self) -> ReadCursor {
        match self
            .active
            .and_then(|id| self.index.get(id).map(|meta| (id, meta.bytes)))
        {
            Some((segment_id, offset)) => ReadCursor { segment_id, offset },
            None => ReadCursor::segment_start(self.next_segment_id),
        }
    }

    /// The floor for the next append of `partition`: the highest seq appended, acknowledged or
    /// dropped. After a restart the delegator resumes feeding the partition above it.
    pub fn last_appended(&self, partition: u16) -> Option<u64> {
        self.last_appended.get(&partition).copied()
    }

    /// Everything of `partition` up to this seq is acknowledged.
    pub fn acked(&self, partition: u16) -> Option<u64> {
        self.acked.get(&partition).copied()
    }

    /// All acknowledgement cursors, by partition.
    pub fn acked_cursors(&self) -> &BTreeMap<u16, u64> {
        &self.acked
    }

    pub fn needs_repair(&self) -> Option<&RepairMark> {
        self.repair.as_ref()
    }

    pub fn is_poisoned(&self) -> bool {
        self.poisoned.is_some()
    }

    pub fn config(&self) -> &BacklogConfig {
        &self.config
    }

    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// Give the storage back (e.g. to reopen on it after a simulated crash).
    pub fn into_storage(self) -> S {
        self.storage
    }

    pub fn stats(&self) -> BacklogStats {
        let acked = |partition: u16| self.acked.get(&partition).copied();
        let oldest = self.index.oldest_unacked(acked);
        BacklogStats {
            bytes: self.index.bytes(),
            records: self.index.records(),
            records_unacked: self.index.unacked_records(acked),
            segments: self.index.len(),
            oldest_unacked_segment_id: oldest.map(|(id, _, _)| id),
            oldest_unacked: oldest.map(|(_, partition, seq)| (partition, seq)),
            needs_repair: self.repair.clone(),
            unsynced: !self.unsynced.is_empty(),
        }
    }
}
