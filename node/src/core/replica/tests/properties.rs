//! Random command sequences with random message loss, duplication, reordering, map changes and a
//! crash of the primary at a random point; then a failover and client retries.
//! Checks invariant 5 (the promoted backup holds exactly the old primary's log up to its own last
//! seq, which covers every acknowledged request), invariant 4 (nothing from the old epoch is
//! accepted afterwards) and exactly-once INCR through the dedup table.
use super::super::*;
use super::harness::*;
use crate::core::command::{Command, CommandResult, Response as R};
use proptest::prelude::*;
use std::collections::BTreeMap;

#[derive(Clone, Debug)]
enum Op {
    Incr(u8),
    Set(u8),
    Get(u8),
    Del(u8),
    Deliver(usize),
    Duplicate(usize),
    Drop(usize),
    Tick(u64),
    ApplyMap,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..2).prop_map(Op::Incr),
        3 => (0u8..4).prop_map(Op::Set),
        2 => (0u8..4).prop_map(Op::Get),
        1 => (0u8..4).prop_map(Op::Del),
        8 => any::<usize>().prop_map(Op::Deliver),
        1 => any::<usize>().prop_map(Op::Duplicate),
        1 => any::<usize>().prop_map(Op::Drop),
        2 => (0u64..200).prop_map(Op::Tick),
        1 => Just(Op::ApplyMap),
    ]
}

fn counter_key(c: u8) -> String {
    format!("counter-{c}")
}
fn register_key(r: u8) -> String {
    format!("register-{r}")
}

/// The old primary's state as of `seq`, rebuilt from its (untruncated) log.
fn state_at(old: &ReplicaCore, seq: u64) -> Vec<(bytes::Bytes, tern_conflict::Versioned)> {
    let mut state = BTreeMap::new();
    let records = old
        .partition()
        .changes_since(0)
        .map(|records| {
            records
                .take_while(|r| r.seq <= seq)
                .cloned()
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    for record in records {
        state.insert(record.key, record.entry);
    }
    let mut entries: Vec<_> = state.into_iter().collect();
    entries.sort_by_key(|(k, _)| (crate::core::partition::scan_position(k), k.clone()));
    entries
}

fn run(ops: Vec<Op>, crash_at: usize, deliver_mask: u64) -> Result<(), TestCaseError> {
    let mut net = Net::new(3);
    let mut commands_of: BTreeMap<RequestId, Vec<Command>> = BTreeMap::new();
    let mut next_id = 0u64;
    let crash_at = crash_at % (ops.len() + 1);
    for (i, op) in ops.iter().cloned().enumerate() {
        if i == crash_at {
            break;
        }
        let len = net.in_flight.len();
        let commands = match op {
            Op::Incr(c) => Some(vec![incr(&counter_key(c))]),
            Op::Set(r) => Some(vec![set(&register_key(r), &format!("v{next_id}"))]),
            Op::Get(r) => Some(vec![get(&register_key(r))]),
            Op::Del(r) => Some(vec![del(&register_key(r))]),
            Op::Deliver(n) if len > 0 => {
                if let Some((from, to, m)) = net.in_flight.remove(n % len) {
                    net.deliver(from, to, m);
                }
                None
            }
            Op::Duplicate(n) if len > 0 => {
                if let Some((from, to, m)) = net.in_flight.get(n % len).cloned() {
                    net.deliver(from, to, m);
                }
                None
            }
            Op::Drop(n) if len > 0 => {
                net.in_flight.remove(n % len);
                None
            }
            Op::Tick(ms) => {
                net.tick(ms);
                None
            }
            Op::ApplyMap => {
                net.apply_proposals();
                None
            }
            _ => None,
        };
        if let Some(commands) = commands {
            let id = rid(next_id);
            next_id += 1;
            commands_of.insert(id, commands.clone());
            net.request(1, id, commands);
        }
    }

    // Crash the primary; part of what it sent still arrives (before the failover).
    net.crash(1);
    let acknowledged: Vec<RequestId> = net.responses.iter().map(|(_, (id, _))| *id).collect();
    let in_flight: Vec<_> = net.in_flight.drain(..).collect();
    let mut late = Vec::new();
    for (i, (from, to, m)) in in_flight.into_iter().enumerate() {
        if deliver_mask >> (i % 64) & 1 == 1 {
            net.deliver(from, to, m);
        } else {
            late.push((from, to, m));
        }
    }
    net.in_flight.clear();
    if net.map.in_sync.is_empty() {
        // No in-sync backup: the partition stays unavailable rather than lose writes.
        return Ok(());
    }
    let old_log_end = net.node(1).last_seq();
    let promoted = net.fail_over();

    // Invariant 5: the promoted backup holds the old primary's log up to its own last seq, and
    // that covers every acknowledged request.
    let promoted_last = net.node(promoted).last_seq();
    prop_assert!(promoted_last <= old_log_end);
    prop_assert_eq!(net.state(promoted), state_at(net.node(1), promoted_last));
    for id in &acknowledged {
        if let Some(seq) = net.node(1).dedup.seq_of(id) {
            prop_assert!(
                seq <= promoted_last,
                "acknowledged {id:?} at seq {seq} lost"
            );
        }
    }

    // Late messages from the deposed primary are fenced (invariant 4).
    let before = (net.state(2), net.state(3));
    for (from, to, m) in late {
        net.deliver(from, to, m);
    }
    prop_assert_eq!((net.state(2), net.state(3)), before);

    // Clients retry every unanswered request (same id) at the new primary.
    let unanswered: Vec<RequestId> = commands_of
        .keys()
        .copied()
        .filter(|id| net.answers(*id).is_empty())
        .collect();
    net.redirects.clear();
    for id in unanswered {
        net.request(promoted, id, commands_of[&id].clone());
    }
    for _ in 0..30 {
        net.settle();
        net.tick(100);
        net.apply_proposals();
    }
    prop_assert!(net.redirects.is_empty(), "{:?}", net.redirects);

    // Every request answered exactly once; INCR applied exactly once each.
    let mut incr_answers: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (id, commands) in &commands_of {
        let answers = net.answers(*id);
        prop_assert_eq!(answers.len(), 1, "request {:?}", id);
        if let (Some(Command::IncrBy { key, .. }), Some(Ok(R::Int(n)))) =
            (commands.first(), answers[0].first())
        {
            incr_answers
                .entry(String::from_utf8_lossy(key).into_owned())
                .or_default()
                .push(*n);
        }
    }
    for c in 0..2u8 {
        let key = counter_key(c);
        let mut seen = incr_answers.remove(&key).unwrap_or_default();
        seen.sort_unstable();
        let expected: Vec<i64> = (1..=seen.len() as i64).collect();
        prop_assert_eq!(
            &seen,
            &expected,
            "each INCR on {} answered a distinct count",
            key
        );
        let id = rid(next_id);
        next_id += 1;
        net.request(promoted, id, vec![get(&key)]);
        net.settle();
        let final_value: CommandResult = if seen.is_empty() {
            Ok(R::Value(None))
        } else {
            value(&seen.len().to_string())
        };
        prop_assert_eq!(net.answers(id), vec![vec![final_value]]);
    }
    // The surviving backup converged on the new primary.
    let other = if promoted == 2 { 3 } else { 2 };
    prop_assert_eq!(net.state(other), net.state(promoted));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn a_failover_at_any_point_keeps_every_acknowledged_write_and_applies_each_once(
        ops in prop::collection::vec(op(), 0..80),
        crash_at in any::<usize>(),
        deliver_mask in any::<u64>(),
    ) {
        run(ops, crash_at, deliver_mask)?;
    }
}
