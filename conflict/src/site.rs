//! Site identity: the origin stamped on every version.
use serde::{Deserialize, Serialize};
use std::fmt;

/// A site (region / Kubernetes cluster) in the WAN topology. Small and `Copy` because it is
/// stored in every version vector entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SiteId(pub u16);

impl fmt::Display for SiteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "site-{}", self.0)
    }
}
