use super::*;
use crate::core::command::{Command as C, Response as R};

const T0: u64 = 1_700_000_000_000;

fn core_with(limits: Limits) -> PartitionCore {
    PartitionCore::new(PartitionConfig {
        partition: PartitionId(3),
        site: SiteId(7),
        limits,
        hash_seed: 42,
    })
}

fn core() -> PartitionCore {
    core_with(Limits::default())
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn get(k: &str) -> C {
    C::Get { key: b(k) }
}
fn set(k: &str, v: &str) -> C {
    C::Set {
        key: b(k),
        value: b(v),
        condition: SetCondition::Always,
        expiry: None,
        get: false,
    }
}
fn set_with(k: &str, v: &str, condition: SetCondition, expiry: Option<Expiry>, get: bool) -> C {
    C::Set {
        key: b(k),
        value: b(v),
        condition,
        expiry,
        get,
    }
}
fn incr(k: &str, delta: i64) -> C {
    C::IncrBy { key: b(k), delta }
}
fn ttl(k: &str, unit: TtlUnit) -> C {
    C::Ttl { key: b(k), unit }
}
fn val(v: &str) -> CommandResult {
    Ok(R::Value(Some(b(v))))
}
const NIL: CommandResult = Ok(R::Value(None));
const OK: CommandResult = Ok(R::Ok);
fn int(i: i64) -> CommandResult {
    Ok(R::Int(i))
}

/// Each script is (ms after T0, command, expected result), run on a fresh core.
#[test]
fn command_scripts_behave_like_redis() {
    use SetCondition::{IfAbsent, IfPresent};
    let scripts: Vec<(&str, Vec<(u64, C, CommandResult)>)> = vec![
        ("get missing", vec![(0, get("k"), NIL)]),
        (
            "set then get",
            vec![(0, set("k", "v"), OK), (1, get("k"), val("v"))],
        ),
        (
            "overwrite",
            vec![
                (0, set("k", "a"), OK),
                (0, set("k", "b"), OK),
                (0, get("k"), val("b")),
            ],
        ),
        (
            "nx on absent applies, on present does not",
            vec![
                (0, set_with("k", "a", IfAbsent, None, false), OK),
                (0, set_with("k", "b", IfAbsent, None, false), NIL),
                (0, get("k"), val("a")),
            ],
        ),
        (
            "xx on absent does not apply",
            vec![
                (0, set_with("k", "a", IfPresent, None, false), NIL),
                (0, get("k"), NIL),
                (0, set("k", "a"), OK),
                (0, set_with("k", "b", IfPresent, None, false), OK),
                (0, get("k"), val("b")),
            ],
        ),
        (
            "set get returns the old value",
            vec![
                (0, set_with("k", "a", SetCondition::Always, None, true), NIL),
                (
                    0,
                    set_with("k", "b", SetCondition::Always, None, true),
                    val("a"),
                ),
                (0, set_with("k", "c", IfAbsent, None, true), val("b")),
                (0, get("k"), val("b")),
            ],
        ),
        (
            "px expires exactly at the deadline",
            vec![
                (
                    0,
                    set_with(
                        "k",
                        "v",
                        SetCondition::Always,
                        Some(Expiry::InMs(100)),
                        false,
                    ),
                    OK,
                ),
                (99, get("k"), val("v")),
                (99, ttl("k", TtlUnit::Milliseconds), int(1)),
                (100, get("k"), NIL),
                (100, ttl("k", TtlUnit::Milliseconds), int(-2)),
            ],
        ),
        (
            "ttl rounds seconds like redis",
            vec![
                (
                    0,
                    set_with(
                        "k",
                        "v",
                        SetCondition::Always,
                        Some(Expiry::InMs(10_000)),
                        false,
                    ),
                    OK,
                ),
                (0, ttl("k", TtlUnit::Seconds), int(10)),
                (4_400, ttl("k", TtlUnit::Seconds), int(6)),
                (4_600, ttl("k", TtlUnit::Seconds), int(5)),
                (0, ttl("nope", TtlUnit::Seconds), int(-2)),
            ],
        ),
        (
            "plain set clears the ttl, keepttl keeps it",
            vec![
                (
                    0,
                    set_with(
                        "k",
                        "v",
                        SetCondition::Always,
                        Some(Expiry::InMs(1000)),
                        false,
                    ),
                    OK,
                ),
                (
                    0,
                    set_with("k", "w", SetCondition::Always, Some(Expiry::Keep), false),
                    OK,
                ),
                (0, ttl("k", TtlUnit::Milliseconds), int(1000)),
                (0, set("k", "x"), OK),
                (0, ttl("k", TtlUnit::Milliseconds), int(-1)),
                (5000, get("k"), val("x")),
            ],
        ),
        (
            "invalid set expiries are rejected before anything changes",
            vec![
                (
                    0,
                    set_with("k", "v", SetCondition::Always, Some(Expiry::InMs(0)), false),
                    Err(CommandError::InvalidExpire { command: "set" }),
                ),
                (
                    0,
                    set_with(
                        "k",
                        "v",
                        SetCondition::Always,
                        Some(Expiry::InMs(-5)),
                        false,
                    ),
                    Err(CommandError::InvalidExpire { command: "set" }),
                ),
                (
                    0,
                    set_with("k", "v", IfAbsent, Some(Expiry::InMs(i64::MAX)), false),
                    Err(CommandError::InvalidExpire { command: "set" }),
                ),
                (0, get("k"), NIL),
            ],
        ),
        (
            "exat in the past deletes",
            vec![
                (0, set("k", "v"), OK),
                (
                    0,
                    set_with("k", "w", SetCondition::Always, Some(Expiry::AtMs(1)), false),
                    OK,
                ),
                (0, get("k"), NIL),
            ],
        ),
        (
            "del and exists",
            vec![
                (0, set("k", "v"), OK),
                (0, C::Exists { key: b("k") }, int(1)),
                (0, C::Del { key: b("k") }, int(1)),
                (0, C::Del { key: b("k") }, int(0)),
                (0, C::Exists { key: b("k") }, int(0)),
                (0, get("k"), NIL),
                (0, set("k", "again"), OK),
                (0, get("k"), val("again")),
            ],
        ),
        (
            "incr family",
            vec![
                (0, incr("n", 1), int(1)),
                (0, incr("n", 10), int(11)),
                (0, incr("n", -20), int(-9)),
                (0, get("n"), val("-9")),
                (0, set("s", "41"), OK),
                (0, incr("s", 1), int(42)),
                (0, set("bad", "4x"), OK),
                (0, incr("bad", 1), Err(CommandError::NotAnInteger)),
                (0, set("big", "9223372036854775807"), OK),
                (0, incr("big", 1), Err(CommandError::Overflow)),
                (0, get("big"), val("9223372036854775807")),
            ],
        ),
        (
            "incr keeps the ttl",
            vec![
                (
                    0,
                    set_with(
                        "n",
                        "5",
                        SetCondition::Always,
                        Some(Expiry::InMs(1000)),
                        false,
                    ),
                    OK,
                ),
                (10, incr("n", 1), int(6)),
                (10, ttl("n", TtlUnit::Milliseconds), int(990)),
                (1000, get("n"), NIL),
            ],
        ),
        (
            "expire and pexpire",
            vec![
                (
                    0,
                    C::Expire {
                        key: b("k"),
                        expiry: Expiry::InMs(1000),
                    },
                    int(0),
                ),
                (0, set("k", "v"), OK),
                (
                    0,
                    C::Expire {
                        key: b("k"),
                        expiry: Expiry::InMs(1000),
                    },
                    int(1),
                ),
                (500, ttl("k", TtlUnit::Milliseconds), int(500)),
                (
                    500,
                    C::Expire {
                        key: b("k"),
                        expiry: Expiry::InMs(0),
                    },
                    int(1),
                ),
                (500, get("k"), NIL),
                (500, set("k", "v"), OK),
                (
                    500,
                    C::Expire {
                        key: b("k"),
                        expiry: Expiry::InMs(i64::MAX),
                    },
                    Err(CommandError::InvalidExpire { command: "expire" }),
                ),
                (500, ttl("k", TtlUnit::Milliseconds), int(-1)),
            ],
        ),
        (
            "dbsize counts only live keys",
            vec![
                (0, set("a", "1"), OK),
                (
                    0,
                    set_with(
                        "b",
                        "2",
                        SetCondition::Always,
                        Some(Expiry::InMs(10)),
                        false,
                    ),
                    OK,
                ),
                (0, set("c", "3"), OK),
                (0, C::Del { key: b("c") }, int(1)),
                (0, C::DbSize, int(2)),
                (0, C::ExpiringKeys, int(1)),
                (10, C::DbSize, int(1)),
                (10, C::ExpiringKeys, int(0)),
            ],
        ),
        (
            "expiring keys count live keys with a TTL",
            vec![
                (0, set("a", "1"), OK),
                (0, C::ExpiringKeys, int(0)),
                (
                    0,
                    C::Expire {
                        key: b("a"),
                        expiry: Expiry::InMs(50),
                    },
                    int(1),
                ),
                (0, C::ExpiringKeys, int(1)),
                (0, set_with("a", "2", SetCondition::Always, None, false), OK),
                (0, C::ExpiringKeys, int(0)),
                (
                    0,
                    set_with("b", "2", SetCondition::Always, Some(Expiry::InMs(5)), false),
                    OK,
                ),
                (0, C::Del { key: b("b") }, int(1)),
                (0, C::ExpiringKeys, int(0)),
            ],
        ),
        (
            "flushall removes everything",
            vec![
                (0, set("a", "1"), OK),
                (0, incr("b", 1), int(1)),
                (0, C::FlushAll, OK),
                (0, C::DbSize, int(0)),
                (0, get("a"), NIL),
                (0, incr("b", 1), int(1)),
            ],
        ),
    ];
    for (name, script) in scripts {
        let mut core = core();
        for (step, (at, command, expected)) in script.into_iter().enumerate() {
            let got = core.handle_command(command.clone(), T0 + at);
            assert_eq!(got, expected, "script {name:?} step {step}: {command:?}");
        }
    }
}

#[test]
fn limits_are_enforced_with_clear_errors() {
    let limits = Limits {
        key_bytes_max: 4,
        value_bytes_max: 8,
        ..Limits::default()
    };
    let mut core = core_with(limits);
    assert_eq!(
        core.handle_command(set("toolong", "v"), T0),
        Err(CommandError::KeyTooLarge { len: 7, max: 4 })
    );
    assert_eq!(
        core.handle_command(set("k", "123456789"), T0),
        Err(CommandError::ValueTooLarge { len: 9, max: 8 })
    );
    assert_eq!(
        core.last_seq(),
        0,
        "rejected writes must not reach the change log"
    );
}

#[test]
fn every_write_appends_its_new_state_to_the_change_log() {
    let mut core = core();
    let writes = [
        set("a", "1"),
        incr("b", 5),
        set("a", "2"),
        C::Del { key: b("b") },
        C::FlushAll,
    ];
    let mut expected_seq = 0;
    for command in writes {
        core.handle_command(command, T0).ok();
        let records: Vec<ChangeRecord> = core
            .changes_since(expected_seq)
            .map(|it| it.cloned().collect())
            .unwrap_or_default();
        for record in records {
            expected_seq += 1;
            assert_eq!(record.seq, expected_seq, "gap-free sequence numbers");
            assert_eq!(record.partition, PartitionId(3));
            assert_eq!(
                Some(&record.entry),
                core.entry(&record.key),
                "record carries the stored state"
            );
        }
    }
    // set a, incr b, set a, del b, flushall (tombstones a; b is already gone).
    assert_eq!(core.last_seq(), 5);
    assert_eq!(core.handle_command(C::Get { key: b("a") }, T0), NIL);
}

#[test]
fn reads_and_failed_conditions_do_not_write() {
    let mut core = core();
    core.handle_command(set("k", "v"), T0).ok();
    let reads = [
        get("k"),
        C::Exists { key: b("k") },
        ttl("k", TtlUnit::Seconds),
        C::DbSize,
        set_with("k", "x", SetCondition::IfAbsent, None, false),
        C::Del { key: b("missing") },
        C::Expire {
            key: b("missing"),
            expiry: Expiry::InMs(5),
        },
    ];
    for command in reads {
        core.handle_command(command, T0).ok();
    }
    assert_eq!(core.last_seq(), 1);
}

#[test]
fn versions_advance_causally_on_every_write_even_at_the_same_millisecond() {
    let mut core = core();
    let mut previous: Option<Version> = None;
    for value in ["a", "b", "c"] {
        core.handle_command(set("k", value), T0).ok();
        let version = core.entry(b"k").map(|e| e.version.clone());
        let version = version.expect("written key has an entry");
        if let Some(previous) = previous {
            assert_eq!(
                previous.causality(&version),
                tern_conflict::Causality::Before
            );
            assert!(previous.hlc < version.hlc);
        }
        previous = Some(version);
    }
    // A delete keeps the history, so a later write dominates the tombstone.
    core.handle_command(C::Del { key: b("k") }, T0).ok();
    let tombstone = core
        .entry(b"k")
        .map(|e| e.version.clone())
        .expect("tombstone kept");
    core.handle_command(set("k", "d"), T0).ok();
    let revived = core.entry(b"k").map(|e| e.version.clone()).expect("entry");
    assert_eq!(
        tombstone.causality(&revived),
        tern_conflict::Causality::Before
    );
}

#[test]
fn ticks_sweep_expired_values_then_purge_tombstones_after_retention() {
    let limits = Limits {
        tombstone_retention_ms: 1000,
        expiry_sweep_keys_max: 2,
        ..Limits::default()
    };
    let mut core = core_with(limits);
    for k in ["a", "b", "c"] {
        core.handle_command(
            set_with(k, "v", SetCondition::Always, Some(Expiry::InMs(10)), false),
            T0,
        )
        .ok();
    }
    core.handle_command(set("d", "v"), T0).ok();
    core.handle_command(C::Del { key: b("d") }, T0).ok();
    assert_eq!(core.live_keys(), 3);
    core.handle_tick(T0 + 10);
    assert_eq!(
        core.live_keys(),
        1,
        "sweep is bounded by expiry_sweep_keys_max"
    );
    core.handle_tick(T0 + 10);
    assert_eq!(core.live_keys(), 0);
    assert!(
        core.entry(b"a").is_some_and(|e| e.is_tombstone()),
        "expired value kept as tombstone"
    );
    core.handle_tick(T0 + 1000);
    assert!(
        core.entry(b"d").is_none(),
        "delete tombstone purged after retention"
    );
    assert!(
        core.entry(b"a").is_some(),
        "expiry tombstone retained until deadline + retention"
    );
    core.handle_tick(T0 + 1010);
    core.handle_tick(T0 + 1010);
    for k in ["a", "b", "c", "d"] {
        assert!(core.entry(k.as_bytes()).is_none(), "{k} purged");
    }
    assert_eq!(
        core.handle_command(
            C::Scan {
                from: 0,
                count: 100,
                pattern: None
            },
            T0 + 2000
        ),
        Ok(R::ScanPage {
            keys: vec![],
            next: None
        })
    );
}

#[test]
fn scan_returns_every_live_key_exactly_once_in_small_steps() {
    let mut core = core();
    let keys: Vec<String> = (0..500).map(|i| format!("key:{i}")).collect();
    for k in &keys {
        core.handle_command(set(k, "v"), T0).ok();
    }
    for k in keys.iter().step_by(5) {
        core.handle_command(C::Del { key: b(k) }, T0).ok();
    }
    let mut seen = Vec::new();
    let mut from = 0;
    let mut steps = 0;
    loop {
        steps += 1;
        assert!(steps < 1000, "scan must terminate");
        match core.handle_command(
            C::Scan {
                from,
                count: 7,
                pattern: None,
            },
            T0,
        ) {
            Ok(R::ScanPage { keys, next }) => {
                seen.extend(keys);
                match next {
                    Some(next) => {
                        assert!(
                            next > from || (from == 0 && next == 0),
                            "cursor moves forward"
                        );
                        from = next;
                    }
                    None => break,
                }
            }
            other => panic!("unexpected scan reply {other:?}"),
        }
    }
    seen.sort();
    let mut expected: Vec<Bytes> = keys
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 5 != 0)
        .map(|(_, k)| b(k))
        .collect();
    expected.sort();
    assert_eq!(seen, expected);
}

