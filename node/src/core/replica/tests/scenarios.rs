use super::super::*;
use super::harness::*;
use crate::core::command::Response as R;
use crate::limits::Limits;

/// Deliver every message in flight that goes to `to` (others stay queued, in order).
fn deliver_to(net: &mut Net, to: ReplicaId) {
    let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut net.in_flight)
        .into_iter()
        .partition(|(_, t, _)| *t == to);
    net.in_flight = later.into();
    for (from, to, message) in now {
        net.deliver(from, to, message);
    }
}

#[test]
fn a_write_is_answered_only_after_every_in_sync_backup_acknowledged() {
    for backups in [1u64, 2] {
        let mut net = Net::new(1 + backups);
        net.request(1, rid(1), vec![set("k", "v")]);
        assert!(net.answers(rid(1)).is_empty(), "held before replication");
        // Backups apply and acknowledge, but the acks are not delivered yet.
        for backup in 2..=1 + backups {
            deliver_to(&mut net, backup);
        }
        assert!(net.answers(rid(1)).is_empty(), "held until the acks arrive");
        for backup in 2..=1 + backups {
            assert_eq!(net.node(backup).last_seq(), 1);
        }
        // Deliver the acks one by one: released only with the last.
        for (i, backup) in (2..=1 + backups).enumerate() {
            let ack = net
                .in_flight
                .iter()
                .position(|(from, _, _)| *from == backup)
                .expect("an ack from the backup");
            let (from, to, message) = net.in_flight.remove(ack).expect("present");
            net.deliver(from, to, message);
            let released = !net.answers(rid(1)).is_empty();
            assert_eq!(
                released,
                i as u64 + 1 == backups,
                "{backups} backups, ack {i}"
            );
        }
        assert_eq!(net.answers(rid(1)), vec![vec![Ok(R::Ok)]]);
    }
}

#[test]
fn a_read_waits_for_a_barrier_and_never_sees_an_unacknowledged_write_first() {
    let mut net = Net::new(2);
    // A read alone still needs a round trip: the backup proves this primary is not deposed.
    net.request(1, rid(1), vec![get("k")]);
    assert!(net.answers(rid(1)).is_empty());
    assert!(
        net.in_flight
            .iter()
            .any(|(_, _, m)| matches!(m, ReplicationMessage::Replicate(r) if r.records.is_empty())),
        "an empty Replicate serves as barrier"
    );
    net.settle();
    assert_eq!(net.answers(rid(1)), vec![vec![Ok(R::Value(None))]]);

    // A read after an unacknowledged write waits for that write's acknowledgement.
    net.request(1, rid(2), vec![set("k", "v")]);
    net.request(1, rid(3), vec![get("k")]);
    assert!(net.answers(rid(2)).is_empty() && net.answers(rid(3)).is_empty());
    net.settle();
    assert_eq!(net.answers(rid(3)), vec![vec![value("v")]]);
    let order: Vec<RequestId> = net.responses.iter().map(|(_, (id, _))| *id).collect();
    assert_eq!(
        order,
        vec![rid(1), rid(2), rid(3)],
        "released in execution order"
    );
}

#[test]
fn a_silent_backup_is_proposed_out_and_answers_wait_for_the_new_map() {
    let mut net = Net::new(3);
    net.crash(3);
    net.request(1, rid(1), vec![set("k", "v")]);
    net.settle();
    assert!(
        net.answers(rid(1)).is_empty(),
        "backup 3 has not acknowledged"
    );
    let timeout = net.limits.backup_ack_timeout_ms;
    for _ in 0..(timeout / 50) + 1 {
        net.tick(50);
        net.settle();
    }
    let shrink = MapProposal::ShrinkInSync {
        epoch: 1,
        remove: 3,
    };
    assert!(net.proposals.iter().any(|(_, p)| *p == shrink));
    assert_eq!(
        net.proposals
            .iter()
            .filter(|(_, p)| matches!(p, MapProposal::ShrinkInSync { .. }))
            .count(),
        1,
        "proposed once, not on every tick"
    );
    assert!(
        net.answers(rid(1)).is_empty(),
        "still held until the map commits"
    );
    net.apply_proposals();
    assert_eq!(net.answers(rid(1)), vec![vec![Ok(R::Ok)]]);
    assert_eq!(net.map.in_sync, [2].into());
}

