//! Transport configuration: limits (serde, with defaults) and the peers to talk to.
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::addr::PeerAddr;
use super::identity::Identity;
use super::tls::TlsMaterial;

/// Every limit and timing of the transport. Names end in their unit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransportLimits {
    /// Largest frame payload, enforced by the sender (`send` fails) and the receiver (the stream
    /// is stopped). At most `u32::MAX` (the length prefix).
    pub frame_bytes_max: usize,
    /// Frames queued per (peer, channel) before `send` returns `QueueFull`.
    pub send_queue_frames_max: usize,
    /// Frames received from all peers waiting for the consumer; when full, readers stop reading
    /// and QUIC flow control pushes back on the senders.
    pub inbound_queue_frames_max: usize,
    /// Most queued frames written by one stream write.
    pub write_batch_frames_max: usize,
    /// QUIC PING interval while otherwise idle, so idle links stay warm and loss shows quickly.
    pub keep_alive_interval_ms: u64,
    /// A connection that hears nothing for this long is dead (QUIC idle timeout; the smaller of
    /// both sides' values applies).
    pub idle_timeout_ms: u64,
    /// Longest a dial (QUIC + TLS handshake) may take.
    pub connect_timeout_ms: u64,
    /// First wait before redialing a peer after a failure; doubles up to the max.
    pub reconnect_backoff_min_ms: u64,
    /// Longest wait between dials.
    pub reconnect_backoff_max_ms: u64,
}

impl Default for TransportLimits {
    fn default() -> Self {
        Self {
            frame_bytes_max: 16 * 1024 * 1024,
            send_queue_frames_max: 4096,
            inbound_queue_frames_max: 8192,
            write_batch_frames_max: 1024,
            // Keepalive well under the idle timeout so a live but quiet peer is never timed out,
            // and a dead one is noticed within ~1 s (the failover budget in site-ha.md).
            keep_alive_interval_ms: 200,
            idle_timeout_ms: 1000,
            connect_timeout_ms: 2000,
            reconnect_backoff_min_ms: 50,
            reconnect_backoff_max_ms: 2000,
        }
    }
}

impl TransportLimits {
    /// Checks the relations between limits that quinn or the framing rely on.
    pub fn validate(&self) -> Result<(), String> {
        if self.frame_bytes_max > u32::MAX as usize {
            return Err("frame_bytes_max must fit the u32 length prefix".into());
        }
        for (name, value) in [
            ("send_queue_frames_max", self.send_queue_frames_max),
            ("inbound_queue_frames_max", self.inbound_queue_frames_max),
            ("write_batch_frames_max", self.write_batch_frames_max),
        ] {
            if value == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        if self.keep_alive_interval_ms == 0 || self.keep_alive_interval_ms >= self.idle_timeout_ms {
            return Err("keep_alive_interval_ms must be > 0 and < idle_timeout_ms".into());
        }
        if self.reconnect_backoff_min_ms == 0
            || self.reconnect_backoff_min_ms > self.reconnect_backoff_max_ms
        {
            return Err(
                "reconnect_backoff_min_ms must be > 0 and <= reconnect_backoff_max_ms".into(),
            );
        }
        Ok(())
    }
}

/// A peer this transport talks to; being configured is what puts it in the allow-list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerConfig {
    pub identity: Identity,
    /// Where to dial it (an IP or a DNS name, resolved again before every dial). Only the side
    /// whose identity sorts first dials, so the other side may leave this out.
    pub addr: Option<PeerAddr>,
}

/// Everything [`super::Transport::bind`] needs.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// UDP address to bind (`127.0.0.x:0` in tests).
    pub bind_addr: SocketAddr,
    /// Trust roots, own certificate chain and key. The own identity is read from the certificate.
    pub tls: TlsMaterial,
    pub peers: Vec<PeerConfig>,
    pub limits: TransportLimits,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_broken_relations_are_refused() {
        assert_eq!(TransportLimits::default().validate(), Ok(()));
        type Break = fn(&mut TransportLimits);
        let broken: &[(&str, Break)] = &[
            ("frame over u32", |l| {
                l.frame_bytes_max = u32::MAX as usize + 1
            }),
            ("empty send queue", |l| l.send_queue_frames_max = 0),
            ("empty inbound queue", |l| l.inbound_queue_frames_max = 0),
            ("empty batch", |l| l.write_batch_frames_max = 0),
            ("keepalive >= idle", |l| {
                l.keep_alive_interval_ms = l.idle_timeout_ms
            }),
            ("zero keepalive", |l| l.keep_alive_interval_ms = 0),
            ("zero backoff", |l| l.reconnect_backoff_min_ms = 0),
            ("min > max backoff", |l| {
                l.reconnect_backoff_min_ms = l.reconnect_backoff_max_ms + 1
            }),
        ];
        for (case, breaks) in broken {
            let mut limits = TransportLimits::default();
            breaks(&mut limits);
            assert!(limits.validate().is_err(), "{case}");
        }
    }
}
