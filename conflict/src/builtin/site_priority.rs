//! Site priority: concurrent versions are ranked by the most important site in their history.
use crate::{ConflictResolver, LastWriterWins, Resolution, SiteId, VersionVector, Versioned};
use std::cmp::Ordering;

/// Ranks concurrent versions by a configured list of sites (earlier = higher priority); the
/// higher rank wins and equal ranks fall back to [`LastWriterWins`].
///
/// A version's rank is **the highest-priority listed site in its version vector, then how many
/// of that site's writes it includes**; versions whose history holds no listed site rank below
/// all others. So a write made at a listed site beats every concurrent write from a
/// lower-priority site, and a write from a higher-priority site beats any version that has not
/// seen it.
///
/// Why the history and not just the origin site: the rank must never go down along causal
/// order, or delivery order decides the result. With origin ranking, let `e` be written at the
/// top site, `u` overwrite `e` at a low site, and `b` be a concurrent low-site write with a later
/// HLC. Folding `e, b, u` keeps `e` (`e` beats `b`, then the merged `e` beats `u`'s low origin)
/// while `e, u, b` ends with `b` (`u` replaces `e`, then `b` wins by LWW): the overwritten `e`
/// comes back. Ranking by history gives `u` the top site's rank (it has seen `e`) and both
/// orders agree. The rank of a join is the larger rank, which keeps the fold associative.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SitePriority {
    name: String,
    order: Vec<SiteId>,
}

impl SitePriority {
    pub const NAME: &'static str = "site-priority";

    /// Registered as `site-priority`; `order` lists sites from highest to lowest priority.
    pub fn new(order: Vec<SiteId>) -> Self {
        Self::named(Self::NAME, order)
    }

    /// The same policy under another registry name (e.g. one per region layout).
    pub fn named(name: impl Into<String>, order: Vec<SiteId>) -> Self {
        Self {
            name: name.into(),
            order,
        }
    }

    /// Sites from highest to lowest priority.
    pub fn order(&self) -> &[SiteId] {
        &self.order
    }

    /// Higher is better: (how far up the list the best site in `vv` is, its version number
    /// there, which rises with each of its writes);
    /// `(0, 0)` when `vv` holds no listed site.
    fn rank(&self, vv: &VersionVector) -> (usize, u64) {
        self.order
            .iter()
            .enumerate()
            .find_map(|(position, &site)| {
                let count = vv.site_max(site);
                (count > 0).then(|| (self.order.len() - position, count))
            })
            .unwrap_or((0, 0))
    }
}

impl ConflictResolver for SitePriority {
    fn name(&self) -> &str {
        &self.name
    }

    fn resolve(&self, _key: &[u8], local: &Versioned, incoming: &Versioned) -> Resolution {
        let local_rank = self.rank(&local.version.vv);
        let incoming_rank = self.rank(&incoming.version.vv);
        match local_rank.cmp(&incoming_rank) {
            Ordering::Greater => Resolution::KeepLocal,
            Ordering::Less => Resolution::TakeIncoming,
            Ordering::Equal => LastWriterWins::pick(local, incoming),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{HlcTimestamp, Value, Version};
    use bytes::Bytes;

    fn entry(origin: u16, wall_ms: u64, vv: &[(u16, u64)]) -> Versioned {
        Versioned {
            value: Value::Bytes(Bytes::from(format!("from {origin}"))),
            version: Version {
                hlc: HlcTimestamp::new(wall_ms, 0),
                origin: SiteId(origin),
                vv: vv.iter().map(|&(s, c)| (SiteId(s), c)).collect(),
            },
            expires_at_ms: None,
        }
    }

    #[test]
    fn decisions_follow_the_history_rank_then_lww() {
        let policy = SitePriority::new(vec![SiteId(1), SiteId(2)]);
        use Resolution::{KeepLocal as L, TakeIncoming as I};
        // (local, incoming, expected)
        let cases = [
            // Listed beats unlisted even with an older HLC.
            (entry(1, 5, &[(1, 1)]), entry(9, 50, &[(9, 1)]), L),
            (entry(9, 50, &[(9, 1)]), entry(2, 5, &[(2, 1)]), I),
            // Higher listed beats lower listed.
            (entry(2, 50, &[(2, 1)]), entry(1, 5, &[(1, 1)]), I),
            // Both unlisted: LWW.
            (entry(8, 5, &[(8, 1)]), entry(9, 6, &[(9, 1)]), I),
            (entry(9, 6, &[(9, 1)]), entry(8, 6, &[(8, 1)]), L),
            // An unlisted overwrite of a site-1 write outranks a site-2 write that has not seen it.
            (entry(9, 5, &[(1, 1), (9, 1)]), entry(2, 50, &[(2, 1)]), L),
            // Both saw site 1's first write; a newer site-1 write wins whatever the HLC.
            (entry(9, 50, &[(1, 1), (9, 1)]), entry(1, 6, &[(1, 2)]), I),
            // Same site-1 count: LWW.
            (
                entry(9, 50, &[(1, 1), (9, 1)]),
                entry(2, 6, &[(1, 1), (2, 1)]),
                L,
            ),
        ];
        for (i, (local, incoming, expected)) in cases.iter().enumerate() {
            assert_eq!(&policy.resolve(b"k", local, incoming), expected, "case {i}");
            let swapped = match expected {
                L => I,
                _ => L,
            };
            assert_eq!(
                policy.resolve(b"k", incoming, local),
                swapped,
                "case {i} swapped"
            );
        }
    }

    #[test]
    fn empty_list_is_lww_and_names_are_configurable() {
        let policy = SitePriority::new(Vec::new());
        assert_eq!(policy.name(), "site-priority");
        let (a, b) = (entry(1, 5, &[(1, 1)]), entry(2, 6, &[(2, 1)]));
        assert_eq!(policy.resolve(b"k", &a, &b), LastWriterWins::pick(&a, &b));
        assert_eq!(
            SitePriority::named("eu-first", vec![SiteId(3)]).name(),
            "eu-first"
        );
    }
}
