//! The sink-side apply rule, as a pure function the node calls inside the partition actor that
//! owns the key: observe the remote HLC, then fold the incoming entry through
//! [`reconcile_into`] with the keyspace's resolver.
use tern_conflict::{
    ConflictResolver, Hlc, HlcError, HlcTimestamp, Outcome, Versioned, reconcile_into,
};

/// What applying one remote entry did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteApply {
    pub outcome: Outcome,
    /// The clock after observing the remote timestamp, or why it was not observed.
    pub clock: Result<HlcTimestamp, HlcError>,
}

impl RemoteApply {
    /// A real concurrent write settled by the resolver (counts `tern_wan_conflicts_total`).
    pub fn is_conflict(&self) -> bool {
        matches!(self.outcome, Outcome::Resolved(_))
    }

    /// Whether the stored entry changed (and so must be re-indexed and replicated to backups).
    pub fn changed(&self) -> bool {
        self.outcome != Outcome::Unchanged
    }
}

/// Apply `incoming` (from another site) to `slot`, the stored entry of `key`, at local physical
/// time `now_ms`.
///
/// The remote HLC is observed first so later local writes order after it. When the remote clock
/// is beyond `hlc_offset_ms_max` ahead, the clock is left alone (one broken clock must not drag
/// ours forward) but the entry is **still applied**: convergence rests on version vectors, and
/// [`Version::successor`](tern_conflict::Version::successor) keeps any later local overwrite
/// LWW-greater than it. Stalling replication on a clock fault would be worse; the error is
/// returned for logging and metrics.
pub fn apply_remote(
    hlc: &mut Hlc,
    resolver: &dyn ConflictResolver,
    key: &[u8],
    slot: &mut Option<Versioned>,
    incoming: Versioned,
    now_ms: u64,
) -> RemoteApply {
    let clock = hlc.observe(incoming.version.hlc, now_ms);
    let outcome = reconcile_into(resolver, key, slot, incoming);
    RemoteApply { outcome, clock }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tern_conflict::{LastWriterWins, ResolutionKind, SiteId, Value, Version};

    const A: SiteId = SiteId(1);
    const B: SiteId = SiteId(2);

    fn write(
        site: SiteId,
        wall_ms: u64,
        value: &'static str,
        after: Option<&Versioned>,
    ) -> Versioned {
        let hlc = HlcTimestamp::new(wall_ms, 0);
        Versioned {
            value: Value::Bytes(Bytes::from_static(value.as_bytes())),
            version: match after {
                Some(prev) => prev.version.successor(site, hlc),
                None => Version::first(site, hlc),
            },
            expires_at_ms: None,
        }
    }

    #[test]
    fn outcomes_and_conflicts_follow_causality() {
        let base = write(A, 100, "a1", None);
        let later = write(A, 200, "a2", Some(&base));
        let concurrent = write(B, 150, "b1", Some(&base));
        // (local, incoming, expected outcome, expected stored value)
        let cases: Vec<(Option<Versioned>, Versioned, Outcome, &str)> = vec![
            (None, base.clone(), Outcome::FastForward, "a1"),
            (
                Some(base.clone()),
                later.clone(),
                Outcome::FastForward,
                "a2",
            ),
            (Some(later.clone()), base.clone(), Outcome::Unchanged, "a2"),
            (Some(later.clone()), later.clone(), Outcome::Unchanged, "a2"),
            (
                Some(later.clone()),
                concurrent.clone(),
                Outcome::Resolved(ResolutionKind::KeepLocal),
                "a2",
            ),
            (
                Some(concurrent.clone()),
                later.clone(),
                Outcome::Resolved(ResolutionKind::TakeIncoming),
                "a2",
            ),
        ];
        for (i, (local, incoming, outcome, value)) in cases.into_iter().enumerate() {
            let mut hlc = Hlc::new(1_000);
            let mut slot = local;
            let applied = apply_remote(&mut hlc, &LastWriterWins, b"k", &mut slot, incoming, 1_000);
            assert_eq!(applied.outcome, outcome, "case {i}");
            assert_eq!(
                applied.is_conflict(),
                matches!(outcome, Outcome::Resolved(_)),
                "case {i}"
            );
            assert_eq!(applied.changed(), outcome != Outcome::Unchanged, "case {i}");
            let stored = slot.map(|e| e.value);
            assert_eq!(stored, Some(Value::Bytes(Bytes::from(value))), "case {i}");
        }
    }

    #[test]
    fn the_clock_observes_remote_time_and_a_far_future_clock_still_applies() {
        let mut hlc = Hlc::new(1_000);
        let mut slot = None;
        let near = write(A, 1_500, "near", None);
        let applied = apply_remote(&mut hlc, &LastWriterWins, b"k", &mut slot, near, 1_000);
        assert_eq!(applied.clock, Ok(HlcTimestamp::new(1_500, 1)));

        let mut hlc = Hlc::new(1_000);
        let mut slot = None;
        let far = write(A, 10_000, "far", None);
        let applied = apply_remote(&mut hlc, &LastWriterWins, b"k", &mut slot, far, 1_000);
        assert!(applied.clock.is_err(), "beyond the offset is reported");
        assert_eq!(hlc.last(), HlcTimestamp::ZERO, "clock not dragged forward");
        assert_eq!(
            applied.outcome,
            Outcome::FastForward,
            "but the entry is applied"
        );
        assert!(slot.is_some());
    }
}
