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
        ..GatewayLimits::default()
    }
}

pub fn backlog_config(config: &WanConfig) -> BacklogConfig {
    BacklogConfig {
        backlog_bytes_max: config.backlog_bytes_max,
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
        ..BacklogConfig::default()
    }
}
