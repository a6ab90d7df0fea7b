//! Last writer wins: the later write by HLC, ties broken by origin site id.
use crate::{ConflictResolver, Resolution, Versioned};
use std::cmp::Ordering;

/// Keeps the version that is greater by [`Version::lww_cmp`](crate::Version::lww_cmp): HLC
/// first, then origin site id. Order independent on any realistic history, because a write's HLC
/// is always above the HLC of the version it overwrites (see
/// [`Version::successor`](crate::Version::successor)), so this total order extends causal order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LastWriterWins;

impl LastWriterWins {
    pub const NAME: &'static str = "lww";

    /// The LWW decision, for resolvers that fall back to it.
    pub fn pick(local: &Versioned, incoming: &Versioned) -> Resolution {
        match local.version.lww_cmp(&incoming.version) {
            Ordering::Less => Resolution::TakeIncoming,
            // Equal cannot happen between two different writes (a site's writes have strictly
            // increasing HLCs); keeping local then is the no-op choice.
            Ordering::Equal | Ordering::Greater => Resolution::KeepLocal,
        }
    }
}

impl ConflictResolver for LastWriterWins {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn resolve(&self, _key: &[u8], local: &Versioned, incoming: &Versioned) -> Resolution {
        Self::pick(local, incoming)
    }
}
