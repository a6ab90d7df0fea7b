//! [`Pacer`]: messages released at a byte rate, taking turns between flows. Sans-IO: the
//! caller says what time it is.
use super::rate::TokenBucket;
use std::collections::{BTreeMap, VecDeque};

/// Items (messages) queued per flow (a repair session, say) and released while a
/// [`TokenBucket`] allows their size. Flows take turns, one item each, in key order, so a
/// session with a big answer does not hold the others back for long: each flow's next item
/// waits at most for one item of every other flow.
#[derive(Debug)]
pub struct Pacer<K, T> {
    bucket: TokenBucket,
    flows: BTreeMap<K, VecDeque<(T, u64)>>,
    /// The flow served last: the next turn goes to the flow after it.
    last_served: Option<K>,
    queued_bytes: u64,
    released_bytes_total: u64,
}

impl<K: Ord + Clone, T> Pacer<K, T> {
    /// An empty pacer at `now_ms` releasing `rate_bytes_per_sec` (at least 1) with bursts of
    /// at most `burst_bytes`. Its bucket starts empty: `n` bytes take at least `n / rate`.
    pub fn new(rate_bytes_per_sec: u64, burst_bytes: u64, now_ms: u64) -> Self {
        Self {
            bucket: TokenBucket::new(rate_bytes_per_sec, burst_bytes, now_ms),
            flows: BTreeMap::new(),
            last_served: None,
            queued_bytes: 0,
            released_bytes_total: 0,
        }
    }

    /// Queue `item` of `bytes` (its encoded size) behind `flow`'s earlier items.
    pub fn push(&mut self, flow: K, item: T, bytes: u64) {
        self.queued_bytes = self.queued_bytes.saturating_add(bytes);
        self.flows.entry(flow).or_default().push_back((item, bytes));
    }

    /// The flow whose turn it is: the first after the one served last, wrapping around.
    fn next_flow(&self) -> Option<&K> {
        let after = self.last_served.as_ref().and_then(|last| {
            self.flows
                .range((std::ops::Bound::Excluded(last), std::ops::Bound::Unbounded))
                .next()
        });
        after.or_else(|| self.flows.iter().next()).map(|(k, _)| k)
    }

    /// The next item if the bucket allows it at `now_ms`; call until `None`.
    pub fn poll_release(&mut self, now_ms: u64) -> Option<(K, T)> {
        let flow = self.next_flow()?.clone();
        let queue = self.flows.get_mut(&flow)?;
        let bytes = queue.front().map(|(_, bytes)| *bytes)?;
        if !self.bucket.try_take(bytes, now_ms) {
            return None;
        }
        let (item, _) = queue.pop_front()?;
        if queue.is_empty() {
            self.flows.remove(&flow);
        }
        self.queued_bytes = self.queued_bytes.saturating_sub(bytes);
        self.released_bytes_total = self.released_bytes_total.saturating_add(bytes);
        self.last_served = Some(flow.clone());
        Some((flow, item))
    }

    /// When [`Self::poll_release`] can release the next item (`None`: nothing queued).
    pub fn poll_timeout(&self) -> Option<u64> {
        let flow = self.next_flow()?;
        let bytes = self.flows.get(flow)?.front().map(|(_, bytes)| *bytes)?;
        Some(self.bucket.ready_at(bytes))
    }

    /// Whether `flow` has items waiting.
    pub fn holds(&self, flow: &K) -> bool {
        self.flows.contains_key(flow)
    }

    /// Forget `flow`'s waiting items (its session ended).
    pub fn remove_flow(&mut self, flow: &K) {
        if let Some(queue) = self.flows.remove(flow) {
            let bytes: u64 = queue.iter().map(|(_, bytes)| *bytes).sum();
            self.queued_bytes = self.queued_bytes.saturating_sub(bytes);
        }
    }

