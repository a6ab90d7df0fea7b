//! Repair sessions between two real partition cores, messages through the real encoder.
use super::test_support::*;
use super::*;
use crate::wire::{DigestReply, DigestRequest, PositionRange, RangeRequest};
use bytes::Bytes;
use tern_conflict::LastWriterWins;
use tern_node::core::partition::{PartitionCore, scan_position};

fn limits() -> GatewayLimits {
    GatewayLimits::default()
}

/// Two sites that shared `keys` keys, then wrote concurrently (sets, TTLs, deletes, keys only
/// one knows), sometimes syncing single keys, sweeping at different times. Returns the time
/// reached.
///
/// The divergence lasts less than the tombstone retention, as it must for any tombstone
/// scheme: a site that purged a delete the other never saw has lost the evidence (a later
/// write there would even restart the key's version vector), so no repair can tell.
fn divergent_pair(seed: u64, keys: u64, ops: u64) -> (PartitionCore, PartitionCore, u64) {
    let mut rng = Rng(seed);
    let (mut a, mut b) = (core(A), core(B));
    let mut now = 1_000;
    for n in 0..keys {
        set(&mut a, key(n), "base", None, now);
    }
    copy_all(&a, &mut b, now);
    for _ in 0..ops {
        // About one millisecond per four operations.
        now += u64::from(rng.below(4) == 0);
        match rng.below(20) {
            0 => {
                let k = key(rng.below(keys));
                copy_key(&a, &mut b, &k, now);
            }
            1 => {
                let k = key(rng.below(keys));
                copy_key(&b, &mut a, &k, now);
            }
            2 => a.handle_tick(now),
            3 => b.handle_tick(now),
            4..=11 => random_op(&mut rng, &mut a, keys, now, "a"),
            _ => random_op(&mut rng, &mut b, keys, now, "b"),
        }
    }
    (a, b, now)
}

#[test]
fn divergent_histories_converge_in_one_session() {
    for seed in 1..=24 {
        let (mut a, mut b, end) = divergent_pair(seed, 300, 1_200);
        assert!(
            end + 50 < 1_000 + RETENTION_MS,
            "seed {seed}: within the retention"
        );
        // Some TTLs have passed by now, some not yet.
        let as_of = end + 50;
        assert_ne!(entries(&a), entries(&b), "seed {seed}: the sites differ");
        let (session, _, _) = repair(&mut a, &mut b, as_of, &limits());
        let progress = session.progress();
        assert!(
            progress.entries_sent + progress.entries_received > 0,
            "seed {seed}"
        );
        settle(&mut a, as_of);
        settle(&mut b, as_of);
        let diff = differences(&entries(&a), &entries(&b));
        assert!(
            diff.is_empty(),
            "seed {seed}: differ after one session: {diff:#?}"
        );
        // And a second session finds nothing: just the root, both ways.
        let (_, responder, cost) = repair(&mut a, &mut b, as_of, &limits());
        assert_eq!(cost.messages, 2, "seed {seed}");
        assert_eq!(responder.sessions(), 0, "seed {seed}: nothing kept");
    }
}

#[test]
fn converged_sites_compare_equal_whatever_their_sweeps_did() {
    // Same writes at both, but only A swept expired values and purged old tombstones.
    let (mut a, mut b) = (core(A), core(B));
    for n in 0..50 {
        set(
            &mut a,
            key(n),
            "v",
            Some(if n % 2 == 0 { 10 } else { 5_000 }),
            1_000,
        );
    }
    for n in 50..60 {
        set(&mut a, key(n), "v", None, 1_000);
        del(&mut a, key(n), 1_001);
    }
    copy_all(&a, &mut b, 1_002);
    let as_of = 1_000 + RETENTION_MS + 100;
    settle(&mut a, as_of);
    assert_ne!(entries(&a), entries(&b), "A swept and purged, B did not");
    let (_, _, cost) = repair(&mut a, &mut b, as_of, &limits());
    assert_eq!(cost.messages, 2, "the digests agree");
    // Half-way: A swept the values (tombstones not purgeable yet), B still holds them.
    let (mut a, mut b) = (core(A), core(B));
    for n in 0..50 {
        set(&mut a, key(n), "v", Some(10), 1_000);
    }
    copy_all(&a, &mut b, 1_002);
    settle(&mut a, 1_100);
    assert_ne!(entries(&a), entries(&b));
    let (_, _, cost) = repair(&mut a, &mut b, 1_100, &limits());
    assert_eq!(cost.messages, 2);
}

