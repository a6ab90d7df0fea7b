//! Oracles of multi-site WAN replication (brief, invariants 6–9), fed by the `wan-*` scenarios
//! as sites commit, sinks apply and the run heals:
//!
//! - **no phantom values** (6): every string value any site stores, replicates or returns was
//!   written by some client; every site's share of a counter (its PN totals) is one that site's
//!   own increments actually reached;
//! - **no duplicate applies** (6): a sink never applies the same (source, partition, seq) twice;
//! - **versions never go back** (6): per site and key, every change record carries a version
//!   causally after the previous one;
//! - **convergence** (7, 8): once backlogs drain, every site holds identical entries
//!   (`snapshot_entries`, tombstones and versions included), whatever the delivery order;
//! - **no update lost**: the final entry's version vector dominates the version of every
//!   acknowledged write, and each counter equals the sum of every acknowledged increment;
//! - **bounded resume** (9) is judged by the scenario against its bound with
//!   [`WanViolation::NotConvergedInTime`].
use super::show_key;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use tern_conflict::{Causality, SiteId, Value, Version, Versioned};
use tern_node::core::{ChangeRecord, PartitionId};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WanViolation {
    #[error(
        "invariant 6: site {site} holds {value} for {key} after {cause}, a value no client wrote"
    )]
    PhantomValue {
        site: usize,
        key: String,
        value: String,
        cause: String,
    },
    #[error(
        "invariant 6: site {target} applied record {partition} seq {seq} from site {from_site} twice"
    )]
    DuplicateApply {
        target: usize,
        from_site: usize,
        partition: PartitionId,
        seq: u64,
    },
    #[error(
        "invariant 6: at site {site} key {key} went from version {before} to {after} ({causality}) after {cause}"
    )]
    VersionWentBack {
        site: usize,
        key: String,
        before: String,
        after: String,
        causality: String,
        cause: String,
    },
    #[error(
        "invariants 7/8: backlogs drained but sites {site_a} and {site_b} differ on {key}: {a} vs {b}"
    )]
    Diverged {
        site_a: usize,
        site_b: usize,
        key: String,
        a: String,
        b: String,
    },
    #[error(
        "lost update: site {site} acknowledged a write of {key} with version {write} but the final entry {final_entry} has not seen it"
    )]
    LostUpdate {
        site: usize,
        key: String,
        write: String,
        final_entry: String,
    },
    #[error(
        "lost update: counter {key} ends at {actual} but acknowledged increments sum to {expected}"
    )]
    CounterLost {
        key: String,
        expected: i128,
        actual: String,
    },
    #[error("invariant 9: not converged {bound_ms} ms after the heal: {detail}")]
    NotConvergedInTime { bound_ms: u64, detail: String },
    #[error("WAN link {link}: {detail}")]
    LinkBroken { link: String, detail: String },
}

/// The WAN oracle of one run. Sites are indices; `site_ids[i]` is site `i`'s `SiteId`.
#[derive(Debug, Default)]
pub struct WanChecker {
    site_ids: Vec<SiteId>,
    /// Every string value a client wrote.
    written: BTreeSet<Bytes>,
    /// Per (key, site), the PN totals that site's own increments produced, in order, in any of
    /// its data lines (a line ends when the site is wiped).
    counter_totals: BTreeMap<(Bytes, SiteId), BTreeSet<(u128, u128)>>,
    /// The running totals per (key, site) in the site's current data line, mirroring
    /// `PnCounter::add` on the line's own counter actor (it starts from zero after a wipe).
    counter_model: BTreeMap<(Bytes, SiteId), (u128, u128)>,
    /// Per counter key, the sum of acknowledged increments at every site.
    counter_sums: BTreeMap<Bytes, i128>,
    /// Acknowledged writes: (site, key, version).
    acked: Vec<(usize, Bytes, Version)>,
    /// Per (site, key), the version of the last change record.
    last_version: BTreeMap<(usize, Bytes), Version>,
    /// (target, source, partition, seq) applied by a sink.
    applied: BTreeSet<(usize, usize, PartitionId, u64)>,
    applies: u64,
}

impl WanChecker {
    pub fn new(site_ids: Vec<SiteId>) -> Self {
        Self {
            site_ids,
            ..Self::default()
        }
    }

