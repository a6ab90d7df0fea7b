//! Simulated time. There is one global timeline, [`SimTime`] (microseconds since the run began),
//! which only the simulator sees; every host reads it through its own [`HostClock`], with an
//! offset and a rate error, as real unsynchronized clocks do. Cores are handed the host's reading
//! (unix milliseconds), never the global time.
use std::fmt;

/// An instant on the global simulated timeline, in microseconds since the run began.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SimTime(u64);

impl SimTime {
    pub const ZERO: SimTime = SimTime(0);
    /// Later than anything a run reaches: the completion time of operations that never completed.
    pub const NEVER: SimTime = SimTime(u64::MAX);

    pub fn from_micros(us: u64) -> Self {
        Self(us)
    }

    pub fn from_millis(ms: u64) -> Self {
        Self(ms.saturating_mul(1000))
    }

    pub fn as_micros(self) -> u64 {
        self.0
    }

    pub fn as_millis(self) -> u64 {
        self.0 / 1000
    }

    /// `self + us`, saturating (a saturated time simply never arrives).
    pub fn after_micros(self, us: u64) -> Self {
        Self(self.0.saturating_add(us))
    }

    /// Microseconds from `earlier` to `self` (0 if `earlier` is later).
    pub fn micros_since(self, earlier: SimTime) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for SimTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Self::NEVER {
            return f.write_str("never");
        }
        write!(f, "{}.{:06}s", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

/// One host's clock: `unix time = base + offset + elapsed * (1 + drift)`.
///
/// Readings are monotone as long as nobody calls [`HostClock::step`] with a negative delta, which
/// models an NTP step backwards (a later issue's clock-skew scenarios use it on purpose).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostClock {
    offset_us: i64,
    drift_ppm: i32,
}

impl HostClock {
    /// Unix time (ms) of a perfect clock when the run begins: a fixed date, so TTL arithmetic
    /// sees realistic magnitudes and runs stay reproducible.
    pub const RUN_START_UNIX_MS: u64 = 1_700_000_000_000;

    /// A clock with no offset and no drift.
    pub fn perfect() -> Self {
        Self {
            offset_us: 0,
            drift_ppm: 0,
        }
    }

    /// A clock `offset_us` ahead of true time (negative: behind) that gains `drift_ppm`
    /// microseconds per second (negative: loses). `drift_ppm` is clamped to ±100 000 (10 %),
    /// far beyond any real quartz, so time never runs backwards through drift alone.
    pub fn skewed(offset_us: i64, drift_ppm: i32) -> Self {
        Self {
            offset_us,
            drift_ppm: drift_ppm.clamp(-100_000, 100_000),
        }
    }

    pub fn offset_us(&self) -> i64 {
        self.offset_us
    }

    pub fn drift_ppm(&self) -> i32 {
        self.drift_ppm
    }

    /// Step the clock by `delta_us` (an NTP step or an operator's mistake).
    pub fn step(&mut self, delta_us: i64) {
        self.offset_us = self.offset_us.saturating_add(delta_us);
    }

    /// This host's reading of unix time in microseconds at global instant `t`.
    pub fn unix_micros(&self, t: SimTime) -> u64 {
        let elapsed = i128::from(t.as_micros());
        let drifted = elapsed * (1_000_000 + i128::from(self.drift_ppm)) / 1_000_000;
        let unix =
            i128::from(Self::RUN_START_UNIX_MS) * 1000 + i128::from(self.offset_us) + drifted;
        u64::try_from(unix.max(0)).unwrap_or(u64::MAX)
    }

    /// This host's reading of unix time in milliseconds at global instant `t`: the `now_ms` its
    /// cores are handed.
    pub fn unix_millis(&self, t: SimTime) -> u64 {
        self.unix_micros(t) / 1000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_follow_offset_and_drift() {
        let start = HostClock::RUN_START_UNIX_MS;
        // (clock, global ms, expected local ms)
        let cases = [
            (HostClock::perfect(), 0, start),
            (HostClock::perfect(), 1_500, start + 1_500),
            (HostClock::skewed(-250_000, 0), 1_000, start + 750),
            (HostClock::skewed(2_000, 0), 0, start + 2),
            // +1000 ppm gains 1 ms per second.
            (HostClock::skewed(0, 1_000), 10_000, start + 10_010),
            (HostClock::skewed(0, -1_000), 10_000, start + 9_990),
        ];
        for (clock, global_ms, expected) in cases {
            assert_eq!(
                clock.unix_millis(SimTime::from_millis(global_ms)),
                expected,
                "{clock:?}"
            );
        }
    }

    #[test]
    fn drifting_clocks_stay_monotone_and_steps_move_them() {
        let mut clock = HostClock::skewed(0, -100_000_000);
        assert_eq!(clock.drift_ppm(), -100_000, "drift is clamped");
        let mut last = 0;
        for ms in 0..2_000 {
            let now = clock.unix_micros(SimTime::from_millis(ms));
            assert!(now >= last, "clock went back at {ms} ms");
            last = now;
        }
        let before = clock.unix_millis(SimTime::from_millis(5));
        clock.step(-3_000);
        assert_eq!(clock.unix_millis(SimTime::from_millis(5)), before - 3);
    }

    #[test]
    fn display_is_seconds_with_microseconds() {
        assert_eq!(SimTime::from_micros(12_345_678).to_string(), "12.345678s");
        assert_eq!(SimTime::NEVER.to_string(), "never");
    }
}
