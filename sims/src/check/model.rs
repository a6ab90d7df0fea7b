//! The reference model: Redis string and counter semantics written as plainly as possible, so
//! that it is obviously right and the core, not the model, is what a disagreement puts in doubt.
//!
//! State is a map key → (value, deadline). Expired entries are simply invisible; nothing sweeps
//! them (except [`ReferenceModel::forget_expired`], which only saves memory). Counters are kept
//! as their decimal text, as Redis shows them.
use bytes::Bytes;
use std::collections::BTreeMap;
use tern_node::core::{
    Command, CommandError, CommandResult, Expiry, Response, SetCondition, TtlUnit,
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelEntry {
    pub value: Bytes,
    pub expires_at_ms: Option<u64>,
}

/// What one command did in the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub result: CommandResult,
    /// Keys whose visible state the command changed (each must yield one change record).
    pub changed: Vec<Bytes>,
}

#[derive(Clone, Debug, Default)]
pub struct ReferenceModel {
    entries: BTreeMap<Bytes, ModelEntry>,
    ttl_ms_max: u64,
    expired: u64,
}

impl ReferenceModel {
    /// `ttl_ms_max`: the node's `Limits::ttl_ms_max` (longer TTLs are refused).
    pub fn new(ttl_ms_max: u64) -> Self {
        Self {
            entries: BTreeMap::new(),
            ttl_ms_max,
            expired: 0,
        }
    }

    /// The entry visible at `now_ms`.
    pub fn live(&self, key: &[u8], now_ms: u64) -> Option<&ModelEntry> {
        self.entries
            .get(key)
            .filter(|e| e.expires_at_ms.is_none_or(|at| at > now_ms))
    }

    pub fn live_keys(&self, now_ms: u64) -> impl Iterator<Item = &Bytes> {
        self.entries
            .iter()
            .filter(move |(_, e)| e.expires_at_ms.is_none_or(|at| at > now_ms))
            .map(|(key, _)| key)
    }

    pub fn live_count(&self, now_ms: u64) -> usize {
        self.live_keys(now_ms).count()
    }

    /// All live keys matching `pattern`, sorted: what a complete SCAN must return.
    pub fn scan_all(&self, pattern: Option<&[u8]>, now_ms: u64) -> Vec<Bytes> {
        self.live_keys(now_ms)
            .filter(|key| pattern.is_none_or(|p| simple_glob(p, key)))
            .cloned()
            .collect()
    }

    /// Drop entries expired at `now_ms` (invisible already; this only bounds memory).
    pub fn forget_expired(&mut self, now_ms: u64) {
        let before = self.entries.len();
        self.entries
            .retain(|_, e| e.expires_at_ms.is_none_or(|at| at > now_ms));
        self.expired += (before - self.entries.len()) as u64;
    }

    /// How many entries [`Self::forget_expired`] found expired (coverage: TTLs ran out).
    pub fn expired(&self) -> u64 {
        self.expired
    }

    /// Apply `command` at `now_ms`. `Scan` is answered as a complete scan (all matching live
    /// keys, `next: None`), which is what the node's full SCAN loop must add up to.
    pub fn apply(&mut self, command: &Command, now_ms: u64) -> Outcome {
        let unchanged = |result| Outcome {
            result,
            changed: Vec::new(),
        };
        match command {
            Command::Get { key } => unchanged(Ok(Response::Value(
                self.live(key, now_ms).map(|e| e.value.clone()),
            ))),
            Command::Exists { key } => unchanged(Ok(Response::Int(i64::from(
                self.live(key, now_ms).is_some(),
            )))),
            Command::Set {
                key,
                value,
                condition,
                expiry,
                get,
            } => self.set(key, value, *condition, *expiry, *get, now_ms),
            Command::Del { key } => {
                if self.live(key, now_ms).is_some() {
                    self.entries.remove(key);
                    Outcome {
                        result: Ok(Response::Int(1)),
                        changed: vec![key.clone()],
                    }
                } else {
                    unchanged(Ok(Response::Int(0)))
                }
            }
            Command::IncrBy { key, delta } => self.incr_by(key, *delta, now_ms),
            Command::Expire { key, expiry } => self.expire(key, *expiry, now_ms),
            Command::Ttl { key, unit } => {
                unchanged(Ok(Response::Int(self.ttl(key, *unit, now_ms))))
            }
            Command::DbSize => unchanged(Ok(Response::Int(self.live_count(now_ms) as i64))),
            Command::ExpiringKeys => unchanged(Ok(Response::Int(
                self.entries
                    .values()
                    .filter(|e| e.expires_at_ms.is_some_and(|at| at > now_ms))
                    .count() as i64,
            ))),
            Command::Scan { pattern, .. } => unchanged(Ok(Response::ScanPage {
                keys: self.scan_all(pattern.as_deref(), now_ms),
                next: None,
            })),
            Command::FlushAll => {
                let changed: Vec<Bytes> = self.live_keys(now_ms).cloned().collect();
                self.entries.clear();
                Outcome {
                    result: Ok(Response::Ok),
                    changed,
                }
            }
            // Sent only by the WAN gateway host, which no workload checked against this model
            // drives (the model has no versions or resolvers to judge them by).
            Command::WanApply { .. } | Command::WanChanges { .. } | Command::WanDump { .. } => {
                unreachable!("the reference model checks client commands only: {command:?}")
            }
        }
    }

