//! A token bucket driven by the caller's clock: no clock inside.
//!
//! Tokens are bytes, refilled at `rate_bytes_per_sec` up to `capacity_bytes`. The bucket
//! starts empty, so sending `n` bytes takes at least `n / rate` from the start (the first
//! chunk waits its share too). A message larger than the capacity may go once the bucket is
//! full and leaves it in debt, so the long-run rate still holds.

/// Milli-bytes per byte: refills are exact integers (`rate * elapsed_ms` milli-bytes).
const MILLI: i128 = 1_000;

#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate_bytes_per_sec: u64,
    capacity_bytes: u64,
    /// Available tokens in milli-bytes; negative after an oversized message.
    tokens_milli: i128,
    last_ms: u64,
}

impl TokenBucket {
    /// An empty bucket at `now_ms`. A zero rate is treated as one byte per second.
    pub fn new(rate_bytes_per_sec: u64, capacity_bytes: u64, now_ms: u64) -> Self {
        Self {
            rate_bytes_per_sec: rate_bytes_per_sec.max(1),
            capacity_bytes: capacity_bytes.max(1),
            tokens_milli: 0,
            last_ms: now_ms,
        }
    }

    fn refill(&mut self, now_ms: u64) {
        let elapsed = i128::from(now_ms.saturating_sub(self.last_ms));
        self.last_ms = self.last_ms.max(now_ms);
        let cap = i128::from(self.capacity_bytes) * MILLI;
        self.tokens_milli =
            (self.tokens_milli + elapsed * i128::from(self.rate_bytes_per_sec)).min(cap);
    }

    /// What a message of `bytes` must wait for: all of it, or a full bucket if larger.
    fn needed_milli(&self, bytes: u64) -> i128 {
        i128::from(bytes.min(self.capacity_bytes)) * MILLI
    }

    /// Take `bytes` if the bucket allows it at `now_ms`.
    pub fn try_take(&mut self, bytes: u64, now_ms: u64) -> bool {
        self.refill(now_ms);
        if self.tokens_milli < self.needed_milli(bytes) {
            return false;
        }
        self.tokens_milli -= i128::from(bytes) * MILLI;
        true
    }

    /// The earliest time `try_take(bytes)` can succeed.
    pub fn ready_at(&self, bytes: u64) -> u64 {
        let missing = self.needed_milli(bytes) - self.tokens_milli;
        if missing <= 0 {
            return self.last_ms;
        }
        let rate = i128::from(self.rate_bytes_per_sec);
        let wait_ms = (missing + rate - 1) / rate;
        self.last_ms
            .saturating_add(u64::try_from(wait_ms).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sending_takes_at_least_bytes_over_rate() {
        // 1000 B/s, 100 B bursts: 1000 bytes in 100-byte messages take 1 s.
        let mut bucket = TokenBucket::new(1_000, 100, 0);
        let mut now = 0;
        let mut sent = 0;
        while sent < 1_000 {
            if bucket.try_take(100, now) {
                sent += 100;
            } else {
                let at = bucket.ready_at(100);
                assert!(at > now, "ready_at moves time forward");
                now = at;
            }
        }
        assert_eq!(now, 1_000);
    }

    #[test]
    fn oversized_messages_wait_for_a_full_bucket_and_leave_debt() {
        let mut bucket = TokenBucket::new(1_000, 100, 0);
        assert_eq!(bucket.ready_at(500), 100);
        assert!(!bucket.try_take(500, 99));
        assert!(bucket.try_take(500, 100));
        // 400 bytes of debt, then 100 for the next message: 500 ms.
        assert_eq!(bucket.ready_at(100), 600);
        assert!(!bucket.try_take(1, 500));
    }

    #[test]
    fn an_idle_bucket_holds_one_burst_at_most() {
        let mut bucket = TokenBucket::new(1_000, 100, 0);
        assert!(bucket.try_take(100, 60_000));
        assert!(!bucket.try_take(100, 60_000));
    }
}