#[test]
fn repair_never_moves_a_version_back_and_resolves_only_real_conflicts() {
    let (mut a, mut b) = (core(A), core(B));
    for n in 0..100 {
        set(&mut a, key(n), "old", None, 1_000);
    }
    copy_all(&a, &mut b, 1_000);
    // B overwrote 0..10 after seeing A's (causally newer); both wrote 10..15 (concurrent).
    for n in 0..15 {
        set(&mut b, key(n), "b", None, 1_010);
    }
    for n in 10..15 {
        set(&mut a, key(n), "a", None, 1_020);
    }
    let (session, responder, _) = repair(&mut a, &mut b, 1_100, &limits());
    // A takes B's newer writes without the resolver; the concurrent pairs are settled once
    // (at B, which merges first; A then fast-forwards to the merge).
    assert_eq!(responder.stats().conflicts, 5);
    assert_eq!(session.progress().conflicts, 0);
    assert_eq!(session.progress().entries_changed, 15);
    for n in 0..10 {
        let value = a.entry(&key(n)).map(|e| e.value.clone());
        assert_eq!(
            value,
            Some(tern_conflict::Value::Bytes("b".into())),
            "key {n}"
        );
    }
    for n in 10..15 {
        let value = b.entry(&key(n)).map(|e| e.value.clone());
        assert_eq!(
            value,
            Some(tern_conflict::Value::Bytes("a".into())),
            "LWW: a is later"
        );
    }
    assert_eq!(entries(&a), entries(&b));
}

/// `keys` shared keys, then `differing` of them overwritten at B.
fn pair_with_differences(keys: u64, differing: u64) -> (PartitionCore, PartitionCore) {
    let (mut a, mut b) = (core(A), core(B));
    for n in 0..keys {
        set(&mut a, key(n), "0123456789abcdef", None, 1_000);
    }
    copy_all(&a, &mut b, 1_000);
    let step = keys / differing.max(1);
    for i in 0..differing {
        set(&mut b, key(i * step), "changed at B", None, 1_001);
    }
    (a, b)
}

#[test]
fn identical_partitions_exchange_only_the_root() {
    let (mut a, mut b) = pair_with_differences(2_000, 0);
    let (session, responder, cost) = repair(&mut a, &mut b, 2_000, &limits());
    assert_eq!(cost.messages, 2);
    assert_eq!(session.progress().digest_requests, 1);
    assert_eq!(session.progress().range_requests, 0);
    assert_eq!(responder.stats().in_sync_answers, 1);
    assert_eq!(responder.sessions(), 0);
    // Empty partitions too.
    let (mut a, mut b) = (core(A), core(B));
    let (_, _, cost) = repair(&mut a, &mut b, 2_000, &limits());
    assert_eq!(cost.messages, 2);
}

#[test]
fn a_single_difference_costs_one_round_trip_per_level() {
    let limits = limits();
    let depth = u64::from(limits.repair_leaf_bits / limits.repair_fanout_bits);
    for keys in [1_000u64, 20_000] {
        let (mut a, mut b) = pair_with_differences(keys, 1);
        let (session, responder, cost) = repair(&mut a, &mut b, 2_000, &limits);
        // Root … leaves: `depth` digest round trips, then one range exchange.
        assert_eq!(cost.messages, 2 * (depth + 1), "{keys} keys");
        let progress = session.progress();
        assert_eq!(progress.digest_requests, depth);
        assert_eq!(progress.leaves_differing, 1);
        assert_eq!(progress.range_requests, 1);
        assert_eq!(
            progress.entries_received, 1,
            "only the differing entry comes back"
        );
        // We send the whole differing leaf. (How many keys share it depends on how evenly
        // scan positions spread: see `cost_scales_with_the_difference`.)
        let shape = TreeShape::new(limits.repair_leaf_bits, limits.repair_fanout_bits)
            .expect("default shape");
        let leaf = shape.leaf_of(scan_position(&key(0)));
        let in_leaf = entries(&a)
            .iter()
            .filter(|(k, _)| shape.leaf_of(scan_position(k)) == leaf)
            .count() as u64;
        assert_eq!(progress.entries_sent, in_leaf, "{keys} keys: {progress:?}");
        assert!(cost.bytes < 4_000, "{keys} keys: {} bytes", cost.bytes);
        assert_eq!(
            responder.sessions(),
            0,
            "the last request released the session"
        );
        assert_eq!(entries(&a), entries(&b));
    }
}

#[test]
fn cost_scales_with_the_difference() {
    let keys = 20_000;
    let mut costs = Vec::new();
    for differing in [1u64, 100, 2_000] {
        let (mut a, mut b) = pair_with_differences(keys, differing);
        let (session, _, cost) = repair(&mut a, &mut b, 2_000, &limits());
        assert_eq!(session.progress().entries_received, differing);
        assert_eq!(entries(&a), entries(&b));
        costs.push(cost.bytes);
    }
    assert!(costs[0] < costs[1] && costs[1] < costs[2], "{costs:?}");
    // Far below shipping every entry (~50 bytes each).
    assert!(costs[1] < keys * 50 / 4, "{costs:?}");
}

#[test]
fn messages_stay_within_the_size_limit() {
    let limits = GatewayLimits {
        repair_message_bytes_max: 4 * 1024,
        repair_leaf_bits: 8,
        repair_fanout_bits: 4,
        ..GatewayLimits::default()
    };
    // Few, crowded leaves: range exchanges must split.
    let (mut a, mut b) = pair_with_differences(3_000, 1_000);
    let (session, _, cost) = repair(&mut a, &mut b, 2_000, &limits);
    assert_eq!(entries(&a), entries(&b));
    assert!(session.progress().range_requests > 5);
    let largest = cost.bytes / cost.messages;
    assert!(largest < 4 * 1024, "average {largest}");
}

