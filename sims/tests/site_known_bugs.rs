//! Reproducers of open bugs the site scenarios found in the cores (`node/`). Each is a seed and
//! a config knob the default sweep leaves off; each test asserts the run keeps every invariant,
//! so it fails today and passes once the bug is fixed — then remove its `#[ignore]` (and turn the
//! knob on in `Config::for_seed`). Replay one with its trace tail:
//!
//! ```text
//! cargo test -p tern-sims --test site_known_bugs -- --ignored --nocapture <test name>
//! ```
use tern_sims::RunOptions;
use tern_sims::scenario::site::{self, Config, SiteKind};

/// Run and fail with the violation and the last events, if any invariant broke.
fn assert_keeps_invariants(kind: SiteKind, seed: u64, adjust: impl FnOnce(&mut Config)) {
    let options = RunOptions { trace_lines: 80 };
    let run = site::run_adjusted(kind, seed, &options, adjust);
    if let Some(violation) = &run.report.violation {
        for line in &run.report.trace_tail {
            println!("  {line}");
        }
        panic!("{} seed {seed}: {violation}", kind.scenario());
    }
}

/// Bug 1 (node/src/core/replica/primary.rs, `primary_assignment` + `check_caught_up`): a backup
/// that restarts before the failure detector notices is fenced by `MarkUp` with its new
/// incarnation, which removes it from `in_sync` but keeps it a replica. The primary keeps the
/// `Follower` it had for the previous incarnation (`matched`, `acked_seq`), so on its next tick
/// `check_caught_up` proposes `CaughtUp` for a node whose log is empty, the map accepts it, and
/// the planner may even start a failback handover to it. Here: n3 restarts after 293 ms
/// (incarnation 2), `MarkUp` commits at 2.383 s, n1 (primary of p4) has `CaughtUp p4 n3`
/// committed 20 ms later, n1 crashes, and n3 is promoted with its log at seq 0 although seq 22
/// was acknowledged.
#[test]
fn bug1_a_quickly_restarted_backup_is_not_put_back_in_sync_empty() {
    assert_keeps_invariants(SiteKind::Failover, 29, |config| {
        config.quick_restart_ppm = 500_000;
    });
}

/// Bug 2 (node/src/core/replica/backup.rs, `backup_replicate`; primary.rs, `check_caught_up` /
/// `check_handover`): a deposed primary keeps the records it executed but never got
/// acknowledged (its log runs *past* the new primary's). As a backup it acknowledges
/// `matched_seq` = the new primary's last seq, which counts as caught up, and the divergent tail
/// is only found out when the new primary writes its next record. If it writes nothing on that
/// partition first, the old primary goes back in sync with the tail and, promoted or handed the
/// partition back (failback), makes those never-acknowledged records real. Here p6's e1 primary
/// n2 executed `INCRBY k4 -2` (seq 9) and `DEL k4` (seq 10) unacknowledged; n1 (e2) wrote nothing
/// to p6; n2 got back in sync and primary at e3 with seqs 9–10. The DEL had meanwhile been
/// retried and answered 0 at e2, so its resurrected e1 execution deletes a value a later
/// acknowledged INCRBY relied on: the history of k4 is not linearizable.
#[test]
fn bug2_a_deposed_primarys_unacknowledged_tail_never_becomes_real() {
    assert_keeps_invariants(SiteKind::Partition, 7, |config| {
        config.overlap_faults = true;
    });
}

/// Liveness gap 3, shape (a), fixed (node/src/cluster/planner.rs): the primary of p1 (n2)
/// restarts while its only in-sync backup n1 is cut off; one planner round saw both. It used to
/// propose `MarkDown n1` before `MarkUp n2 incarnation 2`, so the restart's fence found no
/// in-sync backup and `mark_up` cleared `orphaned_by` ("the only complete copy is gone"): p1
/// never got a primary again though n1 held its data. The planner now proposes every `MarkUp`
/// before any `MarkDown`: n1 is promoted, then fenced, and p1 waits for it.
#[test]
fn gap3_a_partition_whose_complete_copy_lives_gets_a_primary_back() {
    assert_keeps_invariants(SiteKind::Chaos, 74, |config| {
        config.overlap_faults = true;
    });
}

/// Liveness gap 3, shapes (b) and (c), open (docs/design/site-ha.md, "Liveness gap 3"): the map
/// removes the surviving complete copy from `in_sync` in one command and fences the copy that
/// is really gone in a later one, and cannot tell that the gone copy never acted in between.
/// Failover seed 67 (shape (b)-like): n4 (primary of p2) crashes and is back 277 ms later; a
/// clock step makes its only in-sync backup n2 look silent, and `MarkDown n2` commits before
/// n4's new incarnation is heard. Chaos seed 23 (shape (c)): after a heal, a leader with a stale
/// view commits `MarkDown` of the healthy primary n3 of p0 (promoting its in-sync backup n4,
/// which had crashed) then of n4; n4 comes back with a new incarnation. Fixing these needs the
/// replica core to confirm through the map before it acts alone (see the design doc).
#[test]
#[ignore = "open liveness gap 3 (b)/(c): needs a replica-core confirmation"]
fn gap3_bc_a_partition_whose_complete_copy_lives_gets_a_primary_back() {
    for (kind, seed) in [(SiteKind::Failover, 67), (SiteKind::Chaos, 23)] {
        assert_keeps_invariants(kind, seed, |config| {
            config.overlap_faults = true;
        });
    }
}

