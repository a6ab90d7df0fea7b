//! Structural invariants of partition cores, checked from the outside after every command and
//! tick:
//!
//! - each partition's change log is gap-free and increasing (seq 1, 2, 3, ...);
//! - a command appends exactly one record per key whose visible state it changed, and none for
//!   other keys; a tick appends none (expiry is not a write);
//! - each record's entry is the core's entry for that key right after the change;
//! - per key, every new version strictly follows the previous one (its version vector is causally
//!   after it), and a stored entry never changes version without a record;
//! - an entry disappears only as a purged tombstone, at least `tombstone_retention_ms` after the
//!   key stopped being live; only then may its version history restart.
use super::{Violation, show_key};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use tern_conflict::{Causality, Versioned};
use tern_node::core::{ChangeRecord, PartitionId};

#[derive(Clone, Debug)]
struct KeyHistory {
    last: Versioned,
    /// Node time at which the key stopped being live, if it has (delete time, or TTL deadline).
    dead_since_ms: Option<u64>,
}

impl KeyHistory {
    fn dead_since(&self, now_ms: u64) -> Option<u64> {
        if self.last.is_tombstone() {
            self.dead_since_ms
        } else {
            self.last.expires_at_ms.filter(|&at| at <= now_ms)
        }
    }
}

#[derive(Debug)]
pub struct CoreAuditor {
    tombstone_retention_ms: u64,
    last_seq: BTreeMap<PartitionId, u64>,
    keys: BTreeMap<Bytes, KeyHistory>,
    purged: u64,
}

impl CoreAuditor {
    pub fn new(tombstone_retention_ms: u64) -> Self {
        Self {
            tombstone_retention_ms,
            last_seq: BTreeMap::new(),
            keys: BTreeMap::new(),
            purged: 0,
        }
    }

    /// How many purged tombstones the audit has seen (coverage: retention was exercised).
    pub fn purged(&self) -> u64 {
        self.purged
    }

    /// The seq the auditor has checked up to in `partition`: read the core's records after it.
    pub fn checked_seq(&self, partition: PartitionId) -> u64 {
        self.last_seq.get(&partition).copied().unwrap_or(0)
    }

    /// Check the records a step (`cause`: a command or a tick, at node time `now_ms`) appended
    /// to `partition`'s log. `changed` lists the keys of this partition whose visible state the
    /// reference model says changed; `current` is the core's entry lookup after the step.
    pub fn audit_records<'r, 'c>(
        &mut self,
        partition: PartitionId,
        records: impl IntoIterator<Item = &'r ChangeRecord>,
        current: impl Fn(&[u8]) -> Option<&'c Versioned>,
        changed: &[Bytes],
        cause: &str,
        now_ms: u64,
    ) -> Result<(), Violation> {
        let mut previous = self.checked_seq(partition);
        let mut recorded: BTreeSet<&Bytes> = BTreeSet::new();
        for record in records {
            if record.seq != previous + 1 || record.partition != partition {
                return Err(Violation::SeqGap {
                    partition,
                    previous,
                    got: record.seq,
                    cause: cause.to_string(),
                });
            }
            previous = record.seq;
            if !changed.contains(&record.key) || !recorded.insert(&record.key) {
                return Err(Violation::UnexpectedRecord {
                    partition,
                    seq: record.seq,
                    key: show_key(&record.key),
                    cause: cause.to_string(),
                });
            }
            let now_entry = current(&record.key);
            if now_entry != Some(&record.entry) {
                return Err(Violation::RecordDiffers {
                    partition,
                    seq: record.seq,
                    key: show_key(&record.key),
                    record: format!("{:?}", record.entry),
                    current: format!("{now_entry:?}"),
                });
            }
            self.advance_version(record, now_ms)?;
        }
        self.last_seq.insert(partition, previous);
        if let Some(missing) = changed.iter().find(|key| !recorded.contains(key)) {
            return Err(Violation::MissingRecord {
                partition,
                key: show_key(missing),
                cause: cause.to_string(),
            });
        }
        Ok(())
    }

