//! The frame envelope: `b"TRNW"` · format version (u16 LE) · kind (u8) · payload length (u32 LE)
//! · postcard payload. Encoding and one-shot decoding of a single frame.
use super::message::{Ack, Batch, Hello, HelloAck, Message, MessageKind};
use super::sync::{DigestReply, DigestRequest, RangeEntries, RangeRequest};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// First four bytes of every frame.
pub const MAGIC: [u8; 4] = *b"TRNW";
/// Version of the envelope and payload encoding. Decoders reject any other.
pub const FORMAT_VERSION: u16 = 1;
/// Magic (4) + format version (2) + kind (1) + payload length (4).
pub const HEADER_BYTES: usize = 11;

/// Why bytes could not be decoded into a message. The connection they came from must be
/// closed: framing is lost after any of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("bad frame magic {found:02x?}, expected {MAGIC:02x?} (not a tern WAN peer?)")]
    BadMagic { found: [u8; 4] },
    #[error("unsupported wire format version {found}; this build speaks version {FORMAT_VERSION}")]
    UnsupportedVersion { found: u16 },
    #[error("unknown message kind {0}; the peer speaks a newer protocol than agreed")]
    UnknownKind(u8),
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge { len: u64, max: usize },
    #[error("frame truncated: need {needed} bytes, have {available}")]
    Truncated { needed: u64, available: usize },
    #[error("{count} unexpected bytes after the end of the frame")]
    TrailingBytes { count: usize },
    #[error("{kind:?} payload has {count} unexpected bytes after the message")]
    PayloadTrailingBytes { kind: MessageKind, count: usize },
    #[error("could not decode {kind:?} payload: {source}")]
    Payload {
        kind: MessageKind,
        source: postcard::Error,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("{kind:?} frame of {len} bytes would exceed the maximum of {max} bytes")]
    FrameTooLarge {
        kind: MessageKind,
        len: usize,
        max: usize,
    },
    #[error("could not encode {kind:?} payload: {source}")]
    Payload {
        kind: MessageKind,
        source: postcard::Error,
    },
}

/// A validated frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub kind: MessageKind,
    pub payload_bytes: usize,
}

impl FrameHeader {
    pub fn frame_bytes(&self) -> usize {
        HEADER_BYTES + self.payload_bytes
    }
}

/// Parse and check the header at the start of `bytes` (at least [`HEADER_BYTES`] long).
/// Checks run in header order, so the first bad field is the one reported.
pub fn parse_header(
    bytes: &[u8; HEADER_BYTES],
    frame_bytes_max: usize,
) -> Result<FrameHeader, WireError> {
    let [m0, m1, m2, m3, v0, v1, kind, l0, l1, l2, l3] = *bytes;
    let magic = [m0, m1, m2, m3];
    if magic != MAGIC {
        return Err(WireError::BadMagic { found: magic });
    }
    let version = u16::from_le_bytes([v0, v1]);
    if version != FORMAT_VERSION {
        return Err(WireError::UnsupportedVersion { found: version });
    }
    let kind = MessageKind::from_byte(kind).ok_or(WireError::UnknownKind(kind))?;
    let payload_bytes = u32::from_le_bytes([l0, l1, l2, l3]);
    let frame_bytes = u64::from(payload_bytes) + HEADER_BYTES as u64;
    if frame_bytes > frame_bytes_max as u64 {
        return Err(WireError::FrameTooLarge {
            len: frame_bytes,
            max: frame_bytes_max,
        });
    }
    // Fits: frame_bytes <= frame_bytes_max, a usize.
    let payload_bytes = usize::try_from(payload_bytes).unwrap_or(usize::MAX);
    Ok(FrameHeader {
        kind,
        payload_bytes,
    })
}

/// Append `message` as one frame to `out`. On error `out` is left as it was.
pub fn encode_into(
    message: &Message,
    frame_bytes_max: usize,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let start = out.len();
    let result = write_frame(message, frame_bytes_max, out);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// `message` as one frame.
pub fn encode(message: &Message, frame_bytes_max: usize) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    encode_into(message, frame_bytes_max, &mut out)?;
    Ok(out)
}

fn write_frame(
    message: &Message,
    frame_bytes_max: usize,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let kind = message.kind();
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.push(kind as u8);
    out.extend_from_slice(&[0; 4]); // payload length, patched below
    let payload_start = out.len();
    let written = match message {
        Message::Hello(m) => append_payload(m, out),
        Message::HelloAck(m) => append_payload(m, out),
        Message::Batch(m) => append_payload(m, out),
        Message::Ack(m) => append_payload(m, out),
        Message::DigestRequest(m) => append_payload(m, out),
        Message::DigestReply(m) => append_payload(m, out),
        Message::RangeRequest(m) => append_payload(m, out),
        Message::RangeEntries(m) => append_payload(m, out),
    };
    written.map_err(|source| EncodeError::Payload { kind, source })?;
    let frame_bytes = out.len() - start;
    let payload_bytes = u32::try_from(out.len() - payload_start);
    let payload_bytes = match payload_bytes {
        Ok(len) if frame_bytes <= frame_bytes_max => len,
        _ => {
            return Err(EncodeError::FrameTooLarge {
                kind,
                len: frame_bytes,
                max: frame_bytes_max,
            });
        }
    };
    out[payload_start - 4..payload_start].copy_from_slice(&payload_bytes.to_le_bytes());
    Ok(())
}

