//! Counter merge: concurrent counters keep every increment; anything else falls back to LWW.
use crate::{ConflictResolver, LastWriterWins, Resolution, Value, Versioned};

/// Two concurrent [`Value::Counter`]s merge (pointwise maximum, so no site's increments are
/// lost); any other combination is decided by [`LastWriterWins`].
///
/// **Use it for keys written only by INCR/DECR-style updates.** There it is order independent:
/// a counter write extends the counter it overwrites, so merging never brings back anything a
/// later write removed. When counters mix with SET or DEL on the same key, no single-valued
/// merge can be order independent: with a counter `a`, a SET `b` and a counter `c`, all
/// concurrent and `b` in the middle by LWW, folding `a, b, c` gives `c` while `a, c, b` gives
/// `a + c`. The law kit finds this (see the crate's `laws` tests), so such keys belong with
/// `lww`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterMerge;

impl CounterMerge {
    pub const NAME: &'static str = "counter-merge";
}

impl ConflictResolver for CounterMerge {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn resolve(&self, _key: &[u8], local: &Versioned, incoming: &Versioned) -> Resolution {
        match (&local.value, &incoming.value) {
            (Value::Counter(mine), Value::Counter(theirs)) => {
                let mut merged = mine.clone();
                merged.merge(theirs);
                Resolution::Merged(Value::Counter(merged))
            }
            _ => LastWriterWins::pick(local, incoming),
        }
    }
}
