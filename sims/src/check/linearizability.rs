//! Per-key linearizability of a client-observed history: Wing & Gong's search with Lowe's
//! memoization (the algorithm of Knossos and Porcupine).
//!
//! Operations on different keys commute, so each key is checked on its own. The sequential
//! specification covers the non-TTL string operations; TTLs are left out so the state space
//! stays finite (a key's state is just its value). An operation whose outcome the client never
//! learned (a timeout, a crash) has `result: None`: it may take effect at any point after its
//! invocation, or never.
use super::{Violation, show_key};
use crate::time::SimTime;
use crate::trace::FixedFnvState;
use bytes::Bytes;
use std::collections::HashSet;
use tern_node::core::{Command, CommandError, CommandResult, Response, SetCondition};

/// A single-key operation of the sequential specification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyOp {
    Get,
    Set {
        value: Bytes,
        condition: SetCondition,
        get: bool,
    },
    Del,
    Exists,
    IncrBy {
        delta: i64,
    },
    /// The key's share of a FLUSHALL: removes it; there is no per-key result to check.
    Clear,
}

impl KeyOp {
    /// The operation a command performs on its key, if it is in the specification (SET with an
    /// expiry, EXPIRE and TTL are not). `Expiry::Keep` counts as no expiry: the keys this
    /// checker sees never get a TTL.
    pub fn from_command(command: &Command) -> Option<(Bytes, KeyOp)> {
        use tern_node::core::Expiry;
        Some(match command {
            Command::Get { key } => (key.clone(), KeyOp::Get),
            Command::Set {
                key,
                value,
                condition,
                expiry: None | Some(Expiry::Keep),
                get,
            } => (
                key.clone(),
                KeyOp::Set {
                    value: value.clone(),
                    condition: *condition,
                    get: *get,
                },
            ),
            Command::Del { key } => (key.clone(), KeyOp::Del),
            Command::Exists { key } => (key.clone(), KeyOp::Exists),
            Command::IncrBy { key, delta } => (key.clone(), KeyOp::IncrBy { delta: *delta }),
            _ => return None,
        })
    }

    /// Apply to `state`; returns the new state and the result a client would see.
    pub fn apply(&self, state: &Option<Bytes>) -> (Option<Bytes>, CommandResult) {
        match self {
            KeyOp::Get => (state.clone(), Ok(Response::Value(state.clone()))),
            KeyOp::Exists => (state.clone(), Ok(Response::Int(i64::from(state.is_some())))),
            KeyOp::Del => (None, Ok(Response::Int(i64::from(state.is_some())))),
            KeyOp::Clear => (None, Ok(Response::Ok)),
            KeyOp::Set {
                value,
                condition,
                get,
            } => {
                let applies = match condition {
                    SetCondition::Always => true,
                    SetCondition::IfAbsent => state.is_none(),
                    SetCondition::IfPresent => state.is_some(),
                };
                let reply = match (get, applies) {
                    (true, _) => Response::Value(state.clone()),
                    (false, true) => Response::Ok,
                    (false, false) => Response::Value(None),
                };
                let next = if applies {
                    Some(value.clone())
                } else {
                    state.clone()
                };
                (next, Ok(reply))
            }
            KeyOp::IncrBy { delta } => {
                let current = match state {
                    None => 0,
                    Some(text) => match super::model::canonical_integer(text) {
                        Some(n) => n,
                        None => return (state.clone(), Err(CommandError::NotAnInteger)),
                    },
                };
                match current.checked_add(*delta) {
                    Some(n) => (Some(Bytes::from(n.to_string())), Ok(Response::Int(n))),
                    None => (state.clone(), Err(CommandError::Overflow)),
                }
            }
        }
    }
}

/// One operation as a client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryOp {
    pub client: u32,
    pub op: KeyOp,
    pub invoked: SimTime,
    /// [`SimTime::NEVER`] if the client never learned the outcome.
    pub completed: SimTime,
    /// `None` if the client never learned the outcome.
    pub result: Option<CommandResult>,
}

impl HistoryOp {
    fn accepts(&self, result: &CommandResult) -> bool {
        matches!(self.op, KeyOp::Clear) || self.result.as_ref().is_none_or(|r| r == result)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No order explains the results; the text says how far the search got.
    NotLinearizable(String),
    /// The search exceeded its step budget.
    Undecided,
}

/// Totals over the keys a run checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinSummary {
    pub keys: usize,
    pub ops: usize,
    /// Keys whose search ran out of budget (neither proven nor refuted).
    pub undecided: usize,
}