fn append_payload<T: Serialize>(value: &T, out: &mut Vec<u8>) -> Result<(), postcard::Error> {
    // `to_extend` takes the writer by value; swap the buffer out and back to avoid a copy.
    let buffer = std::mem::take(out);
    *out = postcard::to_extend(value, buffer)?;
    Ok(())
}

/// The size `message` encodes to (header included), without encoding it.
pub fn encoded_len(message: &Message) -> usize {
    use postcard::experimental::serialized_size;
    let payload = match message {
        Message::Hello(m) => serialized_size(m),
        Message::HelloAck(m) => serialized_size(m),
        Message::Batch(m) => serialized_size(m),
        Message::Ack(m) => serialized_size(m),
        Message::DigestRequest(m) => serialized_size(m),
        Message::DigestReply(m) => serialized_size(m),
        Message::RangeRequest(m) => serialized_size(m),
        Message::RangeEntries(m) => serialized_size(m),
    };
    // Sizing into a counter cannot fail for these types; a failure would read as huge.
    HEADER_BYTES.saturating_add(payload.unwrap_or(usize::MAX))
}

/// Decode exactly one frame occupying all of `bytes`.
pub fn decode(bytes: &[u8], frame_bytes_max: usize) -> Result<Message, WireError> {
    let Some(header) = bytes.first_chunk::<HEADER_BYTES>() else {
        // Check what is there, so garbage is reported as such rather than as "truncated".
        check_prefix(bytes)?;
        return Err(WireError::Truncated {
            needed: HEADER_BYTES as u64,
            available: bytes.len(),
        });
    };
    let header = parse_header(header, frame_bytes_max)?;
    let body = &bytes[HEADER_BYTES..];
    if body.len() < header.payload_bytes {
        return Err(WireError::Truncated {
            needed: header.frame_bytes() as u64,
            available: bytes.len(),
        });
    }
    if body.len() > header.payload_bytes {
        return Err(WireError::TrailingBytes {
            count: body.len() - header.payload_bytes,
        });
    }
    decode_payload(header.kind, body)
}

/// Reject a header prefix (shorter than [`HEADER_BYTES`]) whose fields are already wrong, so
/// garbage is reported as such without waiting for more bytes.
pub(super) fn check_prefix(bytes: &[u8]) -> Result<(), WireError> {
    let magic_len = bytes.len().min(MAGIC.len());
    if bytes[..magic_len] != MAGIC[..magic_len] {
        let mut found = [0u8; 4];
        found[..magic_len].copy_from_slice(&bytes[..magic_len]);
        return Err(WireError::BadMagic { found });
    }
    if let [_, _, _, _, v0, v1, ..] = *bytes {
        let found = u16::from_le_bytes([v0, v1]);
        if found != FORMAT_VERSION {
            return Err(WireError::UnsupportedVersion { found });
        }
    }
    if let Some(&kind) = bytes.get(6) {
        MessageKind::from_byte(kind).ok_or(WireError::UnknownKind(kind))?;
    }
    Ok(())
}

/// Decode the payload of a frame whose header said `kind`; all of `payload` must be used.
pub fn decode_payload(kind: MessageKind, payload: &[u8]) -> Result<Message, WireError> {
    Ok(match kind {
        MessageKind::Hello => Message::Hello(take_all::<Hello>(kind, payload)?),
        MessageKind::HelloAck => Message::HelloAck(take_all::<HelloAck>(kind, payload)?),
        MessageKind::Batch => Message::Batch(take_all::<Batch>(kind, payload)?),
        MessageKind::Ack => Message::Ack(take_all::<Ack>(kind, payload)?),
        MessageKind::DigestRequest => {
            Message::DigestRequest(take_all::<DigestRequest>(kind, payload)?)
        }
        MessageKind::DigestReply => Message::DigestReply(take_all::<DigestReply>(kind, payload)?),
        MessageKind::RangeRequest => {
            Message::RangeRequest(take_all::<RangeRequest>(kind, payload)?)
        }
        MessageKind::RangeEntries => {
            Message::RangeEntries(take_all::<RangeEntries>(kind, payload)?)
        }
    })
}

fn take_all<T: DeserializeOwned>(kind: MessageKind, payload: &[u8]) -> Result<T, WireError> {
    let (value, rest) = postcard::take_from_bytes::<T>(payload)
        .map_err(|source| WireError::Payload { kind, source })?;
    if !rest.is_empty() {
        return Err(WireError::PayloadTrailingBytes {
            kind,
            count: rest.len(),
        });
    }
    Ok(value)
}
