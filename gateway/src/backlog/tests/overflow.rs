//! The byte cap under each overflow policy.
use super::super::*;
use super::support::*;

fn capped(policy: OverflowPolicy) -> BacklogConfig {
    BacklogConfig {
        backlog_bytes_max: 512,
        overflow_policy: policy,
        ..small_config(FsyncPolicy::Always)
    }
}

/// Append single records of partition 1 from `seq` until one reports overflow or fails.
/// Also returns the stats just before that last append.
fn fill<S: SegmentStorage>(
    backlog: &mut Backlog<S>,
    seq: &mut u64,
) -> (Vec<(u16, u64)>, BacklogStats, BacklogResult<AppendOutcome>) {
    let mut kept = Vec::new();
    loop {
        *seq += 1;
        let before = backlog.stats();
        let result = backlog.append(1, *seq, &payload(1, *seq));
        match &result {
            Ok(outcome) if outcome.overflow.is_none() => kept.push((1, *seq)),
            _ => return (kept, before, result),
        }
        assert!(*seq < 1000, "the cap never bit");
    }
}

#[test]
fn block_writes_refuses_with_full_until_acknowledgements_free_space() {
    let storage = MemStorage::new(20);
    let config = capped(OverflowPolicy::BlockWrites);
    let (mut backlog, _) = open_mem(&storage, &config);
    let mut seq = 0;
    let (kept, _, result) = fill(&mut backlog, &mut seq);
    let error = result.expect_err("full");
    assert!(error.is_full(), "{error}");
    let BacklogError::Full {
        bytes_held,
        bytes_needed,
        backlog_bytes_max,
    } = error
    else {
        unreachable!("checked above")
    };
    assert_eq!(backlog_bytes_max, 512);
    assert!(bytes_held <= 512 && bytes_held + bytes_needed > 512);
    assert_eq!(backlog.stats().bytes, bytes_held, "nothing written");
    assert_eq!(
        backlog.last_appended(1),
        Some(seq - 1),
        "the refused seq can be retried"
    );
    assert_eq!(backlog.needs_repair(), None);
    assert_eq!(replay_keys(&mut backlog), kept);

    // Still full: the same append fails the same way.
    assert!(
        backlog
            .append(1, seq, &payload(1, seq))
            .expect_err("full")
            .is_full()
    );
    // Acknowledging the oldest records deletes their segment and makes room.
    let freed = backlog.acknowledge(1, kept[kept.len() / 2].1).expect("ack");
    assert!(freed.bytes_freed > 0, "{freed:?}");
    assert_eq!(
        backlog
            .append(1, seq, &payload(1, seq))
            .expect("room again")
            .overflow,
        None
    );
    assert_eq!(backlog.needs_repair(), None);
}

#[test]
fn drop_and_repair_drops_the_backlog_and_keeps_a_durable_mark_until_cleared() {
    let storage = MemStorage::new(21);
    let config = capped(OverflowPolicy::DropAndRepair);
    let (mut backlog, _) = open_mem(&storage, &config);
    let mut seq = 0;
    let (kept, before, result) = fill(&mut backlog, &mut seq);
    assert!(!kept.is_empty());
    let outcome = result.expect("drop is not an error");
    let dropped = outcome.overflow.clone().expect("overflow reported");
    assert_eq!(dropped.bytes_dropped, before.bytes);
    assert_eq!(dropped.records_dropped, kept.len() as u64);
    assert!(!dropped.batch_dropped);
    assert_eq!(
        dropped.repair.reason,
        RepairReason::Overflow {
            bytes_dropped: before.bytes,
            records_dropped: kept.len() as u64
        }
    );
    assert_eq!(
        outcome.records, 1,
        "the batch itself went into the emptied backlog"
    );
    let stats = backlog.stats();
    assert_eq!(stats.records, 1);
    assert_eq!(stats.needs_repair, Some(dropped.repair.clone()));
    assert_eq!(replay_keys(&mut backlog), vec![(1, seq)]);
    // Dropped seqs are never taken again: anti-entropy owns them now.
    let again = backlog
        .append(1, kept[0].1, b"old")
        .expect_err("dropped seq");
    assert!(matches!(again, BacklogError::OutOfOrder { .. }), "{again}");

    // Survives a crash.
    drop(backlog);
    storage.crash();
    let (mut backlog, report) = open_mem(&storage, &config);
    assert_eq!(report.events, vec![]);
    assert_eq!(backlog.needs_repair(), Some(&dropped.repair));
    assert_eq!(replay_keys(&mut backlog), vec![(1, seq)]);
    assert_eq!(backlog.last_appended(1), Some(seq));

    // A second overflow during the repair gets a new generation: clearing the first one
    // must not clear it.
    let (_, _, result) = fill(&mut backlog, &mut seq);
    let second = result.expect("drop").overflow.expect("overflow").repair;
    assert_eq!(second.generation, dropped.repair.generation + 1);
    assert!(
        !backlog
            .clear_repair(dropped.repair.generation)
            .expect("clear")
    );
    assert!(backlog.clear_repair(second.generation).expect("clear"));
    drop(backlog);
    let (backlog, _) = open_mem(&storage, &config);
    assert_eq!(backlog.needs_repair(), None);
}

