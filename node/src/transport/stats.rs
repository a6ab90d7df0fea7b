//! Counters and per-peer status the metrics layer and `tern status` read.
use std::sync::atomic::{AtomicU64, Ordering};

use super::frame::Channel;
use super::identity::Identity;

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// Transport-wide counters (monotonic, Prometheus `_total` semantics). Relaxed atomics:
        /// each counter is exact, the set is not a consistent snapshot.
        #[derive(Debug, Default)]
        pub struct TransportStats {
            $( $(#[$doc])* pub $name: AtomicU64, )*
        }

        /// A plain copy of [`TransportStats`] at one moment.
        #[derive(Debug, Default, Clone, PartialEq, Eq)]
        pub struct TransportStatsSnapshot {
            $( $(#[$doc])* pub $name: u64, )*
        }

        impl TransportStats {
            pub fn snapshot(&self) -> TransportStatsSnapshot {
                TransportStatsSnapshot {
                    $( $name: self.$name.load(Ordering::Relaxed), )*
                }
            }
        }
    };
}

counters! {
    /// Connections that passed the handshake and the allow-list (both directions).
    connections_established_total,
    /// Handshakes that failed for any reason (including the refusals counted below).
    handshakes_failed_total,
    /// Peer certificates refused because no configured CA signed them (either direction).
    refused_unknown_ca_total,
    /// Peer certificates refused for another reason: expired, wrong name, wrong usage, malformed.
    refused_bad_certificate_total,
    /// Connections closed after the handshake because the peer's identity is not configured.
    refused_identity_not_allowed_total,
    /// Frames written to a stream (acknowledged by QUIC or not).
    frames_sent_total,
    /// Payload bytes of those frames (length prefixes excluded).
    bytes_sent_total,
    /// Stream writes; `frames_sent_total / write_batches_total` is the mean batch size.
    write_batches_total,
    /// Frames delivered to the inbound queue.
    frames_received_total,
    /// Payload bytes of those frames.
    bytes_received_total,
    /// Inbound frames longer than `frame_bytes_max`: their stream is stopped, the connection
    /// and the other channels carry on.
    frames_oversized_rejected_total,
    /// Inbound streams refused because their header was not a tern stream header.
    streams_rejected_total,
    /// `send` calls refused because the peer's channel queue was full.
    send_queue_full_total,
    /// Frames taken from a queue whose write failed because the connection or stream broke.
    /// Delivery is at most once: the protocols above acknowledge and resend.
    frames_lost_on_disconnect_total,
}

pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// The state of one configured peer.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerStatus {
    pub identity: Identity,
    /// Where we dial it (as configured: an IP or a DNS name); `None` when we only accept from it.
    pub addr: Option<super::addr::PeerAddr>,
    /// What `addr` resolved to for the last dial; `None` before the first one.
    pub dialed_addr: Option<std::net::SocketAddr>,
    /// True when this side dials the peer (see [`super::endpoint::Transport`] for the rule).
    pub dials: bool,
    pub connected: bool,
    /// Unix time (ms) of the last change between connected and disconnected; `None` if it never
    /// connected.
    pub since_unix_ms: Option<u64>,
    /// Connections established after the first one.
    pub reconnects: u64,
    /// Smoothed round-trip time from QUIC, when connected.
    pub rtt_us: Option<u64>,
    /// Why the last connection ended or the last dial failed.
    pub last_error: Option<String>,
    /// Frames waiting in each channel's send queue, in [`Channel::ALL`] order.
    pub queued_frames: [usize; Channel::COUNT],
}
