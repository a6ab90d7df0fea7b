//! The data cap (`data_bytes_max`): each partition counts what its entries cost
//! ([`stored_bytes`]); while the shell says the node is over its cap, client writes that store a
//! value are refused and change nothing, everything else runs.
use super::*;
use crate::core::command::{Command as C, Response as R};
use proptest::prelude::*;

const T0: u64 = 1_700_000_000_000;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn core() -> PartitionCore {
    PartitionCore::new(PartitionConfig {
        partition: PartitionId(1),
        site: SiteId(1),
        limits: Limits {
            tombstone_retention_ms: 1000,
            ..Limits::default()
        },
        hash_seed: 7,
    })
}

fn set(key: &str, value: &str) -> C {
    C::Set {
        key: b(key),
        value: b(value),
        condition: SetCondition::Always,
        expiry: None,
        get: false,
    }
}

fn set_px(key: &str, value: &str, ms: i64) -> C {
    C::Set {
        key: b(key),
        value: b(value),
        condition: SetCondition::Always,
        expiry: Some(Expiry::InMs(ms)),
        get: false,
    }
}

fn incr(key: &str) -> C {
    C::IncrBy {
        key: b(key),
        delta: 1,
    }
}

fn del(key: &str) -> C {
    C::Del { key: b(key) }
}

/// What the partition's entries cost, recounted from scratch.
fn recount(core: &PartitionCore) -> usize {
    core.snapshot_entries()
        .map(|(key, entry)| stored_bytes(key, &entry.value))
        .sum()
}

#[test]
fn data_bytes_follow_every_way_an_entry_changes() {
    let value_of = |v: &str| Value::Bytes(b(v));
    let mut core = core();
    assert_eq!(core.data_bytes(), 0);

    core.handle_command(set("k", "short"), T0).expect("set");
    assert_eq!(core.data_bytes(), stored_bytes(b"k", &value_of("short")));

    core.handle_command(set("k", "a longer value"), T0)
        .expect("overwrite");
    assert_eq!(
        core.data_bytes(),
        stored_bytes(b"k", &value_of("a longer value"))
    );

    core.handle_command(incr("n"), T0).expect("incr");
    core.handle_command(del("k"), T0).expect("del");
    let counter = core.entry(b"n").expect("counter").value.clone();
    assert_eq!(
        core.data_bytes(),
        stored_bytes(b"n", &counter) + stored_bytes(b"k", &Value::Tombstone)
    );

    // A value whose TTL passes becomes a tombstone; tombstones past retention go for good.
    core.handle_command(set_px("t", "ttl", 10), T0)
        .expect("set px");
    core.handle_tick(T0 + 20);
    assert_eq!(core.data_bytes(), recount(&core));
    assert!(core.entry(b"t").is_some_and(Versioned::is_tombstone));
    core.handle_tick(T0 + 5_000);
    assert_eq!(core.entry(b"k"), None, "tombstone purged");
    assert_eq!(core.data_bytes(), stored_bytes(b"n", &counter));

    // A snapshot replaces everything and is counted afresh.
    let mut other = PartitionCore::new(PartitionConfig {
        partition: PartitionId(1),
        site: SiteId(2),
        limits: Limits::default(),
        hash_seed: 9,
    });
    other.handle_command(set("x", "y"), T0).expect("set");
    let snapshot: Vec<(Bytes, Versioned)> = core
        .snapshot_entries()
        .map(|(k, e)| (k.clone(), e.clone()))
        .collect();
    other.install_snapshot(snapshot, core.last_seq());
    assert_eq!(other.data_bytes(), core.data_bytes());
}

