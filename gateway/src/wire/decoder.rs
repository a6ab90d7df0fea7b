//! Streaming frame decoder: bytes arrive in arbitrary pieces (a QUIC stream), whole messages
//! come out.
use super::frame::{HEADER_BYTES, WireError, check_prefix, decode_payload, parse_header};
use super::message::Message;
use bytes::{Buf, BytesMut};

/// Accumulates stream bytes and yields whole messages.
///
/// After an error the stream's framing is lost: every later call returns the same error and the
/// connection must be closed.
#[derive(Debug)]
pub struct FrameDecoder {
    buffer: BytesMut,
    frame_bytes_max: usize,
    failed: Option<WireError>,
}

impl FrameDecoder {
    pub fn new(frame_bytes_max: usize) -> Self {
        Self {
            buffer: BytesMut::new(),
            frame_bytes_max,
            failed: None,
        }
    }

    /// Buffer bytes read from the stream. Call [`Self::next_message`] until it returns
    /// `Ok(None)` after each push, so at most one partial frame stays buffered.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_none() {
            self.buffer.extend_from_slice(bytes);
        }
    }

    /// The next whole message, `Ok(None)` if more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<Message>, WireError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        let result = self.take_message();
        if let Err(error) = &result {
            self.failed = Some(error.clone());
            self.buffer = BytesMut::new();
        }
        result
    }

    /// Bytes received but not yet returned as a message.
    pub fn buffered_bytes(&self) -> usize {
        self.buffer.len()
    }

    fn take_message(&mut self) -> Result<Option<Message>, WireError> {
        let Some(header) = self.buffer.first_chunk::<HEADER_BYTES>() else {
            check_prefix(&self.buffer)?;
            return Ok(None);
        };
        let header = parse_header(header, self.frame_bytes_max)?;
        if self.buffer.len() < header.frame_bytes() {
            // Make room once for the whole frame rather than growing piece by piece.
            self.buffer
                .reserve(header.frame_bytes() - self.buffer.len());
            return Ok(None);
        }
        self.buffer.advance(HEADER_BYTES);
        let payload = self.buffer.split_to(header.payload_bytes);
        decode_payload(header.kind, &payload).map(Some)
    }
}
