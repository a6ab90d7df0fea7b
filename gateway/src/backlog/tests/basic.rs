//! Append, replay, acknowledge, segment deletion, restart, fsync policy, stats.
use super::super::*;
use super::support::*;

#[test]
fn replay_returns_unacknowledged_records_in_append_order_before_and_after_restart() {
    let appends = vec![(1, 1), (2, 1), (1, 2), (2, 2), (1, 3)];
    struct Case {
        name: &'static str,
        acks: Vec<(u16, u64)>,
        expect: Vec<(u16, u64)>,
    }
    let cases = vec![
        Case {
            name: "no acks: everything, interleaved as appended",
            acks: vec![],
            expect: appends.clone(),
        },
        Case {
            name: "one partition acked in part",
            acks: vec![(1, 2)],
            expect: vec![(2, 1), (2, 2), (1, 3)],
        },
        Case {
            name: "ack above anything appended",
            acks: vec![(1, 99)],
            expect: vec![(2, 1), (2, 2)],
        },
        Case {
            name: "an older ack after a newer one changes nothing",
            acks: vec![(2, 2), (2, 1)],
            expect: vec![(1, 1), (1, 2), (1, 3)],
        },
        Case {
            name: "ack of an unknown partition changes nothing",
            acks: vec![(9, 5)],
            expect: appends.clone(),
        },
        Case {
            name: "everything acked",
            acks: vec![(1, 3), (2, 2)],
            expect: vec![],
        },
    ];
    for case in cases {
        let storage = MemStorage::new(1);
        let config = small_config(FsyncPolicy::Always);
        let (mut backlog, _) = open_mem(&storage, &config);
        append_all(&mut backlog, &appends);
        for &(partition, seq) in &case.acks {
            backlog.acknowledge(partition, seq).expect("ack");
        }
        assert_eq!(replay_keys(&mut backlog), case.expect, "{}", case.name);
        backlog.sync().expect("sync");
        drop(backlog);
        let (mut reopened, report) = open_mem(&storage, &config);
        assert_eq!(report.events, vec![], "{}", case.name);
        assert_eq!(
            replay_keys(&mut reopened),
            case.expect,
            "{} after restart",
            case.name
        );
        for &(partition, _) in &case.acks {
            assert_eq!(
                reopened.acked(partition),
                backlog_acked(&case.acks, partition),
                "{}",
                case.name
            );
        }
    }
}

fn backlog_acked(acks: &[(u16, u64)], partition: u16) -> Option<u64> {
    acks.iter()
        .filter(|(p, _)| *p == partition)
        .map(|(_, s)| *s)
        .max()
}

#[test]
fn segments_roll_and_are_deleted_once_all_their_records_are_acknowledged() {
    let storage = MemStorage::new(2);
    let config = small_config(FsyncPolicy::Never);
    let (mut backlog, _) = open_mem(&storage, &config);
    let mut appends: Vec<(u16, u64)> = (1..=30).map(|s| (1, s)).collect();
    appends.push((2, 1));
    appends.extend((31..=40).map(|s| (1, s)));
    for chunk in appends.chunks(4) {
        append_all(&mut backlog, chunk);
    }
    let segments = segment_files(&storage).len();
    assert!(segments >= 5, "expected several segments, got {segments}");
    assert_eq!(backlog.stats().segments, segments);
    let total: u64 = segment_files(&storage)
        .iter()
        .map(|name| storage.file_bytes(name).map_or(0, |b| b.len() as u64))
        .sum();
    assert_eq!(
        backlog.stats().bytes,
        total,
        "stats count every byte on disk"
    );

    // Acknowledging partition 1 halfway frees the leading segments only.
    let half = backlog.acknowledge(1, 15).expect("ack");
    assert!(half.advanced && half.segments_deleted >= 1, "{half:?}");
    assert_eq!(
        segment_files(&storage).len(),
        segments - half.segments_deleted
    );
    assert_eq!(backlog.stats().bytes, total - half.bytes_freed);

    // All of partition 1: only the segment holding partition 2's record stays.
    backlog.acknowledge(1, 40).expect("ack");
    assert_eq!(segment_files(&storage).len(), 1);
    assert_eq!(replay_keys(&mut backlog), vec![(2, 1)]);
    // The cursor file was written before the deletions.
    let (mut reopened, _) = open_mem(&storage, &config);
    assert_eq!(reopened.acked(1), Some(40));
    assert_eq!(replay_keys(&mut reopened), vec![(2, 1)]);

    let all = reopened.acknowledge(2, 1).expect("ack");
    assert_eq!(all.segments_deleted, 1);
    let stats = reopened.stats();
    assert_eq!((stats.bytes, stats.records, stats.segments), (0, 0, 0));
    assert_eq!(segment_files(&storage), Vec::<String>::new());
    // Appends go on after the log emptied, without reusing a segment name.
    append_all(&mut reopened, &[(1, 41)]);
    assert_eq!(replay_keys(&mut reopened), vec![(1, 41)]);
}

