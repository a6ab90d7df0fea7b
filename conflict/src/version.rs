//! Versions: HLC + origin site + a per-entry version vector.
//!
//! The version vector tells real concurrency apart from causal order (clock order alone cannot);
//! the HLC and origin give the deterministic tie-break that last-writer-wins needs.
use crate::{HlcTimestamp, SiteId};
use serde::{Deserialize, Serialize};
use serde::{Deserializer, Serializer};
use smallvec::SmallVec;
use std::cmp::Ordering;

/// How one version relates to another in causal order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Causality {
    /// Same history.
    Equal,
    /// `self` happened before `other` (`other` has seen everything `self` has, and more).
    Before,
    /// `self` happened after `other`.
    After,
    /// Neither has seen the other: a real conflict.
    Concurrent,
}

/// Per-entry version vector: for each site, a number that rises with every write of this entry
/// at that site — `max(previous + 1, the write's HLC stamp)` ([`Version::first`],
/// [`Version::successor`]), not a bare count. A bare count restarts at 1 when a site loses its
/// memory (an in-memory site restarted whole), and its new writes would then look older than
/// the ones the other sites kept from it: dominated, silently dropped everywhere. Stamped by
/// the HLC, which keeps rising across a restart, they stay above the site's earlier writes and
/// meet those as concurrent (resolved) at worst.
///
/// Stored as `(site, count)` pairs sorted by site, inline for up to two sites: every write copies
/// its entry's vector into the new version and the change log, and a heap allocation per copy was
/// a measurable share of the write path. Two, not more: the vector sits in every stored entry and
/// change record, and each inline pair costs 16 bytes there; an entry written at two sites (the
/// usual active-active pair) still never allocates, one written at three or more does. Encoded as a
/// sequence of pairs (the same postcard bytes as a map); decoding normalizes hostile input
/// (unsorted, duplicate or zero entries).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct VersionVector(SmallVec<[(SiteId, u64); 2]>);

impl VersionVector {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, site: SiteId) -> u64 {
        match self.0.binary_search_by_key(&site, |&(s, _)| s) {
            Ok(i) => self.0[i].1,
            Err(_) => 0,
        }
    }

    /// Count one more write by `site`; returns the new count.
    pub fn increment(&mut self, site: SiteId) -> u64 {
        self.advance(site, 0)
    }

    /// One more write by `site`, numbered `max(current + 1, floor)`; returns that number.
    pub fn advance(&mut self, site: SiteId, floor: u64) -> u64 {
        match self.0.binary_search_by_key(&site, |&(s, _)| s) {
            Ok(i) => {
                let count = &mut self.0[i].1;
                *count = count.saturating_add(1).max(floor);
                *count
            }
            Err(i) => {
                let count = floor.max(1);
                self.0.insert(i, (site, count));
                count
            }
        }
    }

    /// Pointwise maximum: the history that includes both.
    pub fn join(&mut self, other: &VersionVector) {
        for &(site, count) in &other.0 {
            match self.0.binary_search_by_key(&site, |&(s, _)| s) {
                Ok(i) => self.0[i].1 = self.0[i].1.max(count),
                Err(i) => self.0.insert(i, (site, count)),
            }
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (SiteId, u64)> + '_ {
        self.0.iter().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Where `self` stands relative to `other`: one merge walk over both sorted vectors.
    pub fn compare(&self, other: &VersionVector) -> Causality {
        let mut self_ahead = false;
        let mut other_ahead = false;
        let (mut a, mut b) = (self.0.iter().peekable(), other.0.iter().peekable());
        loop {
            match (a.peek(), b.peek()) {
                (None, None) => break,
                (Some(_), None) => {
                    self_ahead = true;
                    break;
                }
                (None, Some(_)) => {
                    other_ahead = true;
                    break;
                }
                (Some(&&(sa, ca)), Some(&&(sb, cb))) => match sa.cmp(&sb) {
                    Ordering::Less => {
                        self_ahead = true;
                        a.next();
                    }
                    Ordering::Greater => {
                        other_ahead = true;
                        b.next();
                    }
                    Ordering::Equal => {
                        match ca.cmp(&cb) {
                            Ordering::Greater => self_ahead = true,
                            Ordering::Less => other_ahead = true,
                            Ordering::Equal => {}
                        }
                        a.next();
                        b.next();
                    }
                },
            }
        }
        match (self_ahead, other_ahead) {
            (false, false) => Causality::Equal,
            (true, false) => Causality::After,
            (false, true) => Causality::Before,
            (true, true) => Causality::Concurrent,
        }
    }
}

impl FromIterator<(SiteId, u64)> for VersionVector {
    /// Zero counts are dropped; a site given twice keeps its larger count.
    fn from_iter<I: IntoIterator<Item = (SiteId, u64)>>(iter: I) -> Self {
        let mut pairs: SmallVec<[(SiteId, u64); 4]> =
            iter.into_iter().filter(|&(_, c)| c > 0).collect();
        pairs.sort_unstable();
        // Sorted by (site, count): of equal sites the last has the largest count.
        let mut normalized: SmallVec<[(SiteId, u64); 2]> = SmallVec::with_capacity(pairs.len());
        for (site, count) in pairs {
            match normalized.last_mut() {
                Some(last) if last.0 == site => last.1 = count,
                _ => normalized.push((site, count)),
            }
        }
        Self(normalized)
    }
}

impl Serialize for VersionVector {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter())
    }
}

impl<'de> Deserialize<'de> for VersionVector {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let pairs = Vec::<(SiteId, u64)>::deserialize(deserializer)?;
        Ok(pairs.into_iter().collect())
    }
}

/// The floor of a write's version-vector number (see [`HlcTimestamp::stamp`]), so a site's
/// numbers keep rising across a restart that lost its memory (see [`VersionVector`]).
fn write_stamp(hlc: HlcTimestamp) -> u64 {
    hlc.stamp()
}

/// The version of one entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Version {
    /// When the winning write happened (after a merge: the latest of the merged writes).
    pub hlc: HlcTimestamp,
    /// The site whose write this version carries (after a merge: the winner's site).
    pub origin: SiteId,
    pub vv: VersionVector,
}

impl Version {
    /// The version of a first write of an entry at `site`.
    pub fn first(site: SiteId, hlc: HlcTimestamp) -> Self {
        let mut vv = VersionVector::new();
        vv.advance(site, write_stamp(hlc));
        Self {
            hlc,
            origin: site,
            vv,
        }
    }

    /// The version of a write at `site` that has seen `self` (a local overwrite).
    ///
    /// Its HLC is strictly above `self.hlc` even if `hlc` is not (e.g. `self` came from a site
    /// whose clock runs ahead and was not observed): a write must be LWW-greater than what it
    /// overwrites, or LWW would not extend causal order and folding concurrent updates could
    /// depend on their order (see `reconcile`).
    pub fn successor(&self, site: SiteId, hlc: HlcTimestamp) -> Self {
        let hlc = if hlc > self.hlc {
            hlc
        } else {
            self.hlc.successor()
        };
        let mut vv = self.vv.clone();
        vv.advance(site, write_stamp(hlc));
        Self {
            hlc,
            origin: site,
            vv,
        }
    }

    pub fn causality(&self, other: &Version) -> Causality {
        self.vv.compare(&other.vv)
    }

    /// Total order for last-writer-wins: HLC first, then origin site id.
    pub fn lww_cmp(&self, other: &Version) -> Ordering {
        self.hlc
            .cmp(&other.hlc)
            .then(self.origin.cmp(&other.origin))
    }
}
