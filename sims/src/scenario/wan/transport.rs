//! The WAN transport model: one connection per link (source delegator ↔ target sink) carrying
//! two reliable, ordered byte streams, standing in for a QUIC connection with one long-lived
//! stream each way.
//!
//! Frames from the real encoder are appended to a stream and cut into chunks of random size
//! (not aligned to frames), each sent as one network message, so the network's loss,
//! duplication and reordering hit pieces of frames. The receiver reassembles by offset, drops
//! duplicates, feeds the contiguous prefix into the real [`FrameDecoder`] and acknowledges
//! cumulatively; the sender retransmits unacknowledged chunks after `rto`, and declares the
//! connection dead after `dead_after` without progress (what a QUIC idle timeout does). The
//! gateway cores therefore see what they would over QUIC: delays, and connections that drop
//! and reconnect (after which the delegator resends and the sink deduplicates).
//!
//! Transport timing uses global simulated time: it models the network stack, not a core.
use crate::rng::SimRng;
use crate::time::SimTime;
use bytes::Bytes;
use std::collections::BTreeMap;
use tern_gateway::wire::{FrameDecoder, Message, WireError};

/// Knobs of the transport model.
#[derive(Clone, Copy, Debug)]
pub struct TransportConfig {
    /// Chunks are 1..=this many bytes.
    pub chunk_bytes_max: u64,
    /// Unacknowledged chunks are sent again after this long without progress.
    pub rto_us: u64,
    /// A connection with data outstanding and no progress for this long is dead.
    pub dead_after_us: u64,
    /// A connect attempt without answer is retried (with a new connection id) after this long.
    pub connect_retry_us: u64,
    /// The dialer pings its connections this often (QUIC keep-alive).
    pub keepalive_us: u64,
    pub frame_bytes_max: usize,
}

/// Sending half of one byte stream.
#[derive(Debug)]
pub struct StreamTx {
    next_offset: u64,
    acked: u64,
    /// Chunks sent and not yet acknowledged, by offset (retransmitted with the same bounds).
    unacked: BTreeMap<u64, Bytes>,
    /// When `acked` last advanced (or the first outstanding chunk was sent).
    progress_at: SimTime,
    retransmit_at: SimTime,
}

impl StreamTx {
    pub fn new(now: SimTime) -> Self {
        Self {
            next_offset: 0,
            acked: 0,
            unacked: BTreeMap::new(),
            progress_at: now,
            retransmit_at: SimTime::NEVER,
        }
    }

    /// Append `bytes` to the stream, cut into chunks to transmit: `(offset, chunk)`.
    pub fn write(
        &mut self,
        bytes: &[u8],
        rng: &mut SimRng,
        config: &TransportConfig,
        now: SimTime,
    ) -> Vec<(u64, Bytes)> {
        if self.unacked.is_empty() {
            self.progress_at = now;
            self.retransmit_at = now.after_micros(config.rto_us);
        }
        let mut chunks = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let len = (rng.between(1, config.chunk_bytes_max) as usize).min(rest.len());
            let (chunk, tail) = rest.split_at(len);
            rest = tail;
            let chunk = Bytes::copy_from_slice(chunk);
            self.unacked.insert(self.next_offset, chunk.clone());
            chunks.push((self.next_offset, chunk));
            self.next_offset += len as u64;
        }
        chunks
    }

    /// The receiver holds every byte before `offset`.
    pub fn on_ack(&mut self, offset: u64, config: &TransportConfig, now: SimTime) {
        if offset <= self.acked || offset > self.next_offset {
            return;
        }
        self.acked = offset;
        self.progress_at = now;
        self.retransmit_at = now.after_micros(config.rto_us);
        while let Some(entry) = self.unacked.first_entry() {
            if *entry.key() + entry.get().len() as u64 > offset {
                break;
            }
            entry.remove();
        }
    }

    /// Chunks to send again, if the retransmission timer is due.
    pub fn due_retransmit(&mut self, config: &TransportConfig, now: SimTime) -> Vec<(u64, Bytes)> {
        if self.unacked.is_empty() || now < self.retransmit_at {
            return Vec::new();
        }
        self.retransmit_at = now.after_micros(config.rto_us);
        self.unacked
            .iter()
            .map(|(&offset, chunk)| (offset, chunk.clone()))
            .collect()
    }

    /// Data is outstanding and nothing moved for `dead_after`.
    pub fn is_dead(&self, config: &TransportConfig, now: SimTime) -> bool {
        !self.unacked.is_empty() && now >= self.progress_at.after_micros(config.dead_after_us)
    }

    /// When this stream next needs attention (retransmission or death), if ever.
    pub fn deadline(&self, config: &TransportConfig) -> Option<SimTime> {
        if self.unacked.is_empty() {
            return None;
        }
        Some(
            self.retransmit_at
                .min(self.progress_at.after_micros(config.dead_after_us)),
        )
    }
}

