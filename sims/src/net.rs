//! The simulated network: per-link latency distributions, loss, duplication, reordering and
//! partitions (one-way or both ways). It only decides *when* (and whether, and how many times)
//! a message arrives; the world schedules the arrivals.
//!
//! A link is one direction, `from → to`. Links without their own [`LinkConfig`] use the
//! network's default. A cut link drops what is sent on it and what is in flight on it when the
//! message would arrive (a partition loses packets already on the wire).
use crate::rng::SimRng;
use crate::time::SimTime;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A simulated host's address (its index in the world).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostId(pub u32);

impl fmt::Display for HostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "h{}", self.0)
    }
}

/// One-way delay of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Latency {
    Fixed {
        us: u64,
    },
    Uniform {
        min_us: u64,
        max_us: u64,
    },
    /// Uniform in `min_us..=max_us`, except that with probability `spike_ppm` it is uniform in
    /// `max_us..=spike_max_us` instead (a congested queue, a retransmit): the long tail that
    /// reorders messages.
    Spiky {
        min_us: u64,
        max_us: u64,
        spike_ppm: u32,
        spike_max_us: u64,
    },
}

impl Latency {
    pub fn sample(&self, rng: &mut SimRng) -> u64 {
        match *self {
            Latency::Fixed { us } => us,
            Latency::Uniform { min_us, max_us } => rng.between(min_us, max_us),
            Latency::Spiky {
                min_us,
                max_us,
                spike_ppm,
                spike_max_us,
            } => {
                if rng.chance_ppm(spike_ppm) {
                    rng.between(max_us, spike_max_us)
                } else {
                    rng.between(min_us, max_us)
                }
            }
        }
    }
}

/// How one direction of a link behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkConfig {
    pub latency: Latency,
    /// Probability (per million) that a message is lost.
    pub loss_ppm: u32,
    /// Probability (per million) that a message is delivered twice (each copy with its own delay).
    pub duplicate_ppm: u32,
    /// In order, like one TCP connection: a message never arrives before one sent earlier on the
    /// same link. When false, independent delays reorder messages.
    pub fifo: bool,
}

impl LinkConfig {
    /// A perfect in-order link with a fixed delay.
    pub fn reliable(latency_us: u64) -> Self {
        Self {
            latency: Latency::Fixed { us: latency_us },
            loss_ppm: 0,
            duplicate_ppm: 0,
            fifo: true,
        }
    }
}

/// Counters of what the network did, for reports and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    pub sent: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    /// Dropped because the link was cut when sent or when due to arrive.
    pub cut: u64,
}

#[derive(Debug)]
pub struct Network {
    default_link: LinkConfig,
    links: BTreeMap<(HostId, HostId), LinkConfig>,
    cut: BTreeSet<(HostId, HostId)>,
    /// Latest arrival scheduled per FIFO link, so later sends never overtake it.
    fifo_tail: BTreeMap<(HostId, HostId), SimTime>,
    stats: NetStats,
}

impl Network {
    pub fn new(default_link: LinkConfig) -> Self {
        Self {
            default_link,
            links: BTreeMap::new(),
            cut: BTreeSet::new(),
            fifo_tail: BTreeMap::new(),
            stats: NetStats::default(),
        }
    }

    pub fn stats(&self) -> NetStats {
        self.stats
    }

    pub fn link(&self, from: HostId, to: HostId) -> LinkConfig {
        self.links
            .get(&(from, to))
            .copied()
            .unwrap_or(self.default_link)
    }

    /// Configure the `from → to` direction.
    pub fn set_link(&mut self, from: HostId, to: HostId, config: LinkConfig) {
        self.links.insert((from, to), config);
    }

    /// Configure both directions between `a` and `b`.
    pub fn set_link_both(&mut self, a: HostId, b: HostId, config: LinkConfig) {
        self.set_link(a, b, config);
        self.set_link(b, a, config);
    }

