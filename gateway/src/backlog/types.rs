//! What the backlog API takes and returns: records, positions, outcomes, events, errors.
use super::config::BacklogConfigError;
use super::format::{CorruptionKind, SEGMENT_HEADER_BYTES};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::io;

/// A record to append: an opaque payload tagged with its partition and sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewRecord<'a> {
    pub partition: u16,
    pub seq: u64,
    pub payload: &'a [u8],
}

/// A record read back from the backlog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BacklogRecord {
    pub partition: u16,
    pub seq: u64,
    pub payload: Bytes,
    /// Where this record sits; reading from [`ReadCursor::after`] it continues past it.
    pub position: ReadCursor,
}

/// A position in the log: segment and byte offset. Positions only grow with appends and are
/// never reused, so they also order records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReadCursor {
    pub(crate) segment_id: u64,
    pub(crate) offset: u64,
}

/// Bits of a packed position ([`ReadCursor::to_u64`]) given to the byte offset: 1 TiB, far
/// above any segment.
const OFFSET_BITS: u32 = 40;

impl ReadCursor {
    /// Before every record.
    pub const START: ReadCursor = ReadCursor {
        segment_id: 0,
        offset: 0,
    };

    pub fn segment_id(&self) -> u64 {
        self.segment_id
    }

    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The position as one increasing `u64` (segment id in the high 24 bits, offset in the low
    /// 40), for callers that track positions as numbers. Order holds for the first 2^24
    /// segments of a target (16 M; at 64 MiB each, a petabyte).
    pub fn to_u64(&self) -> u64 {
        (self.segment_id << OFFSET_BITS) | (self.offset & ((1 << OFFSET_BITS) - 1))
    }

    pub fn from_u64(position: u64) -> Self {
        Self {
            segment_id: position >> OFFSET_BITS,
            offset: position & ((1 << OFFSET_BITS) - 1),
        }
    }

    /// The position just after a record of `frame_bytes` at `self`.
    pub(crate) fn advanced(self, frame_bytes: u64) -> Self {
        Self {
            segment_id: self.segment_id,
            offset: self.offset + frame_bytes,
        }
    }

    pub(crate) fn segment_start(segment_id: u64) -> Self {
        Self {
            segment_id,
            offset: SEGMENT_HEADER_BYTES,
        }
    }
}

impl BacklogRecord {
    /// Where reading continues after this record.
    pub fn after(&self) -> ReadCursor {
        self.position
            .advanced(super::format::FRAME_HEADER_BYTES + self.payload.len() as u64)
    }
}

/// How much one [`Backlog::read_from`](super::Backlog::read_from) returns at most.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadLimits {
    pub records_max: usize,
    /// Payload bytes; the first record is returned even if larger.
    pub bytes_max: usize,
}

impl Default for ReadLimits {
    fn default() -> Self {
        Self {
            records_max: 4096,
            bytes_max: 1024 * 1024,
        }
    }
}

/// Unacknowledged records read in append order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadBatch {
    pub records: Vec<BacklogRecord>,
    /// Where the next read continues.
    pub next: ReadCursor,
    /// True when `next` is past the last record appended so far.
    pub at_end: bool,
    /// Segments found damaged while reading: each was quarantined and the repair mark set;
    /// reading went on with the next segment.
    pub corruptions: Vec<Corruption>,
}

impl Default for ReadCursor {
    fn default() -> Self {
        Self::START
    }
}

/// Why the target needs anti-entropy repair. Postcard encodes variants by index: append new
/// variants at the end only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RepairReason {
    /// The backlog passed `backlog_bytes_max` under `DropAndRepair` and was dropped.
    Overflow {
        bytes_dropped: u64,
        records_dropped: u64,
    },
    /// A segment was damaged and quarantined.
    Corruption {
        segment_id: u64,
        offset: u64,
        kind: CorruptionKind,
    },
    /// The cursor file was unreadable: acknowledgements (and any earlier mark) were lost.
    CursorFileCorrupt,
    /// A segment older than the newest lost its tail (or all of it) in a crash: later
    /// segments go on above the lost records, so the target has a hole only repair can fill.
    /// (A torn tail of the newest segment needs no repair: appends resume right after what
    /// survived.)
    LostTail { segment_id: u64, bytes_dropped: u64 },
}

/// The durable needs-repair mark. Each new cause gets a new `generation`; clearing names the
/// generation it repaired, so a cause that arrives during a repair is not cleared with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepairMark {
    pub generation: u64,
    /// The most recent cause.
    pub reason: RepairReason,
}

/// A damaged segment found on open or while reading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Corruption {
    pub segment_id: u64,
    /// Byte offset of the first untrusted byte.
    pub offset: u64,
    pub kind: CorruptionKind,
    /// Records the backlog had indexed in the segment (on open: the valid ones before the
    /// damage); they went to quarantine with it and are left to the repair.
    pub records_lost: u64,
    /// The file name the segment was renamed to.
    pub quarantined_as: String,
}

