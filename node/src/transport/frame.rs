//! Wire framing on transport streams (pure; no I/O).
//!
//! Each side opens one unidirectional QUIC stream per (peer, channel) for what it sends, so
//! head-of-line blocking in one channel never stalls another. A stream starts with a 4-byte
//! header — magic `TN`, framing version, channel — followed by frames: a big-endian `u32` payload
//! length then the payload. Both sides enforce `frame_bytes_max` (the sender refuses, the
//! receiver stops the stream as soon as it reads an oversized length, before buffering it).
use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Bytes of the header that opens every stream.
pub const STREAM_HEADER_BYTES: usize = 4;
/// Bytes of the length prefix before each frame.
pub const FRAME_PREFIX_BYTES: usize = 4;
const MAGIC: [u8; 2] = *b"TN";
const FRAMING_VERSION: u8 = 1;
/// Frames up to this size are copied into one contiguous write buffer; larger ones are written
/// as their own chunk to avoid the copy.
const COPY_FRAME_BYTES_MAX: usize = 4096;

/// A logical lane between two peers; each has its own stream and send queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// Partition replication primary ↔ backups.
    Replication = 0,
    /// Raft messages and heartbeats.
    Control = 1,
    /// Client requests forwarded to a partition's primary, and their responses.
    Forward = 2,
    /// WAN gateway traffic between sites.
    Wan = 3,
}

impl Channel {
    pub const COUNT: usize = 4;
    pub const ALL: [Channel; Self::COUNT] = [
        Channel::Replication,
        Channel::Control,
        Channel::Forward,
        Channel::Wan,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn from_u8(tag: u8) -> Option<Self> {
        Self::ALL.get(usize::from(tag)).copied()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    #[error("not a tern stream (bad magic)")]
    BadMagic,
    #[error("unsupported framing version {0}")]
    UnsupportedVersion(u8),
    #[error("unknown channel {0}")]
    UnknownChannel(u8),
    #[error("frame of {bytes} bytes exceeds frame_bytes_max {max}")]
    TooLarge { bytes: u64, max: usize },
}

/// The header that opens a stream carrying `channel`.
pub fn stream_header(channel: Channel) -> [u8; STREAM_HEADER_BYTES] {
    [MAGIC[0], MAGIC[1], FRAMING_VERSION, channel as u8]
}

pub fn parse_stream_header(header: &[u8; STREAM_HEADER_BYTES]) -> Result<Channel, FrameError> {
    if header[..2] != MAGIC {
        return Err(FrameError::BadMagic);
    }
    if header[2] != FRAMING_VERSION {
        return Err(FrameError::UnsupportedVersion(header[2]));
    }
    Channel::from_u8(header[3]).ok_or(FrameError::UnknownChannel(header[3]))
}

/// Encodes `frames` (already checked against `frame_bytes_max`) as chunks for one
/// `write_all_chunks`: small frames share one buffer, large payloads are passed by reference.
pub fn encode_batch(frames: &[Bytes], chunks: &mut Vec<Bytes>) {
    let copied: usize = frames
        .iter()
        .map(|f| {
            FRAME_PREFIX_BYTES
                + if f.len() <= COPY_FRAME_BYTES_MAX {
                    f.len()
                } else {
                    0
                }
        })
        .sum();
    let mut buf = BytesMut::with_capacity(copied);
    for frame in frames {
        // Callers refuse frames over frame_bytes_max, which is at most u32::MAX.
        buf.put_u32(u32::try_from(frame.len()).expect("frame length checked at send"));
        if frame.len() <= COPY_FRAME_BYTES_MAX {
            buf.put_slice(frame);
        } else {
            chunks.push(buf.split().freeze());
            chunks.push(frame.clone());
        }
    }
    if !buf.is_empty() {
        chunks.push(buf.freeze());
    }
}

/// Splits a received byte stream back into frames.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    frame_bytes_max: usize,
}

impl FrameDecoder {
    pub fn new(frame_bytes_max: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            frame_bytes_max,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, `None` if more bytes are needed. An oversized length is an
    /// error as soon as the prefix is complete, so a hostile peer cannot make us buffer it.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        let Some(prefix) = self.buf.first_chunk::<FRAME_PREFIX_BYTES>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*prefix);
        let len_usize = usize::try_from(len).unwrap_or(usize::MAX);
        if len_usize > self.frame_bytes_max {
            return Err(FrameError::TooLarge {
                bytes: u64::from(len),
                max: self.frame_bytes_max,
            });
        }
        if self.buf.len() < FRAME_PREFIX_BYTES + len_usize {
            // Reserve once for the whole frame instead of growing chunk by chunk.
            self.buf
                .reserve(FRAME_PREFIX_BYTES + len_usize - self.buf.len());
            return Ok(None);
        }
        let _prefix = self.buf.split_to(FRAME_PREFIX_BYTES);
        Ok(Some(self.buf.split_to(len_usize).freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_rejects_garbage() {
        for channel in Channel::ALL {
            assert_eq!(parse_stream_header(&stream_header(channel)), Ok(channel));
        }
        let cases: &[([u8; 4], FrameError)] = &[
            (*b"XN\x01\x00", FrameError::BadMagic),
            (*b"TN\x02\x00", FrameError::UnsupportedVersion(2)),
            (*b"TN\x01\x04", FrameError::UnknownChannel(4)),
        ];
        for (header, expected) in cases {
            assert_eq!(parse_stream_header(header).as_ref(), Err(expected));
        }
    }

    #[test]
    fn batch_decodes_back_to_the_same_frames_whatever_the_split() {
        let frames: Vec<Bytes> = vec![
            Bytes::new(),
            Bytes::from_static(b"a"),
            Bytes::from(vec![7u8; COPY_FRAME_BYTES_MAX + 1]),
            Bytes::from(vec![9u8; 100]),
        ];
        let mut chunks = Vec::new();
        encode_batch(&frames, &mut chunks);
        let wire: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        for piece in [1, 3, 64, wire.len()] {
            let mut decoder = FrameDecoder::new(1 << 20);
            let mut got = Vec::new();
            for part in wire.chunks(piece) {
                decoder.push(part);
                while let Some(frame) = decoder.next_frame().expect("valid") {
                    got.push(frame);
                }
            }
            assert_eq!(got, frames, "split into pieces of {piece}");
        }
    }

    #[test]
    fn oversized_length_is_refused_before_its_payload_arrives() {
        let mut decoder = FrameDecoder::new(10);
        decoder.push(&11u32.to_be_bytes());
        assert_eq!(
            decoder.next_frame(),
            Err(FrameError::TooLarge { bytes: 11, max: 10 })
        );
        let mut decoder = FrameDecoder::new(10);
        decoder.push(&10u32.to_be_bytes());
        assert_eq!(decoder.next_frame(), Ok(None));
    }
}
