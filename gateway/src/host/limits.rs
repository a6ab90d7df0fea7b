//! The gateway host's own bounds and timings, in one place, each named with its unit. The
//! protocol's limits are [`crate::GatewayLimits`] (per `[wan]` knobs, see `params.rs`); these
//! are the host's internals, fixed because no deployment has needed to tune them. The bounds of
//! the site-level rules themselves live with them in [`crate::site::limits`] (re-exported here).

pub use crate::site::limits::*;

/// Longest idle poll of a partition that has a replica on this node (its commits wake the
/// feed; the poll only covers a replica that stopped following its primary).
pub const LOCAL_IDLE_POLL_MS_MAX: u64 = 50;
/// Apply requests failing at the shell (primary moving) are retried, backing off up to this.
pub const APPLY_RETRY_BACKOFF_MS_MAX: u64 = 500;
/// Queued operator requests (each waits for its answer; a handful is plenty).
pub const ADMIN_QUEUE_LEN: usize = 16;
/// One `WanDump` page while loading a repair snapshot.
pub const REPAIR_DUMP_ENTRIES_MAX: u32 = 4096;
pub const REPAIR_DUMP_BYTES_MAX: u32 = 4 * 1024 * 1024;
/// Router failures tolerated while loading a repair snapshot (each after the router's retries).
pub const REPAIR_LOAD_ATTEMPTS_MAX: u32 = 5;
/// Backoff of the repair load and push tasks between router failures.
pub const REPAIR_TASK_BACKOFF_MS_MAX: u64 = 500;
/// Shortest `block_writes` hold lease the feed asks for: long enough that a read delayed by a
/// failover, a slow router hop or a busy node does not let the hold lapse while the gateway is
/// alive, short enough that writes resume soon after the gateway dies. (The node caps it by
/// `limits.wan_hold_ms_max`.)
pub const HOLD_MS_MIN: u64 = 10_000;
/// The hold lease spans at least this many of the feed's longest pauses between reads.
pub const HOLD_READS_MIN: u64 = 20;