    fn set(
        &mut self,
        key: &Bytes,
        value: &Bytes,
        condition: SetCondition,
        expiry: Option<Expiry>,
        get: bool,
        now_ms: u64,
    ) -> Outcome {
        let invalid = || Outcome {
            result: Err(CommandError::InvalidExpire { command: "set" }),
            changed: Vec::new(),
        };
        let old = self.live(key, now_ms).cloned();
        // The new deadline; validated before the key is looked at, as Redis does.
        let deadline: Option<i128> = match expiry {
            None => None,
            Some(Expiry::Keep) => old.as_ref().and_then(|e| e.expires_at_ms).map(i128::from),
            Some(Expiry::InMs(ms)) => {
                if ms <= 0 || ms as i128 > i128::from(self.ttl_ms_max) {
                    return invalid();
                }
                Some(i128::from(now_ms) + i128::from(ms))
            }
            Some(Expiry::AtMs(at)) => {
                if at <= 0 || i128::from(at) > i128::from(now_ms) + i128::from(self.ttl_ms_max) {
                    return invalid();
                }
                Some(i128::from(at))
            }
        };
        let applies = match condition {
            SetCondition::Always => true,
            SetCondition::IfAbsent => old.is_none(),
            SetCondition::IfPresent => old.is_some(),
        };
        let result = Ok(match (get, applies) {
            (true, _) => Response::Value(old.as_ref().map(|e| e.value.clone())),
            (false, true) => Response::Ok,
            (false, false) => Response::Value(None),
        });
        if !applies {
            return Outcome {
                result,
                changed: Vec::new(),
            };
        }
        match deadline {
            // A deadline already past (EXAT/PXAT): the key is deleted, as Redis does.
            Some(at) if at <= i128::from(now_ms) => {
                let existed = self.entries.remove(key).is_some() && old.is_some();
                Outcome {
                    result,
                    changed: if existed {
                        vec![key.clone()]
                    } else {
                        Vec::new()
                    },
                }
            }
            _ => {
                let expires_at_ms = deadline.map(|at| u64::try_from(at).unwrap_or(u64::MAX));
                self.entries.insert(
                    key.clone(),
                    ModelEntry {
                        value: value.clone(),
                        expires_at_ms,
                    },
                );
                Outcome {
                    result,
                    changed: vec![key.clone()],
                }
            }
        }
    }

    fn incr_by(&mut self, key: &Bytes, delta: i64, now_ms: u64) -> Outcome {
        let fail = |error| Outcome {
            result: Err(error),
            changed: Vec::new(),
        };
        let (current, expires_at_ms) = match self.live(key, now_ms) {
            None => (0, None),
            Some(entry) => match canonical_integer(&entry.value) {
                Some(n) => (n, entry.expires_at_ms),
                None => return fail(CommandError::NotAnInteger),
            },
        };
        let Some(new_value) = current.checked_add(delta) else {
            return fail(CommandError::Overflow);
        };
        let value = Bytes::from(new_value.to_string());
        self.entries.insert(
            key.clone(),
            ModelEntry {
                value,
                expires_at_ms,
            },
        );
        Outcome {
            result: Ok(Response::Int(new_value)),
            changed: vec![key.clone()],
        }
    }

    fn expire(&mut self, key: &Bytes, expiry: Expiry, now_ms: u64) -> Outcome {
        let invalid = Outcome {
            result: Err(CommandError::InvalidExpire { command: "expire" }),
            changed: Vec::new(),
        };
        let now = i128::from(now_ms);
        // Validated before the key is looked at, as Redis does.
        let deadline = match expiry {
            Expiry::InMs(ms) if ms <= 0 => now,
            Expiry::InMs(ms) if ms as i128 > i128::from(self.ttl_ms_max) => return invalid,
            Expiry::InMs(ms) => now + i128::from(ms),
            Expiry::AtMs(at) if i128::from(at) > now + i128::from(self.ttl_ms_max) => {
                return invalid;
            }
            Expiry::AtMs(at) => i128::from(at),
            Expiry::Keep => return invalid,
        };
        if self.live(key, now_ms).is_none() {
            return Outcome {
                result: Ok(Response::Int(0)),
                changed: Vec::new(),
            };
        }
        if deadline <= now {
            // A deadline not in the future deletes the key.
            self.entries.remove(key);
        } else if let Some(entry) = self.entries.get_mut(key) {
            entry.expires_at_ms = Some(u64::try_from(deadline).unwrap_or(u64::MAX));
        }
        Outcome {
            result: Ok(Response::Int(1)),
            changed: vec![key.clone()],
        }
    }

