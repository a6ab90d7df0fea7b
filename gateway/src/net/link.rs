//! One WAN link: a QUIC connection and its single bidirectional stream, carrying wire frames.
use std::sync::Arc;
use std::time::Duration;

use crate::wire::{FrameDecoder, Message, encode_into};

use super::WanNetError;

/// Application close code of a deliberate [`WanLink::close`]: the peer's `recv` sees a clean end.
pub(crate) const CLOSE_NORMAL: u32 = 0;
/// Application close code of a connection the acceptor refused (site not allowed, not a site).
pub(crate) const CLOSE_REFUSED: u32 = 1;

/// Largest piece read from the stream at once; the decoder reassembles frames across pieces.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// A link to one peer site. `tx` and `rx` may be moved apart (e.g. into two tasks); the
/// connection stays up while any of the three is alive, or until [`WanLink::close`].
#[derive(Debug)]
pub struct WanLink {
    pub tx: WanSender,
    pub rx: WanReceiver,
    connection: quinn::Connection,
    peer_site: Arc<str>,
}

impl WanLink {
    pub(crate) fn new(
        connection: quinn::Connection,
        peer_site: &str,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
        frame_bytes_max: usize,
    ) -> Self {
        let peer_site: Arc<str> = peer_site.into();
        Self {
            tx: WanSender {
                stream: send,
                peer_site: peer_site.clone(),
                frame_bytes_max,
                buffer: Vec::new(),
            },
            rx: WanReceiver {
                stream: recv,
                peer_site: peer_site.clone(),
                decoder: FrameDecoder::new(frame_bytes_max),
                ended: false,
            },
            connection,
            peer_site,
        }
    }

    /// Closes the connection at once (data not yet delivered may be lost). The peer's `recv`
    /// returns `Ok(None)`, as for a finished stream.
    pub fn close(&self) {
        self.connection
            .close(quinn::VarInt::from_u32(CLOSE_NORMAL), b"link closed");
    }

    /// The site at the other end, as named by its certificate.
    pub fn peer_site(&self) -> &str {
        &self.peer_site
    }

    /// Current smoothed round-trip time estimate.
    pub fn rtt(&self) -> Duration {
        self.connection.rtt()
    }

    /// The underlying connection (for stats, or to wait on `closed()`).
    pub fn connection(&self) -> &quinn::Connection {
        &self.connection
    }
}

/// Sending half of a link.
#[derive(Debug)]
pub struct WanSender {
    stream: quinn::SendStream,
    peer_site: Arc<str>,
    frame_bytes_max: usize,
    /// Reused between sends to avoid an allocation per batch.
    buffer: Vec<u8>,
}

impl WanSender {
    /// Encodes each message as one frame and writes them all with one write. Nothing is written
    /// if any message does not encode (e.g. exceeds `frame_bytes_max`). Errors when the link is
    /// gone. Not cancel-safe: a cancelled send may have written part of the frames, so the link
    /// must then be dropped.
    pub async fn send(&mut self, messages: &[Message]) -> Result<(), WanNetError> {
        self.buffer.clear();
        for message in messages {
            encode_into(message, self.frame_bytes_max, &mut self.buffer).map_err(|source| {
                WanNetError::Encode {
                    site: self.peer_site.to_string(),
                    source,
                }
            })?;
        }
        let written = self.stream.write_all(&self.buffer).await;
        // Don't keep a 32 MiB buffer around after one huge frame.
        if self.buffer.capacity() > 4 * 1024 * 1024 {
            self.buffer = Vec::new();
        }
        written.map_err(|source| WanNetError::Write {
            site: self.peer_site.to_string(),
            source,
        })
    }

    /// Ends the stream cleanly after what was sent: the peer's `recv` returns `Ok(None)` once it
    /// has read everything. Further sends fail.
    pub fn finish(&mut self) {
        // Already finished or reset: nothing left to end.
        let _ = self.stream.finish();
    }
}

/// Receiving half of a link.
#[derive(Debug)]
pub struct WanReceiver {
    stream: quinn::RecvStream,
    peer_site: Arc<str>,
    decoder: FrameDecoder,
    /// Set once the peer ended cleanly, so later calls keep answering `Ok(None)`.
    ended: bool,
}

impl WanReceiver {
    /// The next message. `Ok(None)` when the peer finished its stream or closed the link with
    /// [`WanLink::close`]; `Err` on a bad frame (over `frame_bytes_max`, unknown kind, bad
    /// payload), a frame cut short, or a lost connection (refused, idle timeout, reset).
    /// Errors are final: the link must be dropped. Cancel-safe (usable in `select!`).
    pub async fn recv(&mut self) -> Result<Option<Message>, WanNetError> {
        loop {
            if self.ended {
                return Ok(None);
            }
            if let Some(message) =
                self.decoder
                    .next_message()
                    .map_err(|source| WanNetError::Decode {
                        site: self.peer_site.to_string(),
                        source,
                    })?
            {
                return Ok(Some(message));
            }
            // Cancel-safe: quinn hands out a chunk only when the future completes, and the
            // decoder is only touched after that.
            match self.stream.read_chunk(READ_CHUNK_BYTES, true).await {
                Ok(Some(chunk)) => self.decoder.push(&chunk.bytes),
                Ok(None) => return self.finished(),
                Err(quinn::ReadError::ConnectionLost(
                    quinn::ConnectionError::ApplicationClosed(close),
                )) if close.error_code == quinn::VarInt::from_u32(CLOSE_NORMAL) => {
                    return self.finished();
                }
                Err(source) => {
                    return Err(WanNetError::Read {
                        site: self.peer_site.to_string(),
                        source,
                    });
                }
            }
        }
    }

    fn finished(&mut self) -> Result<Option<Message>, WanNetError> {
        match self.decoder.buffered_bytes() {
            0 => {
                self.ended = true;
                Ok(None)
            }
            bytes => Err(WanNetError::Truncated {
                site: self.peer_site.to_string(),
                bytes,
            }),
        }
    }
}