#[test]
fn scan_filters_by_pattern() {
    let mut core = core();
    for k in ["user:1", "user:2", "order:1"] {
        core.handle_command(set(k, "v"), T0).ok();
    }
    let reply = core.handle_command(
        C::Scan {
            from: 0,
            count: 100,
            pattern: Some(b("user:*")),
        },
        T0,
    );
    let Ok(R::ScanPage {
        mut keys,
        next: None,
    }) = reply
    else {
        panic!("unexpected {reply:?}")
    };
    keys.sort();
    assert_eq!(keys, vec![b("user:1"), b("user:2")]);
}

#[test]
fn counters_from_strings_are_attributed_to_the_writing_site() {
    let mut core = core();
    core.handle_command(set("n", "10"), T0).ok();
    core.handle_command(incr("n", 1), T0).ok();
    let Some(Versioned {
        value: Value::Counter(counter),
        ..
    }) = core.entry(b"n")
    else {
        panic!("INCR stores a counter")
    };
    // The string's value is the writer's lineage 0; the increment is this copy's own lineage.
    let actors: Vec<_> = counter.writers().collect();
    assert_eq!(actors.len(), 2, "{actors:?}");
    assert_eq!(actors[0].0, Writer::new(SiteId(7), 0));
    assert_eq!(actors[0].1.added, 10);
    assert_eq!(actors[1].0.site, SiteId(7));
    assert_ne!(actors[1].0.lineage, 0);
    assert_eq!(actors[1].1.added, 1);
    assert_eq!(counter.value(), Some(11));
}

