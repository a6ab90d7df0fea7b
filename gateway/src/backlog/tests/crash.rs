//! Crash recovery: torn tails at every offset, damaged bytes, broken cursor files, I/O failures.
use super::super::format::segment_name;
use super::super::*;
use super::support::*;

/// Records spread over several small segments; returns the backlog's storage, the appended
/// keys and where the last record starts.
fn build(storage: &MemStorage, config: &BacklogConfig) -> (Vec<(u16, u64)>, ReadCursor) {
    let (mut backlog, _) = open_mem(storage, config);
    let mut appends: Vec<(u16, u64)> = (1..=17).map(|s| ((s % 3) as u16, s)).collect();
    append_all(&mut backlog, &appends);
    let last = backlog
        .append(1, 100, &payload(1, 100))
        .expect("append last");
    appends.push((1, 100));
    backlog.sync().expect("sync");
    (appends, last.first_position)
}

#[test]
fn a_torn_tail_at_every_byte_offset_of_the_last_record_is_cut_and_reported() {
    let config = small_config(FsyncPolicy::Always);
    let probe = MemStorage::new(10);
    let (_, last) = build(&probe, &config);
    let name = segment_name(last.segment_id());
    let end = probe.file_bytes(&name).expect("segment").len() as u64;
    assert!(
        end - last.offset() > FRAME_HEADER_BYTES,
        "the last record has a payload"
    );
    for cut in last.offset()..end {
        let storage = MemStorage::new(10);
        let (appends, _) = build(&storage, &config);
        storage.cut_file(&name, cut);
        let (mut backlog, report) = open_mem(&storage, &config);
        let expected_events = if cut == last.offset() {
            vec![]
        } else {
            vec![RecoveryEvent::TornTailTruncated {
                segment_id: last.segment_id(),
                valid_bytes: last.offset(),
                bytes_dropped: cut - last.offset(),
            }]
        };
        assert_eq!(report.events, expected_events, "cut at {cut}");
        assert_eq!(
            storage.file_bytes(&name).map(|b| b.len() as u64),
            Some(last.offset())
        );
        assert_eq!(
            replay_keys(&mut backlog),
            appends[..appends.len() - 1],
            "cut at {cut}"
        );
        assert_eq!(backlog.needs_repair(), None, "a torn tail is no corruption");
        // The lost record can be appended again and follows the others.
        assert_eq!(
            backlog
                .append(1, 100, &payload(1, 100))
                .expect("append again")
                .overflow,
            None
        );
        assert_eq!(replay_keys(&mut backlog), appends, "cut at {cut}");
    }
}

#[test]
fn a_segment_torn_inside_its_header_is_removed_and_reported() {
    let config = small_config(FsyncPolicy::Always);
    for cut in 0..SEGMENT_HEADER_BYTES {
        let storage = MemStorage::new(11);
        let (mut backlog, _) = open_mem(&storage, &config);
        append_all(&mut backlog, &[(1, 1), (1, 2)]);
        drop(backlog);
        // A segment whose creation was interrupted.
        let mut full = Vec::new();
        super::super::format::encode_segment_header(9, &mut full);
        let name = segment_name(9);
        let mut raw = storage.clone();
        raw.create(&name).expect("create");
        raw.append(&name, &full[..cut as usize]).expect("append");
        let (mut backlog, report) = open_mem(&storage, &config);
        assert_eq!(
            report.events,
            vec![RecoveryEvent::TornSegmentRemoved {
                segment_id: 9,
                bytes: cut
            }],
            "cut at {cut}"
        );
        assert!(!storage.file_names().contains(&name));
        assert_eq!(replay_keys(&mut backlog), vec![(1, 1), (1, 2)]);
        // New segments never reuse the id of one that existed.
        for seq in 1..=20 {
            let outcome = backlog.append(2, seq, &payload(2, seq)).expect("append");
            if outcome.segments_created > 0 {
                assert!(
                    outcome.first_position.segment_id() >= 10,
                    "cut at {cut}: {outcome:?}"
                );
            }
        }
    }
}