#[test]
fn a_restart_keeps_unacknowledged_records_and_persisted_cursors() {
    // (cursors persisted before the restart?, expected replay). Without persisted cursors a
    // restart replays acknowledged records again: allowed, the sink deduplicates.
    let cases = [
        (true, vec![(1, 3), (1, 4)]),
        (false, vec![(1, 1), (1, 2), (1, 3), (1, 4)]),
    ];
    for (persist, expect) in cases {
        let storage = MemStorage::new(3);
        let config = BacklogConfig {
            segment_bytes_max: 4096,
            ..small_config(FsyncPolicy::Always)
        };
        let (mut backlog, _) = open_mem(&storage, &config);
        append_all(&mut backlog, &[(1, 1), (1, 2), (1, 3), (1, 4)]);
        let outcome = backlog.acknowledge(1, 2).expect("ack");
        assert_eq!(
            outcome.segments_deleted, 0,
            "the segment still holds unacked records"
        );
        if persist {
            let tick = backlog.handle_tick(5_000).expect("tick");
            assert!(tick.cursors_persisted);
        }
        storage.crash();
        let (mut reopened, _) = open_mem(&storage, &config);
        assert_eq!(replay_keys(&mut reopened), expect, "persist={persist}");
        assert_eq!(reopened.last_appended(1), Some(4));
    }
}

#[test]
fn read_from_continues_where_it_stopped_and_sees_later_appends() {
    let storage = MemStorage::new(4);
    let (mut backlog, _) = open_mem(&storage, &small_config(FsyncPolicy::Never));
    let appends: Vec<(u16, u64)> = (1..=10).map(|s| ((s % 3) as u16, s)).collect();
    append_all(&mut backlog, &appends);
    let mut read = Vec::new();
    let mut cursor = ReadCursor::START;
    let limits = ReadLimits {
        records_max: 3,
        bytes_max: 1 << 20,
    };
    loop {
        let batch = backlog.read_from(cursor, limits).expect("read");
        assert!(batch.records.len() <= 3);
        for pair in batch.records.windows(2) {
            assert!(pair[0].position < pair[1].position, "positions grow");
        }
        read.extend(batch.records.iter().map(|r| (r.partition, r.seq)));
        cursor = batch.next;
        if batch.at_end {
            break;
        }
    }
    assert_eq!(read, appends);
    // Later appends (here into a new segment too) are found from the parked cursor.
    append_all(&mut backlog, &[(7, 1), (7, 2)]);
    let batch = backlog
        .read_from(cursor, ReadLimits::default())
        .expect("read");
    let keys: Vec<(u16, u64)> = batch.records.iter().map(|r| (r.partition, r.seq)).collect();
    assert_eq!(keys, vec![(7, 1), (7, 2)]);
    // A byte budget still returns the first record, then stops.
    let one = backlog
        .read_from(
            ReadCursor::START,
            ReadLimits {
                records_max: 100,
                bytes_max: 1,
            },
        )
        .expect("read");
    assert_eq!(one.records.len(), 1);
    assert!(!one.at_end);
    // Positions survive a round trip through u64 and keep their order.
    let first = &batch.records[0];
    assert_eq!(
        ReadCursor::from_u64(first.position.to_u64()),
        first.position
    );
    assert!(first.position.to_u64() < first.after().to_u64());
}

