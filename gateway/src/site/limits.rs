//! The site gateway core's own bounds and timings, each named with its unit. The protocol's
//! limits are [`crate::GatewayLimits`]; these are internals of the site-level rules, fixed
//! because no deployment has needed to tune them.

/// Longest a source's Hello waits for every partition's first feed page (see `wipe.rs`).
pub const HELLO_HOLD_MS_MAX: u64 = 3_000;
/// How often the core offers its status (for `/v1/wan` and `/metrics`).
pub const STATUS_PUBLISH_MS: u64 = 250;
/// What a counter or tombstone counts for when sizing apply requests (a counter's per-site
/// totals, or nothing): a generous flat estimate.
pub const NON_BYTES_VALUE_BYTES: usize = 64;
/// Concurrent repair sessions towards one target (each holds a copy of its partition).
pub const REPAIR_SESSIONS_PER_TARGET_MAX: usize = 4;
/// A failed repair session is retried after this long, doubling up to the max.
pub const REPAIR_RETRY_BACKOFF_MS_MIN: u64 = 500;
pub const REPAIR_RETRY_BACKOFF_MS_MAX: u64 = 60_000;
/// A repair pacer's burst: this long at `bootstrap_bytes_per_sec_max`, and at most one
/// `repair_message_bytes_max`, so repair bytes never queue at the link for long ahead of a batch.
pub const REPAIR_BURST_MS: u64 = 100;
/// Lag samples kept for the percentiles of `tern gateway status`.
pub const LAG_WINDOW_SAMPLES_MAX: usize = 8192;
