//! Hybrid logical clock (Kulkarni et al., 2014): wall-clock milliseconds plus a logical counter.
//!
//! The clock never reads time itself: callers pass the physical time in, so the simulator can
//! drive it with skewed simulated clocks. Timestamps are monotone per clock, and a remote
//! timestamp too far ahead of local physical time is rejected rather than absorbed, so one site
//! with a broken clock cannot drag every other site's clock into the future.
use serde::{Deserialize, Serialize};
use std::fmt;

/// One HLC reading. Ordered by wall time, then logical counter.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct HlcTimestamp {
    pub wall_ms: u64,
    pub logical: u32,
}

impl HlcTimestamp {
    pub const ZERO: HlcTimestamp = HlcTimestamp {
        wall_ms: 0,
        logical: 0,
    };

    pub fn new(wall_ms: u64, logical: u32) -> Self {
        Self { wall_ms, logical }
    }

    /// `self` as one rising integer: wall milliseconds, then the logical counter in the low 16
    /// bits (saturated). It keeps rising across a restart that lost the clock's state, as long
    /// as the wall clock does: version-vector numbers and counter lineages are stamped with it.
    pub fn stamp(self) -> u64 {
        const LOGICAL_BITS: u32 = 16;
        let logical = u64::from(self.logical).min((1 << LOGICAL_BITS) - 1);
        self.wall_ms.saturating_mul(1 << LOGICAL_BITS) | logical
    }

    /// The smallest timestamp strictly greater than `self` (saturating at the very last one).
    pub(crate) fn successor(self) -> Self {
        match self.logical.checked_add(1) {
            Some(logical) => Self {
                wall_ms: self.wall_ms,
                logical,
            },
            // The logical counter is exhausted within this millisecond: borrow the next one.
            None => Self {
                wall_ms: self.wall_ms.saturating_add(1),
                logical: 0,
            },
        }
    }
}

impl fmt::Display for HlcTimestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.wall_ms, self.logical)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HlcError {
    #[error(
        "remote timestamp {remote} is {ahead_ms} ms ahead of local physical time {physical_ms} ms, \
         beyond the maximum clock offset of {offset_ms_max} ms"
    )]
    OffsetExceeded {
        remote: HlcTimestamp,
        physical_ms: u64,
        ahead_ms: u64,
        offset_ms_max: u64,
    },
}

/// A hybrid logical clock. One per partition core (every key lives in exactly one partition, so
/// per-key versions are monotone).
#[derive(Debug, Clone)]
pub struct Hlc {
    last: HlcTimestamp,
    offset_ms_max: u64,
}

impl Hlc {
    /// `offset_ms_max`: how far a remote timestamp may run ahead of local physical time.
    pub fn new(offset_ms_max: u64) -> Self {
        Self {
            last: HlcTimestamp::ZERO,
            offset_ms_max,
        }
    }

    pub fn offset_ms_max(&self) -> u64 {
        self.offset_ms_max
    }

    /// The last timestamp issued or observed.
    pub fn last(&self) -> HlcTimestamp {
        self.last
    }

    /// Timestamp for a local event (a write). Strictly greater than every earlier result.
    pub fn now(&mut self, physical_ms: u64) -> HlcTimestamp {
        let next = if physical_ms > self.last.wall_ms {
            HlcTimestamp::new(physical_ms, 0)
        } else {
            self.last.successor()
        };
        self.last = next;
        next
    }

    /// Merge a timestamp received from elsewhere; the result is greater than both `remote` and
    /// every earlier result. Rejects `remote` when it is beyond the allowed offset, leaving the
    /// clock unchanged.
    pub fn observe(
        &mut self,
        remote: HlcTimestamp,
        physical_ms: u64,
    ) -> Result<HlcTimestamp, HlcError> {
        let ahead_ms = remote.wall_ms.saturating_sub(physical_ms);
        if ahead_ms > self.offset_ms_max {
            return Err(HlcError::OffsetExceeded {
                remote,
                physical_ms,
                ahead_ms,
                offset_ms_max: self.offset_ms_max,
            });
        }
        let floor = self.last.max(remote);
        let next = if physical_ms > floor.wall_ms {
            HlcTimestamp::new(physical_ms, 0)
        } else {
            floor.successor()
        };
        self.last = next;
        Ok(next)
    }
}
