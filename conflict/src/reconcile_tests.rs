//! The apply rule, case by case.
use crate::{
    ConflictResolver, HlcTimestamp, Outcome, PnCounter, Resolution, ResolutionKind, SiteId, Value,
    Version, Versioned, reconcile, reconcile_into,
};
use bytes::Bytes;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Returns a fixed resolution and counts its calls.
#[derive(Debug)]
struct Fixed {
    resolution: Resolution,
    calls: AtomicUsize,
}

impl Fixed {
    fn new(resolution: Resolution) -> Self {
        Self {
            resolution,
            calls: AtomicUsize::new(0),
        }
    }
}

impl ConflictResolver for Fixed {
    fn name(&self) -> &str {
        "fixed"
    }
    fn resolve(&self, _: &[u8], _: &Versioned, _: &Versioned) -> Resolution {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.resolution.clone()
    }
}

fn entry(value: &str, origin: u16, wall_ms: u64, vv: &[(u16, u64)], exp: Option<u64>) -> Versioned {
    Versioned {
        value: Value::Bytes(Bytes::from(value.to_owned())),
        version: Version {
            hlc: HlcTimestamp::new(wall_ms, 0),
            origin: SiteId(origin),
            vv: vv.iter().map(|&(s, c)| (SiteId(s), c)).collect(),
        },
        expires_at_ms: exp,
    }
}

fn merged_value() -> Value {
    Value::Counter(PnCounter::starting_at(SiteId(7), 42))
}

struct Case {
    name: &'static str,
    local: Option<Versioned>,
    incoming: Versioned,
    resolution: Resolution,
    expected: Versioned,
    outcome: Outcome,
}

fn cases() -> Vec<Case> {
    use ResolutionKind::*;
    let a = entry("a", 1, 10, &[(1, 2)], Some(100));
    // Concurrent with `a`, LWW-greater than it.
    let b = entry("b", 2, 20, &[(1, 1), (2, 1)], None);
    let joined = [(1, 2), (2, 1)];
    vec![
        Case {
            name: "no local: take incoming",
            local: None,
            incoming: a.clone(),
            resolution: Resolution::KeepLocal,
            expected: a.clone(),
            outcome: Outcome::FastForward,
        },
        Case {
            name: "same version: unchanged",
            local: Some(a.clone()),
            incoming: a.clone(),
            resolution: Resolution::TakeIncoming,
            expected: a.clone(),
            outcome: Outcome::Unchanged,
        },
        Case {
            name: "equal vectors, other content: local kept",
            local: Some(a.clone()),
            incoming: entry("x", 3, 99, &[(1, 2)], None),
            resolution: Resolution::TakeIncoming,
            expected: a.clone(),
            outcome: Outcome::Unchanged,
        },
        Case {
            name: "incoming older: unchanged, even with a later HLC",
            local: Some(a.clone()),
            incoming: entry("old", 1, 99, &[(1, 1)], None),
            resolution: Resolution::TakeIncoming,
            expected: a.clone(),
            outcome: Outcome::Unchanged,
        },
        Case {
            name: "incoming newer: fast-forward, even with an earlier HLC",
            local: Some(a.clone()),
            incoming: entry("new", 3, 1, &[(1, 2), (3, 1)], None),
            resolution: Resolution::KeepLocal,
            expected: entry("new", 3, 1, &[(1, 2), (3, 1)], None),
            outcome: Outcome::FastForward,
        },
        Case {
            name: "concurrent, keep local: local's value, HLC, origin, expiry; joined vector",
            local: Some(a.clone()),
            incoming: b.clone(),
            resolution: Resolution::KeepLocal,
            expected: entry("a", 1, 10, &joined, Some(100)),
            outcome: Outcome::Resolved(KeepLocal),
        },
        Case {
            name: "concurrent, take incoming",
            local: Some(b.clone()),
            incoming: a.clone(),
            resolution: Resolution::TakeIncoming,
            // The winner's HLC (10), not the larger one (20): see the module docs.
            expected: entry("a", 1, 10, &joined, Some(100)),
            outcome: Outcome::Resolved(TakeIncoming),
        },
        Case {
            name: "concurrent, merged: the LWW-greater side (incoming) gives HLC, origin, expiry",
            local: Some(a.clone()),
            incoming: b.clone(),
            resolution: Resolution::Merged(merged_value()),
            expected: Versioned {
                value: merged_value(),
                ..entry("", 2, 20, &joined, None)
            },
            outcome: Outcome::Resolved(Merged),
        },
        Case {
            name: "concurrent, merged: the LWW-greater side (local) gives HLC, origin, expiry",
            local: Some(b.clone()),
            incoming: a.clone(),
            resolution: Resolution::Merged(merged_value()),
            expected: Versioned {
                value: merged_value(),
                ..entry("", 2, 20, &joined, None)
            },
            outcome: Outcome::Resolved(Merged),
        },
    ]
}

#[test]
fn reconcile_follows_the_rule_table() {
    for case in cases() {
        let resolver = Fixed::new(case.resolution.clone());
        let result = reconcile(&resolver, b"k", case.local.as_ref(), &case.incoming);
        assert_eq!(result.entry, case.expected, "{}", case.name);
        assert_eq!(result.outcome, case.outcome, "{}", case.name);
        let concurrent = matches!(case.outcome, Outcome::Resolved(_));
        assert_eq!(
            resolver.calls.load(Ordering::Relaxed),
            usize::from(concurrent),
            "{}",
            case.name
        );

        let mut slot = case.local.clone();
        let outcome = reconcile_into(&resolver, b"k", &mut slot, case.incoming.clone());
        assert_eq!(
            (slot.as_ref(), outcome),
            (Some(&case.expected), case.outcome),
            "{} (in place)",
            case.name
        );
    }
}

#[test]
fn a_resolved_entry_dominates_both_inputs_so_redelivery_is_a_no_op() {
    for case in cases()
        .into_iter()
        .filter(|c| matches!(c.outcome, Outcome::Resolved(_)))
    {
        let resolver = Fixed::new(case.resolution.clone());
        let inputs = [
            case.local.clone().expect("concurrent cases have a local"),
            case.incoming,
        ];
        for input in &inputs {
            let again = reconcile(&resolver, b"k", Some(&case.expected), input);
            assert_eq!(again.outcome, Outcome::Unchanged, "{}", case.name);
            assert_eq!(again.entry, case.expected, "{}", case.name);
        }
    }
}

#[cfg(feature = "law-kit")]
mod in_place {
    use super::*;
    use crate::laws::{WriteKinds, values::versioned};
    use crate::{CounterMerge, LastWriterWins, SitePriority};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn reconcile_into_matches_reconcile(
            local in prop::option::of(versioned(WriteKinds::ALL)),
            incoming in versioned(WriteKinds::ALL),
        ) {
            let resolvers: [&dyn ConflictResolver; 3] =
                [&LastWriterWins, &CounterMerge, &SitePriority::new(vec![SiteId(1)])];
            for resolver in resolvers {
                let expected = reconcile(resolver, b"k", local.as_ref(), &incoming);
                let mut slot = local.clone();
                let outcome = reconcile_into(resolver, b"k", &mut slot, incoming.clone());
                prop_assert_eq!(outcome, expected.outcome);
                prop_assert_eq!(slot, Some(expected.entry));
            }
        }
    }
}
