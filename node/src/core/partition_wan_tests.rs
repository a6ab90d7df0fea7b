//! `Command::WanApply` and `Command::WanChanges`: the WAN gateway host's two commands.
use super::*;
use crate::core::command::{Command as C, Response as R};
use tern_conflict::{HlcTimestamp, ResolverRegistry};

const T0: u64 = 1_700_000_000_000;
const HERE: SiteId = SiteId(7);
const OTHER: SiteId = SiteId(2);

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// Keys under `c:` merge as counters; everything else is last-writer-wins.
fn resolvers() -> Arc<KeyspaceResolvers> {
    let registry = ResolverRegistry::with_builtins();
    let table = KeyspaceResolvers::new(&registry, [("c:", "counter-merge")], "lww");
    Arc::new(table.expect("built-in names"))
}

fn core_with(limits: Limits) -> PartitionCore {
    PartitionCore::new(PartitionConfig {
        partition: PartitionId(3),
        site: HERE,
        limits,
        hash_seed: 42,
    })
    .with_resolvers(resolvers())
}

fn core() -> PartitionCore {
    core_with(Limits::default())
}

/// An entry written at the other site at `wall_ms`, on top of `after` if given.
fn remote(value: Value, wall_ms: u64, after: Option<&Versioned>) -> Versioned {
    let hlc = HlcTimestamp::new(wall_ms, 0);
    Versioned {
        value,
        version: match after {
            Some(previous) => previous.version.successor(OTHER, hlc),
            None => Version::first(OTHER, hlc),
        },
        expires_at_ms: None,
    }
}

fn bytes(s: &str) -> Value {
    Value::Bytes(b(s))
}

fn counter(site: SiteId, n: i64) -> Value {
    let mut counter = PnCounter::new();
    counter.add(site, n).expect("small");
    Value::Counter(counter)
}

fn wan_apply(key: &str, entry: Versioned) -> C {
    C::WanApply {
        key: b(key),
        entry,
        resolver: None,
    }
}

fn applied(changed: bool, conflict: bool) -> CommandResult {
    Ok(R::WanApplied {
        changed,
        conflict,
        clock_rejected: false,
    })
}

fn get(core: &mut PartitionCore, key: &str, now_ms: u64) -> CommandResult {
    core.handle_command(C::Get { key: b(key) }, now_ms)
}

struct ApplyCase {
    name: &'static str,
    key: &'static str,
    /// Brings the core to the case's starting state; returns the stored entry (if any) the
    /// remote entry is built on.
    setup: fn(&mut PartitionCore) -> Option<Versioned>,
    /// The remote entry, given the one `setup` returned.
    incoming: fn(Option<&Versioned>) -> Versioned,
    changed: bool,
    conflict: bool,
    /// GET afterwards.
    read: Option<&'static str>,
}