/// Check every key's history (each starts from an absent key); the first violation wins.
pub fn check_keys<'a>(
    histories: impl IntoIterator<Item = (&'a Bytes, &'a Vec<HistoryOp>)>,
    step_budget: u64,
) -> Result<LinSummary, Violation> {
    let mut summary = LinSummary::default();
    for (key, history) in histories {
        summary.keys += 1;
        summary.ops += history.len();
        match check_history(history, None, step_budget) {
            Verdict::Linearizable => {}
            Verdict::Undecided => summary.undecided += 1,
            Verdict::NotLinearizable(detail) => {
                return Err(Violation::NotLinearizable {
                    key: show_key(key),
                    ops: history.len(),
                    detail,
                });
            }
        }
    }
    Ok(summary)
}

const NIL: usize = usize::MAX;

/// A node of the doubly linked list of call and return events.
#[derive(Clone, Copy, Debug)]
struct Node {
    op: usize,
    is_call: bool,
    prev: usize,
    next: usize,
}

/// Whether some total order of `history`, consistent with real time, explains every result,
/// starting from `initial`. Gives up after `step_budget` search steps.
pub fn check_history(history: &[HistoryOp], initial: Option<Bytes>, step_budget: u64) -> Verdict {
    let n = history.len();
    if n == 0 {
        return Verdict::Linearizable;
    }
    // Events in time order. At equal times calls come first, so touching operations count as
    // concurrent (the permissive reading, never a false alarm).
    let mut events: Vec<(SimTime, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, op) in history.iter().enumerate() {
        events.push((op.invoked, false, i));
        events.push((op.completed.max(op.invoked), true, i));
    }
    events.sort();
    let head = 2 * n;
    let mut nodes = vec![
        Node {
            op: NIL,
            is_call: false,
            prev: NIL,
            next: NIL
        };
        2 * n + 1
    ];
    let mut call_node = vec![NIL; n];
    let mut prev = head;
    for (index, &(_, is_return, op)) in events.iter().enumerate() {
        nodes[index] = Node {
            op,
            is_call: !is_return,
            prev,
            next: NIL,
        };
        nodes[prev].next = index;
        if !is_return {
            call_node[op] = index;
        }
        prev = index;
    }
    let return_node = {
        let mut r = vec![NIL; n];
        for (index, node) in nodes[..2 * n].iter().enumerate() {
            if !node.is_call {
                r[node.op] = index;
            }
        }
        r
    };

    let mut state = initial;
    let mut linearized = vec![0u64; n.div_ceil(64)];
    let mut seen: HashSet<(Vec<u64>, Option<Bytes>), FixedFnvState> = HashSet::default();
    let mut stack: Vec<(usize, Option<Bytes>)> = Vec::new();
    // For the report: the deepest point reached and the operation that could not be placed.
    let mut deepest = (0usize, 0usize);
    let mut cursor = nodes[head].next;
    let mut steps = 0u64;
    while nodes[head].next != NIL {
        steps += 1;
        if steps > step_budget {
            return Verdict::Undecided;
        }
        let node = nodes[cursor];
        if node.is_call {
            let (next_state, result) = history[node.op].op.apply(&state);
            if history[node.op].accepts(&result) {
                set_bit(&mut linearized, node.op, true);
                if seen.insert((linearized.clone(), next_state.clone())) {
                    stack.push((node.op, std::mem::replace(&mut state, next_state)));
                    unlink(&mut nodes, call_node[node.op]);
                    unlink(&mut nodes, return_node[node.op]);
                    cursor = nodes[head].next;
                    continue;
                }
                set_bit(&mut linearized, node.op, false);
            }
            cursor = node.next;
        } else {
            // An operation's completion came before it could be placed: undo the last choice.
            if stack.len() >= deepest.0 {
                deepest = (stack.len(), node.op);
            }
            let Some((op, previous)) = stack.pop() else {
                let (placed, blocked) = deepest;
                let blocked_op = &history[blocked];
                return Verdict::NotLinearizable(format!(
                    "at best {placed} of {n} operations could be ordered before op #{blocked} \
                     (client {client}: {op:?} -> {result:?}, invoked {invoked}, completed {completed}) \
                     had to take effect",
                    client = blocked_op.client,
                    op = blocked_op.op,
                    result = blocked_op.result,
                    invoked = blocked_op.invoked,
                    completed = blocked_op.completed,
                ));
            };
            state = previous;
            set_bit(&mut linearized, op, false);
            relink(&mut nodes, return_node[op]);
            relink(&mut nodes, call_node[op]);
            cursor = nodes[call_node[op]].next;
        }
    }
    Verdict::Linearizable
}

