//! The law kit: proptest checks every [`ConflictResolver`] must pass (feature `law-kit`).
//!
//! ```
//! // In a `#[test]` (this one uses a built-in; pass your own resolver):
//! tern_conflict::assert_resolver_laws!(tern_conflict::LastWriterWins, 32);
//! // Or get the violation as a value:
//! assert!(tern_conflict::laws::check_laws(&tern_conflict::LastWriterWins, 32).is_ok());
//! ```
//!
//! Each case plays a generated multi-site [`history::Script`] (sites write on top of what they
//! hold and receive each other's updates, so version vectors, HLCs and counters are realistic),
//! then checks:
//!
//! - **determinism**: playing the script twice gives the same updates, and the resolver gives
//!   the same answer twice for every concurrent pair;
//! - **idempotence**: re-applying any already applied update leaves the entry unchanged;
//! - **order independence**: folding all updates through [`reconcile`] in creation order, in
//!   reverse, and in a shuffled order with duplicates ends with the same entry.
//!
//! Runs are deterministic (fixed seed); a failure is shrunk to a minimal script and reported as
//! a [`LawViolation`] showing the law, that input and the two differing results.
// A violation carries rendered text by design, and failing is the rare, slow path of a test kit.
#![allow(clippy::result_large_err)]

pub mod history;
mod render;
pub mod values;

use crate::{ConflictResolver, Outcome, Versioned, reconcile};
use bytes::Bytes;
use history::{History, Script};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngAlgorithm, TestError, TestRng, TestRunner};
use std::fmt;

/// Which kinds of writes generated histories contain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteKinds {
    /// SET (bytes, sometimes integer strings).
    pub bytes: bool,
    /// INCR/DECR (counters).
    pub counters: bool,
    /// DEL (tombstones).
    pub tombstones: bool,
}

impl WriteKinds {
    pub const ALL: WriteKinds = WriteKinds {
        bytes: true,
        counters: true,
        tombstones: true,
    };
    /// Keys only ever written by INCR/DECR.
    pub const COUNTERS_ONLY: WriteKinds = WriteKinds {
        bytes: false,
        counters: true,
        tombstones: false,
    };
}

/// How [`check_laws_with`] generates cases.
#[derive(Clone, Debug)]
pub struct LawConfig {
    /// Histories to check.
    pub cases: u32,
    /// RNG seed: the same seed checks the same cases.
    pub seed: u64,
    /// Sites writing (at least 1).
    pub sites: usize,
    /// Writes and deliveries per history, at most.
    pub max_steps: usize,
    pub kinds: WriteKinds,
    /// Keys drawn half the time, besides generated ones: give the keys a key-dependent resolver
    /// treats specially (e.g. one per prefix it routes on).
    pub keys: Vec<Bytes>,
}

impl Default for LawConfig {
    fn default() -> Self {
        Self {
            cases: 256,
            seed: 0x7e27_c0f1_1c75,
            sites: 4,
            max_steps: 32,
            kinds: WriteKinds::ALL,
            keys: Vec::new(),
        }
    }
}

/// The property a resolver broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Law {
    Determinism,
    Idempotence,
    OrderIndependence,
}

impl fmt::Display for Law {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Law::Determinism => "determinism",
            Law::Idempotence => "idempotence",
            Law::OrderIndependence => "order independence",
        })
    }
}

/// A broken law, with the minimal failing input and the two results that should have agreed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "conflict resolver {resolver:?} breaks {law}: {what}\n\
     minimal failing input:\n{input}\n\
     first result:  {first}\n\
     second result: {second}"
)]
pub struct LawViolation {
    pub resolver: String,
    pub law: Law,
    /// Which comparison failed, in words.
    pub what: String,
    /// The shrunk script and the updates it produced, rendered for humans.
    pub input: String,
    pub first: String,
    pub second: String,
}

/// One generated case: a script plus the shuffled delivery order to compare against.
#[derive(Clone, Debug)]
pub struct LawCase {
    pub script: Script,
    /// Swaps applied to the creation order (shrinks towards no swap).
    pub swaps: Vec<(Index, Index)>,
    /// Extra deliveries: (which update, where in the order).
    pub duplicates: Vec<(Index, Index)>,
}

/// Strategy for [`LawCase`]s.
pub fn law_cases(config: &LawConfig) -> impl Strategy<Value = LawCase> + use<> {
    let pair = || (any::<Index>(), any::<Index>());
    (
        history::scripts(config),
        prop::collection::vec(pair(), 0..16),
        prop::collection::vec(pair(), 0..4),
    )
        .prop_map(|(script, swaps, duplicates)| LawCase {
            script,
            swaps,
            duplicates,
        })
}

/// Histories played against `resolver`, for authors writing their own properties.
pub fn histories(
    resolver: std::sync::Arc<dyn ConflictResolver>,
    config: &LawConfig,
) -> impl Strategy<Value = History> + use<> {
    history::scripts(config).prop_map(move |script| script.play(&*resolver))
}

/// Check the laws on `cases` generated histories of all write kinds (default sites and seed).
pub fn check_laws(resolver: &dyn ConflictResolver, cases: u32) -> Result<(), LawViolation> {
    check_laws_with(
        resolver,
        &LawConfig {
            cases,
            ..LawConfig::default()
        },
    )
}