#[test]
fn wan_apply_reconciles_with_the_keys_resolver_and_logs_the_resolved_entry() {
    let cases = [
        ApplyCase {
            name: "empty key takes the remote entry",
            key: "s:k",
            setup: |_| None,
            incoming: |_| remote(bytes("r"), T0, None),
            changed: true,
            conflict: false,
            read: Some("r"),
        },
        ApplyCase {
            name: "an older remote version changes nothing",
            key: "s:k",
            setup: |core| {
                let old = remote(bytes("old"), T0, None);
                core.handle_command(wan_apply("s:k", old.clone()), T0).ok();
                core.handle_command(
                    C::Set {
                        key: b("s:k"),
                        value: b("local"),
                        condition: SetCondition::Always,
                        expiry: None,
                        get: false,
                    },
                    T0 + 10,
                )
                .ok();
                Some(old)
            },
            incoming: |old| old.cloned().expect("setup returns the old entry"),
            changed: false,
            conflict: false,
            read: Some("local"),
        },
        ApplyCase {
            name: "a newer remote version replaces the local one",
            key: "s:k",
            setup: |core| {
                core.handle_command(
                    C::Set {
                        key: b("s:k"),
                        value: b("local"),
                        condition: SetCondition::Always,
                        expiry: None,
                        get: false,
                    },
                    T0,
                )
                .ok();
                core.entry(b"s:k").cloned()
            },
            // Seen the local write, and older by the clock: causality wins, not time.
            incoming: |local| remote(bytes("newer"), T0 - 1_000, local),
            changed: true,
            conflict: false,
            read: Some("newer"),
        },
        ApplyCase {
            name: "concurrent strings: last writer wins, local is newer",
            key: "s:k",
            setup: |core| {
                core.handle_command(
                    C::Set {
                        key: b("s:k"),
                        value: b("local"),
                        condition: SetCondition::Always,
                        expiry: None,
                        get: false,
                    },
                    T0 + 10,
                )
                .ok();
                None
            },
            incoming: |_| remote(bytes("remote"), T0 + 5, None),
            // Keeping the local value still merges the version vectors: a change to relay.
            changed: true,
            conflict: true,
            read: Some("local"),
        },
        ApplyCase {
            name: "concurrent strings: last writer wins, remote is newer",
            key: "s:k",
            setup: |core| {
                core.handle_command(
                    C::Set {
                        key: b("s:k"),
                        value: b("local"),
                        condition: SetCondition::Always,
                        expiry: None,
                        get: false,
                    },
                    T0,
                )
                .ok();
                None
            },
            incoming: |_| remote(bytes("remote"), T0 + 5, None),
            changed: true,
            conflict: true,
            read: Some("remote"),
        },
        ApplyCase {
            name: "concurrent counters under c: merge",
            key: "c:n",
            setup: |core| {
                core.handle_command(
                    C::IncrBy {
                        key: b("c:n"),
                        delta: 5,
                    },
                    T0 + 10,
                )
                .ok();
                None
            },
            incoming: |_| remote(counter(OTHER, 3), T0 + 5, None),
            changed: true,
            conflict: true,
            read: Some("8"),
        },
        ApplyCase {
            name: "concurrent counters outside c: are last-writer-wins",
            key: "n",
            setup: |core| {
                core.handle_command(
                    C::IncrBy {
                        key: b("n"),
                        delta: 5,
                    },
                    T0 + 10,
                )
                .ok();
                None
            },
            incoming: |_| remote(counter(OTHER, 3), T0 + 5, None),
            changed: true,
            conflict: true,
            read: Some("5"),
        },
        ApplyCase {
            name: "a remote delete of a value it saw",
            key: "s:k",
            setup: |_| None,
            incoming: |_| {
                let seen = remote(bytes("x"), T0, None);
                remote(Value::Tombstone, T0 + 1, Some(&seen))
            },
            changed: true,
            conflict: false,
            read: None,
        },
    ];
    for case in cases {
        let mut core = core();
        let base = (case.setup)(&mut core);
        let incoming = (case.incoming)(base.as_ref());
        let before = core.last_seq();
        let result = core.handle_command(wan_apply(case.key, incoming.clone()), T0 + 20);
        assert_eq!(
            result,
            applied(case.changed, case.conflict),
            "{}",
            case.name
        );
        assert_eq!(
            get(&mut core, case.key, T0 + 20),
            Ok(R::Value(case.read.map(b))),
            "{}",
            case.name
        );
        let new_records: Vec<ChangeRecord> = core
            .changes_since(before)
            .map(|it| it.cloned().collect())
            .unwrap_or_default();
        if case.changed {
            // One record, holding exactly the stored (resolved) entry.
            let stored = core.entry(case.key.as_bytes()).cloned().expect("stored");
            assert_eq!(new_records.len(), 1, "{}", case.name);
            assert_eq!(new_records[0].key, b(case.key), "{}", case.name);
            assert_eq!(new_records[0].entry, stored, "{}", case.name);
        } else {
            assert!(new_records.is_empty(), "{}", case.name);
        }
        // The same entry again: nothing changes, nothing is logged.
        let seq = core.last_seq();
        let again = core.handle_command(wan_apply(case.key, incoming), T0 + 30);
        assert_eq!(again, applied(false, false), "{} (again)", case.name);
        assert_eq!(core.last_seq(), seq, "{} (again)", case.name);
    }
}

