//! The gateway host's own bounds and timings, in one place, each named with its unit. The
//! protocol's limits are [`crate::GatewayLimits`] (per `[wan]` knobs, see `params.rs`); these
//! are the host's internals, fixed because no deployment has needed to tune them.

/// Longest a source's Hello waits for every partition's first feed page (engine `prime`).
pub const HELLO_HOLD_MS_MAX: u64 = 3_000;
/// How often the engine publishes its status for `/v1/wan` and `/metrics`.
pub const STATUS_PUBLISH_MS: u64 = 250;
/// What a counter or tombstone counts for when sizing apply requests (a counter's per-site
/// totals, or nothing): a generous flat estimate.
pub const NON_BYTES_VALUE_BYTES: usize = 64;
/// Longest idle poll of a partition that has a replica on this node (its commits wake the
/// feed; the poll only covers a replica that stopped following its primary).
pub const LOCAL_IDLE_POLL_MS_MAX: u64 = 50;
/// Apply requests failing at the shell (primary moving) are retried, backing off up to this.
pub const APPLY_RETRY_BACKOFF_MS_MAX: u64 = 500;
/// Lag samples kept for the percentiles of `tern gateway status`.
pub const LAG_WINDOW_SAMPLES_MAX: usize = 8192;
/// Queued operator requests (each waits for its answer; a handful is plenty).
pub const ADMIN_QUEUE_LEN: usize = 16;
/// Concurrent repair sessions towards one target (each holds a copy of its partition).
pub const REPAIR_SESSIONS_PER_TARGET_MAX: usize = 4;
/// A failed repair session is retried after this long, doubling up to the max.
pub const REPAIR_RETRY_BACKOFF_MS_MIN: u64 = 500;
pub const REPAIR_RETRY_BACKOFF_MS_MAX: u64 = 60_000;
/// One `WanDump` page while loading a repair snapshot.
pub const REPAIR_DUMP_ENTRIES_MAX: u32 = 4096;
pub const REPAIR_DUMP_BYTES_MAX: u32 = 4 * 1024 * 1024;
/// Router failures tolerated while loading a repair snapshot (each after the router's retries).
pub const REPAIR_LOAD_ATTEMPTS_MAX: u32 = 5;
/// Backoff of the repair load and push tasks between router failures.
pub const REPAIR_TASK_BACKOFF_MS_MAX: u64 = 500;
/// A repair pacer's burst: this long at `bootstrap_bytes_per_sec_max`, and at most one
/// `repair_message_bytes_max`, so repair bytes never queue at the link for long ahead of a batch.
pub const REPAIR_BURST_MS: u64 = 100;
/// Shortest `block_writes` hold lease the feed asks for: long enough that a read delayed by a
/// failover, a slow router hop or a busy node does not let the hold lapse while the gateway is
/// alive, short enough that writes resume soon after the gateway dies. (The node caps it by
/// `limits.wan_hold_ms_max`.)
pub const HOLD_MS_MIN: u64 = 10_000;
/// The hold lease spans at least this many of the feed's longest pauses between reads.
pub const HOLD_READS_MIN: u64 = 20;
