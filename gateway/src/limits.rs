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
    /// A partial batch leaves at once when no batch is in flight (Nagle's rule: an idle link
    /// adds no batching delay; under load batches fill while acks travel). Off: partial
    /// batches always wait `batch_wait_ms_max`.
    pub batch_send_when_idle: bool,
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
    /// Sink: an acknowledgement waits at most this long after the first change it reports.
    pub ack_delay_ms_max: u64,
    /// Sink: an acknowledgement is sent at once after this many batches were received since the
    /// previous one (once their records are applied).
    pub ack_batches_max: u32,
    /// Sink: an acknowledgement is sent as soon as everything received is applied (off: only
    /// after `ack_batches_max` batches or `ack_delay_ms_max`). Keeps a lone write's round trip
    /// free of the ack delay; under load acks still cover whole apply rounds.
    pub ack_when_applied: bool,
    // The backlog's byte cap is not here: the durable backlog owns it
    // (`BacklogConfig::backlog_bytes_max`, with its overflow policy).
    /// Repair: the digest tree's leaves split the 48-bit scan-position space into
    /// `2^repair_leaf_bits` buckets. More leaves: smaller ranges exchanged per difference, more
    /// hashes compared when much differs.
    pub repair_leaf_bits: u8,
    /// Repair: each inner node of the digest tree has `2^repair_fanout_bits` children (one
    /// round trip per level, `repair_leaf_bits / repair_fanout_bits` levels).
    pub repair_fanout_bits: u8,
    /// Repair: the largest repair message (digests or entries) either side builds. A single
    /// entry larger than this still travels, alone.
    pub repair_message_bytes_max: usize,
    /// Repair: requests an initiator has sent and not seen answered.
    pub repair_requests_inflight_max: usize,
    /// Repair: an initiator gives up on a session when an answer takes this long.
    pub repair_reply_timeout_ms: u64,
    /// Repair: a responder forgets a session idle this long (its initiator went away).
    pub repair_responder_idle_ms_max: u64,
    /// Repair: sessions a responder serves at once; more are refused (retried later).
    pub repair_responder_sessions_max: usize,
    /// Bootstrap (and every other repair): bytes of repair messages a gateway sends per
    /// second on one link, each direction (a token bucket; see [`crate::bootstrap`]). Live
    /// batches are not counted and never wait for it.
    pub bootstrap_bytes_per_sec_max: u64,
}

impl Default for GatewayLimits {
    fn default() -> Self {
        Self {
            batch_records_max: 2048,
            batch_bytes_max: 1024 * 1024,
            batch_wait_ms_max: 5,
            batch_send_when_idle: true,
            inflight_batches_max: 32,
            inflight_bytes_max: 32 * 1024 * 1024,
            frame_bytes_max: 32 * 1024 * 1024,
            ack_timeout_ms: 5_000,
            ack_delay_ms_max: 2,
            ack_batches_max: 4,
            ack_when_applied: true,
            // 65536 leaves of 16-way nodes: 4 round trips down; at 100k keys a leaf holds ~1.5.
            repair_leaf_bits: 16,
            repair_fanout_bits: 4,
            repair_message_bytes_max: 1024 * 1024,
            repair_requests_inflight_max: 4,
            repair_reply_timeout_ms: 30_000,
            repair_responder_idle_ms_max: 60_000,
            repair_responder_sessions_max: 16,
            bootstrap_bytes_per_sec_max: 32 * 1024 * 1024,
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
    #[error(
        "gateway limit `{name}` ({value}) must leave {BATCH_OVERHEAD_BYTES_MAX} bytes of framing \
         within `frame_bytes_max` ({frame_bytes_max})"
    )]
    MessageLargerThanFrame {
        name: &'static str,
        value: usize,
        frame_bytes_max: usize,
    },
    #[error(
        "gateway limits `repair_leaf_bits` ({leaf_bits}) and `repair_fanout_bits` \
         ({fanout_bits}): need 1 <= fanout <= 8, fanout dividing leaf bits, leaf bits <= 32"
    )]
    RepairTreeShape { leaf_bits: u8, fanout_bits: u8 },
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
            (
                "repair_message_bytes_max",
                self.repair_message_bytes_max as u64,
            ),
            (
                "repair_requests_inflight_max",
                self.repair_requests_inflight_max as u64,
            ),
            ("repair_reply_timeout_ms", self.repair_reply_timeout_ms),
            (
                "repair_responder_idle_ms_max",
                self.repair_responder_idle_ms_max,
            ),
            (
                "repair_responder_sessions_max",
                self.repair_responder_sessions_max as u64,
            ),
            (
                "bootstrap_bytes_per_sec_max",
                self.bootstrap_bytes_per_sec_max,
            ),
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
        for (name, value) in [("repair_message_bytes_max", self.repair_message_bytes_max)] {
            if self.frame_bytes_max < value.saturating_add(BATCH_OVERHEAD_BYTES_MAX) {
                return Err(LimitsError::MessageLargerThanFrame {
                    name,
                    value,
                    frame_bytes_max: self.frame_bytes_max,
                });
            }
        }
        crate::repair::TreeShape::new(self.repair_leaf_bits, self.repair_fanout_bits)
            .map(|_| ())
            .ok_or(LimitsError::RepairTreeShape {
                leaf_bits: self.repair_leaf_bits,
                fanout_bits: self.repair_fanout_bits,
            })
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
        let mut cases: Vec<(GatewayLimits, LimitsError)> = vec![
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
        let shapes = [(16, 3), (16, 0), (0, 4), (36, 4), (16, 9)];
        for (leaf_bits, fanout_bits) in shapes {
            cases.push((
                GatewayLimits {
                    repair_leaf_bits: leaf_bits,
                    repair_fanout_bits: fanout_bits,
                    ..GatewayLimits::default()
                },
                LimitsError::RepairTreeShape {
                    leaf_bits,
                    fanout_bits,
                },
            ));
        }
        cases.push((
            GatewayLimits {
                repair_message_bytes_max: 32 * 1024 * 1024,
                ..GatewayLimits::default()
            },
            LimitsError::MessageLargerThanFrame {
                name: "repair_message_bytes_max",
                value: 32 * 1024 * 1024,
                frame_bytes_max: 32 * 1024 * 1024,
            },
        ));
        cases.push((
            GatewayLimits {
                bootstrap_bytes_per_sec_max: 0,
                ..GatewayLimits::default()
            },
            LimitsError::Zero {
                name: "bootstrap_bytes_per_sec_max",
            },
        ));
        for (limits, expected) in cases {
            assert_eq!(limits.validate(), Err(expected));
        }
    }
}
