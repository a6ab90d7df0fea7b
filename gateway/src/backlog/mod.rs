//! The durable backlog: outgoing WAN records of one target site, kept on disk until the target
//! acknowledges them, so a gateway restart, a site outage or a long WAN partition loses nothing.
//!
//! # Model
//!
//! One [`Backlog`] per target directory. Records are opaque payloads (the delegator encodes
//! them) tagged `(partition, seq)`; per partition, seqs only grow. Acknowledgements are
//! per-partition cursors: "everything up to seq N of partition P arrived".
//!
//! - **Segments**: `NNNNNNNNNNNNNNNNNNNN.seg`, a header (magic, format version, id) and
//!   checksummed frames (see `format.rs`). A new segment starts before an append would pass
//!   `segment_bytes_max`. A segment is deleted as soon as every record in it is acknowledged
//!   (per segment we track each partition's seq range, not each record).
//! - **Appends are batched**: [`Backlog::append_batch`] is one `write` and, under
//!   [`FsyncPolicy::Always`], one fsync. [`FsyncPolicy::EveryMs`] fsyncs from
//!   [`Backlog::handle_tick`] with the caller's clock (no clock inside); [`FsyncPolicy::Never`]
//!   leaves it to the OS. [`Backlog::sync`] forces it. There is no user-space buffer to flush:
//!   an `Ok` append is in the OS, durable once synced.
//! - **Cursors**: the acknowledgement cursors and the needs-repair mark live in a small
//!   checksummed `cursors` file replaced atomically (temp file, fsync, rename, fsync dir). It is
//!   written every `cursor_sync_interval_ms` (ticks), on [`Backlog::sync`], and before any
//!   segment is deleted. So after a restart a few already-acknowledged records may be replayed:
//!   **the sink deduplicates by `(source, partition, seq)`**, that is part of the contract.
//! - **Cap**: past `backlog_bytes_max` the [`OverflowPolicy`] applies: `BlockWrites` refuses
//!   with [`BacklogError::Full`] (backpressure), `DropAndRepair` drops the target's backlog and
//!   sets a durable [`RepairMark`] that stays until [`Backlog::clear_repair`]. Never silent:
//!   outcomes say what happened, [`Backlog::stats`] shows it.
//! - **Crash safety**: [`Backlog::open`] cuts torn tails, quarantines damaged segments
//!   (`.seg.corrupt`, repair mark set) and reports each finding in a [`RecoveryReport`].
//!   A failed write or fsync poisons the backlog ([`BacklogError::Poisoned`]): after a failed
//!   fsync nobody knows what reached the disk, so the caller reopens, which recovers.
//! - **Storage seam**: [`SegmentStorage`], with [`FsStorage`] and the fault-injecting
//!   [`MemStorage`] for simulations.
//!
//! After a restart the delegator resumes each partition above [`Backlog::last_appended`]
//! (which also covers acknowledged and dropped records) and replays [`Backlog::replay`].
mod config;
mod format;
mod index;
mod log;
mod mem_storage;
mod read;
mod recovery;
mod storage;
mod types;

#[cfg(test)]
mod tests;

pub use config::{BacklogConfig, BacklogConfigError, FsyncMode, FsyncPolicy, OverflowPolicy};
pub use format::{
    CorruptionKind, FRAME_HEADER_BYTES, SEGMENT_FORMAT_VERSION, SEGMENT_HEADER_BYTES,
};
pub use log::Backlog;
pub use mem_storage::{MemFaults, MemStorage, MemStorageCounters};
pub use read::Replay;
pub use storage::{FsStorage, SegmentStorage};
pub use types::{
    AckOutcome, AppendOutcome, BacklogError, BacklogRecord, BacklogResult, BacklogStats,
    Corruption, NewRecord, OverflowDrop, ReadBatch, ReadCursor, ReadLimits, RecoveryEvent,
    RecoveryReport, RepairMark, RepairReason, TickOutcome,
};
