//! `Command::WanDump`: paging a partition's stored entries for the WAN gateway's repair.
use super::*;
use crate::core::command::{Command as C, Response as R};

const T0: u64 = 1_700_000_000_000;

type DumpEntries = Vec<(u64, Bytes, Versioned)>;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn core() -> PartitionCore {
    PartitionCore::new(PartitionConfig {
        partition: PartitionId(1),
        site: SiteId(1),
        limits: Limits::default(),
        hash_seed: 9,
    })
}

fn set(core: &mut PartitionCore, key: &str, value: &str, expiry: Option<Expiry>) {
    let command = C::Set {
        key: b(key),
        value: b(value),
        condition: SetCondition::Always,
        expiry,
        get: false,
    };
    core.handle_command(command, T0).expect("set in test");
}

/// 40 keys: values, tombstones (deleted), values whose TTL has passed but no tick swept yet.
fn seeded() -> PartitionCore {
    let mut core = core();
    for n in 0..40 {
        let key = format!("key:{n}");
        match n % 4 {
            // A value (of varying size, so the byte bound cuts at varying counts).
            0 | 1 => set(&mut core, &key, &"v".repeat(n * 10), None),
            2 => {
                set(&mut core, &key, "gone", None);
                core.handle_command(C::Del { key: b(&key) }, T0)
                    .expect("del in test");
            }
            _ => set(&mut core, &key, "short-lived", Some(Expiry::InMs(5))),
        }
    }
    core
}

fn dump(core: &mut PartitionCore, from: u64, entries_max: u32, bytes_max: u32) -> WanDumpPage {
    let command = C::WanDump {
        from_position: from,
        entries_max,
        bytes_max,
    };
    // Long after the TTLs: a dump sees expired values as stored until a tick sweeps them.
    match core.handle_command(command, T0 + 60_000) {
        Ok(R::WanDump(page)) => page,
        other => panic!("WanDump answered {other:?}"),
    }
}

/// What a full walk must yield: every stored entry in scan order.
fn expected(core: &PartitionCore) -> DumpEntries {
    core.snapshot_entries()
        .map(|(k, v)| (scan_position(k), k.clone(), v.clone()))
        .collect()
}

#[test]
fn wan_dump_pages_cover_every_stored_entry_in_scan_order() {
    // (entries_max, bytes_max)
    let cases: &[(u32, u32)] = &[
        (1, u32::MAX),
        (3, u32::MAX),
        (7, 400),
        (1_000, 1),
        (1_000, 300),
        (1_000, u32::MAX),
        (0, 0),
    ];
    let mut core = seeded();
    let all = expected(&core);
    assert_eq!(
        all.len(),
        40,
        "tombstones and unswept expired values are stored"
    );
    assert!(all.iter().any(|(_, _, e)| e.is_tombstone()));
    assert!(all.iter().any(|(_, _, e)| e.is_expired(T0 + 60_000)));
    for &(entries_max, bytes_max) in cases {
        let case = format!("entries_max {entries_max} bytes_max {bytes_max}");
        let mut walked = Vec::new();
        let mut from = 0;
        let mut pages = 0;
        loop {
            let page = dump(&mut core, from, entries_max, bytes_max);
            pages += 1;
            assert!(
                !page.entries.is_empty(),
                "{case}: every page holds an entry"
            );
            assert!(
                page.entries.len() <= entries_max.max(1) as usize,
                "{case}: {} entries",
                page.entries.len()
            );
            let bytes: usize = page.entries.iter().map(|(_, k, e)| entry_bytes(k, e)).sum();
            assert!(
                page.entries.len() == 1 || bytes <= bytes_max as usize,
                "{case}: {bytes} bytes in {} entries",
                page.entries.len()
            );
            assert!(page.entries.iter().all(|(p, _, _)| *p >= from), "{case}");
            walked.extend(page.entries);
            match page.next {
                Some(next) => {
                    let last = walked.last().map(|(p, _, _)| *p).expect("non-empty");
                    assert!(next > last, "{case}: next {next} not past {last}");
                    from = next;
                }
                None => break,
            }
            assert!(pages <= 41, "{case}: the walk does not end");
        }
        assert_eq!(walked, all, "{case}");
        let expected_pages = match (entries_max, bytes_max) {
            (1, _) | (_, 1) | (0, _) => 40,
            (1_000, u32::MAX) => 1,
            _ => pages,
        };
        assert_eq!(pages, expected_pages, "{case}");
    }
}

#[test]
fn wan_dump_starts_at_the_asked_position() {
    let mut core = seeded();
    let all = expected(&core);
    // (from, which entries of the full walk the page must hold)
    let middle = all[17].0;
    let cases: Vec<(u64, DumpEntries)> = vec![
        (0, all.clone()),
        (middle, all[17..].to_vec()),
        (middle + 1, all[18..].to_vec()),
        (SCAN_POSITION_END, Vec::new()),
        (u64::MAX, Vec::new()),
    ];
    for (from, want) in cases {
        let page = dump(&mut core, from, u32::MAX, u32::MAX);
        assert_eq!(page.entries, want, "from {from}");
        assert_eq!(page.next, None, "from {from}");
    }
}

#[test]
fn wan_dump_of_an_empty_partition_is_one_empty_last_page() {
    let mut core = core();
    let page = dump(&mut core, 0, 10, 10_000);
    assert_eq!(
        page,
        WanDumpPage {
            entries: Vec::new(),
            next: None
        }
    );
}

#[test]
fn wan_dump_is_a_read() {
    let command = C::WanDump {
        from_position: 0,
        entries_max: 1,
        bytes_max: 1,
    };
    assert!(!command.is_write());
    let mut core = seeded();
    let seq = core.last_seq();
    dump(&mut core, 0, 5, 5_000);
    assert_eq!(core.last_seq(), seq, "a dump commits nothing");
}