#[test]
fn messages_from_an_older_epoch_are_fenced_and_the_old_primary_steps_down() {
    let mut net = Net::new(3);
    net.request(1, rid(1), vec![set("a", "1")]);
    net.settle();
    // The map moves on (epoch 2, node 2 primary) but node 1 has not heard.
    net.map.epoch = 2;
    net.map.primary = Some(2);
    net.map.in_sync = [3].into();
    let facts = net.map.clone();
    for id in [2, 3] {
        if let Some(node) = net.nodes.get_mut(&id) {
            node.handle_assignment(&facts, T0);
        }
    }
    net.pump();
    net.in_flight.clear();
    let before = net.state(3);
    // Node 1 still executes a read and a write at epoch 1: neither may be answered (the read
    // could miss writes the new primary already acknowledged).
    net.request(1, rid(2), vec![get("a")]);
    net.request(1, rid(3), vec![set("a", "stale")]);
    let sent: Vec<_> = net.in_flight.drain(..).collect();
    assert!(!sent.is_empty());
    for (from, to, message) in sent {
        assert_eq!(message.epoch(), 1);
        net.deliver(from, to, message);
    }
    assert_eq!(net.state(3), before, "a stale Replicate changes nothing");
    assert!(
        net.in_flight
            .iter()
            .all(|(_, to, m)| *to == 1 && *m == ReplicationMessage::Fenced { epoch: 2 }),
        "answered with Fenced only: {:?}",
        net.in_flight
    );
    net.settle();
    assert!(net.answers(rid(2)).is_empty() && net.answers(rid(3)).is_empty());
    assert_eq!(net.node(1).epoch(), 2);
    assert_ne!(net.node(1).role(), Role::Primary);
    let redirected: Vec<(RequestId, Option<Vec<_>>)> = net
        .redirects
        .iter()
        .map(|(_, r)| (r.id, r.commands.clone()))
        .collect();
    assert_eq!(redirected, vec![(rid(2), None), (rid(3), None)]);
    // A stale assignment is ignored; an ack at the old epoch is ignored too.
    let mut stale = net.map.clone();
    stale.epoch = 1;
    stale.primary = Some(1);
    if let Some(node) = net.nodes.get_mut(&1) {
        node.handle_assignment(&stale, T0);
    }
    assert_eq!(net.node(1).epoch(), 2);
    assert_ne!(net.node(1).role(), Role::Primary);
}