/// Check the laws with explicit settings.
pub fn check_laws_with(
    resolver: &dyn ConflictResolver,
    config: &LawConfig,
) -> Result<(), LawViolation> {
    let runner_config = Config {
        cases: config.cases,
        failure_persistence: None,
        fork: false,
        timeout: 0,
        max_shrink_iters: 8192,
        rng_algorithm: RngAlgorithm::ChaCha,
        ..Config::default()
    };
    let mut seed = [0u8; 32];
    for chunk in seed.chunks_mut(8) {
        chunk.copy_from_slice(&config.seed.to_le_bytes());
    }
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed);
    let mut runner = TestRunner::new_with_rng(runner_config, rng);
    let outcome = runner.run(&law_cases(config), |case| {
        check_case(resolver, &case).map_err(|violation| TestCaseError::fail(violation.to_string()))
    });
    match outcome {
        Ok(()) => Ok(()),
        Err(TestError::Fail(reason, minimal)) => Err(check_case(resolver, &minimal)
            .err()
            // Passing on a rerun of the very input that failed is itself non-determinism.
            .unwrap_or_else(|| LawViolation {
                resolver: resolver.name().to_owned(),
                law: Law::Determinism,
                what: "a case failed once and passed when rerun".to_owned(),
                input: render::case(&minimal, &minimal.script.play(resolver)),
                first: reason.to_string(),
                second: "no violation".to_owned(),
            })),
        // The kit never rejects a case, so the runner has nothing to abort on.
        Err(TestError::Abort(reason)) => panic!("law kit aborted: {reason}"),
    }
}

/// Panic with the violation, for use in `#[test]`s (see [`assert_resolver_laws!`](crate::assert_resolver_laws)).
pub fn assert_laws(resolver: &dyn ConflictResolver, cases: u32) {
    if let Err(violation) = check_laws(resolver, cases) {
        panic!("{violation}");
    }
}

/// `assert_resolver_laws!(resolver)` or `assert_resolver_laws!(resolver, cases)`: run the law
/// kit inside a `#[test]` and fail it with the violation.
#[macro_export]
macro_rules! assert_resolver_laws {
    ($resolver:expr) => {
        $crate::laws::assert_laws(&$resolver, 256)
    };
    ($resolver:expr, $cases:expr) => {
        $crate::laws::assert_laws(&$resolver, $cases)
    };
}

/// Check one case; the first broken law wins.
pub fn check_case(resolver: &dyn ConflictResolver, case: &LawCase) -> Result<(), LawViolation> {
    let history = case.script.play(resolver);
    let violation = |law, what: String, first: String, second: String| LawViolation {
        resolver: resolver.name().to_owned(),
        law,
        what,
        input: render::case(case, &history),
        first,
        second,
    };

    // Determinism: the same script, the same updates; the same pair, the same resolution.
    let replay = case.script.play(resolver);
    if let Some(i) = (0..history.updates.len().max(replay.updates.len()))
        .find(|&i| history.updates.get(i) != replay.updates.get(i))
    {
        return Err(violation(
            Law::Determinism,
            format!("playing the script twice gave different update #{i}"),
            render::maybe(history.updates.get(i)),
            render::maybe(replay.updates.get(i)),
        ));
    }
    for (i, a) in history.updates.iter().enumerate() {
        for (j, b) in history.updates.iter().enumerate() {
            if a.version.causality(&b.version) != crate::Causality::Concurrent {
                continue;
            }
            let (once, twice) = (
                resolver.resolve(&history.key, a, b),
                resolver.resolve(&history.key, a, b),
            );
            if once != twice {
                return Err(violation(
                    Law::Determinism,
                    format!("resolving update #{i} (local) against #{j} (incoming) twice"),
                    format!("{once:?}"),
                    format!("{twice:?}"),
                ));
            }
        }
    }

    // Idempotence: after each apply, every update applied so far is a no-op.
    let mut entry: Option<Versioned> = None;
    for (i, update) in history.updates.iter().enumerate() {
        entry = Some(reconcile(resolver, &history.key, entry.as_ref(), update).entry);
        for (j, earlier) in history.updates[..=i].iter().enumerate() {
            let again = reconcile(resolver, &history.key, entry.as_ref(), earlier);
            if again.outcome != Outcome::Unchanged || Some(&again.entry) != entry.as_ref() {
                return Err(violation(
                    Law::Idempotence,
                    format!("re-applying update #{j} after applying #0..=#{i}"),
                    render::maybe(entry.as_ref()),
                    format!("{} ({:?})", render::entry(&again.entry), again.outcome),
                ));
            }
        }
    }
    let reference = entry;

    // Order independence: reversed, and shuffled with duplicates.
    let n = history.updates.len();
    let reversed: Vec<usize> = (0..n).rev().collect();
    let mut shuffled: Vec<usize> = (0..n).collect();
    if n > 0 {
        for (a, b) in &case.swaps {
            shuffled.swap(a.index(n), b.index(n));
        }
        for (which, at) in &case.duplicates {
            let at = at.index(shuffled.len() + 1);
            shuffled.insert(at, which.index(n));
        }
    }
    for order in [reversed, shuffled] {
        let folded = order.iter().fold(None::<Versioned>, |entry, &i| {
            Some(reconcile(resolver, &history.key, entry.as_ref(), &history.updates[i]).entry)
        });
        if folded != reference {
            return Err(violation(
                Law::OrderIndependence,
                format!("folding in creation order vs in order {order:?}"),
                render::maybe(reference.as_ref()),
                render::maybe(folded.as_ref()),
            ));
        }
    }
    Ok(())
}
