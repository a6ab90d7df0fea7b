//! Every limit and timing knob of the WAN core, each named with its unit.
use serde::{Deserialize, Serialize};

/// Bytes a batch frame adds around its records: frame header (11) plus the batch header
/// (source, batch id and record count as varints), rounded up. Used to keep a frame within
/// `frame_bytes_max` whatever records it carries.
pub const BATCH_OVERHEAD_BYTES_MAX: usize = 64;

/// Limits of one gateway, shared by its delegators (outgoing, per target site) and sinks
/// (incoming, per source site).
///
/// Defaults aim at the brief's targets: ≥ 1M updates/s between two sites (batches of up to
/// 2048 records or 1 MiB) and WAN lag p99 ≤ 10 ms (a lone record waits at most 5 ms).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayLimits {
    /// A batch closes when it holds this many records.
    pub batch_records_max: usize,
    /// A batch closes when its records' encoded size reaches this. A single record larger than
    /// this still travels, alone, if it fits in a frame.
    pub batch_bytes_max: usize,
    /// A batch closes when its oldest record has waited this long since it was handed to the
    /// delegator (so a lone record leaves within this bound).
    pub batch_wait_ms_max: u64,
    /// Flow control: batches sent and not yet fully acknowledged.
    pub inflight_batches_max: usize,
    /// Flow control: encoded bytes sent and not yet acknowledged. One batch may overshoot it
    /// (a batch is sent whole once the window has room).
    pub inflight_bytes_max: usize,
    /// Largest frame (header + payload) either side encodes or accepts. Must exceed the largest
    /// record the node can commit (`value_bytes_max` + `key_bytes_max` + version).
    pub frame_bytes_max: usize,
    /// Delegator: when the oldest in-flight batch has waited this long for its acknowledgement,
    /// everything unacknowledged is sent again (go-back-N). A safety net: over a QUIC stream a
    /// lost batch normally means a lost connection, handled by reconnect.
    pub ack_timeout_ms: u64,
    /// Delegator: above this many unacknowledged bytes the backlog is over its cap and the shell
    /// applies the configured overflow policy (never silently).
    pub backlog_bytes_max: u64,
    /// Sink: an acknowledgement waits at most this long after the first change it reports.
    pub ack_delay_ms_max: u64,
    /// Sink: an acknowledgement is sent at once after this many batches were received since the
    /// previous one (once their records are applied).
    pub ack_batches_max: u32,
}

impl Default for GatewayLimits {
    fn default() -> Self {
        Self {
            batch_records_max: 2048,
            batch_bytes_max: 1024 * 1024,
            batch_wait_ms_max: 5,
            inflight_batches_max: 32,
            inflight_bytes_max: 32 * 1024 * 1024,
            frame_bytes_max: 32 * 1024 * 1024,
            ack_timeout_ms: 5_000,
            backlog_bytes_max: 1024 * 1024 * 1024,
            ack_delay_ms_max: 2,
            ack_batches_max: 4,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    #[error("gateway limit `{name}` must be greater than zero")]
    Zero { name: &'static str },
    #[error(
        "gateway limit `frame_bytes_max` ({frame_bytes_max}) must exceed `batch_bytes_max` \
         ({batch_bytes_max}) by at least {BATCH_OVERHEAD_BYTES_MAX} bytes of framing"
    )]
    FrameSmallerThanBatch {
        frame_bytes_max: usize,
        batch_bytes_max: usize,
    },
    #[error("gateway limit `frame_bytes_max` ({0}) must fit the 32-bit length field")]
    FrameTooLarge(usize),
}

impl GatewayLimits {
    /// Check the limits are usable together; the shell calls this when loading configuration.
    pub fn validate(&self) -> Result<(), LimitsError> {
        let nonzero = [
            ("batch_records_max", self.batch_records_max as u64),
            ("batch_bytes_max", self.batch_bytes_max as u64),
            ("inflight_batches_max", self.inflight_batches_max as u64),
            ("inflight_bytes_max", self.inflight_bytes_max as u64),
            ("frame_bytes_max", self.frame_bytes_max as u64),
            ("ack_timeout_ms", self.ack_timeout_ms),
            ("ack_batches_max", u64::from(self.ack_batches_max)),
        ];
        if let Some((name, _)) = nonzero.iter().find(|(_, v)| *v == 0) {
            return Err(LimitsError::Zero { name });
        }
        if u32::try_from(self.frame_bytes_max).is_err() {
            return Err(LimitsError::FrameTooLarge(self.frame_bytes_max));
        }
        if self.frame_bytes_max
            < self
                .batch_bytes_max
                .saturating_add(BATCH_OVERHEAD_BYTES_MAX)
        {
            return Err(LimitsError::FrameSmallerThanBatch {
                frame_bytes_max: self.frame_bytes_max,
                batch_bytes_max: self.batch_bytes_max,
            });
        }
        Ok(())
    }

    /// The largest single record (encoded) a batch frame can carry.
    pub fn record_bytes_max(&self) -> usize {
        self.frame_bytes_max
            .saturating_sub(BATCH_OVERHEAD_BYTES_MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_fit_the_largest_node_record() {
        let limits = GatewayLimits::default();
        assert_eq!(limits.validate(), Ok(()));
        assert_eq!(limits.batch_wait_ms_max, 5);
        let node = tern_node::limits::Limits::default();
        assert!(limits.record_bytes_max() > node.value_bytes_max + node.key_bytes_max + 4096);
    }

    #[test]
    fn inconsistent_limits_are_rejected() {
        let cases: Vec<(GatewayLimits, LimitsError)> = vec![
            (
                GatewayLimits {
                    batch_records_max: 0,
                    ..GatewayLimits::default()
                },
                LimitsError::Zero {
                    name: "batch_records_max",
                },
            ),
            (
                GatewayLimits {
                    ack_batches_max: 0,
                    ..GatewayLimits::default()
                },
                LimitsError::Zero {
                    name: "ack_batches_max",
                },
            ),
            (
                GatewayLimits {
                    frame_bytes_max: 1000,
                    batch_bytes_max: 990,
                    ..GatewayLimits::default()
                },
                LimitsError::FrameSmallerThanBatch {
                    frame_bytes_max: 1000,
                    batch_bytes_max: 990,
                },
            ),
        ];
        for (limits, expected) in cases {
            assert_eq!(limits.validate(), Err(expected));
        }
    }
}
