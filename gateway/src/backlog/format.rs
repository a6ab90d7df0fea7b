//! On-disk byte layout: segment header, record frames, and the scan that validates them.
//!
//! ```text
//! segment  = header frame*
//! header   = magic "TERNBLOG" | version u16 | reserved u16 | segment id u64 | crc32 u32   (24 B)
//! frame    = len u32 | partition u16 | seq u64 | header crc32 u32 | payload crc32 u32 | payload
//! ```
//! All integers little-endian; CRC-32 (IEEE). The frame header has its own checksum so a
//! corrupted length is caught before it is trusted: a frame whose valid header points past the
//! end of the file is a torn tail, whereas a bad checksum with data after it is corruption.
use serde::{Deserialize, Serialize};

pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"TERNBLOG";
/// Format version written in every segment header; a reader refuses other versions (treated as
/// corruption: the target is marked for repair). 2: records hold counters keyed by (site,
/// lineage). 3: and version vectors keyed by (site, lineage).
pub const SEGMENT_FORMAT_VERSION: u16 = 3;
/// Bytes of the segment header.
pub const SEGMENT_HEADER_BYTES: u64 = 24;
/// Bytes a record adds to its payload.
pub const FRAME_HEADER_BYTES: u64 = 22;
const FRAME_HEADER_CHECKED_BYTES: usize = 14;

/// Why a segment cannot be trusted past some offset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CorruptionKind {
    /// The segment header's magic, checksum or segment id is wrong.
    BadHeader,
    /// The segment was written in a format version this build does not read.
    UnsupportedVersion(u16),
    /// A record's header checksum does not match, and data follows it.
    FrameHeaderChecksum,
    /// A record's payload checksum does not match.
    PayloadChecksum,
    /// A record's seq is not above the previous record of its partition.
    SeqOutOfOrder {
        partition: u16,
        seq: u64,
        previous: u64,
    },
}

/// A file name of segment `id`.
pub(crate) fn segment_name(id: u64) -> String {
    format!("{id:020}.seg")
}

pub(crate) fn quarantine_name(id: u64) -> String {
    format!("{id:020}.seg.corrupt")
}

/// What a directory entry is, from its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum FileKind {
    Segment(u64),
    Quarantined(u64),
    Cursors,
    CursorsTemp,
    Other,
}

pub(crate) const CURSORS_NAME: &str = "cursors";
pub(crate) const CURSORS_TEMP_NAME: &str = "cursors.tmp";

pub(crate) fn classify_name(name: &str) -> FileKind {
    let id_of = |stem: &str| -> Option<u64> {
        (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()))
            .then(|| stem.parse().ok())
            .flatten()
    };
    if name == CURSORS_NAME {
        return FileKind::Cursors;
    }
    if name == CURSORS_TEMP_NAME {
        return FileKind::CursorsTemp;
    }
    if let Some(id) = name.strip_suffix(".seg.corrupt").and_then(id_of) {
        return FileKind::Quarantined(id);
    }
    if let Some(id) = name.strip_suffix(".seg").and_then(id_of) {
        return FileKind::Segment(id);
    }
    FileKind::Other
}

pub(crate) fn encode_segment_header(id: u64, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&SEGMENT_MAGIC);
    out.extend_from_slice(&SEGMENT_FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// The verdict on a segment's first bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HeaderCheck {
    Valid,
    /// Shorter than a header: the segment was being created when the process stopped.
    Torn,
    Bad(CorruptionKind),
}

pub(crate) fn check_segment_header(data: &[u8], expected_id: u64) -> HeaderCheck {
    let Some(header) = data.get(..SEGMENT_HEADER_BYTES as usize) else {
        return HeaderCheck::Torn;
    };
    let (body, crc) = header.split_at(20);
    if header[..8] != SEGMENT_MAGIC || crc32fast::hash(body).to_le_bytes() != crc {
        return HeaderCheck::Bad(CorruptionKind::BadHeader);
    }
    let version = u16::from_le_bytes([header[8], header[9]]);
    if version != SEGMENT_FORMAT_VERSION {
        return HeaderCheck::Bad(CorruptionKind::UnsupportedVersion(version));
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&header[12..20]);
    if u64::from_le_bytes(id) != expected_id {
        return HeaderCheck::Bad(CorruptionKind::BadHeader);
    }
    HeaderCheck::Valid
}

