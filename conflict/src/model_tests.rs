//! Unit and property tests of the data model: HLC, version vectors, versions, PN-counters.
use crate::{
    Causality, CounterOverflow, Hlc, HlcError, HlcTimestamp, PnCounter, SiteId, Version,
    VersionVector,
};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum ClockOp {
    Now(u64),
    Observe {
        remote: HlcTimestamp,
        physical_ms: u64,
    },
}

fn timestamps() -> impl Strategy<Value = HlcTimestamp> {
    prop_oneof![
        (0u64..1_000, 0u32..4).prop_map(|(w, l)| HlcTimestamp::new(w, l)),
        (0u64..1_000).prop_map(|w| HlcTimestamp::new(w, u32::MAX)),
    ]
}

fn clock_ops() -> impl Strategy<Value = ClockOp> {
    prop_oneof![
        (0u64..1_000).prop_map(ClockOp::Now),
        (timestamps(), 0u64..1_000).prop_map(|(remote, physical_ms)| ClockOp::Observe {
            remote,
            physical_ms
        }),
    ]
}

fn vvs() -> impl Strategy<Value = VersionVector> {
    prop::collection::btree_map((0u16..4).prop_map(SiteId), 0u64..4, 0..4)
        .prop_map(|counts| counts.into_iter().collect())
}

fn counters() -> impl Strategy<Value = PnCounter> {
    prop::collection::vec(((0u16..4).prop_map(SiteId), -50i64..50), 0..8).prop_map(|adds| {
        let mut counter = PnCounter::new();
        for (site, delta) in adds {
            counter
                .add(site, delta)
                .expect("small deltas cannot overflow");
        }
        counter
    })
}

fn joined(a: &VersionVector, b: &VersionVector) -> VersionVector {
    let mut out = a.clone();
    out.join(b);
    out
}

fn merged(a: &PnCounter, b: &PnCounter) -> PnCounter {
    let mut out = a.clone();
    out.merge(b);
    out
}

fn mirror(c: Causality) -> Causality {
    match c {
        Causality::Before => Causality::After,
        Causality::After => Causality::Before,
        other => other,
    }
}

