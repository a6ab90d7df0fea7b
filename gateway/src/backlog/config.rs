//! Limits and policies of one target's backlog, each named with its unit.
use super::format::{FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use serde::{Deserialize, Serialize};

/// When appended bytes are forced to stable storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncMode {
    /// fsync after every append batch: an `Ok` append is durable.
    Always,
    /// fsync at most every `fsync_interval_ms`, driven by the caller's
    /// [`Backlog::handle_tick`](super::Backlog::handle_tick).
    Interval,
    /// Never fsync segment data on our own; the OS writes it back when it likes.
    Never,
}

/// The fsync policy as the backlog applies it ([`BacklogConfig::fsync_policy`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    Always,
    /// fsync when a tick finds unsynced data and this many ms passed since the last fsync.
    EveryMs(u64),
    Never,
}

/// What an append does when the backlog would pass `backlog_bytes_max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverflowPolicy {
    /// Refuse the append with [`BacklogError::Full`](super::BacklogError::Full); the caller
    /// turns it into backpressure on local writes until acknowledgements free space.
    BlockWrites,
    /// Drop this target's whole backlog and set the durable needs-repair mark, so anti-entropy
    /// repairs the target later; local writes never stall.
    DropAndRepair,
}

/// Configuration of one target's backlog.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BacklogConfig {
    /// A segment is closed and a new one started before an append would take it past this
    /// size. A record larger than this still goes, alone, into its own segment.
    pub segment_bytes_max: u64,
    /// Cap on the bytes of all segment files of the target (acknowledged records count until
    /// their whole segment is deleted). Passing it applies `overflow_policy`.
    pub backlog_bytes_max: u64,
    /// Largest payload of one record; a larger one is refused.
    pub record_bytes_max: u64,
    /// See [`FsyncMode`].
    pub fsync_mode: FsyncMode,
    /// With `fsync_mode = "interval"`: longest time unsynced appended data waits for an fsync,
    /// provided the caller ticks at least that often.
    pub fsync_interval_ms: u64,
    /// Acknowledgement cursors are persisted at most this often by ticks (and whenever a
    /// segment is deleted). Losing newer ones only replays a few acknowledged records.
    pub cursor_sync_interval_ms: u64,
    /// See [`OverflowPolicy`].
    pub overflow_policy: OverflowPolicy,
}

impl Default for BacklogConfig {
    fn default() -> Self {
        Self {
            segment_bytes_max: 64 * 1024 * 1024,
            backlog_bytes_max: 1024 * 1024 * 1024,
            // Matches the largest record a gateway frame can carry (`GatewayLimits`).
            record_bytes_max: 32 * 1024 * 1024,
            fsync_mode: FsyncMode::Interval,
            // The node's change log still holds the last moments of records after a gateway
            // crash, so a short window of unsynced tail costs at most a re-read, not a loss.
            fsync_interval_ms: 100,
            cursor_sync_interval_ms: 1000,
            // Never stall local writes because a remote site is away; repair it later instead.
            overflow_policy: OverflowPolicy::DropAndRepair,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BacklogConfigError {
    #[error("backlog setting `{name}` must be greater than zero")]
    Zero { name: &'static str },
    #[error("backlog setting `record_bytes_max` ({0}) must fit the 32-bit frame length")]
    RecordTooLarge(u64),
    #[error(
        "backlog setting `backlog_bytes_max` ({backlog_bytes_max}) must hold at least one \
         segment of `segment_bytes_max` ({segment_bytes_max}) and one record of \
         `record_bytes_max` ({record_bytes_max}) with framing"
    )]
    CapTooSmall {
        backlog_bytes_max: u64,
        segment_bytes_max: u64,
        record_bytes_max: u64,
    },
}

impl BacklogConfig {
    /// Check the settings are usable together; [`Backlog::open`](super::Backlog::open) calls it.
    pub fn validate(&self) -> Result<(), BacklogConfigError> {
        let mut nonzero = vec![
            ("segment_bytes_max", self.segment_bytes_max),
            ("backlog_bytes_max", self.backlog_bytes_max),
            ("record_bytes_max", self.record_bytes_max),
            ("cursor_sync_interval_ms", self.cursor_sync_interval_ms),
        ];
        if self.fsync_mode == FsyncMode::Interval {
            nonzero.push(("fsync_interval_ms", self.fsync_interval_ms));
        }
        if let Some((name, _)) = nonzero.iter().find(|(_, v)| *v == 0) {
            return Err(BacklogConfigError::Zero { name });
        }
        if u32::try_from(self.record_bytes_max).is_err() {
            return Err(BacklogConfigError::RecordTooLarge(self.record_bytes_max));
        }
        let largest_lone_segment =
            SEGMENT_HEADER_BYTES + FRAME_HEADER_BYTES + self.record_bytes_max;
        if self.backlog_bytes_max < self.segment_bytes_max.max(largest_lone_segment) {
            return Err(BacklogConfigError::CapTooSmall {
                backlog_bytes_max: self.backlog_bytes_max,
                segment_bytes_max: self.segment_bytes_max,
                record_bytes_max: self.record_bytes_max,
            });
        }
        Ok(())
    }

    /// The fsync policy these settings describe.
    pub fn fsync_policy(&self) -> FsyncPolicy {
        match self.fsync_mode {
            FsyncMode::Always => FsyncPolicy::Always,
            FsyncMode::Interval => FsyncPolicy::EveryMs(self.fsync_interval_ms),
            FsyncMode::Never => FsyncPolicy::Never,
        }
    }

    /// The same settings with `policy` applied (handy in code and tests).
    pub fn with_fsync_policy(mut self, policy: FsyncPolicy) -> Self {
        match policy {
            FsyncPolicy::Always => self.fsync_mode = FsyncMode::Always,
            FsyncPolicy::EveryMs(ms) => {
                self.fsync_mode = FsyncMode::Interval;
                self.fsync_interval_ms = ms;
            }
            FsyncPolicy::Never => self.fsync_mode = FsyncMode::Never,
        }
        self
    }
}