    /// Forget everything waiting (the link went down). The bucket keeps its state, so a
    /// reconnect does not reset the rate.
    pub fn clear(&mut self) {
        self.flows.clear();
        self.queued_bytes = 0;
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Bytes of the items waiting.
    pub fn queued_bytes(&self) -> u64 {
        self.queued_bytes
    }

    /// Bytes ever released.
    pub fn released_bytes_total(&self) -> u64 {
        self.released_bytes_total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Releases everything, jumping the clock to each `poll_timeout`. Returns each release as
    /// (time, flow, item, bytes).
    fn drain(
        pacer: &mut Pacer<u32, u32>,
        sizes: &BTreeMap<(u32, u32), u64>,
        start_ms: u64,
    ) -> Vec<(u64, u32, u32, u64)> {
        let mut now = start_ms;
        let mut released = Vec::new();
        loop {
            while let Some((flow, item)) = pacer.poll_release(now) {
                released.push((now, flow, item, sizes[&(flow, item)]));
            }
            match pacer.poll_timeout() {
                Some(at) => {
                    assert!(at > now, "a blocked pacer's deadline is in the future");
                    now = at;
                }
                None => return released,
            }
        }
    }

    #[test]
    fn n_bytes_at_rate_r_take_at_least_n_over_r_and_not_much_more() {
        // (rate B/s, burst B, flows, items per flow, item bytes)
        let cases: &[(u64, u64, u32, u32, u64)] = &[
            (1_000, 100, 1, 10, 100),
            (1_000, 100, 3, 7, 100),
            (1_000, 1_000, 2, 10, 250),
            (50_000, 4_096, 4, 25, 1_500),
            (32 * 1024 * 1024, 1024 * 1024, 4, 16, 1024 * 1024),
            // Items larger than the burst: each waits for a full bucket and leaves debt.
            (1_000, 100, 2, 5, 700),
        ];
        for &(rate, burst, flows, items, item_bytes) in cases {
            let start = 5_000;
            let mut pacer = Pacer::new(rate, burst, start);
            let mut sizes = BTreeMap::new();
            for item in 0..items {
                for flow in 0..flows {
                    pacer.push(flow, item, item_bytes);
                    sizes.insert((flow, item), item_bytes);
                }
            }
            let total = u64::from(flows * items) * item_bytes;
            assert_eq!(pacer.queued_bytes(), total);
            let released = drain(&mut pacer, &sizes, start);
            assert_eq!(released.len(), (flows * items) as usize);
            assert!(pacer.is_empty());
            assert_eq!(pacer.queued_bytes(), 0);
            assert_eq!(pacer.released_bytes_total(), total);
            // At every release, what went out so far is within what the rate allows (an
            // item over the burst may overdraw by its excess).
            let excess = item_bytes.saturating_sub(burst);
            let mut sent = 0;
            for &(at, _, _, bytes) in &released {
                sent += bytes;
                let allowed_milli = u128::from(at - start) * u128::from(rate);
                assert!(
                    u128::from(sent - excess) * 1_000 <= allowed_milli,
                    "rate {rate}: {sent} bytes by {} ms",
                    at - start
                );
            }
            let took_ms = released.last().map_or(0, |r| r.0) - start;
            let floor_ms = (total - excess) * 1_000 / rate;
            assert!(
                took_ms >= floor_ms,
                "rate {rate}: {took_ms} < {floor_ms} ms"
            );
            // Not slower than the rate either (one ms of rounding per release).
            let ceiling_ms = total * 1_000 / rate + released.len() as u64;
            assert!(
                took_ms <= ceiling_ms,
                "rate {rate}: {took_ms} > {ceiling_ms} ms"
            );
        }
    }

    #[test]
    fn flows_take_turns_so_a_late_small_flow_is_not_stuck_behind_a_big_one() {
        let mut pacer = Pacer::new(1_000, 100, 0);
        let mut sizes = BTreeMap::new();
        for item in 0..20 {
            pacer.push(7, item, 100);
            sizes.insert((7, item), 100);
        }
        let mut now = 0;
        let mut first = Vec::new();
        while first.len() < 3 {
            match pacer.poll_release(now) {
                Some(released) => first.push(released),
                None => now = pacer.poll_timeout().expect("items wait"),
            }
        }
        assert_eq!(first, vec![(7, 0), (7, 1), (7, 2)]);
        // A second flow arrives (a lower key, then a higher one): each gets the next turns.
        pacer.push(3, 0, 100);
        pacer.push(9, 0, 100);
        sizes.insert((3, 0), 100);
        sizes.insert((9, 0), 100);
        let order: Vec<(u32, u32)> = drain(&mut pacer, &sizes, now)
            .into_iter()
            .map(|(_, flow, item, _)| (flow, item))
            .take(4)
            .collect();
        assert_eq!(order, vec![(9, 0), (3, 0), (7, 3), (7, 4)]);
    }

    #[test]
    fn removed_flows_and_cleared_pacers_release_nothing_more() {
        let mut pacer = Pacer::new(1_000_000, 1_000_000, 0);
        pacer.push(1, 10, 400);
        pacer.push(1, 11, 400);
        pacer.push(2, 20, 300);
        assert!(pacer.holds(&1) && pacer.holds(&2));
        pacer.remove_flow(&1);
        assert!(!pacer.holds(&1));
        assert_eq!(pacer.queued_bytes(), 300);
        assert_eq!(pacer.poll_release(1_000), Some((2, 20)));
        assert_eq!(pacer.poll_release(1_000), None);
        assert_eq!(pacer.poll_timeout(), None, "nothing queued: no deadline");
        pacer.push(3, 30, 10);
        pacer.clear();
        assert!(pacer.is_empty());
        assert_eq!(pacer.queued_bytes(), 0);
        assert_eq!(pacer.poll_release(2_000), None);
    }
}
