//! Replication lag of applied records (source commit → applied here): a cumulative histogram
//! for `tern_wan_lag_seconds` and percentiles over a recent window for `tern gateway status`.
use super::limits::LAG_WINDOW_SAMPLES_MAX;
use std::collections::VecDeque;

/// Upper bounds of the histogram buckets, in seconds.
pub const LAG_BUCKETS_SECONDS: [f64; 14] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];

#[derive(Clone, Debug, Default)]
pub struct LagStats {
    /// Per bucket, samples with lag ≤ its bound (not yet cumulative).
    counts: [u64; LAG_BUCKETS_SECONDS.len()],
    sum_seconds: f64,
    count: u64,
    last_ms: Option<u64>,
    window: VecDeque<u64>,
}

impl LagStats {
    pub fn record(&mut self, lag_ms: u64) {
        let seconds = lag_ms as f64 / 1000.0;
        if let Some(i) = LAG_BUCKETS_SECONDS.iter().position(|&b| seconds <= b) {
            self.counts[i] += 1;
        }
        self.sum_seconds += seconds;
        self.count += 1;
        self.last_ms = Some(lag_ms);
        if self.window.len() == LAG_WINDOW_SAMPLES_MAX {
            self.window.pop_front();
        }
        self.window.push_back(lag_ms);
    }

    pub fn last_ms(&self) -> Option<u64> {
        self.last_ms
    }

    /// The `q`-quantile (0..=1) of the recent window, nearest rank.
    pub fn percentile_ms(&self, q: f64) -> Option<u64> {
        if self.window.is_empty() {
            return None;
        }
        let mut sorted: Vec<u64> = self.window.iter().copied().collect();
        sorted.sort_unstable();
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        Some(sorted[rank - 1])
    }

    /// Cumulative buckets as OpenMetrics wants them (samples above the last bound only count
    /// in `count`, i.e. the implicit +Inf bucket).
    pub fn cumulative_buckets(&self) -> Vec<(f64, u64)> {
        let mut total = 0;
        LAG_BUCKETS_SECONDS
            .iter()
            .zip(self.counts)
            .map(|(&bound, n)| {
                total += n;
                (bound, total)
            })
            .collect()
    }

    pub fn sum_seconds(&self) -> f64 {
        self.sum_seconds
    }

    pub fn count(&self) -> u64 {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_percentiles() {
        let mut lag = LagStats::default();
        assert_eq!(lag.percentile_ms(0.5), None);
        for ms in [1, 1, 3, 8, 40, 70_000] {
            lag.record(ms);
        }
        let buckets = lag.cumulative_buckets();
        assert_eq!(buckets[0], (0.001, 2));
        assert_eq!(buckets[2], (0.005, 3));
        assert_eq!(buckets[3], (0.01, 4));
        assert_eq!(buckets[5], (0.05, 5));
        assert_eq!(
            buckets.last().map(|b| b.1),
            Some(5),
            "70 s is above every bound"
        );
        assert_eq!(lag.count(), 6);
        assert_eq!(lag.percentile_ms(0.5), Some(3));
        assert_eq!(lag.percentile_ms(0.99), Some(70_000));
        assert_eq!(lag.last_ms(), Some(70_000));
    }
}