/// Bug 4 (node/src/core/replica/primary.rs, `primary_tick` / `primary_assignment`): a primary
/// proposes `CaughtUp` for a backup, then (the backup stalls) `ShrinkInSync` with
/// `drop_promise`; both proposals are lost (the primary is cut off from the Raft leader). The
/// promise is only dropped by the *next map assignment*, the `CaughtUp` retry requires
/// `!drop_promise` and the shrink retry requires a stall — so when the site is quiet afterwards
/// and no map command commits any more, the backup stays "promised" (waited on like an in-sync
/// one) but is never proposed in sync again: here p0 of site-partition seed 1015 ends with its
/// preferred backup n2 caught up (acks at the primary's last seq) and out of `in_sync` forever.
#[test]
fn bug4_a_caught_up_backup_gets_back_in_sync_when_the_map_is_quiet() {
    assert_keeps_invariants(SiteKind::Partition, 1015, |_| {});
}

/// Bug 5 (node/src/core/replica/primary.rs, `check_caught_up`): a backup that stopped
/// acknowledging (e.g. its link to the primary is cut one way) counts as caught up as long as
/// its *last* acknowledgement equals `acknowledged_seq`, which holds whenever no new write was
/// acknowledged since the shrink. The primary then alternates `CaughtUp` and (the backup being
/// stalled for longer than `backup_ack_timeout_ms` already) `ShrinkInSync` on every tick, each
/// pair a Raft round and a `sync_generation` bump, and every write meanwhile waits for the next
/// shrink. Here one partition gets 31 `CaughtUp`s in a 15 s run; a handful is expected.
#[test]
fn bug5_an_unresponsive_backup_is_not_proposed_in_sync_over_and_over() {
    let run = site::run(SiteKind::Chaos, 12, &RunOptions::default());
    assert!(run.report.violation.is_none(), "{:?}", run.report.violation);
    let caught_up_max = run.stats.checker.caught_up_max;
    assert!(
        caught_up_max <= 8,
        "site-chaos seed 12: one partition saw {caught_up_max} CaughtUp commands"
    );
}

/// Bugs 6 and 7 (node/src/core/replica/primary.rs, `execute`): the primary remembered a write
/// request's answer only when the request changed state, on the reasoning that executing a
/// no-op again is like executing it the first time, "whose answer nobody received". That fails
/// when a second copy of the request arrives *after* the first answer was read: the network
/// duplicated (or delayed and reordered) the forward. The copy then executes on a state that
/// changed in between, and may apply. The origin ignores its answer (that attempt was already
/// answered), but the write is real, acknowledged and replicated like any other. Now a write
/// that changed nothing is remembered too, so the copy gets the original answer and changes
/// nothing — but only from its release on (a copy arriving before gets the held answer): a
/// deposed primary that has not heard of the new epoch runs no-ops on a stale state, and unlike
/// a write a no-op leaves no record for the log repair to throw away (remembering it at once
/// broke site-partition seed 1113: n3, cut off as primary of p0 at epoch 1, ran `INCRBY k3` on a
/// string the epoch-2 primary had already replaced by "5", and once primary again answered the
/// retry `NotAnInteger`). The production transport delivers at most once, but an attempt can
/// still reach the primary after a later one of the same id (a retry on a new connection, or a
/// message queued while the peer was unreachable).
///
/// Bug 6, site-chaos seed 433: n1 is primary of p4 at epoch 3 (failback handover at 2.359 s),
/// n2 and n3 in sync; n1's links are degraded from 3.045 s (loss, duplication, delay). n1
/// acknowledges `SET k0 9` at 3.360 s (seq 40). Client 6's `SET k0 v3-5 NX`, forwarded by n3 as
/// request r3.10000006b attempt 1, runs on n1 as a no-op and is answered nil at 3.440 s. `DEL
/// k0` is acknowledged at 3.593 s (seq 41). At 3.619 s a duplicate of the same forward reaches
/// n1, which runs it again: k0 = "v3-5" at seq 42, acknowledged by n2 and n3 at 3.621 s. Then
/// `SET k0 v0-11 NX` answers nil and a GET reads "v3-5", a value whose only write was answered
/// "not applied": not linearizable.
///
/// Bug 7, site-partition seed 442, the same with `SET XX`: n1 is primary of p6 at epoch 3
/// (failback at 3.357 s), n4 in sync; n2's links are degraded from 2.590 s. `DEL k5` is
/// acknowledged at 3.527 s (seq 26). Client 8's `SET k5 6 XX GET` (r2.100000034 attempt 1,
/// forwarded by n2) runs on n1 as a no-op and is answered nil at 3.622 s; `SET k5 2` is
/// acknowledged at 3.654 s (seq 27); a duplicate of the forward reaches n1 at 3.730 s and now
/// applies (k5 = "6", seq 28). A GET at 3.940 s reads "6".
#[test]
fn bug6_7_a_duplicated_forward_of_a_write_that_changed_nothing_never_applies() {
    assert_keeps_invariants(SiteKind::Chaos, 433, |_| {});
    assert_keeps_invariants(SiteKind::Partition, 442, |_| {});
}