    /// A client is about to write `value` (string keys only).
    pub fn register_value(&mut self, value: &Bytes) {
        self.written.insert(value.clone());
    }

    /// A client's INCRBY of `delta` on `key` at `site` succeeded.
    pub fn register_increment(&mut self, site: usize, key: &Bytes, delta: i64) {
        let id = self.site_ids[site];
        let totals = self
            .counter_model
            .entry((key.clone(), id))
            .or_insert((0, 0));
        if delta >= 0 {
            totals.0 += u128::from(delta.unsigned_abs());
        } else {
            totals.1 += u128::from(delta.unsigned_abs());
        }
        let totals = *totals;
        self.counter_totals
            .entry((key.clone(), id))
            .or_default()
            .insert(totals);
        *self.counter_sums.entry(key.clone()).or_insert(0) += i128::from(delta);
    }

    /// A client write at `site` was acknowledged with `version`.
    pub fn acked_write(&mut self, site: usize, key: &Bytes, version: &Version) {
        self.acked.push((site, key.clone(), version.clone()));
    }

    pub fn acked_writes(&self) -> usize {
        self.acked.len()
    }

    pub fn applies(&self) -> u64 {
        self.applies
    }

    /// A GET at `site` answered `value`.
    pub fn check_read(
        &self,
        site: usize,
        key: &Bytes,
        value: Option<&Bytes>,
    ) -> Result<(), WanViolation> {
        match value {
            Some(v) if !self.written.contains(v) => Err(WanViolation::PhantomValue {
                site,
                key: show_key(key),
                value: format!("{:?}", String::from_utf8_lossy(v)),
                cause: "a GET".to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// Check a change record `site` just committed (`cause`: what committed it).
    pub fn audit_record(
        &mut self,
        site: usize,
        record: &ChangeRecord,
        cause: &str,
    ) -> Result<(), WanViolation> {
        self.check_entry(site, &record.key, &record.entry, cause)?;
        let slot = (site, record.key.clone());
        if let Some(before) = self.last_version.get(&slot) {
            let causality = record.entry.version.causality(before);
            if causality != Causality::After {
                return Err(WanViolation::VersionWentBack {
                    site,
                    key: show_key(&record.key),
                    before: format!("{before:?}"),
                    after: format!("{:?}", record.entry.version),
                    causality: format!("{causality:?}"),
                    cause: cause.to_string(),
                });
            }
        }
        self.last_version.insert(slot, record.entry.version.clone());
        Ok(())
    }

    /// A sink at `target` is about to apply record `seq` of `partition` from `source`.
    pub fn on_apply(
        &mut self,
        target: usize,
        source: usize,
        partition: PartitionId,
        seq: u64,
    ) -> Result<(), WanViolation> {
        self.applies += 1;
        if !self.applied.insert((target, source, partition, seq)) {
            return Err(WanViolation::DuplicateApply {
                target,
                from_site: source,
                partition,
                seq,
            });
        }
        Ok(())
    }

    /// `target`'s gateway restarted: of its sinks' applies, only those `saved(source,
    /// partition, seq)` says its saved cursors cover stay recorded. The others are applied
    /// again after the restart (idempotently), which is not a duplicate.
    pub fn forget_applies(
        &mut self,
        target: usize,
        saved: impl Fn(usize, PartitionId, u64) -> bool,
    ) {
        self.applied
            .retain(|&(t, source, partition, seq)| t != target || saved(source, partition, seq));
    }

    /// `site` lost its memory: what it applied is gone (applying it again is no duplicate),
    /// and its keys start over (a version may go back once: the key is first restored from
    /// whichever peer answers first).
    pub fn on_site_wiped(&mut self, site: usize) {
        // Its next increments count under a new lineage, from zero.
        let id = self.site_ids[site];
        self.counter_model.retain(|(_, s), _| *s != id);
        self.forget_applies(site, |_, _, _| false);
        self.last_version.retain(|(s, _), _| *s != site);
    }

    /// Every value in `entry` was written by a client.
    pub fn check_entry(
        &self,
        site: usize,
        key: &Bytes,
        entry: &Versioned,
        cause: &str,
    ) -> Result<(), WanViolation> {
        let phantom = |value: String| WanViolation::PhantomValue {
            site,
            key: show_key(key),
            value,
            cause: cause.to_string(),
        };
        match &entry.value {
            Value::Tombstone => Ok(()),
            Value::Bytes(v) if self.written.contains(v) => Ok(()),
            Value::Bytes(v) => Err(phantom(format!("{:?}", String::from_utf8_lossy(v)))),
            Value::Counter(counter) => {
                // Each actor is one data line of its site: its totals are ones that line's
                // increments reached (clients only INCR counter keys, so no lineage-0 start).
                for (actor, counts) in counter.writers() {
                    let writer = actor.site;
                    let totals = (counts.added, counts.subtracted);
                    let reached = totals == (0, 0)
                        || actor.lineage != 0
                            && self
                                .counter_totals
                                .get(&(key.clone(), writer))
                                .is_some_and(|seen| seen.contains(&totals));
                    if !reached {
                        return Err(phantom(format!(
                            "a counter crediting {writer} (lineage {}) with +{} -{}",
                            actor.lineage, counts.added, counts.subtracted
                        )));
                    }
                }
                Ok(())
            }
        }
    }

    /// Invariants 7/8 and no lost update, once every backlog drained: `states[i]` is site
    /// `i`'s complete state (every partition's `snapshot_entries`).
    pub fn check_converged(
        &self,
        states: &[BTreeMap<Bytes, Versioned>],
    ) -> Result<(), WanViolation> {
        let Some(first) = states.first() else {
            return Ok(());
        };
        for (b, other) in states.iter().enumerate().skip(1) {
            let keys: BTreeSet<&Bytes> = first.keys().chain(other.keys()).collect();
            for key in keys {
                let (x, y) = (first.get(key), other.get(key));
                if x != y {
                    return Err(WanViolation::Diverged {
                        site_a: 0,
                        site_b: b,
                        key: show_key(key),
                        a: format!("{x:?}"),
                        b: format!("{y:?}"),
                    });
                }
            }
        }
        for (site, key, version) in &self.acked {
            let final_entry = first.get(key);
            let seen = final_entry.is_some_and(|e| {
                matches!(
                    e.version.causality(version),
                    Causality::After | Causality::Equal
                )
            });
            if !seen {
                return Err(WanViolation::LostUpdate {
                    site: *site,
                    key: show_key(key),
                    write: format!("{version:?}"),
                    final_entry: format!("{final_entry:?}"),
                });
            }
        }
        for (key, &expected) in &self.counter_sums {
            let actual = first.get(key).map(|e| &e.value);
            let value = match actual {
                Some(Value::Counter(c)) => c.value().map(i128::from),
                _ => None,
            };
            if value != Some(expected) {
                return Err(WanViolation::CounterLost {
                    key: show_key(key),
                    expected,
                    actual: format!("{actual:?}"),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_conflict::{HlcTimestamp, PnCounter, Writer};
    use tern_node::core::PartitionId;

    const A: SiteId = SiteId(1);
    const B: SiteId = SiteId(2);

    fn key() -> Bytes {
        Bytes::from_static(b"s:0")
    }

    fn entry(value: Value, version: Version) -> Versioned {
        Versioned {
            value,
            version,
            expires_at_ms: None,
        }
    }

    fn record(seq: u64, entry: &Versioned) -> ChangeRecord {
        ChangeRecord {
            partition: PartitionId(0),
            seq,
            key: key(),
            entry: entry.clone(),
        }
    }

    #[test]
    fn phantom_values_and_counters_are_caught() {
        let mut checker = WanChecker::new(vec![A, B]);
        let written = Bytes::from_static(b"a-1");
        checker.register_value(&written);
        let v1 = Version::first(A, HlcTimestamp::new(1, 0));
        let good = entry(Value::Bytes(written.clone()), v1.clone());
        assert_eq!(checker.audit_record(0, &record(1, &good), "set"), Ok(()));
        let bad = entry(Value::Bytes(Bytes::from_static(b"zzz")), v1.clone());
        assert!(matches!(
            checker.check_entry(1, &key(), &bad, "apply"),
            Err(WanViolation::PhantomValue { .. })
        ));
        assert!(checker.check_read(0, &key(), Some(&written)).is_ok());
        assert!(checker.check_read(0, &key(), None).is_ok());

        let counter_key = Bytes::from_static(b"c:0");
        checker.register_increment(0, &counter_key, 3);
        checker.register_increment(0, &counter_key, -1);
        let line = Writer::new(A, 9);
        let mut real = PnCounter::new();
        real.add(line, 3).ok();
        let ok = entry(Value::Counter(real.clone()), v1.clone());
        assert_eq!(checker.check_entry(1, &counter_key, &ok, "apply"), Ok(()));
        let mut credited_to_lineage_0 = PnCounter::new();
        credited_to_lineage_0.add(A, 3).ok();
        let converted = entry(Value::Counter(credited_to_lineage_0), v1.clone());
        assert!(
            checker
                .check_entry(1, &counter_key, &converted, "apply")
                .is_err(),
            "clients never convert strings, so no lineage-0 credit"
        );
        real.add(line, 5).ok();
        let invented = entry(Value::Counter(real), v1.clone());
        assert!(
            checker
                .check_entry(1, &counter_key, &invented, "apply")
                .is_err()
        );
        // After a wipe the site counts from zero in a new line; both lines' totals are real.
        checker.on_site_wiped(0);
        checker.register_increment(0, &counter_key, 4);
        let mut both = PnCounter::new();
        both.add(line, 3).ok();
        both.add(line, -1).ok();
        both.add(Writer::new(A, 10), 4).ok();
        let after_wipe = entry(Value::Counter(both), v1);
        assert_eq!(
            checker.check_entry(1, &counter_key, &after_wipe, "apply"),
            Ok(())
        );
    }

    #[test]
    fn duplicate_applies_and_regressions_are_caught() {
        let mut checker = WanChecker::new(vec![A, B]);
        let p = PartitionId(1);
        assert_eq!(checker.on_apply(1, 0, p, 7), Ok(()));
        assert_eq!(checker.on_apply(1, 0, p, 8), Ok(()));
        assert_eq!(checker.on_apply(2, 0, p, 7), Ok(()), "another target");
        assert!(matches!(
            checker.on_apply(1, 0, p, 7),
            Err(WanViolation::DuplicateApply { seq: 7, .. })
        ));

        let value = Bytes::from_static(b"a-1");
        checker.register_value(&value);
        let v1 = Version::first(A, HlcTimestamp::new(1, 0));
        let v2 = v1.successor(A, HlcTimestamp::new(2, 0));
        let concurrent = Version::first(B, HlcTimestamp::new(3, 0));
        let e = |v: &Version| entry(Value::Bytes(value.clone()), v.clone());
        assert_eq!(checker.audit_record(0, &record(1, &e(&v2)), "x"), Ok(()));
        for (seq, version) in [(2, &v1), (3, &v2), (4, &concurrent)] {
            assert!(
                matches!(
                    checker.audit_record(0, &record(seq, &e(version)), "x"),
                    Err(WanViolation::VersionWentBack { .. })
                ),
                "{version:?}"
            );
        }
    }

    #[test]
    fn divergence_and_lost_updates_are_caught() {
        let mut checker = WanChecker::new(vec![A, B]);
        let (a1, b1) = (Bytes::from_static(b"a-1"), Bytes::from_static(b"b-1"));
        checker.register_value(&a1);
        checker.register_value(&b1);
        let va = Version::first(A, HlcTimestamp::new(1, 0));
        let vb = Version::first(B, HlcTimestamp::new(2, 0));
        checker.acked_write(0, &key(), &va);
        checker.acked_write(1, &key(), &vb);
        let state = |e: Versioned| BTreeMap::from([(key(), e)]);
        let only_b = entry(Value::Bytes(b1.clone()), vb.clone());
        let mut joined = vb.clone();
        joined.vv.join(&va.vv);
        let resolved = entry(Value::Bytes(b1), joined);

        let diverged = checker.check_converged(&[state(resolved.clone()), state(only_b.clone())]);
        assert!(
            matches!(diverged, Err(WanViolation::Diverged { .. })),
            "{diverged:?}"
        );
        let lost = checker.check_converged(&[state(only_b.clone()), state(only_b)]);
        assert!(
            matches!(lost, Err(WanViolation::LostUpdate { site: 0, .. })),
            "{lost:?}"
        );
        assert_eq!(
            checker.check_converged(&[state(resolved.clone()), state(resolved)]),
            Ok(())
        );
    }
}
