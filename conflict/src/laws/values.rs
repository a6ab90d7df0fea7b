//! Strategies for single values and versioned entries, for resolver authors' own proptests.
//! (The laws themselves use whole histories, see [`super::history`].)
use super::WriteKinds;
use super::history::{expiries, increments, set_bytes};
use crate::{HlcTimestamp, PnCounter, SiteId, Value, Version, VersionVector, Versioned, Writer};
use proptest::prelude::*;

/// Site ids used by the strategies: a handful, so entries collide.
pub fn sites() -> impl Strategy<Value = SiteId> {
    (0u16..4).prop_map(SiteId)
}

/// A counter built the way INCR/DECR build them: a sequence of increments at several sites
/// (increments that would overflow are refused, as the node refuses them).
pub fn counters() -> impl Strategy<Value = PnCounter> {
    prop::collection::vec((sites(), 0u64..3, increments()), 0..8).prop_map(|increments| {
        let mut counter = PnCounter::new();
        for (site, lineage, delta) in increments {
            let _ = counter.add(Writer::new(site, lineage), delta);
        }
        counter
    })
}

/// Values of the enabled kinds (all kinds if none is enabled).
pub fn values(kinds: WriteKinds) -> BoxedStrategy<Value> {
    let kinds = if kinds.bytes || kinds.counters || kinds.tombstones {
        kinds
    } else {
        WriteKinds::ALL
    };
    let mut options: Vec<BoxedStrategy<Value>> = Vec::new();
    if kinds.bytes {
        options.push(set_bytes().prop_map(Value::Bytes).boxed());
    }
    if kinds.counters {
        options.push(counters().prop_map(Value::Counter).boxed());
    }
    if kinds.tombstones {
        options.push(Just(Value::Tombstone).boxed());
    }
    proptest::strategy::Union::new(options).boxed()
}

/// A version whose origin appears in its version vector, as every real version's does.
pub fn versions() -> impl Strategy<Value = Version> {
    (
        prop::collection::btree_map(sites(), 1u64..5, 1..4),
        0u64..50,
        0u32..3,
        any::<prop::sample::Index>(),
    )
        .prop_map(|(counts, wall_ms, logical, origin)| {
            let origins: Vec<SiteId> = counts.keys().copied().collect();
            let origin = origins[origin.index(origins.len())];
            let vv: VersionVector = counts.into_iter().collect();
            Version {
                hlc: HlcTimestamp::new(wall_ms, logical),
                origin,
                vv,
            }
        })
}

/// Arbitrary versioned entries (expiry `Some` or `None`). Two of them are not necessarily from
/// one consistent history; use `history::scripts` for that.
pub fn versioned(kinds: WriteKinds) -> impl Strategy<Value = Versioned> {
    (values(kinds), versions(), expiries()).prop_map(|(value, version, expires_at_ms)| Versioned {
        value,
        version,
        expires_at_ms,
    })
}