    /// Check `key`'s stored entry against what the records said: same version unless a record
    /// changed it, and gone only if purged after retention.
    pub fn audit_entry(
        &mut self,
        key: &Bytes,
        entry: Option<&Versioned>,
        now_ms: u64,
    ) -> Result<(), Violation> {
        let changed = |detail: String| Violation::EntryChanged {
            key: show_key(key),
            now_ms,
            detail,
        };
        match (self.keys.get(key), entry) {
            (None, None) => Ok(()),
            (None, Some(entry)) => Err(changed(format!(
                "{entry:?} appeared without a change record"
            ))),
            (Some(history), Some(entry)) => {
                if entry.version != history.last.version {
                    return Err(changed(format!(
                        "has version {:?} but the last record carried {:?}",
                        entry.version, history.last.version
                    )));
                }
                Ok(())
            }
            (Some(history), None) => {
                let retention = self.tombstone_retention_ms;
                match history.dead_since(now_ms) {
                    Some(since) if now_ms >= since.saturating_add(retention) => {
                        // Purged after retention: a later write may start a new history.
                        self.keys.remove(key);
                        self.purged += 1;
                        Ok(())
                    }
                    Some(since) => Err(changed(format!(
                        "vanished {} ms after the key stopped being live, before retention ({retention} ms)",
                        now_ms - since
                    ))),
                    None => Err(changed(format!("vanished while live ({:?})", history.last))),
                }
            }
        }
    }