#[test]
fn zero_fill_after_the_last_record_is_a_torn_tail() {
    let config = small_config(FsyncPolicy::Always);
    for zeros in [1usize, 21, 22, 23, 200] {
        let storage = MemStorage::new(12);
        let (appends, last) = build(&storage, &config);
        let name = segment_name(last.segment_id());
        let before = storage.file_bytes(&name).expect("segment").len() as u64;
        storage
            .clone()
            .append(&name, &vec![0u8; zeros])
            .expect("append zeros");
        let (mut backlog, report) = open_mem(&storage, &config);
        assert_eq!(
            report.events,
            vec![RecoveryEvent::TornTailTruncated {
                segment_id: last.segment_id(),
                valid_bytes: before,
                bytes_dropped: zeros as u64,
            }],
            "{zeros} zeros"
        );
        assert_eq!(replay_keys(&mut backlog), appends);
    }
}

/// Offsets inside segment 1 (not the newest) and the damage they must be reported as.
fn flip_cases() -> Vec<(&'static str, u64, u64, CorruptionKind)> {
    let first = SEGMENT_HEADER_BYTES;
    vec![
        ("header magic", 0, 0, CorruptionKind::BadHeader),
        ("header version", 8, 0, CorruptionKind::BadHeader),
        ("header segment id", 15, 0, CorruptionKind::BadHeader),
        ("header checksum", 22, 0, CorruptionKind::BadHeader),
        (
            "frame length",
            first,
            first,
            CorruptionKind::FrameHeaderChecksum,
        ),
        (
            "frame length high byte",
            first + 3,
            first,
            CorruptionKind::FrameHeaderChecksum,
        ),
        (
            "frame partition",
            first + 4,
            first,
            CorruptionKind::FrameHeaderChecksum,
        ),
        (
            "frame seq",
            first + 9,
            first,
            CorruptionKind::FrameHeaderChecksum,
        ),
        (
            "frame header checksum",
            first + 14,
            first,
            CorruptionKind::FrameHeaderChecksum,
        ),
        (
            "payload checksum",
            first + 18,
            first,
            CorruptionKind::PayloadChecksum,
        ),
        (
            "payload",
            first + 23,
            first,
            CorruptionKind::PayloadChecksum,
        ),
    ]
}

#[test]
fn a_flipped_byte_in_the_middle_is_detected_quarantined_and_marks_repair() {
    let config = small_config(FsyncPolicy::Always);
    for (name, at, offset, kind) in flip_cases() {
        let storage = MemStorage::new(13);
        let (appends, last) = build(&storage, &config);
        assert!(
            last.segment_id() >= 2,
            "need a segment before and after the damaged one"
        );
        // The records of segment 1, which will go to quarantine.
        let (mut probe, _) = open_mem(&storage, &config);
        let lost: Vec<(u16, u64)> = probe
            .replay()
            .map(|r| r.expect("replay"))
            .filter(|r| r.position.segment_id() == 1)
            .map(|r| (r.partition, r.seq))
            .collect();
        drop(probe);
        assert!(!lost.is_empty());
        assert!(storage.corrupt_byte(&segment_name(1), at, 0x40), "{name}");

        let (mut backlog, report) = open_mem(&storage, &config);
        let [RecoveryEvent::Quarantined(corruption)] = report.events.as_slice() else {
            panic!("{name}: expected one quarantine, got {:?}", report.events);
        };
        assert_eq!(
            (corruption.segment_id, corruption.offset, &corruption.kind),
            (1, offset, &kind),
            "{name}"
        );
        assert_eq!(
            corruption.quarantined_as,
            "00000000000000000001.seg.corrupt"
        );
        assert!(
            storage.file_names().contains(&corruption.quarantined_as),
            "{name}"
        );
        assert!(!storage.file_names().contains(&segment_name(1)), "{name}");
        let mark = backlog.needs_repair().cloned().expect("repair mark");
        assert!(
            matches!(mark.reason, RepairReason::Corruption { segment_id: 1, .. }),
            "{name}"
        );
        let kept: Vec<(u16, u64)> = appends
            .iter()
            .copied()
            .filter(|key| !lost.contains(key))
            .collect();
        assert_eq!(
            replay_keys(&mut backlog),
            kept,
            "{name}: other segments still replay"
        );
        drop(backlog);

        // The mark survives a restart, and nothing is reported twice.
        let (mut backlog, report) = open_mem(&storage, &config);
        assert_eq!(report.events, vec![], "{name}");
        assert_eq!(backlog.needs_repair(), Some(&mark), "{name}");
        // Clearing names the generation repaired.
        assert!(
            !backlog.clear_repair(mark.generation + 1).expect("clear"),
            "{name}"
        );
        assert!(
            backlog.clear_repair(mark.generation).expect("clear"),
            "{name}"
        );
        drop(backlog);
        let (backlog, _) = open_mem(&storage, &config);
        assert_eq!(backlog.needs_repair(), None, "{name}: cleared durably");
    }
}