#[test]
fn a_backup_replaying_the_primary_log_ends_identical_and_continues_its_numbering() {
    let mut primary = core();
    let mut backup = core();
    let script = [
        set("a", "1"),
        incr("n", 2),
        set_with(
            "t",
            "x",
            SetCondition::Always,
            Some(Expiry::InMs(50)),
            false,
        ),
        C::Del { key: b("a") },
        incr("n", 3),
    ];
    for command in script {
        primary.handle_command(command, T0).ok();
    }
    let records: Vec<ChangeRecord> = primary
        .changes_since(0)
        .map(|it| it.cloned().collect())
        .unwrap_or_default();
    for record in &records {
        assert_eq!(backup.apply_replicated(record), Ok(()));
    }
    assert_eq!(
        backup.apply_replicated(&records[1]),
        Err(SeqGap {
            expected: 6,
            got: 2
        }),
        "replays are refused"
    );
    let primary_state: Vec<_> = primary.snapshot_entries().collect();
    let backup_state: Vec<_> = backup.snapshot_entries().collect();
    assert_eq!(primary_state, backup_state);
    assert_eq!(backup.live_keys_at(T0), primary.live_keys_at(T0));
    // Promoted, the backup's next write follows the primary's numbering and versions.
    backup.handle_command(incr("n", 1), T0).ok();
    assert_eq!(backup.last_seq(), 6);
    assert_eq!(backup.handle_command(get("n"), T0), val("6"));
    let before = primary.entry(b"n").map(|e| e.version.clone()).expect("n");
    let after = backup.entry(b"n").map(|e| e.version.clone()).expect("n");
    assert_eq!(before.causality(&after), tern_conflict::Causality::Before);
}

