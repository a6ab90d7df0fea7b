//! The versioned envelope around everything this module persists or replicates (map snapshots,
//! Raft entries holding map commands): `magic (4 bytes) | format version (u16 LE) | postcard`.
//! A reader refuses an unknown magic or version with a clear error instead of misreading bytes
//! written by another release.
use serde::{Serialize, de::DeserializeOwned};

/// What an envelope holds; each kind has its own magic so a snapshot is never read as a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnvelopeKind {
    /// A whole `PartitionMap` (Raft snapshot data).
    MapSnapshot,
    /// One `MapCommand` (Raft entry data).
    MapCommand,
    /// One record of the file-backed Raft log.
    LogRecord,
}

impl EnvelopeKind {
    const fn magic(self) -> [u8; 4] {
        match self {
            Self::MapSnapshot => *b"TMAP",
            Self::MapCommand => *b"TCMD",
            Self::LogRecord => *b"TLOG",
        }
    }
}

/// The only format version this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;

const HEADER_LEN: usize = 6;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("decode {kind:?}: too short for an envelope ({len} bytes)")]
    Truncated { kind: EnvelopeKind, len: usize },
    #[error("decode {kind:?}: wrong magic {found:?}")]
    BadMagic { kind: EnvelopeKind, found: [u8; 4] },
    #[error(
        "decode {kind:?}: format version {found} is not supported (this build reads {FORMAT_VERSION})"
    )]
    UnsupportedVersion { kind: EnvelopeKind, found: u16 },
    #[error("decode {kind:?}: {reason}")]
    Body { kind: EnvelopeKind, reason: String },
    #[error("encode {kind:?}: {reason}")]
    Encode { kind: EnvelopeKind, reason: String },
}

pub fn encode<T: Serialize>(kind: EnvelopeKind, value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&kind.magic());
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    postcard::to_io(value, &mut out).map_err(|e| CodecError::Encode {
        kind,
        reason: e.to_string(),
    })?;
    Ok(out)
}

pub fn decode<T: DeserializeOwned>(kind: EnvelopeKind, bytes: &[u8]) -> Result<T, CodecError> {
    let Some((header, body)) = bytes.split_first_chunk::<HEADER_LEN>() else {
        return Err(CodecError::Truncated {
            kind,
            len: bytes.len(),
        });
    };
    let [m0, m1, m2, m3, v0, v1] = *header;
    let magic = [m0, m1, m2, m3];
    if magic != kind.magic() {
        return Err(CodecError::BadMagic { kind, found: magic });
    }
    let version = u16::from_le_bytes([v0, v1]);
    if version != FORMAT_VERSION {
        return Err(CodecError::UnsupportedVersion {
            kind,
            found: version,
        });
    }
    postcard::from_bytes(body).map_err(|e| CodecError::Body {
        kind,
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_foreign_bytes() {
        let bytes = encode(EnvelopeKind::MapCommand, &(1u32, "x".to_string())).expect("encode");
        assert_eq!(
            decode::<(u32, String)>(EnvelopeKind::MapCommand, &bytes),
            Ok((1, "x".to_string()))
        );
        assert!(matches!(
            decode::<(u32, String)>(EnvelopeKind::MapSnapshot, &bytes),
            Err(CodecError::BadMagic { .. })
        ));
        let mut future = bytes.clone();
        future[4] = 9;
        let err = decode::<(u32, String)>(EnvelopeKind::MapCommand, &future).expect_err("v9");
        assert_eq!(
            err,
            CodecError::UnsupportedVersion {
                kind: EnvelopeKind::MapCommand,
                found: 9
            }
        );
        assert!(
            err.to_string()
                .contains("format version 9 is not supported")
        );
        assert!(matches!(
            decode::<u32>(EnvelopeKind::MapCommand, b"TC"),
            Err(CodecError::Truncated { len: 2, .. })
        ));
        assert!(matches!(
            decode::<(u32, String)>(EnvelopeKind::MapCommand, &bytes[..bytes.len() - 1]),
            Err(CodecError::Body { .. })
        ));
    }
}