#[test]
fn invalid_appends_are_refused_whole() {
    let big = vec![0u8; 129];
    let ok = payload(1, 1);
    type Batch<'a> = Vec<NewRecord<'a>>;
    type Case<'a> = (&'static str, Batch<'a>, fn(&BacklogError) -> bool);
    let rec = |partition, seq, payload| NewRecord {
        partition,
        seq,
        payload,
    };
    let cases: Vec<Case<'_>> = vec![
        (
            "seq equal to the last appended",
            vec![rec(1, 5, &ok)],
            |e| {
                matches!(
                    e,
                    BacklogError::OutOfOrder {
                        partition: 1,
                        seq: 5,
                        last: 5
                    }
                )
            },
        ),
        ("seq below the last appended", vec![rec(1, 3, &ok)], |e| {
            matches!(
                e,
                BacklogError::OutOfOrder {
                    seq: 3,
                    last: 5,
                    ..
                }
            )
        }),
        (
            "repeated seq inside one batch",
            vec![rec(2, 1, &ok), rec(2, 1, &ok)],
            |e| {
                matches!(
                    e,
                    BacklogError::OutOfOrder {
                        partition: 2,
                        seq: 1,
                        last: 1
                    }
                )
            },
        ),
        (
            "payload above record_bytes_max",
            vec![rec(3, 1, &ok), rec(3, 2, &big)],
            |e| {
                matches!(
                    e,
                    BacklogError::RecordTooLarge {
                        bytes: 129,
                        record_bytes_max: 128
                    }
                )
            },
        ),
    ];
    for (name, batch, expected) in cases {
        let storage = MemStorage::new(5);
        let (mut backlog, _) = open_mem(&storage, &small_config(FsyncPolicy::Always));
        append_all(&mut backlog, &[(1, 4), (1, 5)]);
        let before = backlog.stats();
        let error = backlog.append_batch(&batch).expect_err(name);
        assert!(expected(&error), "{name}: {error}");
        assert_eq!(backlog.stats(), before, "{name}: nothing written");
        assert_eq!(backlog.last_appended(1), Some(5), "{name}");
        assert_eq!(backlog.last_appended(2), None, "{name}");
        assert_eq!(backlog.last_appended(3), None, "{name}");
        assert_eq!(replay_keys(&mut backlog), vec![(1, 4), (1, 5)], "{name}");
        assert!(!backlog.is_poisoned(), "{name}");
    }
}

fn all_segments_synced(storage: &MemStorage) -> bool {
    segment_files(storage)
        .iter()
        .all(|name| storage.unsynced_bytes(name) == Some(0))
}

#[test]
fn fsync_policies_decide_when_appended_data_is_synced() {
    // (policy, [(step, expect all synced after it)]) where a step appends, ticks or syncs.
    enum Step {
        Append(u64),
        Tick(u64),
        Sync,
    }
    use Step::*;
    let cases = vec![
        (
            FsyncPolicy::Always,
            vec![(Append(1), true), (Tick(1_000), true), (Append(2), true)],
        ),
        (
            FsyncPolicy::EveryMs(10),
            vec![
                (Append(1), false),
                (Tick(5), false),
                (Tick(10), true),
                (Append(2), false),
                (Tick(19), false),
                (Tick(20), true),
                (Append(3), false),
                (Sync, true),
            ],
        ),
        (
            FsyncPolicy::Never,
            vec![(Append(1), false), (Tick(1_000_000), false), (Sync, true)],
        ),
    ];
    for (policy, steps) in cases {
        let storage = MemStorage::new(6);
        let config = BacklogConfig {
            segment_bytes_max: 4096,
            ..small_config(policy)
        };
        let (mut backlog, _) = open_mem(&storage, &config);
        for (i, (step, synced)) in steps.into_iter().enumerate() {
            match step {
                Append(seq) => {
                    let outcome = backlog.append(1, seq, b"v").expect("append");
                    assert_eq!(outcome.synced, policy == FsyncPolicy::Always);
                }
                Tick(now_ms) => {
                    backlog.handle_tick(now_ms).expect("tick");
                }
                Sync => backlog.sync().expect("sync"),
            }
            assert_eq!(all_segments_synced(&storage), synced, "{policy:?} step {i}");
            assert_eq!(backlog.stats().unsynced, !synced, "{policy:?} step {i}");
        }
    }
}