/// Append one record frame to `out`.
pub(crate) fn encode_frame(partition: u16, seq: u64, payload: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    // The caller checked `payload.len() <= record_bytes_max`, which fits u32 (config check).
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&partition.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    let header_crc = crc32fast::hash(&out[start..start + FRAME_HEADER_CHECKED_BYTES]);
    out.extend_from_slice(&header_crc.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// A frame header whose own checksum matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    pub partition: u16,
    pub seq: u64,
    pub payload_len: u64,
    pub payload_crc: u32,
}

impl FrameHeader {
    pub(crate) fn frame_bytes(&self) -> u64 {
        FRAME_HEADER_BYTES + self.payload_len
    }
}

/// Decode a frame header from the start of `bytes`: `None` if fewer than
/// [`FRAME_HEADER_BYTES`] are there, `Some(Err(()))` if its checksum fails.
pub(crate) fn decode_frame_header(bytes: &[u8]) -> Option<Result<FrameHeader, ()>> {
    let header = bytes.get(..FRAME_HEADER_BYTES as usize)?;
    let u32_at = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    if crc32fast::hash(&header[..FRAME_HEADER_CHECKED_BYTES]) != u32_at(14) {
        return Some(Err(()));
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&header[6..14]);
    Some(Ok(FrameHeader {
        partition: u16::from_le_bytes([header[4], header[5]]),
        seq: u64::from_le_bytes(seq),
        payload_len: u64::from(u32_at(0)),
        payload_crc: u32_at(18),
    }))
}

/// How a scan of frames ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ScanEnd {
    /// Every byte belongs to a valid frame.
    Clean,
    /// The bytes from `valid_len` on are a partial record (or zero fill) left by an interrupted
    /// write: safe to cut off.
    TornTail { valid_len: u64 },
    /// A record at `offset` is damaged and data follows it: nothing from there on can be trusted.
    Corrupt { offset: u64, kind: CorruptionKind },
}

/// Walk the frames of `data` starting at `start`, calling `on_record(partition, seq, offset,
/// frame_bytes)` for each valid one, and say how the walk ended.
pub(crate) fn scan_frames(
    data: &[u8],
    start: u64,
    mut on_record: impl FnMut(u16, u64, u64, u64) -> Result<(), CorruptionKind>,
) -> ScanEnd {
    let mut offset = start;
    loop {
        let Some(rest) = usize::try_from(offset).ok().and_then(|at| data.get(at..)) else {
            return ScanEnd::TornTail { valid_len: offset };
        };
        if rest.is_empty() {
            return ScanEnd::Clean;
        }
        let torn = ScanEnd::TornTail { valid_len: offset };
        let header = match decode_frame_header(rest) {
            None => return torn,
            // Zero fill after the last good frame is what a crash leaves when the file grew
            // before its data reached the disk.
            Some(Err(())) if rest.iter().all(|&b| b == 0) => return torn,
            Some(Err(())) => {
                return ScanEnd::Corrupt {
                    offset,
                    kind: CorruptionKind::FrameHeaderChecksum,
                };
            }
            Some(Ok(header)) => header,
        };
        let frame_bytes = header.frame_bytes();
        let Some(frame) = usize::try_from(frame_bytes)
            .ok()
            .and_then(|n| rest.get(..n))
        else {
            // A trusted header pointing past the end: the write of this record was cut short.
            return torn;
        };
        let payload = &frame[FRAME_HEADER_BYTES as usize..];
        if crc32fast::hash(payload) != header.payload_crc {
            return ScanEnd::Corrupt {
                offset,
                kind: CorruptionKind::PayloadChecksum,
            };
        }
        if let Err(kind) = on_record(header.partition, header.seq, offset, frame_bytes) {
            return ScanEnd::Corrupt { offset, kind };
        }
        offset += frame_bytes;
    }
}

/// The durable state besides segments: acknowledgement cursors and the repair mark.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CursorState {
    /// Per partition, everything up to this seq is acknowledged by the target.
    pub acked: Vec<(u16, u64)>,
    /// Per partition, records up to this seq were dropped (overflow, quarantine): the
    /// delegator must not append them again.
    pub dropped_through: Vec<(u16, u64)>,
    /// Segment ids below this were used before (never reuse a name).
    pub next_segment_id: u64,
    /// Incremented each time a repair mark is set.
    pub repair_generation: u64,
    pub repair: Option<super::RepairReason>,
}

