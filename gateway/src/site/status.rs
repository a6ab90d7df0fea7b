//! The gateway's status for `/v1/wan`, `/metrics` and `tern gateway status`.
use super::{SiteGateway, SiteStorage};
use std::collections::BTreeSet;
use tern_node::admin::{WanSourceStatus, WanStatus, WanTargetStatus};

impl<P: SiteStorage> SiteGateway<P> {
    /// The status now (`refused_total` is the transport's to fill in).
    pub fn status(&self) -> WanStatus {
        WanStatus {
            site: self.config.site.clone(),
            site_id: self.config.site_id.0,
            targets: self
                .targets
                .iter()
                .map(|(site, t)| {
                    let stats = t.delegator.stats();
                    WanTargetStatus {
                        site: site.clone(),
                        site_id: t.site_id.0,
                        addr: t.addr.clone(),
                        connected: t.link.is_some() && t.delegator.is_connected(),
                        backlog_records: t.delegator.backlog_records(),
                        backlog_bytes: t.delegator.backlog_bytes(),
                        shipped_total: stats.records_acked_total,
                        filtered_total: stats.records_filtered_total,
                        // Marked (a bootstrap, an overflow, an operator) or under way.
                        repairing_partitions: t
                            .delegator
                            .repair_needed()
                            .chain(t.repair.partitions_under_way())
                            .map(|p| p.0)
                            .collect::<BTreeSet<u16>>()
                            .into_iter()
                            .collect(),
                        overflows_total: t.overflows_total,
                        write_blocked: t.delegator.is_write_blocked(),
                        failure: t.failure.clone(),
                        repairs_total: t.repair.repairs_total(),
                    }
                })
                .collect(),
            sources: self
                .sources
                .iter()
                .map(|(site, s)| WanSourceStatus {
                    site: site.clone(),
                    site_id: s.site_id.0,
                    connected: s.link.is_some(),
                    applied_total: s.applied_total,
                    duplicates_total: s.sink.stats().duplicates_total,
                    conflicts_total: s.conflicts.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                    lag_ms_last: s.lag.last_ms(),
                    lag_ms_p50: s.lag.percentile_ms(0.5),
                    lag_ms_p99: s.lag.percentile_ms(0.99),
                    lag_buckets: s.lag.cumulative_buckets(),
                    lag_seconds_sum: s.lag.sum_seconds(),
                    lag_count: s.lag.count(),
                })
                .collect(),
            refused_total: Vec::new(),
        }
    }
}