#[test]
fn a_batch_larger_than_the_cap_is_dropped_too_under_drop_and_repair() {
    let storage = MemStorage::new(22);
    let config = capped(OverflowPolicy::DropAndRepair);
    let (mut backlog, _) = open_mem(&storage, &config);
    append_all(&mut backlog, &[(1, 1)]);
    let payloads: Vec<Vec<u8>> = (2..=40).map(|s| payload(2, s)).collect();
    let batch: Vec<NewRecord<'_>> = payloads
        .iter()
        .zip(2u64..)
        .map(|(payload, seq)| NewRecord {
            partition: 2,
            seq,
            payload,
        })
        .collect();
    let outcome = backlog.append_batch(&batch).expect("drop");
    let dropped = outcome.overflow.expect("overflow");
    assert!(dropped.batch_dropped);
    assert_eq!(dropped.records_dropped, 1);
    assert_eq!(backlog.stats().records, 0);
    drop(backlog);
    let (mut backlog, _) = open_mem(&storage, &config);
    assert_eq!(
        backlog.last_appended(2),
        Some(40),
        "the dropped batch stays dropped"
    );
    assert_eq!(replay_keys(&mut backlog), vec![]);
    assert!(backlog.needs_repair().is_some());

    // Under BlockWrites the same batch can never fit: it is refused, never dropped.
    let storage = MemStorage::new(23);
    let (mut backlog, _) = open_mem(&storage, &capped(OverflowPolicy::BlockWrites));
    assert!(backlog.append_batch(&batch).expect_err("too big").is_full());
}

#[test]
fn config_validation_rejects_unusable_limits() {
    let base = small_config(FsyncPolicy::Always);
    let cases = vec![
        (
            BacklogConfig {
                segment_bytes_max: 0,
                ..base.clone()
            },
            BacklogConfigError::Zero {
                name: "segment_bytes_max",
            },
        ),
        (
            base.clone().with_fsync_policy(FsyncPolicy::EveryMs(0)),
            BacklogConfigError::Zero {
                name: "fsync_interval_ms",
            },
        ),
        (
            BacklogConfig {
                record_bytes_max: 1 << 33,
                backlog_bytes_max: 1 << 40,
                ..base.clone()
            },
            BacklogConfigError::RecordTooLarge(1 << 33),
        ),
        (
            BacklogConfig {
                backlog_bytes_max: 100,
                ..base.clone()
            },
            BacklogConfigError::CapTooSmall {
                backlog_bytes_max: 100,
                segment_bytes_max: 256,
                record_bytes_max: 128,
            },
        ),
    ];
    for (config, expected) in cases {
        assert_eq!(config.validate(), Err(expected.clone()));
        let error = Backlog::open(MemStorage::new(0), config).expect_err("invalid");
        assert!(
            matches!(error, BacklogError::Config(ref e) if *e == expected),
            "{error}"
        );
    }
    assert_eq!(BacklogConfig::default().validate(), Ok(()));
    assert_eq!(base.validate(), Ok(()));
    // Config files name the policies in snake_case.
    let parsed: BacklogConfig = serde_json_like(r#"fsync_mode = "never""#);
    assert_eq!(parsed.fsync_policy(), FsyncPolicy::Never);
}

/// Parse a TOML-ish single `key = "value"` line through serde's value deserializer.
fn serde_json_like(line: &str) -> BacklogConfig {
    use serde::Deserialize;
    use serde::de::value::{Error, MapDeserializer};
    let (key, value) = line.split_once(" = ").expect("key = value");
    let value = value.trim_matches('"');
    let map = MapDeserializer::<_, Error>::new(std::iter::once((key, value)));
    BacklogConfig::deserialize(map).expect("deserialize")
}