const CURSORS_MAGIC: [u8; 8] = *b"TERNCURS";
const CURSORS_FORMAT_VERSION: u16 = 1;
const CURSORS_HEADER_BYTES: usize = 20;

pub(crate) fn encode_cursors(state: &CursorState) -> Vec<u8> {
    // A plain struct of integers and enums always serializes; an empty payload would be
    // reported as corrupt on the next open rather than lost silently.
    let payload = postcard::to_allocvec(state).unwrap_or_default();
    let mut out = Vec::with_capacity(CURSORS_HEADER_BYTES + payload.len());
    out.extend_from_slice(&CURSORS_MAGIC);
    out.extend_from_slice(&CURSORS_FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

pub(crate) fn decode_cursors(data: &[u8]) -> Result<CursorState, String> {
    let header = data.get(..CURSORS_HEADER_BYTES).ok_or_else(|| {
        format!(
            "cursor file is {} bytes, shorter than its header",
            data.len()
        )
    })?;
    if header[..8] != CURSORS_MAGIC {
        return Err("cursor file has a wrong magic".into());
    }
    let version = u16::from_le_bytes([header[8], header[9]]);
    if version != CURSORS_FORMAT_VERSION {
        return Err(format!(
            "cursor file format version {version} is not supported"
        ));
    }
    if header[10..12] != [0, 0] {
        return Err("cursor file has non-zero reserved bytes".into());
    }
    let len = u32::from_le_bytes([header[12], header[13], header[14], header[15]]) as usize;
    let crc = u32::from_le_bytes([header[16], header[17], header[18], header[19]]);
    let payload = &data[CURSORS_HEADER_BYTES..];
    if payload.len() != len || crc32fast::hash(payload) != crc {
        return Err("cursor file checksum or length mismatch".into());
    }
    postcard::from_bytes(payload).map_err(|e| format!("decode cursor file: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_files_are_other() {
        let cases = [
            (segment_name(7), FileKind::Segment(7)),
            (quarantine_name(u64::MAX), FileKind::Quarantined(u64::MAX)),
            ("cursors".to_string(), FileKind::Cursors),
            ("cursors.tmp".to_string(), FileKind::CursorsTemp),
            ("7.seg".to_string(), FileKind::Other),
            ("0000000000000000000a.seg".to_string(), FileKind::Other),
            ("notes.txt".to_string(), FileKind::Other),
        ];
        for (name, kind) in cases {
            assert_eq!(classify_name(&name), kind, "{name}");
        }
    }

    #[test]
    fn header_checks() {
        let mut good = Vec::new();
        encode_segment_header(5, &mut good);
        assert_eq!(good.len() as u64, SEGMENT_HEADER_BYTES);
        assert_eq!(check_segment_header(&good, 5), HeaderCheck::Valid);
        assert_eq!(
            check_segment_header(&good, 6),
            HeaderCheck::Bad(CorruptionKind::BadHeader)
        );
        assert_eq!(check_segment_header(&good[..23], 5), HeaderCheck::Torn);
        let mut future = good.clone();
        future[8] = 9;
        let crc = crc32fast::hash(&future[..20]).to_le_bytes();
        future[20..].copy_from_slice(&crc);
        assert_eq!(
            check_segment_header(&future, 5),
            HeaderCheck::Bad(CorruptionKind::UnsupportedVersion(9))
        );
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x10;
            assert!(
                matches!(check_segment_header(&bad, 5), HeaderCheck::Bad(_)),
                "flip at {at} undetected"
            );
        }
    }

    #[test]
    fn cursor_file_round_trips_and_rejects_damage() {
        let state = CursorState {
            acked: vec![(1, 10), (7, 99)],
            dropped_through: vec![(2, 5)],
            next_segment_id: 12,
            repair_generation: 3,
            repair: Some(super::super::RepairReason::CursorFileCorrupt),
        };
        let bytes = encode_cursors(&state);
        assert_eq!(decode_cursors(&bytes), Ok(state));
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x01;
            assert!(decode_cursors(&bad).is_err(), "flip at {at} undetected");
        }
        assert!(decode_cursors(&bytes[..bytes.len() - 1]).is_err());
    }
}
