//! Opening a backlog: load the cursors, scan every segment, cut torn tails, quarantine damage.
use super::config::BacklogConfig;
use super::format::{
    CURSORS_NAME, CURSORS_TEMP_NAME, CorruptionKind, CursorState, FileKind, HeaderCheck,
    SEGMENT_HEADER_BYTES, ScanEnd, check_segment_header, classify_name, decode_cursors,
    quarantine_name, scan_frames, segment_name,
};
use super::log::Backlog;
use super::storage::{FsStorage, SegmentStorage};
use super::types::{
    BacklogResult, Corruption, RecoveryEvent, RecoveryReport, RepairReason, io_err,
};
use std::collections::BTreeMap;
use std::path::Path;

impl Backlog<FsStorage> {
    /// Open (creating if missing) the backlog in directory `dir`.
    pub fn open_dir(
        dir: impl AsRef<Path>,
        config: BacklogConfig,
    ) -> BacklogResult<(Self, RecoveryReport)> {
        let dir = dir.as_ref();
        let storage = FsStorage::open_dir(dir)
            .map_err(|e| io_err(e, format!("create backlog directory {}", dir.display())))?;
        Self::open(storage, config)
    }
}

impl<S: SegmentStorage> Backlog<S> {
    /// Open the backlog kept in `storage`, recovering from whatever a crash left:
    ///
    /// - a partial record at the end of a segment (torn write) is cut off and reported; if that
    ///   segment is not the newest (possible under `FsyncPolicy::Never`), the records lost
    ///   leave a hole before later ones, so the repair mark is set too;
    /// - a damaged segment (bad header, checksum mismatch with data after it) is renamed to
    ///   `.seg.corrupt`, reported, and the needs-repair mark set: its records cannot be trusted;
    /// - segments whose records are all acknowledged are deleted;
    /// - an unreadable cursor file means every record is replayed and the repair mark set.
    ///
    /// Never panics, never skips silently: every finding is in the [`RecoveryReport`].
    /// Recovery reads one whole segment at a time into memory (`segment_bytes_max` bounds it).
    pub fn open(storage: S, config: BacklogConfig) -> BacklogResult<(Self, RecoveryReport)> {
        config.validate()?;
        let mut backlog = Self::empty(storage, config);
        let mut report = RecoveryReport::default();
        let names = backlog
            .storage
            .list()
            .map_err(|e| io_err(e, "list the backlog directory".to_string()))?;
        let mut segment_ids = Vec::new();
        let (mut has_cursors, mut has_temp) = (false, false);
        for name in &names {
            match classify_name(name) {
                FileKind::Segment(id) => {
                    segment_ids.push(id);
                    backlog.next_segment_id = backlog.next_segment_id.max(id.saturating_add(1));
                }
                FileKind::Quarantined(id) => {
                    backlog.next_segment_id = backlog.next_segment_id.max(id.saturating_add(1));
                }
                FileKind::Cursors => has_cursors = true,
                FileKind::CursorsTemp => has_temp = true,
                FileKind::Other => {}
            }
        }
        segment_ids.sort_unstable();

        if has_temp {
            backlog
                .storage
                .remove(CURSORS_TEMP_NAME)
                .map_err(|e| io_err(e, "remove a half-written cursor file".to_string()))?;
            report.events.push(RecoveryEvent::CursorTempRemoved);
        }
        let mut persist = false;
        if has_cursors {
            match backlog.read_cursor_file()? {
                Ok(state) => backlog.load_cursor_state(state),
                Err(detail) => {
                    report
                        .events
                        .push(RecoveryEvent::CursorFileCorrupt { detail });
                    backlog.set_repair(RepairReason::CursorFileCorrupt);
                    persist = true;
                }
            }
        }

        // Highest seq per partition seen in segments, to check order across segments.
        let mut seen: BTreeMap<u16, u64> = BTreeMap::new();
        let mut damaged = Vec::new();
        for &id in &segment_ids {
            backlog.recover_segment(id, &mut seen, &mut report, &mut damaged)?;
        }
        for (&partition, &seq) in &seen {
            let floor = backlog.last_appended.entry(partition).or_insert(seq);
            *floor = (*floor).max(seq);
        }
        let newest = segment_ids.last().copied();
        for event in &report.events {
            let (segment_id, bytes_dropped) = match *event {
                RecoveryEvent::TornTailTruncated {
                    segment_id,
                    bytes_dropped,
                    ..
                } => (segment_id, bytes_dropped),
                RecoveryEvent::TornSegmentRemoved { segment_id, bytes } => (segment_id, bytes),
                _ => continue,
            };
            if Some(segment_id) != newest {
                backlog.set_repair(RepairReason::LostTail {
                    segment_id,
                    bytes_dropped,
                });
                persist = true;
            }
        }
        if !damaged.is_empty() {
            for corruption in &damaged {
                backlog.set_repair(RepairReason::Corruption {
                    segment_id: corruption.segment_id,
                    offset: corruption.offset,
                    kind: corruption.kind.clone(),
                });
            }
            // Their records are gone from the backlog: never append them again.
            backlog.remember_dropped_floors();
            persist = true;
        }
        if persist {
            // Durable mark first: a crash before the renames just finds the damage again.
            backlog.persist_cursors()?;
        }
        for corruption in damaged {
            let name = segment_name(corruption.segment_id);
            backlog
                .storage
                .rename(&name, &corruption.quarantined_as)
                .map_err(|e| io_err(e, format!("quarantine damaged segment {name}")))?;
            report.events.push(RecoveryEvent::Quarantined(corruption));
        }

        let mut deletable = Vec::new();
        let acks: Vec<(u16, u64)> = backlog.acked.iter().map(|(&p, &s)| (p, s)).collect();
        for (partition, seq) in acks {
            backlog.index.acknowledge(partition, seq, &mut deletable);
        }
        // Segments left empty by an earlier crash, except the newest (appends continue there).
        let newest = backlog.index.ids().last();
        let empty: Vec<u64> = backlog
            .index
            .ids()
            .filter(|&id| {
                Some(id) != newest && backlog.index.get(id).is_some_and(|m| m.records == 0)
            })
            .collect();
        deletable.extend(empty);
        let (deleted, _) = backlog.delete_segments(deletable)?;
        report.acknowledged_segments_deleted = deleted;
        backlog.active = backlog.index.ids().last();
        // After a process restart (not a power cut) recovered bytes may still sit in the page
        // cache: count them as unsynced so the next fsync covers them.
        backlog.unsynced = backlog.index.ids().collect();
        if backlog.dir_unsynced {
            backlog
                .storage
                .sync_dir()
                .map_err(|e| io_err(e, "fsync the backlog directory after recovery".to_string()))?;
            backlog.dir_unsynced = false;
        }
        report.segments_loaded = backlog.index.len();
        report.records_loaded = backlog.index.records();
        Ok((backlog, report))
    }