    fn advance_version(&mut self, record: &ChangeRecord, now_ms: u64) -> Result<(), Violation> {
        if let Some(history) = self.keys.get(&record.key) {
            let before = &history.last.version;
            let after = &record.entry.version;
            if after.causality(before) != Causality::After || after.hlc <= before.hlc {
                return Err(Violation::VersionRegressed {
                    key: show_key(&record.key),
                    seq: record.seq,
                    before: format!("{before:?}"),
                    after: format!("{after:?}"),
                });
            }
        }
        let dead_since_ms = record.entry.is_tombstone().then_some(now_ms);
        self.keys.insert(
            record.key.clone(),
            KeyHistory {
                last: record.entry.clone(),
                dead_since_ms,
            },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_conflict::{HlcTimestamp, SiteId, Value, Version};

    const P: PartitionId = PartitionId(0);
    const SITE: SiteId = SiteId(1);

    fn key() -> Bytes {
        Bytes::from_static(b"k")
    }

    fn versioned(value: Value, version: Version) -> Versioned {
        Versioned {
            value,
            version,
            expires_at_ms: None,
        }
    }

    fn record(seq: u64, entry: &Versioned) -> ChangeRecord {
        ChangeRecord {
            partition: P,
            seq,
            key: key(),
            entry: entry.clone(),
        }
    }

    /// Audit `records` as one step that changed `k`, with `core_entry` as the core's state.
    fn audit(
        auditor: &mut CoreAuditor,
        records: &[ChangeRecord],
        core_entry: &Versioned,
    ) -> Result<(), Violation> {
        auditor.audit_records(P, records, |_| Some(core_entry), &[key()], "test", 0)
    }

    #[test]
    fn accepts_a_well_formed_log() {
        let v1 = versioned(
            Value::Bytes(key()),
            Version::first(SITE, HlcTimestamp::new(1, 0)),
        );
        let v2 = versioned(
            Value::Tombstone,
            v1.version.successor(SITE, HlcTimestamp::new(2, 0)),
        );
        let mut auditor = CoreAuditor::new(100);
        assert_eq!(audit(&mut auditor, &[record(1, &v1)], &v1), Ok(()));
        assert_eq!(audit(&mut auditor, &[record(2, &v2)], &v2), Ok(()));
        assert_eq!(auditor.checked_seq(P), 2);
        assert_eq!(auditor.audit_entry(&key(), Some(&v2), 50), Ok(()));
    }

    #[test]
    fn catches_each_kind_of_broken_log() {
        let v1 = versioned(
            Value::Bytes(key()),
            Version::first(SITE, HlcTimestamp::new(1, 0)),
        );
        let v2 = versioned(
            Value::Bytes(key()),
            v1.version.successor(SITE, HlcTimestamp::new(2, 0)),
        );
        // A version vector that went back (below v1's), whatever its clock says.
        let stale = versioned(
            Value::Bytes(key()),
            Version {
                hlc: HlcTimestamp::new(3, 0),
                origin: SITE,
                vv: [(SITE, 1)].into_iter().collect(),
            },
        );
        let mut auditor = CoreAuditor::new(100);
        assert_eq!(audit(&mut auditor, &[record(1, &v1)], &v1), Ok(()));

        let skipped = audit(&mut auditor, &[record(3, &v2)], &v2);
        assert!(
            matches!(
                skipped,
                Err(Violation::SeqGap {
                    previous: 1,
                    got: 3,
                    ..
                })
            ),
            "{skipped:?}"
        );
        let differs = audit(&mut auditor, &[record(2, &v2)], &v1);
        assert!(
            matches!(differs, Err(Violation::RecordDiffers { seq: 2, .. })),
            "{differs:?}"
        );
        let regressed = audit(&mut auditor, &[record(2, &stale)], &stale);
        assert!(
            matches!(regressed, Err(Violation::VersionRegressed { .. })),
            "{regressed:?}"
        );
        let repeated = audit(&mut auditor, &[record(2, &v1)], &v1);
        assert!(
            matches!(repeated, Err(Violation::VersionRegressed { .. })),
            "same version twice: {repeated:?}"
        );
        let missing = auditor.audit_records(P, &[], |_| Some(&v1), &[key()], "set", 0);
        assert!(
            matches!(missing, Err(Violation::MissingRecord { .. })),
            "{missing:?}"
        );
        let unexpected = auditor.audit_records(P, &[record(2, &v2)], |_| Some(&v2), &[], "get", 0);
        assert!(
            matches!(unexpected, Err(Violation::UnexpectedRecord { .. })),
            "{unexpected:?}"
        );
    }

    #[test]
    fn entries_vanish_only_as_purged_tombstones() {
        let v1 = versioned(
            Value::Bytes(key()),
            Version::first(SITE, HlcTimestamp::new(1, 0)),
        );
        let dead = versioned(
            Value::Tombstone,
            v1.version.successor(SITE, HlcTimestamp::new(2, 0)),
        );
        let mut auditor = CoreAuditor::new(100);
        assert_eq!(audit(&mut auditor, &[record(1, &v1)], &v1), Ok(()));
        let silent = versioned(
            Value::Bytes(key()),
            v1.version.successor(SITE, HlcTimestamp::new(9, 0)),
        );
        assert!(
            auditor.audit_entry(&key(), Some(&silent), 5).is_err(),
            "version changed without a record"
        );
        assert!(
            auditor.audit_entry(&key(), None, 5).is_err(),
            "a live key vanished"
        );

        auditor
            .audit_records(
                P,
                &[record(2, &dead)],
                |_| Some(&dead),
                &[key()],
                "del",
                1_000,
            )
            .ok();
        assert!(
            auditor.audit_entry(&key(), None, 1_050).is_err(),
            "purged before retention"
        );
        assert_eq!(auditor.audit_entry(&key(), None, 1_100), Ok(()));
        // After a purge the history restarts: a first version is fine again.
        let reborn = versioned(
            Value::Bytes(key()),
            Version::first(SITE, HlcTimestamp::new(1_200, 0)),
        );
        assert_eq!(audit(&mut auditor, &[record(3, &reborn)], &reborn), Ok(()));
    }
}
