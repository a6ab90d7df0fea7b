//! Regressions for bugs the site simulations found (sims/tests/site_known_bugs.rs): each test
//! rebuilds the bug's shape on the in-test network, step by step.
use super::super::*;
use super::harness::*;
use crate::core::command::{Command, CommandError, CommandResult, Response as R, SetCondition};

/// Bug 2: a deposed primary keeps records it executed but never got acknowledged, so its log
/// runs *past* the new primary's. Acknowledging the new primary's last seq must not count as
/// caught up while that tail is still there: it has to be replaced first, or the tail becomes
/// real when the old primary is promoted again.
#[test]
fn a_deposed_primarys_tail_past_the_new_primarys_log_is_dropped_before_it_is_in_sync() {
    let mut net = Net::new(3);
    net.request(1, rid(1), vec![set("a", "1")]);
    net.settle();
    // Node 1 executes a write nobody receives, then is deposed (it stays alive).
    net.request(1, rid(2), vec![set("phantom", "x")]);
    net.in_flight.clear();
    assert_eq!(net.node(1).last_seq(), 2);
    assert_eq!(net.fail_over(), 2);
    // Node 2 writes nothing at epoch 2; node 1 follows it as a backup.
    for _ in 0..5 {
        net.settle();
        net.tick(100);
    }
    net.settle();
    let caught_up = MapProposal::CaughtUp { epoch: 2, node: 1 };
    assert!(
        net.proposals.iter().any(|(_, p)| *p == caught_up),
        "node 1 catches up eventually: {:?}",
        net.proposals
    );
    assert!(
        net.node(1).partition().entry(b"phantom").is_none(),
        "proposed in sync while still holding the unacknowledged tail"
    );
    assert_eq!(net.state(1), net.state(2));
    net.apply_proposals();
    net.settle();
    // Failback to node 1: the phantom write must not come back.
    net.crash(2);
    assert_eq!(net.fail_over(), 1);
    net.request(1, rid(3), vec![get("phantom")]);
    for _ in 0..5 {
        net.settle();
        net.tick(100);
        net.apply_proposals();
    }
    assert_eq!(net.answers(rid(3)), vec![vec![Ok(R::Value(None))]]);
}

/// Deliver until nothing is in flight, dropping every message `from` → `to` (a one-way cut).
fn settle_cut(net: &mut Net, from: ReplicaId, to: ReplicaId) {
    for _ in 0..100_000 {
        net.in_flight.retain(|(f, t, _)| !(*f == from && *t == to));
        if !net.step() {
            return;
        }
    }
    panic!("network did not settle");
}

fn caught_up_proposals(net: &Net, node: ReplicaId) -> usize {
    net.proposals
        .iter()
        .filter(|(_, p)| matches!(p, MapProposal::CaughtUp { node: n, .. } if *n == node))
        .count()
}

/// Bug 1: a backup restarts (empty log) and `MarkUp` with its new incarnation fences it out of
/// `in_sync`. The primary must forget what the previous incarnation acknowledged and propose it
/// in sync only once it really holds every acknowledged write again.
#[test]
fn a_restarted_backup_is_proposed_in_sync_only_once_it_holds_the_log_again() {
    let mut net = Net::new(2);
    for i in 1..=3 {
        net.request(1, rid(i), vec![incr("n")]);
    }
    net.settle();
    assert_eq!(net.answers(rid(3)), vec![vec![int(3)]]);
    // Node 2 restarts before anyone noticed; `MarkUp` (new incarnation) fences it.
    net.in_flight.clear();
    net.add_node(2);
    net.map.in_sync.remove(&2);
    net.publish_map();
    net.tick(10);
    assert_eq!(
        caught_up_proposals(&net, 2),
        0,
        "proposed on the previous incarnation's acknowledgements"
    );
    for _ in 0..10 {
        net.settle();
        net.tick(100);
        if caught_up_proposals(&net, 2) > 0 {
            break;
        }
    }
    assert_eq!(caught_up_proposals(&net, 2), 1, "caught up again");
    assert_eq!(net.node(2).last_seq(), 3);
    assert_eq!(net.state(2), net.state(1));
}

