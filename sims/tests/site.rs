//! The site scenarios over many seeds, their determinism, and proof that their checkers fire.
//!
//! Seeds are split over several tests so `cargo test` runs them on every core.
use std::ops::Range;
use tern_sims::check::Violation;
use tern_sims::check::site::SiteViolation;
use tern_sims::rng::SimRng;
use tern_sims::scenario::site::{self, ShellFault, SiteKind, SiteReport, SiteStats};
use tern_sims::{RunOptions, Scenario};

/// Seeds of the sweeps that hit an open core bug (each has a reproducer in
/// `tests/site_known_bugs.rs`). The sweep checks they still fail; once one passes, delete it
/// here and remove the `#[ignore]` of its reproducer. (A change in the cores may also move a
/// bug to other seeds: triage a new failing seed with its replay line.)
const KNOWN_BUGS: &[(SiteKind, u64, &str)] = &[];

/// Run `seeds` of `kind`; panic with the replay line on the first violation; sum the stats.
fn sweep(kind: SiteKind, seeds: Range<u64>) -> SiteStats {
    let mut total = SiteStats::default();
    let mut max_resume_ms = 0;
    for seed in seeds.clone() {
        let SiteReport { report, stats } = site::run(kind, seed, &RunOptions::default());
        if let Some((_, _, bug)) = KNOWN_BUGS.iter().find(|(k, s, _)| *k == kind && *s == seed) {
            assert!(
                report.violation.is_some(),
                "{} seed {seed} passes now ({bug}): remove it from KNOWN_BUGS and un-ignore its \
                 reproducer in tests/site_known_bugs.rs",
                kind.scenario()
            );
            continue;
        }
        if let Some(violation) = &report.violation {
            println!("replay: {}", report.replay_command());
            panic!("{} seed {seed}: {violation}", kind.scenario());
        }
        total.crashes += stats.crashes;
        total.cuts += stats.cuts;
        total.degrades += stats.degrades;
        total.clock_steps += stats.clock_steps;
        total.ops_ok += stats.ops_ok;
        total.ops_unknown += stats.ops_unknown;
        total.try_again += stats.try_again;
        total.redirect_retries += stats.redirect_retries;
        total.timeout_retries += stats.timeout_retries;
        total.max_latency_after_bound_ms = total
            .max_latency_after_bound_ms
            .max(stats.max_latency_after_bound_ms);
        max_resume_ms = max_resume_ms.max(stats.resume_ms.unwrap_or(0));
        total.checker.promotions += stats.checker.promotions;
        total.checker.promotions_checked += stats.checker.promotions_checked;
        total.checker.acked_records += stats.checker.acked_records;
        total.checker.acked_unknown += stats.checker.acked_unknown;
        total.checker.stale_messages_checked += stats.checker.stale_messages_checked;
        total.checker.snapshot_repairs += stats.checker.snapshot_repairs;
        total.checker.committed += stats.checker.committed;
        total.flows_done += stats.flows_done;
        total.rolling_restarts += stats.rolling_restarts;
        total.drain_requests += stats.drain_requests;
        total.nodes_added += stats.nodes_added;
        total.nodes_removed += stats.nodes_removed;
        total.voter_changes_proposed += stats.voter_changes_proposed;
        if kind == SiteKind::Membership {
            let planned = site::Config::for_seed(kind, &mut SimRng::from_seed(seed)).flows;
            assert!(
                !planned.is_empty(),
                "seed {seed}: no membership change drawn"
            );
            assert_eq!(
                stats.flows_done,
                planned.len() as u64,
                "seed {seed}: not every flow of {planned:?} was carried out"
            );
        }
        assert_eq!(report.lin.undecided, 0, "seed {seed}: undecided keys");
    }
    total.resume_ms = Some(max_resume_ms);
    println!("{}: seeds {seeds:?} passed: {total:?}", kind.scenario());
    total
}