    /// Cut `from → to` only (a one-way partition: `to` still reaches `from`).
    pub fn cut_one_way(&mut self, from: HostId, to: HostId) {
        self.cut.insert((from, to));
    }

    /// Cut both directions between `a` and `b`.
    pub fn cut_both(&mut self, a: HostId, b: HostId) {
        self.cut_one_way(a, b);
        self.cut_one_way(b, a);
    }

    /// Cut `host` off from every host in `others`, both ways.
    pub fn isolate(&mut self, host: HostId, others: impl IntoIterator<Item = HostId>) {
        for other in others {
            if other != host {
                self.cut_both(host, other);
            }
        }
    }

    /// Restore both directions between `a` and `b`.
    pub fn heal(&mut self, a: HostId, b: HostId) {
        self.cut.remove(&(a, b));
        self.cut.remove(&(b, a));
    }

    pub fn heal_all(&mut self) {
        self.cut.clear();
    }

    pub fn is_cut(&self, from: HostId, to: HostId) -> bool {
        self.cut.contains(&(from, to))
    }

    /// Send one message at `now`: returns its arrival times (none if lost or cut, two if
    /// duplicated), in the order to schedule them.
    pub fn transmit(
        &mut self,
        from: HostId,
        to: HostId,
        now: SimTime,
        rng: &mut SimRng,
    ) -> Vec<SimTime> {
        self.stats.sent += 1;
        if self.is_cut(from, to) {
            self.stats.cut += 1;
            return Vec::new();
        }
        let link = self.link(from, to);
        if rng.chance_ppm(link.loss_ppm) {
            self.stats.lost += 1;
            return Vec::new();
        }
        let copies = if rng.chance_ppm(link.duplicate_ppm) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        let mut arrivals = Vec::with_capacity(copies);
        for _ in 0..copies {
            let mut at = now.after_micros(link.latency.sample(rng));
            if link.fifo {
                let tail = self.fifo_tail.entry((from, to)).or_insert(SimTime::ZERO);
                at = at.max(*tail);
                *tail = at;
            }
            arrivals.push(at);
        }
        arrivals
    }

