//! Versions: HLC + origin site + a per-entry version vector.
//!
//! The version vector tells real concurrency apart from causal order (clock order alone cannot);
//! the HLC and origin give the deterministic tie-break that last-writer-wins needs.
use crate::{HlcTimestamp, SiteId};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::BTreeMap;

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

/// Per-entry version vector: for each site, how many writes of this entry that site made.
/// A `BTreeMap` so iteration (and thus encoding and hashing) is deterministic.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VersionVector(BTreeMap<SiteId, u64>);

impl VersionVector {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, site: SiteId) -> u64 {
        self.0.get(&site).copied().unwrap_or(0)
    }

    /// Count one more write by `site`; returns the new count.
    pub fn increment(&mut self, site: SiteId) -> u64 {
        let count = self.0.entry(site).or_insert(0);
        *count = count.saturating_add(1);
        *count
    }

    /// Pointwise maximum: the history that includes both.
    pub fn join(&mut self, other: &VersionVector) {
        for (&site, &count) in &other.0 {
            let mine = self.0.entry(site).or_insert(0);
            *mine = (*mine).max(count);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (SiteId, u64)> + '_ {
        self.0.iter().map(|(&s, &c)| (s, c))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Where `self` stands relative to `other`.
    pub fn compare(&self, other: &VersionVector) -> Causality {
        let mut self_ahead = false;
        let mut other_ahead = false;
        for (&site, &mine) in &self.0 {
            match mine.cmp(&other.get(site)) {
                Ordering::Greater => self_ahead = true,
                Ordering::Less => other_ahead = true,
                Ordering::Equal => {}
            }
        }
        for (&site, &theirs) in &other.0 {
            if theirs > self.get(site) {
                other_ahead = true;
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
    fn from_iter<I: IntoIterator<Item = (SiteId, u64)>>(iter: I) -> Self {
        Self(iter.into_iter().filter(|&(_, c)| c > 0).collect())
    }
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
        vv.increment(site);
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
        let mut vv = self.vv.clone();
        vv.increment(site);
        let hlc = if hlc > self.hlc {
            hlc
        } else {
            self.hlc.successor()
        };
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
