//! Versions: HLC + origin site + a per-entry version vector.
//!
//! The version vector tells real concurrency apart from causal order (clock order alone cannot);
//! the HLC and origin give the deterministic tie-break that last-writer-wins needs.
use crate::{HlcTimestamp, SiteId, Writer};
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

/// Per-entry version vector: for each writer (a site's data line, see [`Writer`]), a number
/// that rises with every write of this entry by that writer — `max(previous + 1, the write's
/// HLC stamp)` ([`Version::first`], [`Version::successor`]).
///
/// Per writer, not per site: a site that lost its memory (an in-memory site restarted whole)
/// has not seen its own earlier writes, so under the same name its new writes would claim to
/// follow them and replace them at the other sites instead of meeting them as concurrent. A new
/// data line is a new writer. The numbers are HLC stamps rather than bare counts so that they
/// order a line's writes and rise across restarts anyway.
///
/// Stored as `(writer, count)` pairs sorted by writer, inline for up to two: every write copies
/// its entry's vector into the new version and the change log, and a heap allocation per copy was
/// a measurable share of the write path. Two, not more: the vector sits in every stored entry and
/// change record, and each inline pair costs 24 bytes there; an entry written at two sites (the
/// usual active-active pair) still never allocates, one written by three or more writers does.
/// Encoded as a sequence of pairs (the same postcard bytes as a map); decoding normalizes hostile
/// input (unsorted, duplicate or zero entries).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct VersionVector(SmallVec<[(Writer, u64); 2]>);

impl VersionVector {
    pub fn new() -> Self {
        Self::default()
    }

    /// `writer`'s number (0 if it never wrote). A bare `SiteId` means its lineage 0.
    pub fn get(&self, writer: impl Into<Writer>) -> u64 {
        let writer = writer.into();
        match self.0.binary_search_by_key(&writer, |&(w, _)| w) {
            Ok(i) => self.0[i].1,
            Err(_) => 0,
        }
    }

    /// The highest number of any of `site`'s writers (0 if none wrote).
    pub fn site_max(&self, site: SiteId) -> u64 {
        self.0
            .iter()
            .filter(|(w, _)| w.site == site)
            .map(|&(_, count)| count)
            .max()
            .unwrap_or(0)
    }

    /// Count one more write by `writer`; returns the new count.
    pub fn increment(&mut self, writer: impl Into<Writer>) -> u64 {
        self.advance(writer, 0)
    }

    /// One more write by `writer`, numbered `max(current + 1, floor)`; returns that number.
    pub fn advance(&mut self, writer: impl Into<Writer>, floor: u64) -> u64 {
        let writer = writer.into();
        match self.0.binary_search_by_key(&writer, |&(w, _)| w) {
            Ok(i) => {
                let count = &mut self.0[i].1;
                *count = count.saturating_add(1).max(floor);
                *count
            }
            Err(i) => {
                let count = floor.max(1);
                self.0.insert(i, (writer, count));
                count
            }
        }
    }

    /// Pointwise maximum: the history that includes both.
    pub fn join(&mut self, other: &VersionVector) {
        for &(writer, count) in &other.0 {
            match self.0.binary_search_by_key(&writer, |&(w, _)| w) {
                Ok(i) => self.0[i].1 = self.0[i].1.max(count),
                Err(i) => self.0.insert(i, (writer, count)),
            }
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (Writer, u64)> + '_ {
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

/// Sites stand for their lineage 0 (tests and examples).
impl FromIterator<(SiteId, u64)> for VersionVector {
    fn from_iter<I: IntoIterator<Item = (SiteId, u64)>>(iter: I) -> Self {
        iter.into_iter()
            .map(|(site, count)| (Writer::from(site), count))
            .collect()
    }
}

impl FromIterator<(Writer, u64)> for VersionVector {
    /// Zero counts are dropped; a writer given twice keeps its larger count.
    fn from_iter<I: IntoIterator<Item = (Writer, u64)>>(iter: I) -> Self {
        let mut pairs: SmallVec<[(Writer, u64); 4]> =
            iter.into_iter().filter(|&(_, c)| c > 0).collect();
        pairs.sort_unstable();
        // Sorted by (writer, count): of equal writers the last has the largest count.
        let mut normalized: SmallVec<[(Writer, u64); 2]> = SmallVec::with_capacity(pairs.len());
        for (writer, count) in pairs {
            match normalized.last_mut() {
                Some(last) if last.0 == writer => last.1 = count,
                _ => normalized.push((writer, count)),
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
        let pairs = Vec::<(Writer, u64)>::deserialize(deserializer)?;
        Ok(pairs.into_iter().collect())
    }
}

/// The floor of a write's version-vector number (see [`HlcTimestamp::stamp`] and
/// [`VersionVector`]).
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
    /// The version of a first write of an entry by `writer` (a bare `SiteId`: its lineage 0).
    pub fn first(writer: impl Into<Writer>, hlc: HlcTimestamp) -> Self {
        let writer = writer.into();
        let mut vv = VersionVector::new();
        vv.advance(writer, write_stamp(hlc));
        Self {
            hlc,
            origin: writer.site,
            vv,
        }
    }

    /// The version of a write by `writer` that has seen `self` (a local overwrite).
    ///
    /// Its HLC is strictly above `self.hlc` even if `hlc` is not (e.g. `self` came from a site
    /// whose clock runs ahead and was not observed): a write must be LWW-greater than what it
    /// overwrites, or LWW would not extend causal order and folding concurrent updates could
    /// depend on their order (see `reconcile`).
    pub fn successor(&self, writer: impl Into<Writer>, hlc: HlcTimestamp) -> Self {
        let writer = writer.into();
        let hlc = if hlc > self.hlc {
            hlc
        } else {
            self.hlc.successor()
        };
        let mut vv = self.vv.clone();
        vv.advance(writer, write_stamp(hlc));
        Self {
            hlc,
            origin: writer.site,
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