/// Bug 1, the same with a `CaughtUp` already in flight: a catching-up backup is proposed, then
/// restarts; the lost proposal is retried only on fresh acknowledgements.
#[test]
fn a_lost_caught_up_is_not_retried_for_a_backup_that_restarted_since() {
    let mut net = Net::new(2);
    net.request(1, rid(1), vec![set("k", "v")]);
    net.settle();
    net.add_node(3);
    net.map.replicas.insert(3);
    net.publish_map();
    net.settle();
    assert_eq!(caught_up_proposals(&net, 3), 1);
    net.proposals.clear();
    // The proposal is lost and node 3 restarts, empty; node 3 cannot be reached for a while.
    net.add_node(3);
    net.crash(3);
    net.in_flight.clear();
    let retry_ms = net.limits.map_proposal_retry_ms;
    for _ in 0..(retry_ms / 100) + 2 {
        net.tick(100);
        net.settle();
    }
    assert_eq!(
        caught_up_proposals(&net, 3),
        0,
        "retried without a fresh acknowledgement"
    );
}

/// Bug 4: a `CaughtUp` and the `ShrinkInSync` that revoked it are both lost, then the backup
/// recovers and the map stays quiet. The primary still waits on the backup, so it proposes it
/// in sync again instead of leaving it promised forever.
#[test]
fn a_recovered_backup_is_proposed_again_when_both_proposals_were_lost() {
    let mut net = Net::new(2);
    net.add_node(3);
    net.map.replicas.insert(3);
    net.publish_map();
    net.settle();
    assert_eq!(caught_up_proposals(&net, 3), 1);
    net.proposals.clear();
    // Node 3 stalls while a write waits on it: the primary proposes it out.
    net.crash(3);
    net.request(1, rid(1), vec![set("k", "v")]);
    for _ in 0..8 {
        net.tick(50);
        net.settle();
    }
    let shrink = MapProposal::ShrinkInSync {
        epoch: 1,
        remove: 3,
    };
    assert!(net.proposals.iter().any(|(_, p)| *p == shrink));
    net.proposals.clear();
    // Both proposals were lost; node 3 is back (same memory) and the map never changes.
    net.crashed.remove(&3);
    let retry_ms = net.limits.map_proposal_retry_ms;
    for _ in 0..(2 * retry_ms / 100) {
        net.tick(100);
        net.settle();
    }
    assert_eq!(net.answers(rid(1)), vec![vec![Ok(R::Ok)]]);
    assert!(caught_up_proposals(&net, 3) >= 1, "{:?}", net.proposals);
    net.apply_proposals();
    assert!(net.map.in_sync.contains(&3));
    assert_eq!(net.state(3), net.state(1));
}

/// Bug 5: a backup whose answers no longer reach the primary (one-way cut) is proposed out
/// once, and not proposed back in on the strength of its last acknowledgement.
#[test]
fn an_unresponsive_backup_is_not_proposed_in_sync_over_and_over() {
    let mut net = Net::new(2);
    net.request(1, rid(1), vec![set("k", "v")]);
    net.settle();
    // Node 2's answers are lost from now on; a read needs a barrier round it cannot confirm.
    net.request(1, rid(2), vec![get("k")]);
    for _ in 0..50 {
        net.tick(100);
        settle_cut(&mut net, 2, 1);
        if !net.proposals.is_empty() {
            net.apply_proposals();
            settle_cut(&mut net, 2, 1);
        }
    }
    assert_eq!(net.answers(rid(2)), vec![vec![value("v")]]);
    assert!(!net.map.in_sync.contains(&2));
    assert_eq!(caught_up_proposals(&net, 2), 0);
}

fn set_if(k: &str, v: &str, condition: SetCondition) -> Command {
    Command::Set {
        key: b(k),
        value: b(v),
        condition,
        expiry: None,
        get: false,
    }
}

