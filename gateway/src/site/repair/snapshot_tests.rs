//! [`SnapshotReplica`]: visit order and ranges, the apply rule (the same as `CoreReplica`'s)
//! and the pushes it records; a whole session between two snapshots.
use super::*;
use crate::GatewayLimits;
use crate::repair::test_support::{self as ts, A, B, PARTITION};
use crate::repair::{CoreReplica, RepairResponder, RepairSession, RepairStatus};
use crate::wire::{DigestParams, PositionRange};
use tern_conflict::{HlcTimestamp, LastWriterWins, Value, Version};
use tern_node::core::partition::{PartitionCore, SCAN_POSITION_END};

fn snapshot_of(core: &PartitionCore) -> SnapshotReplica {
    SnapshotReplica::new(
        core.partition(),
        Arc::new(KeyspaceResolvers::default()),
        core.snapshot_entries()
            .map(|(k, v)| (scan_position(k), k.clone(), v.clone())),
    )
}

fn entry(value: &str, version: Version) -> Versioned {
    Versioned {
        value: Value::Bytes(Bytes::from(value.to_owned())),
        version,
        expires_at_ms: None,
    }
}

fn visited(
    replica: &SnapshotReplica,
    range: PositionRange,
    stop_after: usize,
) -> Vec<(u64, Bytes)> {
    let mut seen = Vec::new();
    replica.visit(range, &mut |position, key, _| {
        seen.push((position, key.clone()));
        seen.len() < stop_after
    });
    seen
}

#[test]
fn visit_walks_scan_order_within_the_range_and_stops_when_asked() {
    let mut core = ts::core(A);
    for n in 0..200 {
        ts::set(&mut core, ts::key(n), "v", None, 1_000);
    }
    for n in 0..20 {
        ts::del(&mut core, ts::key(n * 7), 1_001);
    }
    let replica = snapshot_of(&core);
    let all: Vec<(u64, Bytes)> = core
        .snapshot_entries()
        .map(|(k, _)| (scan_position(k), k.clone()))
        .collect();
    assert!(
        all.windows(2).all(|w| w[0] < w[1]),
        "scan order is (position, key)"
    );
    let quarter = SCAN_POSITION_END / 4;
    let at = all[50].0;
    // (range, stop after, expected)
    type Case = (PositionRange, usize, Vec<(u64, Bytes)>);
    let cases: Vec<Case> = vec![
        (
            PositionRange {
                from: 0,
                to: SCAN_POSITION_END,
            },
            usize::MAX,
            all.clone(),
        ),
        (
            PositionRange {
                from: quarter,
                to: 3 * quarter,
            },
            usize::MAX,
            all.iter()
                .filter(|(p, _)| (quarter..3 * quarter).contains(p))
                .cloned()
                .collect(),
        ),
        (
            PositionRange {
                from: at,
                to: at + 1,
            },
            usize::MAX,
            vec![all[50].clone()],
        ),
        (
            PositionRange {
                from: at + 1,
                to: at + 1,
            },
            usize::MAX,
            Vec::new(),
        ),
        (
            PositionRange {
                from: 0,
                to: SCAN_POSITION_END,
            },
            3,
            all[..3].to_vec(),
        ),
        (
            PositionRange {
                from: at,
                to: SCAN_POSITION_END,
            },
            1,
            vec![all[50].clone()],
        ),
    ];
    for (range, stop_after, want) in cases {
        assert_eq!(
            visited(&replica, range, stop_after),
            want,
            "{range:?} stop {stop_after}"
        );
    }
}