proptest! {
    #[test]
    fn hlc_is_monotone_and_rejections_leave_it_unchanged(
        offset_ms_max in 0u64..300,
        ops in prop::collection::vec(clock_ops(), 1..40),
    ) {
        let mut hlc = Hlc::new(offset_ms_max);
        for op in ops {
            let before = hlc.last();
            match op {
                ClockOp::Now(physical_ms) => {
                    let ts = hlc.now(physical_ms);
                    prop_assert!(ts > before);
                    prop_assert!(ts.wall_ms >= physical_ms);
                    prop_assert_eq!(hlc.last(), ts);
                }
                ClockOp::Observe { remote, physical_ms } => {
                    match hlc.observe(remote, physical_ms) {
                        Ok(ts) => {
                            prop_assert!(ts > before && ts > remote);
                            prop_assert!(ts.wall_ms >= physical_ms);
                            prop_assert_eq!(hlc.last(), ts);
                        }
                        Err(HlcError::OffsetExceeded { ahead_ms, .. }) => {
                            prop_assert!(ahead_ms > offset_ms_max);
                            prop_assert_eq!(ahead_ms, remote.wall_ms - physical_ms);
                            prop_assert_eq!(hlc.last(), before, "rejected observe moved the clock");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn vv_compare_is_antisymmetric_and_equal_means_equal(a in vvs(), b in vvs()) {
        prop_assert_eq!(a.compare(&b), mirror(b.compare(&a)));
        prop_assert_eq!(a.compare(&b) == Causality::Equal, a == b);
        prop_assert_eq!(a.compare(&a), Causality::Equal);
    }

    #[test]
    fn vv_join_is_a_semilattice_that_dominates_both(a in vvs(), b in vvs(), c in vvs()) {
        let ab = joined(&a, &b);
        prop_assert_eq!(&ab, &joined(&b, &a));
        prop_assert_eq!(joined(&ab, &c), joined(&a, &joined(&b, &c)));
        prop_assert_eq!(joined(&a, &a), a.clone());
        for side in [&a, &b] {
            prop_assert!(matches!(side.compare(&ab), Causality::Before | Causality::Equal));
        }
    }

    #[test]
    fn successor_is_after_and_lww_greater_whatever_hlc_it_is_given(
        vv in vvs(), site in (0u16..4).prop_map(SiteId),
        old in timestamps(), given in timestamps(),
    ) {
        let previous = Version { hlc: old, origin: SiteId(0), vv };
        let next = previous.successor(site, given);
        prop_assert_eq!(next.causality(&previous), Causality::After);
        prop_assert!(next.hlc > previous.hlc);
        prop_assert!(next.hlc >= given);
        prop_assert_eq!(next.origin, site);
        prop_assert!(next.vv.get(site) > previous.vv.get(site));
        prop_assert!(next.vv.get(site) >= given.wall_ms.saturating_mul(1 << 16));
    }

    /// A site that lost its memory starts an entry again with `first`: its new write must not
    /// look older than what it wrote before (which the other sites kept), whatever that history.
    #[test]
    fn a_write_after_a_memory_loss_is_never_older_than_the_sites_earlier_writes(
        earlier in prop::collection::vec(timestamps(), 1..8),
        other_site_writes in 0u64..3,
        later_by_ms in 1u64..1_000,
    ) {
        let site = SiteId(1);
        let mut kept = Version::first(site, earlier[0]);
        for (i, &hlc) in earlier.iter().enumerate().skip(1) {
            kept = kept.successor(site, hlc);
            if (i as u64) < other_site_writes {
                kept = kept.successor(SiteId(2), hlc);
            }
        }
        let after_restart = HlcTimestamp::new(kept.hlc.wall_ms + later_by_ms, 0);
        let fresh = Version::first(site, after_restart);
        prop_assert!(fresh.vv.get(site) > kept.vv.get(site));
        prop_assert_ne!(fresh.causality(&kept), Causality::Before);
    }

    #[test]
    fn pn_counter_merge_is_a_semilattice(a in counters(), b in counters(), c in counters()) {
        let ab = merged(&a, &b);
        prop_assert_eq!(&ab, &merged(&b, &a));
        prop_assert_eq!(merged(&ab, &c), merged(&a, &merged(&b, &c)));
        prop_assert_eq!(merged(&a, &a), a.clone());
        // Merging a counter with one built on top of it yields the newer one.
        let mut newer = a.clone();
        newer.add(SiteId(9), 3).expect("small");
        prop_assert_eq!(merged(&a, &newer), newer);
    }

    #[test]
    fn pn_counter_value_tracks_adds(deltas in prop::collection::vec((0u16..4, -1_000i64..1_000), 0..20)) {
        let mut counter = PnCounter::new();
        let mut expected = 0i64;
        for (site, delta) in deltas {
            expected += delta;
            prop_assert_eq!(counter.add(SiteId(site), delta), Ok(expected));
        }
        prop_assert_eq!(counter.value(), Some(expected));
    }
}

/// A site that lost its memory writes under a new data line: even stamped far above its old
/// line's writes, its new write has not seen them and meets them as concurrent; within a line,
/// a later write follows an earlier one.
#[test]
fn a_new_data_line_is_concurrent_with_the_old_one_whatever_the_stamps() {
    let site = SiteId(2);
    let (old_line, new_line) = (crate::Writer::new(site, 10), crate::Writer::new(site, 99));
    let kept = Version::first(old_line, HlcTimestamp::new(100, 0))
        .successor(old_line, HlcTimestamp::new(200, 0));
    let fresh = Version::first(new_line, HlcTimestamp::new(5_000, 0));
    assert_eq!(fresh.causality(&kept), Causality::Concurrent);
    assert_eq!(kept.vv.site_max(site), HlcTimestamp::new(200, 0).stamp());
    assert_eq!(fresh.vv.site_max(site), HlcTimestamp::new(5_000, 0).stamp());
    let next = fresh.successor(new_line, HlcTimestamp::new(5_001, 0));
    assert_eq!(next.causality(&fresh), Causality::After);
}

#[test]
fn hlc_rejects_a_remote_beyond_the_offset_with_a_clear_error() {
    let mut hlc = Hlc::new(100);
    let first = hlc.now(1_000);
    let err = hlc
        .observe(HlcTimestamp::new(1_101, 0), 1_000)
        .expect_err("101 ms ahead");
    assert_eq!(
        err.to_string(),
        "remote timestamp 1101.0 is 101 ms ahead of local physical time 1000 ms, beyond the \
         maximum clock offset of 100 ms"
    );
    assert_eq!(hlc.last(), first);
    // Exactly at the limit is accepted and pulls the clock forward.
    let ts = hlc
        .observe(HlcTimestamp::new(1_100, 7), 1_000)
        .expect("at the limit");
    assert_eq!(ts, HlcTimestamp::new(1_100, 8));
}

#[test]
fn hlc_logical_overflow_borrows_the_next_millisecond() {
    let mut hlc = Hlc::new(0);
    let ts = hlc
        .observe(HlcTimestamp::new(5, u32::MAX), 5)
        .expect("not ahead");
    assert_eq!(ts, HlcTimestamp::new(6, 0));
    assert_eq!(hlc.now(5), HlcTimestamp::new(6, 1));
    assert_eq!(hlc.now(9), HlcTimestamp::new(9, 0));
}

#[test]
fn vv_compare_table() {
    let vv = |pairs: &[(u16, u64)]| -> VersionVector {
        pairs.iter().map(|&(s, c)| (SiteId(s), c)).collect()
    };
    let cases = [
        (vv(&[]), vv(&[]), Causality::Equal),
        (vv(&[(1, 0)]), vv(&[]), Causality::Equal), // zero counts are absent counts
        (vv(&[(1, 1)]), vv(&[(1, 2)]), Causality::Before),
        (vv(&[(1, 2), (2, 1)]), vv(&[(1, 2)]), Causality::After),
        (vv(&[(1, 1)]), vv(&[(2, 1)]), Causality::Concurrent),
        (
            vv(&[(1, 2), (2, 1)]),
            vv(&[(1, 1), (2, 2)]),
            Causality::Concurrent,
        ),
    ];
    for (i, (a, b, expected)) in cases.iter().enumerate() {
        assert_eq!(a.compare(b), *expected, "case {i}");
    }
}

#[test]
fn pn_counter_add_overflow_is_rejected_and_leaves_the_counter_unchanged() {
    let site = SiteId(1);
    let cases: [(i64, i64); 4] = [
        (i64::MAX, 1),
        (i64::MIN, -1),
        (i64::MAX - 1, 2),
        (i64::MIN + 1, i64::MIN),
    ];
    for (start, delta) in cases {
        let mut counter = PnCounter::starting_at(site, start);
        let before = counter.clone();
        assert_eq!(
            counter.add(SiteId(2), delta),
            Err(CounterOverflow),
            "{start} + {delta}"
        );
        assert_eq!(counter, before);
        assert_eq!(counter.value(), Some(start));
    }
    // Up to the edge is fine, in both directions.
    let mut counter = PnCounter::starting_at(site, i64::MAX - 1);
    assert_eq!(counter.add(site, 1), Ok(i64::MAX));
    assert_eq!(counter.add(site, i64::MIN), Ok(-1));
}

/// Found by sims (seed 3688): totals must not overflow while the value itself stays in range.
#[test]
fn pn_counter_survives_alternating_extreme_increments() {
    let site = SiteId(1);
    let mut counter = PnCounter::new();
    let mut expected: i64 = 0;
    for step in 0..1000 {
        let delta = if step % 2 == 0 { i64::MAX } else { i64::MIN };
        expected = expected
            .checked_add(delta)
            .expect("alternating stays in range");
        assert_eq!(counter.add(site, delta), Ok(expected), "step {step}");
    }
    assert_eq!(counter.add(site, 2), Ok(expected + 2));
}

mod version_vector_reference {
    use crate::{Causality, SiteId, VersionVector, Writer};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// The obvious implementation the inline sorted vector must agree with.
    fn reference_compare(a: &BTreeMap<u16, u64>, b: &BTreeMap<u16, u64>) -> Causality {
        let get = |m: &BTreeMap<u16, u64>, s: &u16| m.get(s).copied().unwrap_or(0);
        let sites: std::collections::BTreeSet<u16> = a.keys().chain(b.keys()).copied().collect();
        let a_ahead = sites.iter().any(|s| get(a, s) > get(b, s));
        let b_ahead = sites.iter().any(|s| get(b, s) > get(a, s));
        match (a_ahead, b_ahead) {
            (false, false) => Causality::Equal,
            (true, false) => Causality::After,
            (false, true) => Causality::Before,
            (true, true) => Causality::Concurrent,
        }
    }

    fn vv(m: &BTreeMap<u16, u64>) -> VersionVector {
        m.iter().map(|(&s, &c)| (SiteId(s), c)).collect()
    }

    proptest! {
        #[test]
        fn compare_get_and_join_agree_with_a_map(
            a in prop::collection::btree_map(0u16..8, 1u64..5, 0..7),
            b in prop::collection::btree_map(0u16..8, 1u64..5, 0..7),
        ) {
            prop_assert_eq!(vv(&a).compare(&vv(&b)), reference_compare(&a, &b));
            let mut joined = vv(&a);
            joined.join(&vv(&b));
            let mut reference = a.clone();
            for (s, c) in &b {
                let e = reference.entry(*s).or_insert(0);
                *e = (*e).max(*c);
            }
            prop_assert_eq!(&joined, &vv(&reference));
            for s in 0u16..8 {
                prop_assert_eq!(joined.get(SiteId(s)), reference.get(&s).copied().unwrap_or(0));
            }
        }
    }

    #[test]
    fn decoding_normalizes_unsorted_duplicate_and_zero_entries() {
        // Postcard bytes of [((3, 0), 1), ((1, 7), 2), ((3, 0), 4), ((2, 0), 0)]: a length,
        // then ((site, lineage), count) pairs.
        let bytes = [4u8, 3, 0, 1, 1, 7, 2, 3, 0, 4, 2, 0, 0];
        let decoded: VersionVector = postcard::from_bytes(&bytes).expect("decodes");
        let pairs: Vec<(Writer, u64)> = decoded.iter().collect();
        assert_eq!(
            pairs,
            vec![(Writer::new(SiteId(1), 7), 2), (Writer::from(SiteId(3)), 4)]
        );
        // And it encodes to the same bytes a map would have.
        let map: BTreeMap<Writer, u64> = pairs.iter().copied().collect();
        assert_eq!(
            postcard::to_allocvec(&decoded).ok(),
            postcard::to_allocvec(&map).ok()
        );
    }
}