#[test]
fn the_responder_checks_requests_and_survives_losing_its_cache() {
    let limits = limits();
    let (mut a, mut b) = pair_with_differences(500, 1);
    let params = DigestParams::new(2_000, RETENTION_MS, &limits);
    let mut responder = RepairResponder::new(&limits);
    let mut replica = CoreReplica::new(&mut b, &LastWriterWins);
    let request = |level: u8, nodes: Vec<u64>| {
        Message::DigestRequest(DigestRequest {
            session: 9,
            partition: PARTITION,
            params,
            level,
            nodes,
            root: None,
        })
    };
    let bad = [
        request(4, vec![0]),
        request(1, vec![]),
        request(1, vec![3, 2]),
        request(1, vec![16]),
        Message::DigestRequest(DigestRequest {
            session: 9,
            partition: PARTITION,
            params: DigestParams {
                fanout_bits: 3,
                ..params
            },
            level: 0,
            nodes: vec![0],
            root: None,
        }),
        Message::RangeRequest(RangeRequest {
            session: 9,
            partition: PARTITION,
            params,
            request: 1,
            ranges: vec![
                PositionRange { from: 10, to: 20 },
                PositionRange { from: 15, to: 30 },
            ],
            entries: vec![],
            last: false,
        }),
    ];
    for (i, message) in bad.into_iter().enumerate() {
        assert!(
            responder
                .handle_message(A, message, &mut replica, 2_000)
                .is_err(),
            "case {i}"
        );
    }
    // A level-2 request with no cached tree builds one and answers.
    let answers = responder
        .handle_message(A, request(2, vec![0, 1]), &mut replica, 2_000)
        .expect("answers");
    match answers.as_slice() {
        [Message::DigestReply(DigestReply { hashes, .. })] => assert_eq!(hashes.len(), 32),
        other => panic!("{other:?}"),
    }
    assert_eq!(responder.sessions(), 1);
    responder.handle_timeout(2_000 + limits.repair_responder_idle_ms_max);
    assert_eq!(responder.sessions(), 0, "idle sessions are forgotten");
    // An initiator whose peer never answers fails at its deadline.
    let mut session = RepairSession::start(
        3,
        B,
        &CoreReplica::new(&mut a, &LastWriterWins),
        params,
        &limits,
        2_000,
    )
    .expect("start");
    assert!(session.poll_transmit().is_some());
    let due = session.poll_timeout().expect("an answer is awaited");
    assert_eq!(due, 2_000 + limits.repair_reply_timeout_ms);
    session.handle_timeout(due - 1);
    assert_eq!(session.status(), &RepairStatus::Running);
    session.handle_timeout(due);
    assert!(matches!(
        session.status(),
        RepairStatus::Failed(RepairError::TimedOut { .. })
    ));
}

/// `pair_with_differences` with keys whose scan positions spread evenly (random-looking
/// keys: `key:N` names share their leading bytes, and FNV-1a's top bits, which scan positions
/// are, cluster them into few leaves).
fn spread_pair_with_differences(keys: u64, differing: u64) -> (PartitionCore, PartitionCore) {
    let spread = |n: u64| {
        let mut rng = Rng(n);
        Bytes::from(format!("{:016x}", rng.next()))
    };
    let (mut a, mut b) = (core(A), core(B));
    for n in 0..keys {
        set(&mut a, spread(n), "0123456789abcdef", None, 1_000);
    }
    copy_all(&a, &mut b, 1_000);
    let step = keys / differing.max(1);
    for i in 0..differing {
        set(&mut b, spread(i * step), "changed at B", None, 1_001);
    }
    (a, b)
}

/// The figures for the report: `cargo test -p tern-gateway --release repair_figures -- --ignored --nocapture`.
#[test]
#[ignore = "prints figures; slow in debug builds"]
fn repair_figures() {
    let keys = 100_000;
    let cases = [1u64, 100, 10_000]
        .into_iter()
        .flat_map(|d| [(d, false), (d, true)]);
    for (differing, spread) in cases {
        let (mut a, mut b) = if spread {
            spread_pair_with_differences(keys, differing)
        } else {
            pair_with_differences(keys, differing)
        };
        let naming = if spread { "random keys" } else { "key:N keys" };
        let (session, _, cost) = repair(&mut a, &mut b, 2_000, &limits());
        let p = session.progress();
        println!(
            "{naming}: {differing:>6} of {keys} differ: {} messages, {} bytes; {} digest requests, \
             {} digests compared, {} leaves differ, {} range requests, {} entries sent, {} \
             received",
            cost.messages,
            cost.bytes,
            p.digest_requests,
            p.digests_compared,
            p.leaves_differing,
            p.range_requests,
            p.entries_sent,
            p.entries_received
        );
        assert_eq!(entries(&a), entries(&b));
    }
}