#[test]
fn a_snapshot_install_replaces_state_and_restarts_the_log_after_it() {
    let mut primary = core();
    for i in 0..20 {
        primary.handle_command(set(&format!("k{i}"), "v"), T0).ok();
    }
    primary.handle_command(C::Del { key: b("k3") }, T0).ok();
    let mut backup = core();
    backup.handle_command(set("stale", "junk"), T0).ok();
    let snapshot: Vec<(Bytes, Versioned)> = primary
        .snapshot_entries()
        .map(|(k, e)| (k.clone(), e.clone()))
        .collect();
    backup.install_snapshot(snapshot, primary.last_seq());
    assert_eq!(backup.handle_command(get("stale"), T0), NIL);
    assert_eq!(backup.handle_command(C::DbSize, T0), int(19));
    assert_eq!(backup.last_seq(), 21);
    primary.handle_command(set("k0", "new"), T0).ok();
    let tail: Vec<ChangeRecord> = primary
        .changes_since(21)
        .map(|it| it.cloned().collect())
        .unwrap_or_default();
    assert_eq!(backup.apply_replicated(&tail[0]), Ok(()));
    assert_eq!(backup.handle_command(get("k0"), T0), val("new"));
}

mod remote {
    use super::*;
    use tern_conflict::{HlcTimestamp, LastWriterWins, ResolutionKind};