/// Receiving half of one byte stream.
#[derive(Debug)]
pub struct StreamRx {
    delivered: u64,
    pending: BTreeMap<u64, Bytes>,
    decoder: FrameDecoder,
}

impl StreamRx {
    pub fn new(config: &TransportConfig) -> Self {
        Self {
            delivered: 0,
            pending: BTreeMap::new(),
            decoder: FrameDecoder::new(config.frame_bytes_max),
        }
    }

    /// Bytes received in order so far: the cumulative ack to send back.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Take one chunk; returns the whole messages it completed, in stream order.
    pub fn on_chunk(&mut self, offset: u64, bytes: Bytes) -> Result<Vec<Message>, WireError> {
        if offset >= self.delivered {
            self.pending.entry(offset).or_insert(bytes);
        }
        let mut messages = Vec::new();
        while let Some(chunk) = self.pending.remove(&self.delivered) {
            self.delivered += chunk.len() as u64;
            self.decoder.push(&chunk);
            while let Some(message) = self.decoder.next_message()? {
                messages.push(message);
            }
        }
        Ok(messages)
    }
}

/// One open connection of a link, from one end's point of view.
#[derive(Debug)]
pub struct Conn {
    pub id: u64,
    pub tx: StreamTx,
    pub rx: StreamRx,
}

impl Conn {
    pub fn new(id: u64, config: &TransportConfig, now: SimTime) -> Self {
        Self {
            id,
            tx: StreamTx::new(now),
            rx: StreamRx::new(config),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_conflict::SiteId;
    use tern_gateway::wire::{Hello, encode};

    fn config() -> TransportConfig {
        TransportConfig {
            chunk_bytes_max: 7,
            rto_us: 1_000,
            dead_after_us: 5_000,
            connect_retry_us: 1_000,
            keepalive_us: 2_000,
            frame_bytes_max: 1 << 20,
        }
    }

    fn hello(site: u16) -> Message {
        Message::Hello(Hello {
            site: SiteId(site),
            target: SiteId(9),
            protocol_version: 1,
        })
    }

    #[test]
    fn chunks_in_any_order_and_duplicated_decode_to_the_frames_in_order() {
        let config = config();
        let mut rng = SimRng::from_seed(3);
        let now = SimTime::ZERO;
        let mut tx = StreamTx::new(now);
        let mut chunks = Vec::new();
        for site in 1..=3 {
            let frame = encode(&hello(site), config.frame_bytes_max).expect("small frame");
            chunks.extend(tx.write(&frame, &mut rng, &config, now));
        }
        assert!(chunks.len() > 3, "frames are split across chunks");
        // Reverse order, each twice.
        let mut rx = StreamRx::new(&config);
        let mut got = Vec::new();
        for (offset, chunk) in chunks.iter().rev().chain(chunks.iter()) {
            got.extend(rx.on_chunk(*offset, chunk.clone()).expect("valid stream"));
        }
        assert_eq!(got, vec![hello(1), hello(2), hello(3)]);
        tx.on_ack(rx.delivered(), &config, now);
        assert_eq!(tx.deadline(&config), None, "everything acknowledged");
    }

    #[test]
    fn unacknowledged_chunks_are_resent_and_the_stream_dies_without_progress() {
        let config = config();
        let mut rng = SimRng::from_seed(4);
        let mut tx = StreamTx::new(SimTime::ZERO);
        let sent = tx.write(b"0123456789abcdef", &mut rng, &config, SimTime::ZERO);
        assert!(
            tx.due_retransmit(&config, SimTime::from_micros(999))
                .is_empty()
        );
        let again = tx.due_retransmit(&config, SimTime::from_micros(1_000));
        assert_eq!(again, sent);
        let first_len = sent[0].1.len() as u64;
        tx.on_ack(first_len, &config, SimTime::from_micros(1_500));
        let rest = tx.due_retransmit(&config, SimTime::from_micros(2_500));
        assert_eq!(rest, sent[1..].to_vec());
        assert!(!tx.is_dead(&config, SimTime::from_micros(6_000)));
        assert!(tx.is_dead(&config, SimTime::from_micros(6_500)));
    }
}