#[test]
fn wan_apply_is_a_write_and_wan_changes_a_read() {
    let apply = wan_apply("k", remote(bytes("v"), T0, None));
    let read = C::WanChanges {
        after_seq: 0,
        records_max: 1,
        bytes_max: 1,
        hold_ms: 0,
    };
    assert!(apply.is_write());
    assert!(!read.is_write());
}

#[test]
fn wan_apply_enforces_the_client_limits_and_reports_a_far_clock() {
    let limits = Limits {
        key_bytes_max: 4,
        value_bytes_max: 8,
        ..Limits::default()
    };
    let mut core = core_with(limits);
    let cases: Vec<(&str, Versioned, CommandResult)> = vec![
        (
            "long-key",
            remote(bytes("v"), T0, None),
            Err(CommandError::KeyTooLarge { len: 8, max: 4 }),
        ),
        (
            "k",
            remote(bytes("123456789"), T0, None),
            Err(CommandError::ValueTooLarge { len: 9, max: 8 }),
        ),
        (
            "k",
            remote(bytes("12345678"), T0 + 3_600_000, None),
            Ok(R::WanApplied {
                changed: true,
                conflict: false,
                clock_rejected: true,
            }),
        ),
    ];
    for (key, entry, expected) in cases {
        assert_eq!(
            core.handle_command(wan_apply(key, entry), T0),
            expected,
            "{key}"
        );
    }
    assert_eq!(core.last_seq(), 1, "only the valid entry was committed");
}

/// A core with the default resolver table (a node without `[wan]`) that counted `c:n` to 5.
fn default_table_core_with_c_n_at_5() -> PartitionCore {
    let mut core = PartitionCore::new(PartitionConfig {
        partition: PartitionId(0),
        site: HERE,
        limits: Limits::default(),
        hash_seed: 1,
    });
    core.handle_command(
        C::IncrBy {
            key: b("c:n"),
            delta: 5,
        },
        T0 + 10,
    )
    .ok();
    core
}

#[test]
fn the_default_resolvers_are_last_writer_wins_for_every_key() {
    let mut core = default_table_core_with_c_n_at_5();
    let incoming = remote(counter(OTHER, 3), T0 + 5, None);
    assert_eq!(
        core.handle_command(wan_apply("c:n", incoming), T0 + 20),
        applied(true, true)
    );
    assert_eq!(get(&mut core, "c:n", T0 + 20), Ok(R::Value(Some(b("5")))));
}

/// The gateway host names the resolver: a primary without the site's `[wan]` table (another
/// node of the site, default table) resolves with it, not with its own default; a name this
/// node's registry lacks is refused and changes nothing.
#[test]
fn a_resolver_named_in_the_command_overrides_the_nodes_table() {
    let mut core = default_table_core_with_c_n_at_5();
    let incoming = remote(counter(OTHER, 3), T0 + 5, None);
    let named = |name: &str, entry: Versioned| C::WanApply {
        key: b("c:n"),
        entry,
        resolver: Some(name.to_owned()),
    };
    assert_eq!(
        core.handle_command(named("no-such-resolver", incoming.clone()), T0 + 20),
        Err(CommandError::UnknownResolver {
            name: "no-such-resolver".to_owned()
        })
    );
    assert_eq!(get(&mut core, "c:n", T0 + 20), Ok(R::Value(Some(b("5")))));
    assert_eq!(
        core.handle_command(named("counter-merge", incoming), T0 + 20),
        applied(true, true)
    );
    assert_eq!(get(&mut core, "c:n", T0 + 20), Ok(R::Value(Some(b("8")))));
}

