//! What the host is started with, and how the operator-facing `[wan]` knobs map onto the
//! protocol's [`GatewayLimits`] and the backlog's [`BacklogConfig`].
use crate::backlog::{BacklogConfig, FsyncMode, OverflowPolicy};
use crate::limits::GatewayLimits;
use std::sync::Arc;
use tern_conflict::KeyspaceResolvers;
use tern_node::admin::WanHub;
use tern_node::config::{WanConfig, WanFsync, WanOverflow};
use tern_node::shell::{CommitWatch, Router};

/// Everything [`super::start`] needs from the node it runs in.
#[derive(Debug)]
pub struct HostParams {
    pub config: WanConfig,
    /// This site's id (the node config's `site`).
    pub site_id: u16,
    /// The node's router: every read of a change log and every remote apply goes through it
    /// to the partition's current primary.
    pub router: Router,
    /// Where the host publishes its status and reads operator requests.
    pub hub: WanHub,
    /// The node's resolver table (`NodeHandle::resolvers`): the partitions resolve with it; the
    /// host names the resolver of each conflict it counts.
    pub resolvers: Arc<KeyspaceResolvers>,
    /// The node's `limits.tombstone_retention_ms`: repair digests treat older tombstones as
    /// gone, as the partitions do.
    pub tombstone_retention_ms: u64,
    /// The node's local replicas' commit signals: the feed waits on them instead of polling.
    pub commits: CommitWatch,
}

pub fn gateway_limits(config: &WanConfig) -> GatewayLimits {
    GatewayLimits {
        batch_wait_ms_max: config.batch_wait_ms_max,
        bootstrap_bytes_per_sec_max: config.bootstrap_bytes_per_sec_max,
        ..GatewayLimits::default()
    }
}

/// The backlog's defaults fit caps from 96 MiB up; a smaller `backlog_bytes_max` (the config
/// allows 1 MiB) gets segments and a largest record scaled to it, so the backlog still opens
/// and holds several segments (a record over half the cap is refused and repaired instead).
pub fn backlog_config(config: &WanConfig) -> BacklogConfig {
    const SEGMENTS_PER_CAP_MIN: u64 = 4;
    const SEGMENT_BYTES_MIN: u64 = 256 * 1024;
    let defaults = BacklogConfig::default();
    let cap = config.backlog_bytes_max;
    BacklogConfig {
        backlog_bytes_max: cap,
        segment_bytes_max: (cap / SEGMENTS_PER_CAP_MIN)
            .clamp(SEGMENT_BYTES_MIN.min(cap), defaults.segment_bytes_max),
        record_bytes_max: defaults.record_bytes_max.min(cap / 2),
        fsync_mode: match config.fsync {
            WanFsync::Always => FsyncMode::Always,
            WanFsync::Interval => FsyncMode::Interval,
            WanFsync::Never => FsyncMode::Never,
        },
        fsync_interval_ms: config.fsync_interval_ms,
        overflow_policy: match config.overflow {
            WanOverflow::BlockWrites => OverflowPolicy::BlockWrites,
            WanOverflow::DropAndRepair => OverflowPolicy::DropAndRepair,
        },
        ..defaults
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_node::config::WAN_BACKLOG_BYTES_MIN;

    /// Every cap the config accepts gives a backlog configuration that validates; big caps
    /// keep the backlog's defaults.
    #[test]
    fn every_accepted_cap_opens_a_backlog() {
        let defaults = BacklogConfig::default();
        for cap in [
            WAN_BACKLOG_BYTES_MIN,
            3 * 1024 * 1024,
            64 * 1024 * 1024,
            96 * 1024 * 1024,
            1024 * 1024 * 1024,
            u64::MAX / 2,
        ] {
            let mut wan = WanConfig::new(
                "a",
                "127.0.0.1:0".parse().expect("addr"),
                "pki".into(),
                "wan".into(),
            );
            wan.backlog_bytes_max = cap;
            let config = backlog_config(&wan);
            assert_eq!(config.validate(), Ok(()), "cap {cap}");
            assert!(
                config.segment_bytes_max * 4 <= cap.max(4 * 256 * 1024),
                "cap {cap}"
            );
            if cap >= 256 * 1024 * 1024 {
                assert_eq!(config.segment_bytes_max, defaults.segment_bytes_max);
                assert_eq!(config.record_bytes_max, defaults.record_bytes_max);
            }
        }
    }
}