#[test]
fn a_complete_last_record_with_a_bad_checksum_is_corruption_not_a_torn_write() {
    let config = small_config(FsyncPolicy::Always);
    let storage = MemStorage::new(14);
    let (_, last) = build(&storage, &config);
    let name = segment_name(last.segment_id());
    let end = storage.file_bytes(&name).expect("segment").len() as u64;
    storage.corrupt_byte(&name, end - 1, 0x01);
    let (mut backlog, report) = open_mem(&storage, &config);
    assert!(
        matches!(report.events.as_slice(), [RecoveryEvent::Quarantined(c)]
            if c.segment_id == last.segment_id() && c.kind == CorruptionKind::PayloadChecksum),
        "{:?}",
        report.events
    );
    assert!(backlog.needs_repair().is_some());
    // Appends continue in a fresh segment, never under the quarantined name.
    let outcome = backlog.append(1, 101, &payload(1, 101)).expect("append");
    assert!(outcome.first_position.segment_id() > last.segment_id());
}

#[test]
fn damage_found_while_reading_is_quarantined_and_reading_goes_on() {
    let config = small_config(FsyncPolicy::Always);
    let storage = MemStorage::new(15);
    let (appends, _) = build(&storage, &config);
    let (mut backlog, _) = open_mem(&storage, &config);
    storage.corrupt_byte(&segment_name(1), SEGMENT_HEADER_BYTES + 30, 0x08);
    let mut replay = backlog.replay();
    let keys: Vec<(u16, u64)> = replay
        .by_ref()
        .map(|r| {
            let r = r.expect("replay");
            (r.partition, r.seq)
        })
        .collect();
    let corruptions = replay.corruptions().to_vec();
    assert_eq!(corruptions.len(), 1, "{corruptions:?}");
    assert_eq!(corruptions[0].segment_id, 1);
    assert!(corruptions[0].records_lost > 0);
    assert!(keys.len() < appends.len() && keys.contains(appends.last().expect("records")));
    assert!(backlog.needs_repair().is_some());
    assert!(
        storage
            .file_names()
            .contains(&"00000000000000000001.seg.corrupt".to_string())
    );
}