/// Each sweep must really have exercised what its scenario is about.
fn assert_coverage(kind: SiteKind, seeds: u64, stats: &SiteStats) {
    assert!(
        stats.ops_ok >= seeds * 300,
        "{kind:?}: too few operations: {stats:?}"
    );
    assert!(
        stats.checker.promotions >= seeds,
        "{kind:?}: failovers should happen: {stats:?}"
    );
    assert!(
        stats.checker.acked_records >= seeds * 100,
        "{kind:?}: the acknowledged log should grow: {stats:?}"
    );
    match kind {
        SiteKind::Failover => assert!(stats.crashes >= seeds * 2, "{stats:?}"),
        SiteKind::Partition => assert!(stats.cuts >= seeds * 3, "{stats:?}"),
        SiteKind::Chaos => assert!(
            stats.crashes >= seeds / 2 && stats.cuts >= seeds && stats.clock_steps >= seeds / 3,
            "{stats:?}"
        ),
        // Every flow kind ran: drains, joins (nodes added, voters changed), removals, each
        // with its rolling restarts; faults still hit the site meanwhile.
        SiteKind::Membership => assert!(
            stats.flows_done >= seeds
                && stats.rolling_restarts >= seeds * 2
                && stats.drain_requests >= seeds / 4
                && stats.nodes_added >= seeds / 4
                && stats.nodes_removed >= seeds / 4
                && stats.voter_changes_proposed >= seeds / 2
                && stats.cuts >= seeds / 2,
            "{stats:?}"
        ),
    }
    assert!(stats.redirect_retries > 0, "{kind:?}: {stats:?}");
    assert!(
        stats.checker.stale_messages_checked > 0,
        "{kind:?}: {stats:?}"
    );
}

/// 6 chunks of 200: 1 200 seeds (about 15 s with the workspace's dev opt-levels, a few
/// minutes unoptimized on 2 cores).
const SEEDS_PER_CHUNK: u64 = 200;

#[test]
fn site_failover_seeds_keep_every_invariant() {
    let seeds = 0..SEEDS_PER_CHUNK;
    let stats = sweep(SiteKind::Failover, seeds.clone());
    assert_coverage(SiteKind::Failover, seeds.end - seeds.start, &stats);
}

#[test]
fn site_failover_more_seeds_keep_every_invariant() {
    let seeds = 1_000..1_000 + SEEDS_PER_CHUNK;
    let stats = sweep(SiteKind::Failover, seeds.clone());
    assert_coverage(SiteKind::Failover, seeds.end - seeds.start, &stats);
}

#[test]
fn site_partition_seeds_keep_every_invariant() {
    let seeds = 0..SEEDS_PER_CHUNK;
    let stats = sweep(SiteKind::Partition, seeds.clone());
    assert_coverage(SiteKind::Partition, seeds.end - seeds.start, &stats);
}

#[test]
fn site_partition_more_seeds_keep_every_invariant() {
    let seeds = 1_000..1_000 + SEEDS_PER_CHUNK;
    let stats = sweep(SiteKind::Partition, seeds.clone());
    assert_coverage(SiteKind::Partition, seeds.end - seeds.start, &stats);
}

#[test]
fn site_chaos_seeds_keep_every_invariant() {
    let seeds = 0..SEEDS_PER_CHUNK;
    let stats = sweep(SiteKind::Chaos, seeds.clone());
    assert_coverage(SiteKind::Chaos, seeds.end - seeds.start, &stats);
}

#[test]
fn site_chaos_more_seeds_keep_every_invariant() {
    let seeds = 1_000..1_000 + SEEDS_PER_CHUNK;
    let stats = sweep(SiteKind::Chaos, seeds.clone());
    assert_coverage(SiteKind::Chaos, seeds.end - seeds.start, &stats);
}

/// An operator drains, removes and adds nodes while faults go on. Seeds 0..150 take about
/// 10 s with the workspace's dev opt-levels (a run lasts 20–40 s of simulated time).
#[test]
fn site_membership_seeds_keep_every_invariant() {
    let seeds = 0..150;
    let stats = sweep(SiteKind::Membership, seeds.clone());
    assert_coverage(SiteKind::Membership, seeds.end - seeds.start, &stats);
}

#[test]
fn site_membership_more_seeds_keep_every_invariant() {
    let seeds = 1_000..1_150;
    let stats = sweep(SiteKind::Membership, seeds.clone());
    assert_coverage(SiteKind::Membership, seeds.end - seeds.start, &stats);
}