#[test]
fn next_tick_due_says_when_work_is_pending() {
    let storage = MemStorage::new(7);
    let config = BacklogConfig {
        cursor_sync_interval_ms: 500,
        ..small_config(FsyncPolicy::EveryMs(10))
    };
    let (mut backlog, _) = open_mem(&storage, &config);
    assert_eq!(backlog.next_tick_due_ms(), None);
    assert_eq!(backlog.append(1, 1, b"a").expect("append").overflow, None);
    assert_eq!(backlog.next_tick_due_ms(), Some(10));
    backlog.handle_tick(12).expect("tick");
    assert_eq!(backlog.next_tick_due_ms(), None);
    backlog.acknowledge(1, 1).expect("ack");
    // The only segment was fully acknowledged: deleted, and cursors persisted with it.
    assert_eq!(backlog.next_tick_due_ms(), None);
    assert_eq!(backlog.append(1, 2, b"b").expect("append").overflow, None);
    assert_eq!(backlog.append(1, 3, b"c").expect("append").overflow, None);
    backlog.acknowledge(1, 2).expect("ack");
    assert_eq!(backlog.next_tick_due_ms(), Some(22), "fsync due first");
    backlog.handle_tick(22).expect("tick");
    assert_eq!(backlog.next_tick_due_ms(), Some(500), "then the cursors");
    let tick = backlog.handle_tick(500).expect("tick");
    assert!(tick.cursors_persisted);
    assert_eq!(backlog.next_tick_due_ms(), None);
}

#[test]
fn stats_show_unacknowledged_records_and_where_the_target_is_stuck() {
    let storage = MemStorage::new(8);
    let (mut backlog, _) = open_mem(&storage, &small_config(FsyncPolicy::Never));
    let appends: Vec<(u16, u64)> = (1..=20).flat_map(|s| [(1, s), (2, s)]).collect();
    append_all(&mut backlog, &appends);
    let stats = backlog.stats();
    assert_eq!((stats.records, stats.records_unacked), (40, 40));
    assert_eq!(stats.oldest_unacked, Some((1, 1)));
    assert_eq!(stats.oldest_unacked_segment_id, Some(0));
    backlog.acknowledge(1, 20).expect("ack");
    backlog.acknowledge(2, 7).expect("ack");
    let stats = backlog.stats();
    assert_eq!(stats.records_unacked, 13);
    assert_eq!(stats.oldest_unacked, Some((2, 8)));
    assert!(stats.records >= 13 && stats.records < 40, "{stats:?}");
    assert_eq!(stats.needs_repair, None);
}

#[test]
fn opening_a_missing_directory_creates_it_and_the_fs_backlog_round_trips() {
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path().join("backlog").join("site-b");
    let config = small_config(FsyncPolicy::Always);
    let (mut backlog, report) = Backlog::open_dir(&dir, config.clone()).expect("open");
    assert!(dir.is_dir());
    assert_eq!(report, RecoveryReport::default());
    let appends: Vec<(u16, u64)> = (1..=25).map(|s| ((s % 4) as u16, s)).collect();
    append_all(&mut backlog, &appends);
    backlog.acknowledge(1, 13).expect("ack");
    backlog.sync().expect("sync");
    drop(backlog);
    let (mut reopened, report) = Backlog::open_dir(&dir, config).expect("reopen");
    assert_eq!(report.events, vec![]);
    let expect: Vec<(u16, u64)> = appends
        .iter()
        .copied()
        .filter(|&(p, s)| !(p == 1 && s <= 13))
        .collect();
    assert_eq!(replay_keys(&mut reopened), expect);
}