fn set_bit(bits: &mut [u64], index: usize, on: bool) {
    let mask = 1u64 << (index % 64);
    if on {
        bits[index / 64] |= mask;
    } else {
        bits[index / 64] &= !mask;
    }
}

/// Take `index` out of the list; it keeps its own links so [`relink`] can put it back.
fn unlink(nodes: &mut [Node], index: usize) {
    let Node { prev, next, .. } = nodes[index];
    nodes[prev].next = next;
    if next != NIL {
        nodes[next].prev = prev;
    }
}

/// Undo [`unlink`] (in reverse order of unlinking).
fn relink(nodes: &mut [Node], index: usize) {
    let Node { prev, next, .. } = nodes[index];
    nodes[prev].next = index;
    if next != NIL {
        nodes[next].prev = index;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(text: &'static str) -> Bytes {
        Bytes::from_static(text.as_bytes())
    }
    fn op(
        client: u32,
        op: KeyOp,
        invoked: u64,
        completed: u64,
        result: CommandResult,
    ) -> HistoryOp {
        HistoryOp {
            client,
            op,
            invoked: SimTime::from_micros(invoked),
            completed: SimTime::from_micros(completed),
            result: Some(result),
        }
    }
    fn set(value: &'static str) -> KeyOp {
        KeyOp::Set {
            value: b(value),
            condition: SetCondition::Always,
            get: false,
        }
    }
    fn got(value: Option<&'static str>) -> CommandResult {
        Ok(Response::Value(value.map(b)))
    }
    const OK: CommandResult = Ok(Response::Ok);

    #[test]
    fn verdicts_on_small_histories() {
        let cases: Vec<(&str, Vec<HistoryOp>, bool)> = vec![
            (
                "sequential write then read",
                vec![
                    op(1, set("a"), 0, 10, OK),
                    op(2, KeyOp::Get, 20, 30, got(Some("a"))),
                ],
                true,
            ),
            (
                "stale read after the write completed",
                vec![
                    op(1, set("a"), 0, 10, OK),
                    op(1, set("b"), 20, 30, OK),
                    op(2, KeyOp::Get, 40, 50, got(Some("a"))),
                ],
                false,
            ),
            (
                "concurrent read may see either value",
                vec![
                    op(1, set("a"), 0, 10, OK),
                    op(1, set("b"), 20, 60, OK),
                    op(2, KeyOp::Get, 30, 50, got(Some("a"))),
                    op(3, KeyOp::Get, 30, 50, got(Some("b"))),
                ],
                true,
            ),
            (
                "reads may not go back once a newer value was seen",
                vec![
                    op(1, set("a"), 0, 10, OK),
                    op(1, set("b"), 20, 100, OK),
                    op(2, KeyOp::Get, 30, 40, got(Some("b"))),
                    op(3, KeyOp::Get, 50, 60, got(Some("a"))),
                ],
                false,
            ),
            (
                "phantom value",
                vec![
                    op(1, set("a"), 0, 10, OK),
                    op(2, KeyOp::Get, 0, 20, got(Some("zzz"))),
                ],
                false,
            ),
            (
                "increments add up",
                vec![
                    op(1, KeyOp::IncrBy { delta: 2 }, 0, 50, Ok(Response::Int(2))),
                    op(2, KeyOp::IncrBy { delta: 3 }, 10, 40, Ok(Response::Int(5))),
                    op(3, KeyOp::Get, 60, 70, got(Some("5"))),
                ],
                true,
            ),
            (
                "a lost increment",
                vec![
                    op(1, KeyOp::IncrBy { delta: 2 }, 0, 50, Ok(Response::Int(2))),
                    op(2, KeyOp::IncrBy { delta: 3 }, 10, 40, Ok(Response::Int(3))),
                ],
                false,
            ),
            (
                "incr on text fails and leaves it",
                vec![
                    op(1, set("x"), 0, 1, OK),
                    op(
                        1,
                        KeyOp::IncrBy { delta: 1 },
                        2,
                        3,
                        Err(CommandError::NotAnInteger),
                    ),
                    op(1, KeyOp::Exists, 4, 5, Ok(Response::Int(1))),
                ],
                true,
            ),
            (
                "clear makes the key absent",
                vec![
                    op(1, set("x"), 0, 1, OK),
                    op(2, KeyOp::Clear, 2, 3, OK),
                    op(1, KeyOp::Del, 4, 5, Ok(Response::Int(1))),
                ],
                false,
            ),
            (
                "set nx get",
                vec![
                    op(
                        1,
                        KeyOp::Set {
                            value: b("n"),
                            condition: SetCondition::IfAbsent,
                            get: true,
                        },
                        0,
                        1,
                        got(None),
                    ),
                    op(
                        2,
                        KeyOp::Set {
                            value: b("m"),
                            condition: SetCondition::IfAbsent,
                            get: true,
                        },
                        2,
                        3,
                        got(Some("n")),
                    ),
                    op(2, KeyOp::Get, 4, 5, got(Some("n"))),
                ],
                true,
            ),
        ];
        for (name, history, expected) in cases {
            let verdict = check_history(&history, None, 100_000);
            assert_eq!(
                verdict == Verdict::Linearizable,
                expected,
                "{name}: {verdict:?}"
            );
            assert_ne!(verdict, Verdict::Undecided, "{name}");
        }
    }

    #[test]
    fn unknown_outcomes_may_or_may_not_take_effect() {
        let pending = |value| HistoryOp {
            client: 9,
            op: set(value),
            invoked: SimTime::from_micros(5),
            completed: SimTime::NEVER,
            result: None,
        };
        for seen in [None, Some("p")] {
            let history = vec![pending("p"), op(1, KeyOp::Get, 10, 20, got(seen))];
            assert_eq!(
                check_history(&history, None, 1_000),
                Verdict::Linearizable,
                "{seen:?}"
            );
        }
        let history = vec![pending("p"), op(1, KeyOp::Get, 10, 20, got(Some("q")))];
        assert!(matches!(
            check_history(&history, None, 1_000),
            Verdict::NotLinearizable(_)
        ));
    }

    #[test]
    fn a_violation_names_the_operation_and_the_budget_is_respected() {
        let history = vec![
            op(1, set("a"), 0, 10, OK),
            op(2, KeyOp::Get, 20, 30, got(Some("b"))),
        ];
        let Verdict::NotLinearizable(detail) = check_history(&history, None, 1_000) else {
            panic!("expected a violation");
        };
        assert!(
            detail.contains("op #1") && detail.contains("client 2"),
            "{detail}"
        );
        // Many concurrent writes and a read of none of them: refuting it takes more than 5 steps.
        let mut wide: Vec<HistoryOp> = (0..12).map(|i| op(i, set("w"), 0, 100, OK)).collect();
        wide.push(op(99, KeyOp::Get, 0, 100, got(Some("never"))));
        assert_eq!(check_history(&wide, None, 5), Verdict::Undecided);
        let keys = [(b("k"), history)];
        let err = check_keys(keys.iter().map(|(k, h)| (k, h)), 1_000);
        assert!(
            matches!(err, Err(Violation::NotLinearizable { ops: 2, .. })),
            "{err:?}"
        );
    }

    #[test]
    fn a_long_concurrent_history_is_decided_quickly() {
        // 5 clients, 400 operations with overlapping windows, all consistent with one order.
        let mut state = None;
        let mut history = Vec::new();
        for i in 0..400u64 {
            let kind = match i % 4 {
                0 => set(["a", "b", "c"][(i % 3) as usize]),
                1 => KeyOp::IncrBy { delta: 1 },
                2 => KeyOp::Get,
                _ => KeyOp::Del,
            };
            let (next, result) = kind.apply(&state);
            state = next;
            // Applied at 10*i; the window straddles it by a few neighbours.
            history.push(op(
                (i % 5) as u32,
                kind,
                10 * i - (i % 3) * 10,
                10 * i + 25,
                result,
            ));
        }
        assert_eq!(
            check_history(&history, None, 200_000),
            Verdict::Linearizable
        );
    }
}