/// Something [`Backlog::open`](super::Backlog::open) found and handled; none is silent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecoveryEvent {
    /// The end of a segment held a partial record (an interrupted write): cut off.
    TornTailTruncated {
        segment_id: u64,
        valid_bytes: u64,
        bytes_dropped: u64,
    },
    /// A segment shorter than its header (interrupted creation): removed.
    TornSegmentRemoved { segment_id: u64, bytes: u64 },
    /// A damaged segment: quarantined, repair mark set.
    Quarantined(Corruption),
    /// The cursor file was unreadable: every record is replayed and the repair mark set.
    CursorFileCorrupt { detail: String },
    /// A half-written cursor file from an interrupted update: removed (the previous one holds).
    CursorTempRemoved,
}

/// What [`Backlog::open`](super::Backlog::open) did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub events: Vec<RecoveryEvent>,
    pub segments_loaded: usize,
    pub records_loaded: u64,
    /// Segments whose records were all acknowledged, deleted during recovery.
    pub acknowledged_segments_deleted: usize,
}

/// What one append did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use = "an append can drop the backlog for repair; log or count it"]
pub struct AppendOutcome {
    pub records: usize,
    /// Bytes written (frames plus any new segment headers).
    pub bytes: u64,
    /// The position of the first record appended.
    pub first_position: ReadCursor,
    /// The data is on stable storage (fsync policy `Always`).
    pub synced: bool,
    pub segments_created: usize,
    /// Set when the cap was passed under `DropAndRepair`.
    pub overflow: Option<OverflowDrop>,
}

/// The backlog was dropped because it passed `backlog_bytes_max` under `DropAndRepair`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverflowDrop {
    pub bytes_dropped: u64,
    pub records_dropped: u64,
    /// The batch being appended was dropped too (it alone exceeded the cap).
    pub batch_dropped: bool,
    pub repair: RepairMark,
}

/// What an acknowledgement did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AckOutcome {
    /// Some partition's cursor moved forward (older or repeated acks change nothing).
    pub advanced: bool,
    pub segments_deleted: usize,
    pub bytes_freed: u64,
}

/// What a tick did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TickOutcome {
    pub segments_synced: usize,
    pub cursors_persisted: bool,
}

/// A snapshot for metrics and status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BacklogStats {
    /// Bytes of all segment files (what `backlog_bytes_max` caps).
    pub bytes: u64,
    /// Records in live segments (acknowledged ones count until their segment is deleted).
    pub records: u64,
    /// Unacknowledged records: exact when a partition's seqs have no gaps, else an upper bound.
    pub records_unacked: u64,
    pub segments: usize,
    /// The oldest segment holding an unacknowledged record.
    pub oldest_unacked_segment_id: Option<u64>,
    /// A partition whose unacknowledged records reach back to that oldest segment (the lowest
    /// numbered if several) and its lowest unacknowledged seq (exact without seq gaps, else a
    /// lower bound): where the target is stuck.
    pub oldest_unacked: Option<(u16, u64)>,
    pub needs_repair: Option<RepairMark>,
    /// Appended bytes not yet fsynced.
    pub unsynced: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BacklogError {
    /// `BlockWrites` and the append would pass `backlog_bytes_max`: nothing was written.
    #[error(
        "backlog full: {bytes_held} bytes held + {bytes_needed} needed > backlog_bytes_max \
         {backlog_bytes_max}; wait for acknowledgements"
    )]
    Full {
        bytes_held: u64,
        bytes_needed: u64,
        backlog_bytes_max: u64,
    },
    #[error("record of {bytes} bytes exceeds record_bytes_max ({record_bytes_max})")]
    RecordTooLarge { bytes: u64, record_bytes_max: u64 },
    #[error("record seq {seq} of partition {partition} is not above the last appended seq {last}")]
    OutOfOrder { partition: u16, seq: u64, last: u64 },
    #[error("invalid backlog config: {0}")]
    Config(#[from] BacklogConfigError),
    /// An earlier write or fsync failed, so what is on disk is unknown; reopen to recover.
    #[error("backlog unusable after an I/O failure ({0}); reopen it to recover")]
    Poisoned(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl BacklogError {
    /// The append was refused for lack of room: apply backpressure.
    pub fn is_full(&self) -> bool {
        matches!(self, BacklogError::Full { .. })
    }
}

pub type BacklogResult<T> = Result<T, BacklogError>;

/// Wrap an I/O error with what we were doing (build `context` only on the error path).
pub(crate) fn io_err(source: io::Error, context: String) -> BacklogError {
    BacklogError::Io { context, source }
}
