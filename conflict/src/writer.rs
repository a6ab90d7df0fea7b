//! Who writes: a site, and the data line of the partition copy that wrote there.
use crate::SiteId;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A site and one line of a partition's data there: from the moment a copy starts empty
/// until that data is lost (an in-memory site restarted whole). Version vectors and
/// PN-counters count per actor, not per site.
///
/// Both count on the assumption that a writer has seen all of its own earlier writes. A site
/// that lost its data has not: under its old name, its new writes would look causally after
/// its old ones (a version-vector number above theirs) and replace them at the other sites
/// without a merge, and its new increments would sit below the totals the other sites kept
/// for it and vanish in the merge. Under a new line, its writes meet the old line's as
/// concurrent (resolved) and its increments add to the old ones.
///
/// A copy's `lineage` is stamped from its HLC when it first writes, and is unique as long as
/// the stamp is (see `PartitionCore` in tern-node; backups and handover targets take their
/// primary's, so a failover continues the line). Lineage 0 is what tests and a string
/// converted by INCR use: its start value is credited to the site that wrote the string, so
/// the same conversion at two sites merges to one start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Writer {
    pub site: SiteId,
    pub lineage: u64,
}

impl Writer {
    pub fn new(site: SiteId, lineage: u64) -> Self {
        Self { site, lineage }
    }
}

impl fmt::Display for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.site, self.lineage)
    }
}

/// Lineage 0 of `site` (a converted string's start value, and tests).
impl From<SiteId> for Writer {
    fn from(site: SiteId) -> Self {
        Self { site, lineage: 0 }
    }
}