#[test]
fn a_full_node_refuses_only_writes_that_store_a_value() {
    // (command, refused while full)
    let cases: Vec<(C, bool)> = vec![
        (set("k", "v"), true),
        (
            C::Set {
                key: b("new"),
                value: b("v"),
                condition: SetCondition::IfAbsent,
                expiry: None,
                get: false,
            },
            true,
        ),
        (set_px("k", "v", 1000), true),
        (incr("n"), true),
        (C::Get { key: b("k") }, false),
        (C::Exists { key: b("k") }, false),
        (
            C::Ttl {
                key: b("k"),
                unit: TtlUnit::Milliseconds,
            },
            false,
        ),
        (
            C::Expire {
                key: b("k"),
                expiry: Expiry::InMs(60_000),
            },
            false,
        ),
        (del("k"), false),
        (C::DbSize, false),
        (
            C::Scan {
                from: 0,
                count: 10,
                pattern: None,
            },
            false,
        ),
        (C::FlushAll, false),
    ];
    for (command, refused) in cases {
        let mut core = core();
        core.handle_command(set("k", "before"), T0).expect("set");
        core.handle_command(incr("n"), T0).expect("incr");
        core.set_memory_full(true);
        let before = (core.last_seq(), core.data_bytes(), recount(&core));
        let label = format!("{command:?}");
        let result = core.handle_command(command, T0 + 1);
        if refused {
            assert_eq!(result, Err(CommandError::OutOfMemory), "{label}");
            assert_eq!(
                (core.last_seq(), core.data_bytes(), recount(&core)),
                before,
                "{label}: a refused write changes nothing"
            );
        } else {
            assert_ne!(result, Err(CommandError::OutOfMemory), "{label}");
        }
    }
}

#[test]
fn writes_resume_once_the_node_is_below_its_cap_again() {
    let mut core = core();
    core.set_memory_full(true);
    assert_eq!(
        core.handle_command(set("k", "v"), T0),
        Err(CommandError::OutOfMemory)
    );
    core.set_memory_full(false);
    assert_eq!(core.handle_command(set("k", "v"), T0), Ok(R::Ok));
}

#[test]
fn replicated_and_remote_entries_are_applied_while_full() {
    let mut primary = core();
    primary.handle_command(set("k", "v"), T0).expect("set");
    let record = primary
        .changes_since(0)
        .expect("log")
        .next()
        .expect("record")
        .clone();

    let mut backup = core();
    backup.set_memory_full(true);
    backup
        .apply_replicated(&record)
        .expect("a backup mirrors its primary");
    assert_eq!(backup.data_bytes(), primary.data_bytes());

    let mut sink = core();
    sink.set_memory_full(true);
    let applied = sink.handle_command(
        C::WanApply {
            key: record.key.clone(),
            entry: record.entry.clone(),
            resolver: None,
        },
        T0,
    );
    assert!(
        matches!(applied, Ok(R::WanApplied { changed: true, .. })),
        "{applied:?}"
    );
}

#[derive(Clone, Debug)]
enum Op {
    Set(u8, u8),
    SetPx(u8, u8),
    Incr(u8),
    Del(u8),
    Tick(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..8u8, 0..40u8).prop_map(|(k, len)| Op::Set(k, len)),
        (0..8u8, 0..40u8).prop_map(|(k, len)| Op::SetPx(k, len)),
        (0..8u8).prop_map(Op::Incr),
        (0..8u8).prop_map(Op::Del),
        (0..3000u16).prop_map(Op::Tick),
    ]
}

proptest! {
    /// Whatever clients do and time does, the running count equals a recount.
    #[test]
    fn data_bytes_always_equal_a_recount(ops in proptest::collection::vec(op(), 1..60)) {
        let mut core = core();
        let mut now = T0;
        for op in ops {
            let key = |k: u8| format!("key{k}");
            let _ = match op {
                Op::Set(k, len) => core.handle_command(set(&key(k), &"x".repeat(len.into())), now),
                Op::SetPx(k, len) => {
                    core.handle_command(set_px(&key(k), &"y".repeat(len.into()), 50), now)
                }
                Op::Incr(k) => core.handle_command(incr(&key(k)), now),
                Op::Del(k) => core.handle_command(del(&key(k)), now),
                Op::Tick(ms) => {
                    now += u64::from(ms);
                    core.handle_tick(now);
                    Ok(R::Ok)
                }
            };
            prop_assert_eq!(core.data_bytes(), recount(&core));
        }
    }
}