    const OTHER: SiteId = SiteId(9);

    fn remote_write(value: &str, wall_ms: u64, after: Option<&Versioned>) -> Versioned {
        let hlc = HlcTimestamp::new(wall_ms, 0);
        Versioned {
            value: Value::Bytes(b(value)),
            version: match after {
                Some(previous) => previous.version.successor(OTHER, hlc),
                None => Version::first(OTHER, hlc),
            },
            expires_at_ms: None,
        }
    }

    /// A site that lost its data counts under a new line: its new entry meets the one the
    /// other site kept from its old line as concurrent, and the merge keeps both lines' counts
    /// (versions counted per site, the new entry looked causally after and replaced it).
    #[test]
    fn a_sites_new_data_line_merges_with_its_old_one_elsewhere() {
        let copy_at_other = || {
            PartitionCore::new(PartitionConfig {
                partition: PartitionId(3),
                site: OTHER,
                limits: Limits::default(),
                hash_seed: 1,
            })
        };
        let incr = |core: &mut PartitionCore, times: u64, at: u64| {
            for i in 0..times {
                let command = C::IncrBy {
                    key: b("c"),
                    delta: 1,
                };
                core.handle_command(command, at + i).ok();
            }
            core.entry(b"c").cloned().expect("counted")
        };
        let mut here = core();
        let old_line = incr(&mut copy_at_other(), 7, T0);
        here.apply_remote(b("c"), old_line, &tern_conflict::CounterMerge, T0 + 100);
        let new_line = incr(&mut copy_at_other(), 3, T0 + 200);
        let applied = here.apply_remote(b("c"), new_line, &tern_conflict::CounterMerge, T0 + 300);
        assert!(applied.is_conflict(), "{:?}", applied.outcome);
        assert_eq!(here.handle_command(get("c"), T0 + 300), val("10"));
    }