/// Bugs 6 and 7 (site-chaos seed 433, site-partition seed 442): a write that changed nothing
/// was not remembered, so a second copy of the same request (a duplicated forward) arriving
/// after its answer was read executed again on a state that had changed in between, and
/// applied: the client was told `SET NX` did not apply, yet its value appeared. A copy of an
/// answered write must get the original answer and change nothing, whatever the write.
#[test]
fn a_second_copy_of_an_answered_write_that_changed_nothing_changes_nothing() {
    use SetCondition::{IfAbsent, IfPresent};
    // (what the key holds first, the no-op write, the change in between, what the key holds
    // after the copy arrives, the no-op write's answer)
    type Case = (
        Option<&'static str>,
        Command,
        Command,
        Option<&'static str>,
        CommandResult,
    );
    let table: Vec<Case> = vec![
        (
            Some("9"),
            set_if("k", "nx", IfAbsent),
            del("k"),
            None,
            Ok(R::Value(None)),
        ),
        (
            None,
            set_if("k", "xx", IfPresent),
            set("k", "2"),
            Some("2"),
            Ok(R::Value(None)),
        ),
        (None, del("k"), set("k", "2"), Some("2"), int(0)),
        (
            Some("text"),
            incr("k"),
            set("k", "5"),
            Some("5"),
            Err(CommandError::NotAnInteger),
        ),
    ];
    for (case, (first, noop, change, after, answer)) in table.into_iter().enumerate() {
        let mut net = Net::new(2);
        if let Some(v) = first {
            net.request(1, rid(1), vec![set("k", v)]);
            net.settle();
        }
        let seq = net.node(1).last_seq();
        net.request(1, rid(2), vec![noop.clone()]);
        net.settle();
        assert_eq!(net.node(1).last_seq(), seq, "case {case}: a no-op");
        assert_eq!(
            net.answers(rid(2)),
            vec![vec![answer.clone()]],
            "case {case}"
        );
        net.request(1, rid(3), vec![change]);
        net.settle();
        // The copy of request 2 arrives after its answer was read and the key changed.
        net.request(1, rid(2), vec![noop]);
        net.request(1, rid(4), vec![get("k")]);
        net.settle();
        assert_eq!(
            net.answers(rid(2)),
            vec![vec![answer.clone()], vec![answer]],
            "case {case}: the copy is answered as the original"
        );
        let expected = Ok(R::Value(after.map(b)));
        assert_eq!(
            net.answers(rid(4)),
            vec![vec![expected]],
            "case {case}: the copy changed the key"
        );
        assert_eq!(net.state(2), net.state(1), "case {case}");
    }
}

/// Reads are not remembered: running one again changes nothing, so the dedup table keeps its
/// room for writes.
#[test]
fn reads_are_not_remembered() {
    let mut net = Net::new(2);
    net.request(1, rid(1), vec![get("k")]);
    net.request(1, rid(2), vec![set_if("k", "v", SetCondition::IfPresent)]);
    net.settle();
    assert_eq!(net.node(1).remembered_requests(), 1);
}

/// Bugs 6 and 7, a copy that arrives while the first execution's answer is still held: it gets
/// the same answer, and does not run on the state a later write left.
#[test]
fn a_copy_of_a_held_write_that_changed_nothing_gets_the_same_answer() {
    let mut net = Net::new(2);
    net.request(1, rid(1), vec![set("k", "9")]);
    net.settle();
    net.request(1, rid(2), vec![set_if("k", "nx", SetCondition::IfAbsent)]);
    net.request(1, rid(3), vec![del("k")]);
    net.request(1, rid(2), vec![set_if("k", "nx", SetCondition::IfAbsent)]);
    assert!(
        net.answers(rid(2)).is_empty(),
        "held until the backup acknowledges"
    );
    net.settle();
    net.request(1, rid(4), vec![get("k")]);
    net.settle();
    let nil = vec![Ok(R::Value(None))];
    assert_eq!(net.answers(rid(2)), vec![nil.clone(), nil.clone()]);
    assert_eq!(net.answers(rid(4)), vec![nil]);
}

/// Bugs 6 and 7, the other side: a deposed primary that has not heard of the new epoch runs a
/// write that changes nothing *on its stale state*. Its answer is never released; the retry must
/// run again where the state is current, even on that very node once it is primary again: a
/// no-op leaves no record for the log repair to throw away, so remembering it before its release
/// would answer the retry from the stale state (site-partition seed 1113 with such a fix).
#[test]
fn a_deposed_primarys_unreleased_no_op_is_not_remembered() {
    let mut net = Net::new(3);
    net.request(1, rid(1), vec![set("k", "text")]);
    net.settle();
    // Node 1 is cut off and deposed without hearing of it; node 2 writes a number at epoch 2.
    net.crash(1);
    assert_eq!(net.fail_over(), 2);
    net.request(2, rid(2), vec![set("k", "5")]);
    net.settle();
    net.crashed.remove(&1);
    // Node 1 still runs `INCRBY k` at epoch 1 on "text"; its backups fence it.
    net.request(1, rid(3), vec![incr("k")]);
    net.settle();
    assert!(net.answers(rid(3)).is_empty(), "a deposed primary answered");
    assert_ne!(net.node(1).role(), Role::Primary);
    // Node 1 follows node 2, gets back in sync, and is promoted when node 2 crashes.
    net.publish_map();
    for _ in 0..5 {
        net.settle();
        net.tick(100);
        net.apply_proposals();
    }
    assert!(net.map.in_sync.contains(&1), "{:?}", net.map);
    net.crash(2);
    assert_eq!(net.fail_over(), 1);
    // The retry of request 3 runs on the current state.
    net.request(1, rid(3), vec![incr("k")]);
    for _ in 0..5 {
        net.settle();
        net.tick(100);
    }
    assert_eq!(net.answers(rid(3)), vec![vec![int(6)]]);
}