fn changes(
    core: &mut PartitionCore,
    after_seq: u64,
    records_max: u32,
    bytes_max: u32,
) -> (Vec<u64>, u64) {
    let command = C::WanChanges {
        after_seq,
        records_max,
        bytes_max,
        hold_ms: 0,
    };
    match core.handle_command(command, T0) {
        Ok(R::WanChanges(page)) => (page.records.iter().map(|r| r.seq).collect(), page.last_seq),
        other => panic!("not a page: {other:?}"),
    }
}

#[test]
fn wan_changes_pages_by_records_and_bytes() {
    let mut core = core();
    for i in 1..=5 {
        let set = C::Set {
            key: b(&format!("k{i}")),
            value: b("value"),
            condition: SetCondition::Always,
            expiry: None,
            get: false,
        };
        assert_eq!(core.handle_command(set, T0), Ok(R::Ok));
    }
    // Every record has the same size (same key and value lengths, one-site versions).
    let one = core
        .changes_since(0)
        .ok()
        .and_then(|mut it| it.next().map(page_bytes))
        .expect("a record");
    let one = u32::try_from(one).expect("small");
    let all = u32::MAX;
    // (after_seq, records_max, bytes_max, expected seqs)
    let cases: &[(u64, u32, u32, &[u64])] = &[
        (0, 10, all, &[1, 2, 3, 4, 5]),
        (0, 2, all, &[1, 2]),
        (2, 10, all, &[3, 4, 5]),
        (2, 0, all, &[3]),
        (0, 10, 1, &[1]),
        (0, 10, 2 * one, &[1, 2]),
        (0, 10, 2 * one + one / 2, &[1, 2]),
        (1, 10, 3 * one, &[2, 3, 4]),
        (4, 10, 0, &[5]),
        (5, 10, all, &[]),
        (99, 10, all, &[]),
        (u64::MAX, u32::MAX, all, &[]),
    ];
    for &(after, records_max, bytes_max, expected) in cases {
        assert_eq!(
            changes(&mut core, after, records_max, bytes_max),
            (expected.to_vec(), 5),
            "after {after}, records_max {records_max}, bytes_max {bytes_max}"
        );
    }
    // A page carries the records themselves.
    let Ok(R::WanChanges(page)) = core.handle_command(
        C::WanChanges {
            after_seq: 4,
            records_max: 1,
            bytes_max: all,
            hold_ms: 0,
        },
        T0,
    ) else {
        panic!("not a page");
    };
    let expected: Vec<ChangeRecord> = core
        .changes_since(4)
        .map(|it| it.cloned().collect())
        .unwrap_or_default();
    assert_eq!(page.records, expected);
    assert_eq!(page.records[0].key, b("k5"));
    assert_eq!(page.records[0].partition, PartitionId(3));
}

#[test]
fn wan_changes_behind_a_truncated_log_starts_at_the_oldest_retained_record() {
    let limits = Limits {
        change_log_bytes_max: 2_000,
        ..Limits::default()
    };
    let mut core = core_with(limits);
    for i in 0..40 {
        let set = C::Set {
            key: b(&format!("key-{i}")),
            value: b("0123456789"),
            condition: SetCondition::Always,
            expiry: None,
            get: false,
        };
        core.handle_command(set, T0).ok();
    }
    let oldest = match core.changes_since(0) {
        Err(truncated) => truncated.oldest_retained,
        Ok(_) => panic!("the log should have dropped records"),
    };
    assert!(oldest > 2);
    for after in [0, oldest - 2] {
        let (seqs, last) = changes(&mut core, after, 1_000, u32::MAX);
        let expected: Vec<u64> = (oldest..=40).collect();
        assert_eq!((seqs, last), (expected, 40), "after {after}");
    }

    // After a snapshot install the log holds nothing: an old cursor gets an empty page and
    // sees from `last_seq` that it must repair.
    let entries: Vec<(Bytes, Versioned)> = core
        .snapshot_entries()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut fresh = core_with(Limits::default());
    fresh.install_snapshot(entries, 40);
    assert_eq!(changes(&mut fresh, 3, 10, u32::MAX), (vec![], 40));
}