#[test]
fn an_unreadable_cursor_file_replays_everything_and_marks_repair() {
    let config = BacklogConfig {
        segment_bytes_max: 4096,
        ..small_config(FsyncPolicy::Always)
    };
    let storage = MemStorage::new(16);
    let (mut backlog, _) = open_mem(&storage, &config);
    append_all(&mut backlog, &[(1, 1), (1, 2), (2, 1)]);
    backlog.acknowledge(1, 2).expect("ack");
    backlog.sync().expect("sync");
    drop(backlog);
    assert!(storage.corrupt_byte("cursors", 21, 0x02));
    let (mut backlog, report) = open_mem(&storage, &config);
    assert!(
        matches!(
            report.events.as_slice(),
            [RecoveryEvent::CursorFileCorrupt { .. }]
        ),
        "{:?}",
        report.events
    );
    assert_eq!(
        backlog.needs_repair().map(|m| &m.reason),
        Some(&RepairReason::CursorFileCorrupt)
    );
    assert_eq!(replay_keys(&mut backlog), vec![(1, 1), (1, 2), (2, 1)]);
    // The rewritten cursor file holds the mark across another restart.
    drop(backlog);
    let (backlog, report) = open_mem(&storage, &config);
    assert_eq!(report.events, vec![]);
    assert!(backlog.needs_repair().is_some());
}

#[test]
fn a_half_written_cursor_update_is_removed_and_the_previous_cursors_hold() {
    let config = small_config(FsyncPolicy::Always);
    let storage = MemStorage::new(17);
    let (mut backlog, _) = open_mem(&storage, &config);
    append_all(&mut backlog, &[(1, 1), (1, 2)]);
    backlog.acknowledge(1, 1).expect("ack");
    backlog.sync().expect("sync");
    drop(backlog);
    let mut raw = storage.clone();
    raw.create("cursors.tmp").expect("create");
    raw.append("cursors.tmp", b"TERNCU").expect("append");
    let (mut backlog, report) = open_mem(&storage, &config);
    assert_eq!(report.events, vec![RecoveryEvent::CursorTempRemoved]);
    assert!(!storage.file_names().contains(&"cursors.tmp".to_string()));
    assert_eq!(backlog.acked(1), Some(1));
    assert_eq!(replay_keys(&mut backlog), vec![(1, 2)]);
}

#[test]
fn a_failed_fsync_poisons_the_backlog_until_reopened() {
    let config = small_config(FsyncPolicy::Always);
    let storage = MemStorage::new(18);
    let (mut backlog, _) = open_mem(&storage, &config);
    append_all(&mut backlog, &[(1, 1), (1, 2)]);
    storage.fail_next_sync();
    let error = backlog
        .append(1, 3, &payload(1, 3))
        .expect_err("fsync fails");
    assert!(matches!(error, BacklogError::Io { .. }), "{error}");
    assert!(backlog.is_poisoned());
    for result in [
        backlog.append(1, 4, &payload(1, 4)).map(|_| ()),
        backlog.acknowledge(1, 1).map(|_| ()),
        backlog.sync(),
        backlog
            .read_from(ReadCursor::START, ReadLimits::default())
            .map(|_| ()),
    ] {
        assert!(
            matches!(result, Err(BacklogError::Poisoned(_))),
            "{result:?}"
        );
    }
    drop(backlog);
    storage.crash();
    let (mut backlog, _) = open_mem(&storage, &config);
    // What was synced is there; the record whose fsync failed may or may not be.
    let keys = replay_keys(&mut backlog);
    assert_eq!(keys[..2], [(1, 1), (1, 2)]);
    assert!(keys.len() <= 3);
}

#[test]
fn a_failed_partial_write_is_cut_off_on_reopen() {
    let config = small_config(FsyncPolicy::Never);
    for seed in 0..20 {
        let storage = MemStorage::new(seed);
        let (mut backlog, _) = open_mem(&storage, &config);
        append_all(&mut backlog, &[(1, 1), (1, 2)]);
        storage.fail_next_append();
        assert!(backlog.append(1, 3, &payload(1, 3)).is_err());
        assert!(backlog.is_poisoned());
        drop(backlog);
        let (mut backlog, report) = open_mem(&storage, &config);
        assert!(
            report.events.iter().all(|e| matches!(
                e,
                RecoveryEvent::TornTailTruncated { .. } | RecoveryEvent::TornSegmentRemoved { .. }
            )),
            "seed {seed}: {:?}",
            report.events
        );
        // A write can fail after all its bytes landed: then the record is whole and kept.
        let keys = replay_keys(&mut backlog);
        assert!(
            keys == [(1, 1), (1, 2)] || keys == [(1, 1), (1, 2), (1, 3)],
            "seed {seed}: {keys:?}"
        );
        assert_eq!(backlog.needs_repair(), None);
    }
}