#[test]
fn apply_reconciles_like_the_core_and_records_what_changed() {
    let here = Version::first(A, HlcTimestamp::new(1_000, 0));
    let newer = here.successor(B, HlcTimestamp::new(2_000, 0));
    let concurrent = Version::first(B, HlcTimestamp::new(1_500, 0));
    let key = Bytes::from_static(b"k");
    // (case, stored before, incoming, changed, conflict, stored after)
    type Case = (
        &'static str,
        Option<Versioned>,
        Versioned,
        bool,
        bool,
        Versioned,
    );
    let cases: Vec<Case> = vec![
        (
            "absent: taken",
            None,
            entry("x", here.clone()),
            true,
            false,
            entry("x", here.clone()),
        ),
        (
            "same version: unchanged",
            Some(entry("x", here.clone())),
            entry("x", here.clone()),
            false,
            false,
            entry("x", here.clone()),
        ),
        (
            "older: unchanged",
            Some(entry("y", newer.clone())),
            entry("x", here.clone()),
            false,
            false,
            entry("y", newer.clone()),
        ),
        (
            "newer: fast-forward",
            Some(entry("x", here.clone())),
            entry("y", newer.clone()),
            true,
            false,
            entry("y", newer.clone()),
        ),
    ];
    for (case, before, incoming, changed, conflict, after) in cases {
        let mut replica = SnapshotReplica::new(
            PARTITION,
            Arc::new(KeyspaceResolvers::default()),
            before.map(|e| (scan_position(&key), key.clone(), e)),
        );
        let effect = replica.apply(key.clone(), incoming.clone(), 0);
        assert_eq!(effect, ApplyEffect { changed, conflict }, "{case}");
        assert_eq!(replica.get(&key), Some(&after), "{case}");
        let pushes = replica.take_pushes();
        let want: Vec<(Bytes, Versioned)> = if changed {
            vec![(key.clone(), incoming)]
        } else {
            Vec::new()
        };
        assert_eq!(pushes, want, "{case}: pushes");
        assert!(replica.take_pushes().is_empty(), "{case}: taken once");
    }
    // Real concurrency: the resolver decides, exactly as the partition core does.
    let mut core = ts::core(A);
    let mut replica = SnapshotReplica::new(
        PARTITION,
        Arc::new(KeyspaceResolvers::default()),
        [(scan_position(&key), key.clone(), entry("x", here.clone()))],
    );
    CoreReplica::new(&mut core, &LastWriterWins).apply(key.clone(), entry("x", here.clone()), 0);
    let core_effect = CoreReplica::new(&mut core, &LastWriterWins).apply(
        key.clone(),
        entry("z", concurrent.clone()),
        0,
    );
    let effect = replica.apply(key.clone(), entry("z", concurrent.clone()), 0);
    assert_eq!(effect, core_effect);
    assert!(effect.conflict, "concurrent versions are a conflict");
    assert_eq!(replica.get(&key), core.entry(&key));
    assert_eq!(replica.take_pushes(), vec![(key, entry("z", concurrent))]);
}

#[test]
fn a_session_between_two_snapshots_converges_and_pushes_exactly_the_differences() {
    let limits = GatewayLimits {
        repair_leaf_bits: 8,
        repair_fanout_bits: 4,
        ..GatewayLimits::default()
    };
    let mut a = ts::core(A);
    let mut b = ts::core(B);
    let mut rng = ts::Rng(11);
    for t in 0..300 {
        ts::random_op(&mut rng, &mut a, 100, 1_000 + t, "a");
    }
    ts::copy_all(&a, &mut b, 2_000);
    for t in 0..60 {
        ts::random_op(&mut rng, &mut a, 100, 3_000 + t, "a");
        ts::random_op(&mut rng, &mut b, 100, 3_000 + t, "b");
    }
    let as_of = 4_000;
    let mut ours = snapshot_of(&a);
    let mut theirs = snapshot_of(&b);
    let params = DigestParams::new(as_of, ts::RETENTION_MS, &limits);
    let mut session = RepairSession::start(1, B, &ours, params, &limits, as_of).expect("start");
    let mut responder = RepairResponder::new(&limits);
    let mut cost = ts::Cost::default();
    while let Some(request) = session.poll_transmit() {
        let request = ts::through_wire(request, &limits, &mut cost);
        for answer in responder
            .handle_message(A, request, &mut theirs, as_of)
            .expect("answers")
        {
            let answer = ts::through_wire(answer, &limits, &mut cost);
            session
                .handle_message(answer, &mut ours, as_of)
                .expect("takes the answer");
        }
    }
    assert_eq!(session.status(), &RepairStatus::Done);
    // Pushing what each snapshot recorded into the real cores makes them converge: the pushes
    // are what the real partitions lacked.
    let ours_pushes = ours.take_pushes();
    let theirs_pushes = theirs.take_pushes();
    assert!(
        !ours_pushes.is_empty() && !theirs_pushes.is_empty(),
        "both sides learnt something"
    );
    for (key, entry) in ours_pushes {
        a.apply_remote(key, entry, &LastWriterWins, as_of);
    }
    for (key, entry) in theirs_pushes {
        b.apply_remote(key, entry, &LastWriterWins, as_of);
    }
    // Compare what a digest sees (purgeable tombstones may linger on one side only).
    let after = DigestParams::new(as_of, ts::RETENTION_MS, &limits);
    let visible = |core: &PartitionCore| -> Vec<(Bytes, Versioned)> {
        ts::entries(core)
            .into_iter()
            .filter(|(_, e)| crate::repair::view(e, &after).is_some())
            .collect()
    };
    let differences = ts::differences(&visible(&a), &visible(&b));
    assert!(differences.is_empty(), "still differ: {differences:?}");
    // And the snapshots hold what the cores hold now.
    for (key, entry) in visible(&a) {
        assert_eq!(ours.get(&key), Some(&entry), "snapshot of a: {key:?}");
    }
}