    /// Whether a message due now on `from → to` gets through (the link may have been cut while
    /// it was in flight). Counts the outcome.
    pub fn arrive(&mut self, from: HostId, to: HostId) -> bool {
        if self.is_cut(from, to) {
            self.stats.cut += 1;
            false
        } else {
            self.stats.delivered += 1;
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: HostId = HostId(0);
    const B: HostId = HostId(1);
    const C: HostId = HostId(2);

    fn spread(min_us: u64, max_us: u64, fifo: bool) -> LinkConfig {
        LinkConfig {
            latency: Latency::Uniform { min_us, max_us },
            loss_ppm: 0,
            duplicate_ppm: 0,
            fifo,
        }
    }

    /// Send `n` messages one microsecond apart; return their arrival times in send order.
    fn send_many(net: &mut Network, rng: &mut SimRng, n: u64) -> Vec<SimTime> {
        (0..n)
            .flat_map(|i| net.transmit(A, B, SimTime::from_micros(i), rng))
            .collect()
    }

    #[test]
    fn latency_samples_stay_in_their_distribution() {
        let mut rng = SimRng::from_seed(3);
        let spiky = Latency::Spiky {
            min_us: 10,
            max_us: 20,
            spike_ppm: 100_000,
            spike_max_us: 1_000,
        };
        let samples: Vec<u64> = (0..5_000).map(|_| spiky.sample(&mut rng)).collect();
        assert!(samples.iter().all(|&s| (10..=1_000).contains(&s)));
        let spikes = samples.iter().filter(|&&s| s > 20).count();
        assert!(
            (300..700).contains(&spikes),
            "10% spikes, saw {spikes} of 5000"
        );
        assert_eq!(Latency::Fixed { us: 7 }.sample(&mut rng), 7);
    }

    #[test]
    fn fifo_links_keep_order_and_others_reorder() {
        let mut rng = SimRng::from_seed(4);
        let mut fifo = Network::new(spread(0, 10_000, true));
        let arrivals = send_many(&mut fifo, &mut rng, 500);
        assert!(
            arrivals.windows(2).all(|w| w[0] <= w[1]),
            "FIFO link reordered"
        );

        let mut loose = Network::new(spread(0, 10_000, false));
        let arrivals = send_many(&mut loose, &mut rng, 500);
        let overtaken = arrivals.windows(2).filter(|w| w[0] > w[1]).count();
        assert!(
            overtaken > 100,
            "non-FIFO link should reorder often, reordered {overtaken}"
        );
    }

    #[test]
    fn loss_and_duplication_happen_at_their_rates() {
        let mut rng = SimRng::from_seed(5);
        let config = LinkConfig {
            loss_ppm: 200_000,
            duplicate_ppm: 100_000,
            ..spread(1, 5, false)
        };
        let mut net = Network::new(config);
        let arrivals = send_many(&mut net, &mut rng, 10_000).len() as u64;
        let stats = net.stats();
        assert_eq!(stats.sent, 10_000);
        assert!((1_700..2_300).contains(&stats.lost), "lost {}", stats.lost);
        // Duplication is drawn only for messages that were not lost.
        assert!(
            (600..1_000).contains(&stats.duplicated),
            "duplicated {}",
            stats.duplicated
        );
        assert_eq!(arrivals, stats.sent - stats.lost + stats.duplicated);
    }

    #[test]
    fn partitions_cut_the_right_directions_and_heal() {
        let mut rng = SimRng::from_seed(6);
        let mut net = Network::new(LinkConfig::reliable(100));
        let now = SimTime::ZERO;
        let gets_through = |net: &mut Network, rng: &mut SimRng, from, to| {
            !net.transmit(from, to, now, rng).is_empty()
        };

        net.cut_one_way(A, B);
        assert!(!gets_through(&mut net, &mut rng, A, B));
        assert!(
            gets_through(&mut net, &mut rng, B, A),
            "one-way cut blocks only A→B"
        );

        net.heal(A, B);
        net.isolate(C, [A, B, C]);
        let cases = [
            (A, B, true),
            (B, A, true),
            (A, C, false),
            (C, A, false),
            (B, C, false),
            (C, B, false),
        ];
        for (from, to, expected) in cases {
            assert_eq!(
                gets_through(&mut net, &mut rng, from, to),
                expected,
                "{from}→{to}"
            );
        }
        net.heal_all();
        assert!(gets_through(&mut net, &mut rng, C, A));
        assert_eq!(net.stats().cut, 5);
    }

    #[test]
    fn messages_in_flight_are_dropped_when_the_link_is_cut_before_arrival() {
        let mut rng = SimRng::from_seed(7);
        let mut net = Network::new(LinkConfig::reliable(100));
        assert_eq!(
            net.transmit(A, B, SimTime::ZERO, &mut rng),
            [SimTime::from_micros(100)]
        );
        net.cut_both(A, B);
        assert!(!net.arrive(A, B));
        net.heal(A, B);
        assert!(net.arrive(A, B));
        assert_eq!((net.stats().delivered, net.stats().cut), (1, 1));
    }

    #[test]
    fn per_link_configs_override_the_default() {
        let mut rng = SimRng::from_seed(8);
        let mut net = Network::new(LinkConfig::reliable(100));
        net.set_link(A, B, LinkConfig::reliable(7));
        assert_eq!(
            net.transmit(A, B, SimTime::ZERO, &mut rng),
            [SimTime::from_micros(7)]
        );
        assert_eq!(
            net.transmit(B, A, SimTime::ZERO, &mut rng),
            [SimTime::from_micros(100)]
        );
        net.set_link_both(
            A,
            C,
            LinkConfig {
                loss_ppm: 1_000_000,
                ..LinkConfig::reliable(1)
            },
        );
        assert!(net.transmit(C, A, SimTime::ZERO, &mut rng).is_empty());
    }
}
