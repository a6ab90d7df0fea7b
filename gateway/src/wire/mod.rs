//! The WAN wire format: a versioned envelope around postcard.
//!
//! ```text
//! offset  size  field
//! 0       4     magic b"TRNW"
//! 4       2     format version, u16 LE (currently 1)
//! 6       1     message kind (1 Hello, 2 HelloAck, 3 Batch, 4 Ack; protocol 2: 5 DigestRequest,
//!               6 DigestReply, 7 RangeRequest, 8 RangeEntries; 9–11 retired, never reuse;
//!               12–15 reserved)
//! 7       4     payload length, u32 LE (frame ≤ frame_bytes_max)
//! 11      n     postcard payload of the kind's struct, nothing after it
//! ```
//!
//! - [`message`]: the message structs and the rules for adding kinds;
//! - [`sync`]: the Merkle repair messages (protocol version 2), also used to bootstrap a site;
//! - [`frame`]: encoding, one-shot decoding, [`WireError`];
//! - [`decoder`]: [`FrameDecoder`] for a byte stream that arrives in pieces.
pub mod decoder;
pub mod frame;
pub mod message;
pub mod sync;

#[cfg(test)]
mod tests;

pub use decoder::FrameDecoder;
pub use frame::{
    EncodeError, FORMAT_VERSION, FrameHeader, HEADER_BYTES, MAGIC, WireError, decode, encode,
    encode_into, encoded_len,
};
pub use message::{
    Ack, Batch, Hello, HelloAck, Message, MessageKind, PROTOCOL_VERSION, PROTOCOL_VERSION_MIN,
    WanRecord,
};
pub use sync::{
    Digest, DigestParams, DigestReply, DigestRequest, PositionRange, RangeEntries, RangeRequest,
    SYNC_PROTOCOL_VERSION, SyncEntry,
};
