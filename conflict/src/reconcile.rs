//! The one apply rule: every replica and the WAN sink fold incoming versions through
//! [`reconcile`] (or its in-place twin [`reconcile_into`]).
//!
//! Causal order decides first; the resolver only sees real concurrency:
//!
//! | local | incoming vs local | result | outcome |
//! |---|---|---|---|
//! | none | | incoming | `FastForward` |
//! | some | `Equal` or `Before` | local | `Unchanged` |
//! | some | `After` | incoming | `FastForward` |
//! | some | `Concurrent` | resolver's choice, version vector joined | `Resolved(..)` |
//!
//! # Why folding is order independent
//!
//! A replica's entry must end the same whatever order (and however many times) updates
//! arrive. That holds when the concurrent step is the *maximum over one total order of
//! versions that extends causal order*, so three details matter:
//!
//! 1. **The resolved entry dominates both inputs**: its version vector is the join, so
//!    re-delivering either input (or anything older) is `Unchanged` — idempotence.
//! 2. **The resolved entry carries the winner's HLC and origin** (and expiry), not the larger
//!    HLC of the two. A winner's LWW position then stays the winner's, so later comparisons see
//!    the entry exactly as they would have seen the winning write, and "max of three" does not
//!    depend on which pair met first. (Taking the larger HLC would let a loser's clock promote
//!    the winner: with `a` ranked above `b` by site priority but `b`'s HLC above a third
//!    version `c`'s, `(a⊔b)⊔c` would keep `a` while `(a⊔c)⊔b` keeps `c`.) For LWW the winner
//!    has the larger HLC anyway. For [`Resolution::Merged`] the LWW-greater side provides HLC,
//!    origin and expiry.
//! 3. **Ranks never go down along causal order**: a write that has seen a version must rank
//!    above it, or a merged entry can resurrect a value that was overwritten elsewhere.
//!    [`Version::successor`](crate::Version::successor) makes HLCs strictly increase along
//!    causal order (so LWW extends it), and [`SitePriority`](crate::SitePriority) ranks by
//!    history rather than origin for the same reason.
//!
//! `laws::check_laws` (feature `law-kit`) checks all of this on generated multi-site histories.
use crate::{Causality, ConflictResolver, Resolution, Version, Versioned};
use std::cmp::Ordering;

/// What [`reconcile`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Incoming adds nothing: it is the local version or older. Local kept as is.
    Unchanged,
    /// Incoming has seen everything local has (or there was no local): taken as is.
    FastForward,
    /// Truly concurrent: the resolver decided.
    Resolved(ResolutionKind),
}

/// [`Resolution`] without the merged value, for outcomes, metrics and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResolutionKind {
    KeepLocal,
    TakeIncoming,
    Merged,
}

impl Resolution {
    pub fn kind(&self) -> ResolutionKind {
        match self {
            Resolution::KeepLocal => ResolutionKind::KeepLocal,
            Resolution::TakeIncoming => ResolutionKind::TakeIncoming,
            Resolution::Merged(_) => ResolutionKind::Merged,
        }
    }
}

/// The entry to store after applying an update, and how it came about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reconciled {
    pub entry: Versioned,
    pub outcome: Outcome,
}

impl Reconciled {
    /// Whether the stored entry must be replaced (anything but `Unchanged`).
    pub fn changed(&self) -> bool {
        self.outcome != Outcome::Unchanged
    }
}

/// Apply `incoming` to the `local` entry of `key` (see the module docs for the rules).
///
/// Clones what the result needs; on a hot path that owns `incoming` and the stored entry, use
/// [`reconcile_into`], which moves instead.
pub fn reconcile(
    resolver: &dyn ConflictResolver,
    key: &[u8],
    local: Option<&Versioned>,
    incoming: &Versioned,
) -> Reconciled {
    let Some(local) = local else {
        return Reconciled {
            entry: incoming.clone(),
            outcome: Outcome::FastForward,
        };
    };
    match step(resolver, key, local, incoming) {
        Step::Unchanged => Reconciled {
            entry: local.clone(),
            outcome: Outcome::Unchanged,
        },
        Step::FastForward => Reconciled {
            entry: incoming.clone(),
            outcome: Outcome::FastForward,
        },
        Step::Resolved(resolution) => {
            let kind = resolution.kind();
            let (winner, value) = match resolution {
                Resolution::KeepLocal => (local, local.value.clone()),
                Resolution::TakeIncoming => (incoming, incoming.value.clone()),
                Resolution::Merged(value) => (lww_greater(local, incoming), value),
            };
            let mut vv = winner.version.vv.clone();
            let other = if std::ptr::eq(winner, local) {
                incoming
            } else {
                local
            };
            vv.join(&other.version.vv);
            let entry = Versioned {
                value,
                version: Version {
                    hlc: winner.version.hlc,
                    origin: winner.version.origin,
                    vv,
                },
                expires_at_ms: winner.expires_at_ms,
            };
            Reconciled {
                entry,
                outcome: Outcome::Resolved(kind),
            }
        }
    }
}

/// [`reconcile`] in place: updates `slot` (the stored entry of `key`, if any) with `incoming`,
/// moving rather than cloning. Yields the same entry as [`reconcile`].
pub fn reconcile_into(
    resolver: &dyn ConflictResolver,
    key: &[u8],
    slot: &mut Option<Versioned>,
    mut incoming: Versioned,
) -> Outcome {
    let Some(local) = slot.as_mut() else {
        *slot = Some(incoming);
        return Outcome::FastForward;
    };
    match step(resolver, key, local, &incoming) {
        Step::Unchanged => Outcome::Unchanged,
        Step::FastForward => {
            *local = incoming;
            Outcome::FastForward
        }
        Step::Resolved(resolution) => {
            let kind = resolution.kind();
            match resolution {
                Resolution::KeepLocal => local.version.vv.join(&incoming.version.vv),
                Resolution::TakeIncoming => {
                    incoming.version.vv.join(&local.version.vv);
                    *local = incoming;
                }
                Resolution::Merged(value) => {
                    if std::ptr::eq(lww_greater(local, &incoming), &incoming) {
                        incoming.version.vv.join(&local.version.vv);
                        *local = incoming;
                    } else {
                        local.version.vv.join(&incoming.version.vv);
                    }
                    local.value = value;
                }
            }
            Outcome::Resolved(kind)
        }
    }
}

enum Step {
    Unchanged,
    FastForward,
    Resolved(Resolution),
}

fn step(
    resolver: &dyn ConflictResolver,
    key: &[u8],
    local: &Versioned,
    incoming: &Versioned,
) -> Step {
    match incoming.version.causality(&local.version) {
        Causality::Equal | Causality::Before => Step::Unchanged,
        Causality::After => Step::FastForward,
        Causality::Concurrent => Step::Resolved(resolver.resolve(key, local, incoming)),
    }
}

/// The side whose HLC, origin and expiry a merged entry carries. Expiry breaks the (in practice
/// impossible) tie of equal LWW positions so the choice does not depend on argument order.
fn lww_greater<'a>(local: &'a Versioned, incoming: &'a Versioned) -> &'a Versioned {
    let order = local
        .version
        .lww_cmp(&incoming.version)
        .then_with(|| local.expires_at_ms.cmp(&incoming.expires_at_ms));
    if order == Ordering::Less {
        incoming
    } else {
        local
    }
}
