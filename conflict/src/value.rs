//! What an entry holds: bytes, a mergeable counter, or a deletion marker.
use crate::{SiteId, Version, Writer};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A replicated value.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Value {
    /// A Redis string.
    Bytes(Bytes),
    /// A counter written by INCR/DECR: a PN-counter, so concurrent increments at different sites
    /// can be merged without losing any.
    Counter(PnCounter),
    /// A deleted entry. Kept (with its version) so a delete can win or lose against a
    /// concurrent write at another site instead of being resurrected by it.
    Tombstone,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("increment or decrement would overflow a 64-bit signed integer")]
pub struct CounterOverflow;

/// Positive-negative counter: per writer (a site's data line, see [`Writer`]), the total it
/// added and the total it subtracted. Merging takes the pointwise maximum, which is
/// commutative, associative and idempotent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PnCounter {
    per_writer: BTreeMap<Writer, SiteCounts>,
}

/// A writer's running totals. They only grow (merging takes maxima, so they can never be
/// rebased), and 128 bits keep them from overflowing: alternating INCRBY i64::MAX / i64::MIN
/// would exhaust 64-bit totals after two steps while the value stays small.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SiteCounts {
    pub added: u128,
    pub subtracted: u128,
}

impl PnCounter {
    pub fn new() -> Self {
        Self::default()
    }

    /// A counter whose value is `start`, credited to `site`'s lineage 0 (used when INCR meets a
    /// plain integer string written at `site`).
    pub fn starting_at(site: SiteId, start: i64) -> Self {
        let mut counter = Self::new();
        let counts = counter.per_writer.entry(Writer::from(site)).or_default();
        if start >= 0 {
            counts.added = u128::from(start.unsigned_abs());
        } else {
            counts.subtracted = u128::from(start.unsigned_abs());
        }
        counter
    }

    /// The counter's value. Returns `None` only if the sum does not fit in an `i64`, which
    /// [`PnCounter::add`] prevents for counters built through it.
    pub fn value(&self) -> Option<i64> {
        let mut sum: i128 = 0;
        for counts in self.per_writer.values() {
            let added = i128::try_from(counts.added).ok()?;
            let subtracted = i128::try_from(counts.subtracted).ok()?;
            sum = sum.checked_add(added.checked_sub(subtracted)?)?;
        }
        i64::try_from(sum).ok()
    }

    /// Add `delta` on behalf of `writer`; returns the new value. Fails, leaving the counter
    /// unchanged, if the value would leave the `i64` range.
    pub fn add(&mut self, writer: impl Into<Writer>, delta: i64) -> Result<i64, CounterOverflow> {
        let current = self.value().ok_or(CounterOverflow)?;
        let new_value = current.checked_add(delta).ok_or(CounterOverflow)?;
        let counts = self.per_writer.entry(writer.into()).or_default();
        if delta >= 0 {
            counts.added = counts
                .added
                .checked_add(u128::from(delta.unsigned_abs()))
                .ok_or(CounterOverflow)?;
        } else {
            counts.subtracted = counts
                .subtracted
                .checked_add(u128::from(delta.unsigned_abs()))
                .ok_or(CounterOverflow)?;
        }
        Ok(new_value)
    }

    /// Pointwise maximum with `other`.
    pub fn merge(&mut self, other: &PnCounter) {
        for (&actor, theirs) in &other.per_writer {
            let mine = self.per_writer.entry(actor).or_default();
            mine.added = mine.added.max(theirs.added);
            mine.subtracted = mine.subtracted.max(theirs.subtracted);
        }
    }

    /// Each writer's totals, in writer order.
    pub fn writers(&self) -> impl Iterator<Item = (Writer, SiteCounts)> + '_ {
        self.per_writer.iter().map(|(&a, &c)| (a, c))
    }
}

/// A value with its version and optional absolute expiry (unix milliseconds): the unit that
/// backups, the WAN gateway and conflict resolvers exchange.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Versioned {
    pub value: Value,
    pub version: Version,
    pub expires_at_ms: Option<u64>,
}

impl Versioned {
    pub fn is_tombstone(&self) -> bool {
        matches!(self.value, Value::Tombstone)
    }

    /// Whether the entry has expired at `now_ms` (expiry is evaluated by each reader against its
    /// own clock; it never creates a write).
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|at| at <= now_ms)
    }
}