    /// The decoded cursor file, or why it is unreadable (an I/O error is returned as such).
    fn read_cursor_file(&mut self) -> BacklogResult<Result<CursorState, String>> {
        let len = self
            .storage
            .open(CURSORS_NAME)
            .map_err(|e| io_err(e, "open the cursor file".to_string()))?;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        let data = self
            .storage
            .read(CURSORS_NAME, 0, len)
            .map_err(|e| io_err(e, "read the cursor file".to_string()))?;
        Ok(decode_cursors(&data))
    }

    fn load_cursor_state(&mut self, state: CursorState) {
        self.acked = state.acked.into_iter().collect();
        self.dropped_through = state.dropped_through.into_iter().collect();
        for (&partition, &seq) in self.acked.iter().chain(&self.dropped_through) {
            let floor = self.last_appended.entry(partition).or_insert(seq);
            *floor = (*floor).max(seq);
        }
        self.next_segment_id = self.next_segment_id.max(state.next_segment_id);
        self.repair_generation = state.repair_generation;
        self.repair = state.repair.map(|reason| super::types::RepairMark {
            generation: state.repair_generation,
            reason,
        });
    }

    /// Scan segment `id` into the index; cut a torn tail; collect damage into `damaged`.
    fn recover_segment(
        &mut self,
        id: u64,
        seen: &mut BTreeMap<u16, u64>,
        report: &mut RecoveryReport,
        damaged: &mut Vec<Corruption>,
    ) -> BacklogResult<()> {
        let name = segment_name(id);
        let len = self
            .storage
            .open(&name)
            .map_err(|e| io_err(e, format!("open segment {name}")))?;
        let data = self
            .storage
            .read(&name, 0, usize::try_from(len).unwrap_or(usize::MAX))
            .map_err(|e| io_err(e, format!("read segment {name}")))?;
        let corruption = |offset: u64, kind: CorruptionKind, records_lost: u64| Corruption {
            segment_id: id,
            offset,
            kind,
            records_lost,
            quarantined_as: quarantine_name(id),
        };
        match check_segment_header(&data, id) {
            HeaderCheck::Valid => {}
            HeaderCheck::Torn => {
                self.storage
                    .remove(&name)
                    .map_err(|e| io_err(e, format!("remove torn segment {name}")))?;
                self.dir_unsynced = true;
                report.events.push(RecoveryEvent::TornSegmentRemoved {
                    segment_id: id,
                    bytes: len,
                });
                return Ok(());
            }
            HeaderCheck::Bad(kind) => {
                damaged.push(corruption(0, kind, 0));
                return Ok(());
            }
        }
        self.index.add_segment(id, SEGMENT_HEADER_BYTES);
        let index = &mut self.index;
        let mut records = 0u64;
        let end = scan_frames(
            &data,
            SEGMENT_HEADER_BYTES,
            |partition, seq, _offset, frame_bytes| {
                if let Some(&previous) = seen.get(&partition)
                    && seq <= previous
                {
                    return Err(CorruptionKind::SeqOutOfOrder {
                        partition,
                        seq,
                        previous,
                    });
                }
                seen.insert(partition, seq);
                index.add_record(id, partition, seq, frame_bytes);
                records += 1;
                Ok(())
            },
        );
        match end {
            ScanEnd::Clean => {}
            ScanEnd::TornTail { valid_len } => {
                self.storage
                    .truncate(&name, valid_len)
                    .and_then(|()| self.storage.sync(&name))
                    .map_err(|e| io_err(e, format!("cut the torn tail of segment {name}")))?;
                report.events.push(RecoveryEvent::TornTailTruncated {
                    segment_id: id,
                    valid_bytes: valid_len,
                    bytes_dropped: len - valid_len,
                });
            }
            ScanEnd::Corrupt { offset, kind } => {
                self.index.remove_segment(id);
                damaged.push(corruption(offset, kind, records));
            }
        }
        Ok(())
    }
}