    fn ttl(&self, key: &[u8], unit: TtlUnit, now_ms: u64) -> i64 {
        match self.live(key, now_ms) {
            None => -2,
            Some(ModelEntry {
                expires_at_ms: None,
                ..
            }) => -1,
            Some(ModelEntry {
                expires_at_ms: Some(at),
                ..
            }) => {
                let remaining_ms = at - now_ms;
                let remaining = match unit {
                    TtlUnit::Milliseconds => remaining_ms,
                    // Redis rounds to the nearest second.
                    TtlUnit::Seconds => (remaining_ms + 500) / 1000,
                };
                i64::try_from(remaining).unwrap_or(i64::MAX)
            }
        }
    }
}

/// The integer a Redis string holds, if any. Redis accepts exactly the canonical decimal form
/// (no `+`, no leading zeros, no `-0`, no spaces), i.e. the strings that round-trip.
pub fn canonical_integer(text: &[u8]) -> Option<i64> {
    let n: i64 = std::str::from_utf8(text).ok()?.parse().ok()?;
    (n.to_string().as_bytes() == text).then_some(n)
}

/// Glob with `*` and `?` only (what the scenarios generate), by plain recursion.
fn simple_glob(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.first(), text.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            simple_glob(&pattern[1..], text)
                || (!text.is_empty() && simple_glob(pattern, &text[1..]))
        }
        (Some(b'?'), Some(_)) => simple_glob(&pattern[1..], &text[1..]),
        (Some(p), Some(t)) if p == t => simple_glob(&pattern[1..], &text[1..]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u64 = 1_000_000;
    const T0: u64 = 1_000_000;

    fn key() -> Bytes {
        Bytes::from_static(b"k")
    }
    fn set(value: &'static str, expiry: Option<Expiry>) -> Command {
        Command::Set {
            key: key(),
            value: Bytes::from_static(value.as_bytes()),
            condition: SetCondition::Always,
            expiry,
            get: false,
        }
    }
    fn val(v: &'static str) -> CommandResult {
        Ok(Response::Value(Some(Bytes::from_static(v.as_bytes()))))
    }
    const NIL: CommandResult = Ok(Response::Value(None));
    fn int(n: i64) -> CommandResult {
        Ok(Response::Int(n))
    }

    /// Each case: a sequence of (time offset, command, expected result) from an empty model.
    #[test]
    fn follows_redis_semantics() {
        let get = Command::Get { key: key() };
        let ttl = Command::Ttl {
            key: key(),
            unit: TtlUnit::Seconds,
        };
        let pttl = Command::Ttl {
            key: key(),
            unit: TtlUnit::Milliseconds,
        };
        let incr = |delta| Command::IncrBy { key: key(), delta };
        let expire = |ms| Command::Expire {
            key: key(),
            expiry: Expiry::InMs(ms),
        };
        let set_with = |condition, get| Command::Set {
            key: key(),
            value: Bytes::from_static(b"new"),
            condition,
            expiry: None,
            get,
        };
        let bad_set = Err(CommandError::InvalidExpire { command: "set" });
        type Steps = Vec<(u64, Command, CommandResult)>;
        let cases: Vec<(&str, Steps)> = vec![
            ("get missing", vec![(0, get.clone(), NIL)]),
            (
                "set then get",
                vec![
                    (0, set("v", None), Ok(Response::Ok)),
                    (1, get.clone(), val("v")),
                ],
            ),
            (
                "px expires",
                vec![
                    (0, set("v", Some(Expiry::InMs(100))), Ok(Response::Ok)),
                    (99, get.clone(), val("v")),
                    (99, pttl.clone(), int(1)),
                    (100, get.clone(), NIL),
                    (100, ttl.clone(), int(-2)),
                ],
            ),
            (
                "ttl rounds to nearest second",
                vec![
                    (0, set("v", Some(Expiry::InMs(2_500))), Ok(Response::Ok)),
                    (0, ttl.clone(), int(3)),
                    (1, ttl.clone(), int(2)),
                ],
            ),
            (
                "set clears ttl, keepttl keeps it",
                vec![
                    (0, set("v", Some(Expiry::InMs(1_000))), Ok(Response::Ok)),
                    (0, set("w", Some(Expiry::Keep)), Ok(Response::Ok)),
                    (0, pttl.clone(), int(1_000)),
                    (0, set("x", None), Ok(Response::Ok)),
                    (0, pttl.clone(), int(-1)),
                ],
            ),
            (
                "invalid set expiries",
                vec![
                    (0, set("v", Some(Expiry::InMs(0))), bad_set.clone()),
                    (0, set("v", Some(Expiry::InMs(-1))), bad_set.clone()),
                    (
                        0,
                        set("v", Some(Expiry::InMs(MAX as i64 + 1))),
                        bad_set.clone(),
                    ),
                    (0, set("v", Some(Expiry::AtMs(0))), bad_set.clone()),
                    (0, get.clone(), NIL),
                ],
            ),
            (
                "pxat in the past deletes",
                vec![
                    (0, set("v", None), Ok(Response::Ok)),
                    (
                        0,
                        set("w", Some(Expiry::AtMs(T0 as i64 - 1))),
                        Ok(Response::Ok),
                    ),
                    (0, get.clone(), NIL),
                ],
            ),
            (
                "nx xx get",
                vec![
                    (0, set_with(SetCondition::IfPresent, false), NIL),
                    (0, set_with(SetCondition::IfAbsent, true), NIL),
                    (0, set_with(SetCondition::IfAbsent, false), NIL),
                    (0, set_with(SetCondition::IfAbsent, true), val("new")),
                    (
                        0,
                        set_with(SetCondition::IfPresent, false),
                        Ok(Response::Ok),
                    ),
                ],
            ),
            (
                "incr",
                vec![
                    (0, incr(5), int(5)),
                    (0, incr(-7), int(-2)),
                    (0, get.clone(), val("-2")),
                    (0, incr(i64::MIN), Err(CommandError::Overflow)),
                    (0, set("05", None), Ok(Response::Ok)),
                    (0, incr(1), Err(CommandError::NotAnInteger)),
                ],
            ),
            (
                "incr keeps ttl",
                vec![
                    (0, set("1", Some(Expiry::InMs(500))), Ok(Response::Ok)),
                    (0, incr(1), int(2)),
                    (0, pttl.clone(), int(500)),
                ],
            ),
            (
                "expire",
                vec![
                    (0, expire(100), int(0)),
                    (0, set("v", None), Ok(Response::Ok)),
                    (0, expire(100), int(1)),
                    (50, pttl.clone(), int(50)),
                    (
                        50,
                        expire(MAX as i64 + 1),
                        Err(CommandError::InvalidExpire { command: "expire" }),
                    ),
                    (50, expire(0), int(1)),
                    (50, get.clone(), NIL),
                    (50, expire(-5), int(0)),
                ],
            ),
            (
                "dbsize and flushall",
                vec![
                    (0, set("v", Some(Expiry::InMs(10))), Ok(Response::Ok)),
                    (0, Command::DbSize, int(1)),
                    (10, Command::DbSize, int(0)),
                    (10, set("v", None), Ok(Response::Ok)),
                    (10, Command::FlushAll, Ok(Response::Ok)),
                    (10, Command::DbSize, int(0)),
                ],
            ),
        ];
        for (name, steps) in cases {
            let mut model = ReferenceModel::new(MAX);
            for (i, (offset, command, expected)) in steps.into_iter().enumerate() {
                let outcome = model.apply(&command, T0 + offset);
                assert_eq!(outcome.result, expected, "{name}, step {i}: {command:?}");
            }
        }
    }

    #[test]
    fn reports_which_keys_changed() {
        let mut model = ReferenceModel::new(MAX);
        let changed =
            |model: &mut ReferenceModel, command: Command| model.apply(&command, T0).changed.len();
        assert_eq!(changed(&mut model, Command::Del { key: key() }), 0);
        assert_eq!(changed(&mut model, set("v", None)), 1);
        assert_eq!(
            changed(
                &mut model,
                Command::IncrBy {
                    key: key(),
                    delta: 1
                }
            ),
            0,
            "not an integer"
        );
        assert_eq!(changed(&mut model, Command::Get { key: key() }), 0);
        assert_eq!(changed(&mut model, Command::FlushAll), 1);
        assert_eq!(changed(&mut model, Command::FlushAll), 0);
    }

    #[test]
    fn canonical_integers_and_globs() {
        for (text, expected) in [
            ("0", Some(0)),
            ("-12", Some(-12)),
            ("007", None),
            ("-0", None),
            ("+1", None),
            (" 1", None),
            ("", None),
            ("9223372036854775808", None),
        ] {
            assert_eq!(canonical_integer(text.as_bytes()), expected, "{text:?}");
        }
        for (pattern, text, expected) in [
            ("*", "", true),
            ("p*", "p1", true),
            ("p*", "t1", false),
            ("?0", "t0", true),
            ("?0", "t10", false),
            ("*1", "p11", true),
            ("a*b", "axxbyb", true),
        ] {
            assert_eq!(
                simple_glob(pattern.as_bytes(), text.as_bytes()),
                expected,
                "{pattern} {text}"
            );
        }
    }
}