#[test]
fn duplicated_and_reordered_messages_are_harmless() {
    let seeds = std::env::var("REPLICA_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(0..40, |s: u64| s..s + 1);
    // Messages linger for hundreds of ms here; this test is not about the ack timeout.
    let limits = ReplicationLimits {
        backup_ack_timeout_ms: 60_000,
        ..ReplicationLimits::default()
    };
    for seed in seeds {
        let mut net = Net::with_limits(3, Limits::default(), limits.clone());
        let mut rng = Rng::new(seed);
        for i in 0..30u64 {
            let commands = match i % 3 {
                0 => vec![set(&format!("k{}", i % 7), &format!("v{i}"))],
                1 => vec![incr("n")],
                _ => vec![get(&format!("k{}", i % 7))],
            };
            net.request(1, rid(i), commands);
            // Shuffle, duplicate and deliver part of what is in flight.
            for _ in 0..rng.below(4) {
                if net.in_flight.is_empty() {
                    break;
                }
                let at = rng.below(net.in_flight.len());
                let Some((from, to, message)) = net.in_flight.remove(at) else {
                    break;
                };
                if rng.below(3) == 0 {
                    net.in_flight.push_back((from, to, message.clone()));
                }
                net.deliver(from, to, message);
            }
            if rng.below(5) == 0 {
                net.tick(40);
            }
        }
        for _ in 0..20 {
            net.settle();
            net.tick(200);
        }
        for i in 0..30 {
            assert_eq!(
                net.answers(rid(i)).len(),
                1,
                "seed {seed}: request {i} answered once"
            );
        }
        assert_eq!(net.answers(rid(28)), vec![vec![int(10)]], "seed {seed}");
        assert_eq!(net.state(2), net.state(1), "seed {seed}");
        assert_eq!(net.state(3), net.state(1), "seed {seed}");
        assert!(net.proposals.is_empty(), "seed {seed}: {:?}", net.proposals);
    }
}

#[test]
fn a_gap_is_nacked_and_the_primary_resends_from_the_backup_position() {
    let mut net = Net::new(2);
    net.request(1, rid(1), vec![set("a", "1")]);
    let lost = net.in_flight.pop_front().expect("first Replicate");
    assert!(matches!(lost.2, ReplicationMessage::Replicate(_)));
    net.request(1, rid(2), vec![set("b", "2")]);
    // The second arrives without the first: a gap.
    let (from, to, message) = net.in_flight.pop_front().expect("second Replicate");
    net.deliver(from, to, message);
    assert!(matches!(
        net.in_flight.front(),
        Some((2, 1, ReplicationMessage::Nack { last_seq: 0, .. }))
    ));
    net.settle();
    assert_eq!(net.node(2).last_seq(), 2);
    assert_eq!(net.state(2), net.state(1));
    assert_eq!(net.answers(rid(1)).len() + net.answers(rid(2)).len(), 2);
}

#[test]
fn a_lost_message_is_retransmitted_after_the_timer() {
    let mut net = Net::new(2);
    net.request(1, rid(1), vec![set("a", "1")]);
    net.in_flight.clear();
    net.tick(net.limits.replicate_retransmit_ms);
    net.settle();
    assert_eq!(net.answers(rid(1)), vec![vec![Ok(R::Ok)]]);
    assert!(net.proposals.is_empty());
}

/// A backup outside the in-sync set catches up (from the log, or from a snapshot when the log
/// no longer reaches back) and is then proposed as caught up.
#[test]
fn a_new_backup_catches_up_from_the_log_or_a_snapshot_then_joins_in_sync() {
    let small_log = Limits {
        change_log_bytes_max: 2_000,
        ..Limits::default()
    };
    let cases = [
        ("log", Limits::default(), 0usize),
        ("snapshot", small_log, 1usize),
    ];
    for (name, partition_limits, min_chunks) in cases {
        let limits = ReplicationLimits {
            catchup_batch_bytes_max: 600,
            replicate_inflight_bytes_max: 2_000,
            ..ReplicationLimits::default()
        };
        let mut net = Net::with_limits(2, partition_limits, limits);
        for i in 0..60u64 {
            net.request(
                1,
                rid(i),
                vec![set(&format!("key-{}", i % 25), &format!("{i:032}"))],
            );
            net.settle();
        }
        // Node 3 joins as a replica, not in sync.
        net.add_node(3);
        net.map.replicas.insert(3);
        net.publish_map();
        let mut chunks = 0;
        for _ in 0..10_000 {
            let Some((from, to, message)) = net.in_flight.pop_front() else {
                break;
            };
            if matches!(message, ReplicationMessage::SnapshotChunk(_)) {
                chunks += 1;
            }
            net.deliver(from, to, message);
        }
        assert!(chunks >= min_chunks, "{name}: {chunks} chunks");
        if name == "log" {
            assert_eq!(chunks, 0, "the log reaches back: no snapshot");
        } else {
            assert!(chunks > 1, "{name}: the snapshot came in several chunks");
        }
        assert_eq!(net.state(3), net.state(1), "{name}");
        assert_eq!(net.node(3).last_seq(), net.node(1).last_seq(), "{name}");
        assert_eq!(
            net.proposals
                .iter()
                .map(|(_, p)| p.clone())
                .collect::<Vec<_>>(),
            vec![MapProposal::CaughtUp { epoch: 1, node: 3 }],
            "{name}"
        );
        net.apply_proposals();
        assert_eq!(net.map.in_sync, [2, 3].into(), "{name}");
        // From now on answers wait for node 3 as well.
        net.request(1, rid(100), vec![set("x", "y")]);
        deliver_to(&mut net, 2);
        deliver_to(&mut net, 1);
        assert!(net.answers(rid(100)).is_empty(), "{name}: waits on node 3");
        net.settle();
        assert_eq!(net.answers(rid(100)).len(), 1, "{name}");
    }
}

#[test]
fn a_handover_drains_without_failing_or_duplicating_any_request() {
    let mut net = Net::new(3);
    net.request(1, rid(1), vec![incr("n")]);
    net.request(1, rid(2), vec![incr("n")]);
    // Executed but unacknowledged requests are in flight when the handover starts.
    net.map.handover = Some(2);
    net.publish_map();
    net.request(1, rid(3), vec![incr("n")]);
    net.request(1, rid(4), vec![get("n")]);
    assert_eq!(net.node(1).queued_requests(), 2);
    assert!(net.proposals.is_empty(), "not drained yet");
    net.settle();
    assert_eq!(net.answers(rid(1)), vec![vec![int(1)]]);
    assert_eq!(net.answers(rid(2)), vec![vec![int(2)]]);
    let complete = MapProposal::CompleteHandover {
        epoch: 1,
        to: 2,
        last_seq: 2,
    };
    assert_eq!(net.proposals.last().map(|(_, p)| p.clone()), Some(complete));
    net.apply_proposals();
    net.settle();
    assert_eq!(net.node(2).role(), Role::Primary);
    assert_eq!(net.node(1).role(), Role::Backup);
    // The queued requests come back, unexecuted, pointing at the new primary.
    let redirects: Vec<Redirect> = net.redirects.drain(..).map(|(_, r)| r).collect();
    assert_eq!(redirects.len(), 2);
    for redirect in redirects {
        assert_eq!((redirect.epoch, redirect.primary), (2, Some(2)));
        let commands = redirect.commands.expect("never executed: forwarded as is");
        net.request(2, redirect.id, commands);
    }
    net.settle();
    assert_eq!(net.answers(rid(3)), vec![vec![int(3)]]);
    assert_eq!(net.answers(rid(4)), vec![vec![value("3")]]);
    assert_eq!(net.state(1), net.state(2));
    assert_eq!(net.state(3), net.state(2));
}

#[test]
fn a_retried_request_after_promotion_gets_its_original_answer() {
    let mut net = Net::new(3);
    net.request(1, rid(1), vec![incr("n")]);
    net.settle();
    // The answer never reaches the client: the primary dies right after.
    net.responses.clear();
    net.crash(1);
    let new_primary = net.fail_over();
    assert_eq!(new_primary, 2);
    net.request(2, rid(1), vec![incr("n")]);
    net.settle();
    assert_eq!(
        net.answers(rid(1)),
        vec![vec![int(1)]],
        "the original answer"
    );
    net.request(2, rid(2), vec![get("n")]);
    net.settle();
    assert_eq!(
        net.answers(rid(2)),
        vec![vec![value("1")]],
        "INCR applied once"
    );
}

#[test]
fn a_backup_holding_a_deposed_primarys_unacknowledged_write_is_repaired() {
    let mut net = Net::new(3);
    net.request(1, rid(1), vec![set("a", "1")]);
    net.settle();
    // The next write reaches node 3 only; then node 1 dies.
    net.request(1, rid(2), vec![set("phantom", "x")]);
    deliver_to(&mut net, 3);
    net.in_flight.clear();
    net.crash(1);
    assert_eq!(net.node(3).last_seq(), 2);
    assert_eq!(net.fail_over(), 2);
    net.request(2, rid(3), vec![set("b", "2")]);
    for _ in 0..5 {
        net.settle();
        net.tick(100);
    }
    assert_eq!(net.answers(rid(3)), vec![vec![Ok(R::Ok)]]);
    assert_eq!(
        net.state(3),
        net.state(2),
        "node 3 dropped the phantom write"
    );
    assert!(net.node(3).partition().entry(b"phantom").is_none());
}

#[test]
fn a_promoted_backup_never_shows_a_key_its_old_primary_showed_expired() {
    use crate::core::command::{Command, Expiry, SetCondition};
    let mut net = Net::new(2);
    net.request(
        1,
        rid(1),
        vec![Command::Set {
            key: b("t"),
            value: b("v"),
            condition: SetCondition::Always,
            expiry: Some(Expiry::InMs(100)),
            get: false,
        }],
    );
    net.settle();
    net.now += 150;
    net.request(1, rid(2), vec![get("t")]);
    net.settle();
    assert_eq!(net.answers(rid(2)), vec![vec![Ok(R::Value(None))]]);
    // Node 2's clock runs 100 ms behind node 1's.
    net.now -= 100;
    net.crash(1);
    net.fail_over();
    net.request(2, rid(3), vec![get("t")]);
    net.settle();
    assert_eq!(net.answers(rid(3)), vec![vec![Ok(R::Value(None))]]);
}

#[test]
fn requests_at_a_backup_are_redirected_unexecuted() {
    let mut net = Net::new(2);
    net.request(2, rid(1), vec![set("a", "1")]);
    assert_eq!(net.node(2).last_seq(), 0);
    let (_, redirect) = net.redirects.pop().expect("redirected");
    assert_eq!(
        (redirect.id, redirect.epoch, redirect.primary),
        (rid(1), 1, Some(1))
    );
    assert_eq!(redirect.commands, Some(vec![set("a", "1")]));
}

#[test]
fn a_full_handover_queue_redirects_at_once() {
    let limits = ReplicationLimits {
        handover_queue_requests_max: 1,
        ..ReplicationLimits::default()
    };
    let mut net = Net::with_limits(2, Limits::default(), limits);
    net.map.handover = Some(2);
    net.publish_map();
    net.request(1, rid(1), vec![incr("n")]);
    net.request(1, rid(2), vec![incr("n")]);
    assert_eq!(net.node(1).queued_requests(), 1);
    let redirected: Vec<(RequestId, u64, Option<ReplicaId>)> = net
        .redirects
        .iter()
        .map(|(_, r)| (r.id, r.epoch, r.primary))
        .collect();
    assert_eq!(redirected, vec![(rid(2), 2, Some(2))]);
    // Calling the handover off runs what was queued.
    net.map.handover = None;
    net.publish_map();
    net.settle();
    assert_eq!(net.answers(rid(1)), vec![vec![int(1)]]);
}

/// Between proposing `CaughtUp` and hearing it committed, the primary already waits on the
/// backup (the map may count it in sync); if it stalls, the primary proposes it out and stops
/// waiting at the next assignment that does not list it.
#[test]
fn a_backup_proposed_as_caught_up_is_waited_on_until_the_map_says_otherwise() {
    let mut net = Net::new(2);
    net.add_node(3);
    net.map.replicas.insert(3);
    net.publish_map();
    net.settle();
    let caught_up = MapProposal::CaughtUp { epoch: 1, node: 3 };
    assert_eq!(
        net.proposals
            .iter()
            .map(|(_, p)| p.clone())
            .collect::<Vec<_>>(),
        vec![caught_up]
    );
    net.proposals.clear();
    // The map has not applied it yet and node 3 goes silent: answers wait on it regardless.
    net.crash(3);
    net.request(1, rid(1), vec![set("k", "v")]);
    net.settle();
    assert!(
        net.answers(rid(1)).is_empty(),
        "waits on the promised backup"
    );
    for _ in 0..8 {
        net.tick(50);
        net.settle();
    }
    let shrink = MapProposal::ShrinkInSync {
        epoch: 1,
        remove: 3,
    };
    assert!(net.proposals.iter().any(|(_, p)| *p == shrink));
    assert!(net.answers(rid(1)).is_empty());
    // The shrink had no effect on the map (the CaughtUp was lost): the next assignment without
    // node 3 ends the wait.
    net.proposals.clear();
    net.publish_map();
    assert_eq!(net.answers(rid(1)), vec![vec![Ok(R::Ok)]]);
}

/// The actors crediting the counter at `key` on `node`.
fn counter_actors(net: &Net, node: ReplicaId, key: &str) -> Vec<tern_conflict::Writer> {
    match net.node(node).partition().entry(key.as_bytes()) {
        Some(tern_conflict::Versioned {
            value: tern_conflict::Value::Counter(counter),
            ..
        }) => counter.writers().map(|(actor, _)| actor).collect(),
        other => panic!("no counter at {key}: {other:?}"),
    }
}

#[test]
fn a_partitions_lineage_survives_failover_handover_and_snapshot_catch_up() {
    let small_log = Limits {
        change_log_bytes_max: 2_000,
        ..Limits::default()
    };
    let limits = ReplicationLimits {
        catchup_batch_bytes_max: 600,
        ..ReplicationLimits::default()
    };
    let mut net = Net::with_limits(3, small_log, limits);
    net.request(1, rid(1), vec![incr("n")]);
    net.settle();
    let lineage = net.node(1).partition().lineage();
    assert!(lineage.is_some_and(|l| l != 0), "the first INCR stamps one");
    for backup in [2, 3] {
        assert_eq!(net.node(backup).partition().lineage(), lineage);
    }
    // Failover: the promoted backup counts on in the same slot.
    net.crash(1);
    assert_eq!(net.fail_over(), 2);
    net.request(2, rid(2), vec![incr("n")]);
    net.settle();
    assert_eq!(net.answers(rid(2)), vec![vec![int(2)]]);
    assert_eq!(
        counter_actors(&net, 2, "n").len(),
        1,
        "one slot, not one per primary"
    );
    // A node that lost its memory rejoins and catches up from a snapshot (the log is too
    // short to reach back): it takes the lineage with the data.
    for i in 0..40u64 {
        net.request(
            2,
            rid(10 + i),
            vec![set(&format!("k{i}"), &format!("{i:064}"))],
        );
        net.settle();
    }
    net.add_node(4);
    net.map.replicas.insert(4);
    net.publish_map();
    net.settle();
    assert_eq!(net.state(4), net.state(2));
    assert_eq!(net.node(4).partition().lineage(), lineage);
    net.apply_proposals();
    // A graceful handover to it keeps the slot too.
    net.map.handover = Some(4);
    net.publish_map();
    net.settle();
    net.apply_proposals();
    net.settle();
    assert_eq!(net.node(4).role(), Role::Primary);
    net.request(4, rid(100), vec![incr("n")]);
    net.settle();
    assert_eq!(net.answers(rid(100)), vec![vec![int(3)]]);
    assert_eq!(counter_actors(&net, 4, "n").len(), 1);
}

#[test]
fn a_copy_that_starts_empty_counts_in_a_new_lineage() {
    // Two data lines of one site (before and after it lost everything): their increments
    // land in different slots, so merging them adds instead of absorbing one into the other.
    let mut before = Net::new(2);
    before.request(1, rid(1), vec![incr("n")]);
    before.settle();
    let mut after = Net::new(2);
    after.tick(5);
    after.request(1, rid(1), vec![incr("n")]);
    after.settle();
    let old = counter_actors(&before, 1, "n");
    let new = counter_actors(&after, 1, "n");
    assert_eq!((old.len(), new.len()), (1, 1));
    assert_eq!(old[0].site, new[0].site);
    assert_ne!(old[0].lineage, new[0].lineage);
}