#[test]
fn each_site_scenario_replays_exactly_and_seeds_differ() {
    for kind in [
        SiteKind::Failover,
        SiteKind::Partition,
        SiteKind::Chaos,
        SiteKind::Membership,
    ] {
        let scenario = kind.scenario();
        let first = tern_sims::run(scenario, 11);
        let again = tern_sims::run(scenario, 11);
        assert_eq!(
            first.trace_hash, again.trace_hash,
            "{scenario}: same seed, different trace"
        );
        assert_eq!((first.ops, first.events), (again.ops, again.events));
        let traced = tern_sims::run_with(scenario, 11, &RunOptions { trace_lines: 30 });
        assert_eq!(
            first.trace_hash, traced.trace_hash,
            "{scenario}: keeping a text trace changed the run"
        );
        assert_eq!(traced.trace_tail.len(), 30);
        let other = tern_sims::run(scenario, 12);
        assert_ne!(
            first.trace_hash, other.trace_hash,
            "{scenario}: seeds collide"
        );
        println!(
            "{scenario}: seed 11 replays with trace {:#018x}",
            first.trace_hash
        );
    }
}

/// The first violation among `seeds` with the config changed by `adjust`.
fn first_violation(
    kind: SiteKind,
    seeds: Range<u64>,
    adjust: impl Fn(&mut site::Config),
) -> Option<(u64, Violation)> {
    seeds.into_iter().find_map(|seed| {
        site::run_adjusted(kind, seed, &RunOptions::default(), &adjust)
            .report
            .violation
            .map(|v| (seed, v))
    })
}

#[test]
fn a_restarted_node_that_trusts_its_old_incarnation_is_caught() {
    let found = first_violation(SiteKind::Failover, 0..20, |config| {
        config.shell.fault = Some(ShellFault::IgnoreIncarnation);
    });
    match found {
        Some((
            _,
            Violation::Site(
                SiteViolation::TwoPrimaries { .. }
                | SiteViolation::PromotedWithoutAckedWrites { .. }
                | SiteViolation::AckedLogDiverged { .. },
            )
            | Violation::NotLinearizable { .. },
        )) => {}
        other => panic!("expected a lost-write or two-primaries violation, got {other:?}"),
    }
}

#[test]
fn promoting_a_backup_that_is_not_in_sync_is_caught() {
    let found = first_violation(SiteKind::Failover, 0..40, |config| {
        config.shell.fault = Some(ShellFault::PromoteAnyReplica);
        // Crash even the last trusted copy, so partitions do lose their in-sync backups.
        config.crash_any = true;
    });
    match found {
        Some((
            _,
            Violation::Site(
                SiteViolation::PromotedWithoutAckedWrites { .. }
                | SiteViolation::AckedLogDiverged { .. }
                | SiteViolation::VersionWentBack { .. }
                // The unsafe rule may even hand an epoch to a second node incarnation.
                | SiteViolation::TwoPrimaries { .. },
            )
            | Violation::NotLinearizable { .. },
        )) => {}
        other => panic!("expected a lost-write or two-primaries violation, got {other:?}"),
    }
}

#[test]
fn site_scenario_names_parse() {
    for name in [
        "site-failover",
        "site-partition",
        "site-chaos",
        "site-membership",
    ] {
        let scenario: Scenario = name.parse().expect("a site scenario");
        assert_eq!(scenario.name(), name);
        assert!(scenario.site_kind().is_some());
    }
}

/// Rule 11 of the site shell is needed: a drained node that keeps leading the map (the nodes
/// not yet restarted give it a quorum) never hears the restarted ones, whose configuration
/// dropped it, so it never marks them up and the rolling restart stalls. The actix shell hands
/// leadership over only on its own graceful drain, not after an operator's `Drain`.
#[test]
fn a_drained_leader_that_keeps_leading_stalls_the_rolling_restart() {
    let found = first_violation(SiteKind::Membership, 0..40, |config| {
        config.shell.draining_leader_hands_off = false;
    });
    match found {
        Some((_, Violation::Stalled { detail })) => {
            assert!(detail.contains("AwaitRestart"), "{detail}");
        }
        other => panic!("expected the operator to stall on a restart, got {other:?}"),
    }
}

/// The end-of-run membership checks fire: an operator who drains and stops a node but never
/// restarts the others without it leaves it in their configurations, the map and the Raft
/// voters.
#[test]
fn a_removal_the_configurations_never_carried_out_is_caught() {
    let found = first_violation(SiteKind::Membership, 0..10, |config| {
        config.flows = vec![site::Flow::DrainRemove];
        config.skip_rolling_restarts = true;
    });
    match found {
        Some((_, Violation::Site(SiteViolation::NotConverged { detail }))) => {
            assert!(detail.contains("the members are"), "{detail}");
        }
        other => panic!("expected a membership mismatch, got {other:?}"),
    }
}
