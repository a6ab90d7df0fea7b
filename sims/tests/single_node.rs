//! The `single-node` scenario over many seeds, its determinism, and proof that its checkers fire.
use std::ops::Range;
use tern_sims::check::Violation;
use tern_sims::scenario::single_node::{self, Injection};
use tern_sims::{RunOptions, Scenario, run};

/// Seeds every `cargo test` runs. Sweep more with the binary (see the crate docs).
const SEEDS: Range<u64> = 0..200;

#[test]
fn two_hundred_seeds_keep_every_invariant() {
    let (mut ops, mut lin_ops, mut undecided) = (0, 0, 0);
    let mut coverage = tern_sims::scenario::Coverage::default();
    for seed in SEEDS {
        let report = run(Scenario::SingleNode, seed);
        if let Some(violation) = &report.violation {
            println!("replay: {}", report.replay_command());
            panic!("seed {seed}: {violation}");
        }
        ops += report.ops;
        lin_ops += report.lin.ops;
        undecided += report.lin.undecided;
        coverage.expirations += report.coverage.expirations;
        coverage.purges += report.coverage.purges;
        coverage.error_replies += report.coverage.error_replies;
    }
    println!(
        "single-node: {} seeds passed, {ops} operations, {lin_ops} checked for linearizability \
         ({undecided} keys undecided), {coverage:?}",
        SEEDS.end - SEEDS.start
    );
    let runs = SEEDS.end - SEEDS.start;
    assert!(
        coverage.expirations >= runs * 10,
        "TTLs should run out during runs: {coverage:?}"
    );
    assert!(
        coverage.purges >= runs,
        "tombstones should be purged during runs: {coverage:?}"
    );
    assert!(
        coverage.error_replies >= runs * 10,
        "error paths should be exercised: {coverage:?}"
    );
    assert!(
        ops >= 2_000 * (SEEDS.end - SEEDS.start),
        "each seed runs a few thousand operations"
    );
    assert_eq!(
        undecided, 0,
        "the linearizability search should decide every key"
    );
}

#[test]
fn a_seed_replays_exactly_and_seeds_differ() {
    let first = run(Scenario::SingleNode, 7);
    let again = run(Scenario::SingleNode, 7);
    assert_eq!(
        first.trace_hash, again.trace_hash,
        "same seed, different trace"
    );
    assert_eq!((first.ops, first.events), (again.ops, again.events));
    let traced = tern_sims::run_with(Scenario::SingleNode, 7, &RunOptions { trace_lines: 50 });
    assert_eq!(
        first.trace_hash, traced.trace_hash,
        "keeping a text trace changed the run"
    );
    assert_eq!(traced.trace_tail.len(), 50);

    let hashes: std::collections::BTreeSet<u64> = (100..110)
        .map(|seed| run(Scenario::SingleNode, seed).trace_hash)
        .collect();
    assert_eq!(hashes.len(), 10, "ten seeds gave colliding traces");
    println!(
        "single-node: seed 7 replays with trace {:#018x}",
        first.trace_hash
    );
}

#[test]
fn injected_faults_are_reported() {
    type IsExpected = fn(&Violation) -> bool;
    let cases: &[(Injection, IsExpected)] = &[
        (Injection::WrongResult { request: 500 }, |v| {
            matches!(v, Violation::WrongResult { .. })
        }),
        (Injection::HiddenRecord { request: 500 }, |v| {
            matches!(v, Violation::MissingRecord { .. })
        }),
        (Injection::SkippedSeq { request: 500 }, |v| {
            matches!(v, Violation::SeqGap { .. })
        }),
        (Injection::PhantomRead { request: 500 }, |v| {
            matches!(v, Violation::NotLinearizable { .. })
        }),
    ];
    for &(injection, is_expected) in cases {
        let report = single_node::run_adjusted(3, &RunOptions::default(), |config| {
            config.inject = Some(injection)
        });
        match &report.violation {
            Some(violation) if is_expected(violation) => {}
            other => panic!("{injection:?} should be caught, got {other:?}"),
        }
    }
    println!("single-node: {} injected faults caught", cases.len());
}

#[test]
fn scenario_names_parse() {
    for scenario in Scenario::ALL {
        assert_eq!(scenario.name().parse::<Scenario>(), Ok(*scenario));
    }
    let err = "no-such"
        .parse::<Scenario>()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("single-node"), "{err}");
}