#[test]
fn fs_torn_tail_at_every_offset_and_a_flipped_byte_on_a_real_directory() {
    use std::fs::OpenOptions;
    use std::io::{Seek, SeekFrom, Write};
    let config = small_config(FsyncPolicy::Always);
    let temp = tempfile::tempdir().expect("tempdir");
    let build_fs = |dir: &std::path::Path| {
        let (mut backlog, _) = Backlog::open_dir(dir, config.clone()).expect("open");
        append_all(&mut backlog, &[(1, 1), (2, 1), (1, 2)]);
        backlog
            .append(1, 3, &payload(1, 3))
            .expect("append")
            .first_position
    };
    let probe = temp.path().join("probe");
    let last = build_fs(&probe);
    let end = std::fs::metadata(probe.join(segment_name(last.segment_id())))
        .expect("segment")
        .len();
    for cut in last.offset() + 1..end {
        let dir = temp.path().join(format!("cut-{cut}"));
        build_fs(&dir);
        let file = OpenOptions::new()
            .write(true)
            .open(dir.join(segment_name(last.segment_id())))
            .expect("open segment");
        file.set_len(cut).expect("cut");
        let (mut backlog, report) = Backlog::open_dir(&dir, config.clone()).expect("reopen");
        assert!(
            matches!(report.events.as_slice(), [RecoveryEvent::TornTailTruncated { valid_bytes, .. }] if *valid_bytes == last.offset()),
            "cut at {cut}: {:?}",
            report.events
        );
        assert_eq!(replay_keys(&mut backlog), vec![(1, 1), (2, 1), (1, 2)]);
    }
    // A flipped payload byte in the first record (the last record follows it).
    let dir = temp.path().join("flip");
    build_fs(&dir);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join(segment_name(0)))
        .expect("open segment");
    let at = SEGMENT_HEADER_BYTES + FRAME_HEADER_BYTES + 1;
    file.seek(SeekFrom::Start(at)).expect("seek");
    file.write_all(b"#").expect("write");
    drop(file);
    let (backlog, report) = Backlog::open_dir(&dir, config).expect("reopen");
    assert!(
        matches!(report.events.as_slice(), [RecoveryEvent::Quarantined(c)] if c.kind == CorruptionKind::PayloadChecksum),
        "{:?}",
        report.events
    );
    assert!(dir.join("00000000000000000000.seg.corrupt").exists());
    assert!(backlog.needs_repair().is_some());
}

#[test]
fn a_torn_tail_in_an_older_segment_marks_repair_the_newest_does_not() {
    // (segment cut, repair expected): only the newest segment may lose its tail harmlessly.
    let config = small_config(FsyncPolicy::Never);
    let probe = MemStorage::new(19);
    let (_, last) = build(&probe, &config);
    let newest = last.segment_id();
    for (segment_id, repair) in [(newest, false), (newest - 1, true), (0, true)] {
        let storage = MemStorage::new(19);
        build(&storage, &config);
        let name = segment_name(segment_id);
        let len = storage.file_bytes(&name).expect("segment").len() as u64;
        storage.cut_file(&name, len - 3);
        let (backlog, report) = open_mem(&storage, &config);
        assert!(
            matches!(report.events.as_slice(), [RecoveryEvent::TornTailTruncated { segment_id: s, .. }] if *s == segment_id),
            "{:?}",
            report.events
        );
        match backlog.needs_repair() {
            Some(mark) => {
                assert!(repair, "segment {segment_id}: unexpected {mark:?}");
                assert!(
                    matches!(mark.reason, RepairReason::LostTail { segment_id: s, .. } if s == segment_id)
                );
            }
            None => assert!(!repair, "segment {segment_id}: repair mark missing"),
        }
    }
}