    #[test]
    fn remote_entries_apply_by_causality_and_commit_only_real_changes() {
        let mut core = core();
        let first = remote_write("r1", T0, None);
        let applied = core.apply_remote(b("k"), first.clone(), &LastWriterWins, T0);
        assert_eq!(
            (applied.outcome, applied.seq),
            (Outcome::FastForward, Some(1))
        );
        assert_eq!(core.handle_command(get("k"), T0), val("r1"));
        // The same record again, or an older one, changes nothing and logs nothing.
        let again = core.apply_remote(b("k"), first.clone(), &LastWriterWins, T0);
        assert_eq!((again.outcome, again.seq), (Outcome::Unchanged, None));
        // A local write on top is causally after; a concurrent remote write is resolved.
        core.handle_command(set("k", "local"), T0 + 10).ok();
        let concurrent = remote_write("r2", T0 + 5, Some(&first));
        let concurrent_vv_other = concurrent.version.vv.get(OTHER);
        assert!(concurrent_vv_other > first.version.vv.get(OTHER));
        let resolved = core.apply_remote(b("k"), concurrent, &LastWriterWins, T0 + 20);
        assert_eq!(
            resolved.outcome,
            Outcome::Resolved(ResolutionKind::KeepLocal)
        );
        assert!(resolved.is_conflict());
        assert_eq!(core.handle_command(get("k"), T0 + 20), val("local"));
        // Keeping the local value still merges the histories, so it is logged for relay.
        assert_eq!(resolved.seq, Some(3));
        let stored = core.entry(b"k").map(|e| e.version.vv.get(OTHER));
        assert_eq!(
            stored,
            Some(concurrent_vv_other),
            "the remote history is joined in"
        );
    }

    #[test]
    fn a_remote_clock_far_ahead_is_reported_but_the_entry_applies() {
        let mut core = core();
        let future = remote_write("f", T0 + 3_600_000, None);
        let applied = core.apply_remote(b("k"), future, &LastWriterWins, T0);
        assert!(applied.clock.is_err());
        assert_eq!(core.handle_command(get("k"), T0), val("f"));
    }
}

#[test]
fn scan_positions_spread_sequential_keys_evenly() {
    // 100k `key:N` keys over 2^16 buckets of the top position bits: uniform hashing fills about
    // 65536 * (1 - e^-1.53) = 51k of them. FNV-1a alone filled fewer than 10k.
    let buckets: std::collections::HashSet<u64> = (0..100_000)
        .map(|i| scan_position(format!("key:{i}").as_bytes()) >> 32)
        .collect();
    assert!(
        buckets.len() > 48_000,
        "only {} of 65536 buckets used",
        buckets.len()
    );
    assert!((0..1000).all(|i| scan_position(format!("k{i}").as_bytes()) < SCAN_POSITION_END));
}
