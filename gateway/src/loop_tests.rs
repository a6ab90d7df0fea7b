//! Two sites in one process: site A's delegator → a faulty network → site B's sink → acks
//! back. Frames go through the real encoder and decoder. Proves exactly-once, in-order apply per
//! partition under drops, duplicates, reordering, disconnects, failed applies and sink restarts.
use crate::delegator::{Delegator, tests_support::record};
use crate::limits::GatewayLimits;
use crate::sink::Sink;
use crate::wire::{Message, decode, encode};
use proptest::prelude::*;
use std::collections::BTreeMap;
use tern_conflict::SiteId;
use tern_node::core::keyspace::PartitionId;

const A: SiteId = SiteId(1);
const B: SiteId = SiteId(2);
const C: SiteId = SiteId(3);
const PARTITIONS: u16 = 4;

/// splitmix64: a tiny seeded generator, so runs replay exactly.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

#[derive(Clone, Debug, Default)]
struct Faults {
    drop_per_mille: u64,
    duplicate_per_mille: u64,
    /// Each frame is delayed by 0..=this, independently, so frames reorder.
    delay_ms_max: u64,
    /// `(start_ms, duration_ms)` link outages.
    outages: Vec<(u64, u64)>,
    apply_fail_per_mille: u64,
    /// Restart B's sink (volatile state lost, applied cursors restored) at each reconnect.
    restart_sink_on_reconnect: bool,
    /// At each reconnect B's sink comes back with nothing (data and cursors lost).
    wipe_sink_on_reconnect: bool,
    /// B's partitions stop applying during this window (backpressure).
    apply_stalled: Option<(u64, u64)>,
}

/// One direction of the link: frames in flight, keyed by (due time, serial) for a
/// deterministic order.
#[derive(Debug, Default)]
struct Channel {
    in_flight: BTreeMap<(u64, u64), Vec<u8>>,
    serial: u64,
}

impl Channel {
    fn send(&mut self, frame: Vec<u8>, now_ms: u64, rng: &mut Rng, faults: &Faults) {
        if rng.chance(faults.drop_per_mille) {
            return;
        }
        let copies = if rng.chance(faults.duplicate_per_mille) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let due = now_ms + rng.below(faults.delay_ms_max + 1);
            self.serial += 1;
            self.in_flight.insert((due, self.serial), frame.clone());
        }
    }

    fn take_due(&mut self, now_ms: u64) -> Vec<Vec<u8>> {
        let later = self.in_flight.split_off(&(now_ms + 1, 0));
        std::mem::replace(&mut self.in_flight, later)
            .into_values()
            .collect()
    }
}

#[derive(Debug)]
struct World {
    now_ms: u64,
    rng: Rng,
    faults: Faults,
    limits: GatewayLimits,
    delegator: Delegator,
    sink: Sink,
    to_b: Channel,
    to_a: Channel,
    connected: bool,
    next_seq: BTreeMap<u16, u64>,
    /// Per partition, the seqs B must apply (origin not B), in order.
    expected: BTreeMap<u16, Vec<u64>>,
    applied: BTreeMap<u16, Vec<u64>>,
    committed_at_ms: BTreeMap<(u16, u64), u64>,
    lag_ms_max: u64,
    records_back_to_origin: u64,
}

impl World {
    fn new(seed: u64, faults: Faults, limits: GatewayLimits) -> Self {
        let mut delegator = Delegator::new(A, B, limits.clone());
        delegator.handle_connected(0);
        Self {
            now_ms: 0,
            rng: Rng(seed),
            faults,
            sink: Sink::new(B, A, limits.clone()),
            limits,
            delegator,
            to_b: Channel::default(),
            to_a: Channel::default(),
            connected: true,
            next_seq: BTreeMap::new(),
            expected: BTreeMap::new(),
            applied: BTreeMap::new(),
            committed_at_ms: BTreeMap::new(),
            lag_ms_max: 0,
            records_back_to_origin: 0,
        }
    }

    /// Site A commits one change in a random partition; some were written at B (and come
    /// back through A's log, so must not be shipped), some at C (relayed).
    fn commit(&mut self) {
        let partition = self.rng.below(u64::from(PARTITIONS)) as u16;
        let seq = self.next_seq.entry(partition).or_insert(0);
        *seq += 1;
        let seq = *seq;
        let origin = match self.rng.below(10) {
            0 => B,
            1 => C,
            _ => A,
        };
        if origin != B {
            self.expected.entry(partition).or_default().push(seq);
        }
        let mut r = record(origin, partition, seq, 16);
        r.committed_at_ms = self.now_ms;
        self.committed_at_ms.insert((partition, seq), self.now_ms);
        let result = self.delegator.handle_record(r, self.now_ms);
        assert_eq!(result, Ok(()), "well-formed input is taken");
    }

    fn in_outage(&self) -> bool {
        let t = self.now_ms;
        self.faults
            .outages
            .iter()
            .any(|&(start, len)| t >= start && t < start + len)
    }

    fn apply_stalled(&self) -> bool {
        self.faults
            .apply_stalled
            .is_some_and(|(start, len)| self.now_ms >= start && self.now_ms < start + len)
    }

    fn update_link(&mut self, faults_on: bool) {
        let down = faults_on && self.in_outage();
        if self.connected && down {
            self.connected = false;
            // Frames in flight die with the connection.
            self.to_a = Channel::default();
            self.to_b = Channel::default();
            self.delegator.handle_disconnected(self.now_ms);
            self.sink.handle_disconnected(self.now_ms);
        } else if !self.connected && !down {
            self.connected = true;
            if self.faults.wipe_sink_on_reconnect {
                // B keeps only what A will still send: records above A's acked cursors.
                let acked: BTreeMap<u16, u64> = self
                    .delegator
                    .acked_cursors()
                    .map(|(p, s)| (p.0, s))
                    .collect();
                for (partition, seqs) in &mut self.expected {
                    let floor = acked.get(partition).copied().unwrap_or(0);
                    seqs.retain(|&seq| seq > floor);
                }
                self.applied.clear();
                self.sink = Sink::new(B, A, self.limits.clone());
            } else if self.faults.restart_sink_on_reconnect {
                let cursors: Vec<(PartitionId, u64)> = self.sink.applied_cursors().collect();
                self.sink = Sink::with_cursors(B, A, self.limits.clone(), cursors);
            }
            self.delegator.handle_connected(self.now_ms);
        }
    }

    /// One millisecond of simulated time.
    fn step(&mut self, commits: u64, faults_on: bool) {
        self.update_link(faults_on);
        for _ in 0..commits {
            self.commit();
        }
        // Several rounds so zero-delay frames and their answers land within the millisecond.
        for _ in 0..8 {
            let mut progressed = false;
            for frame in self.to_b.take_due(self.now_ms) {
                progressed = true;
                self.deliver_to_b(&frame);
            }
            self.apply(faults_on);
            for frame in self.to_a.take_due(self.now_ms) {
                progressed = true;
                self.deliver_to_a(&frame);
            }
            if self
                .delegator
                .poll_timeout()
                .is_some_and(|t| t <= self.now_ms)
            {
                self.delegator.handle_timeout(self.now_ms);
            }
            if self.sink.poll_timeout().is_some_and(|t| t <= self.now_ms) {
                self.sink.handle_timeout(self.now_ms);
            }
            progressed |= self.transmit(faults_on);
            if !progressed {
                break;
            }
        }
        self.now_ms += 1;
    }

    fn faults_now(&self, faults_on: bool) -> Faults {
        if faults_on {
            self.faults.clone()
        } else {
            Faults::default()
        }
    }

    fn transmit(&mut self, faults_on: bool) -> bool {
        let faults = self.faults_now(faults_on);
        let mut sent = false;
        while let Some(message) = self.delegator.poll_transmit() {
            sent = true;
            let frame = encode(&message, self.limits.frame_bytes_max);
            let frame = frame.unwrap_or_else(|e| panic!("delegator frames fit: {e}"));
            self.to_b.send(frame, self.now_ms, &mut self.rng, &faults);
        }
        while let Some(message) = self.sink.poll_transmit() {
            sent = true;
            let frame = encode(&message, self.limits.frame_bytes_max);
            let frame = frame.unwrap_or_else(|e| panic!("sink frames fit: {e}"));
            self.to_a.send(frame, self.now_ms, &mut self.rng, &faults);
        }
        sent
    }

    fn deliver_to_b(&mut self, frame: &[u8]) {
        match decode(frame, self.limits.frame_bytes_max) {
            Ok(Message::Hello(hello)) => {
                assert_eq!(self.sink.handle_hello(hello, self.now_ms), Ok(()));
            }
            Ok(Message::Batch(batch)) => {
                self.records_back_to_origin +=
                    batch.records.iter().filter(|r| r.origin == B).count() as u64;
                assert_eq!(self.sink.handle_batch(batch, self.now_ms), Ok(()));
            }
            other => panic!("unexpected at B: {other:?}"),
        }
    }

    fn deliver_to_a(&mut self, frame: &[u8]) {
        match decode(frame, self.limits.frame_bytes_max) {
            Ok(Message::HelloAck(answer)) => {
                assert_eq!(self.delegator.handle_hello_ack(answer, self.now_ms), Ok(()));
            }
            Ok(Message::Ack(ack)) => {
                assert_eq!(self.delegator.handle_ack(ack, self.now_ms), Ok(()));
            }
            other => panic!("unexpected at A: {other:?}"),
        }
    }

    /// B's partitions apply what the sink hands out, in order, sometimes failing.
    fn apply(&mut self, faults_on: bool) {
        if faults_on && self.apply_stalled() {
            return;
        }
        while let Some(r) = self.sink.poll_apply() {
            if faults_on && self.rng.chance(self.faults.apply_fail_per_mille) {
                self.sink.handle_apply_failed(r.partition, self.now_ms);
                continue;
            }
            let applied = self.applied.entry(r.partition.0).or_default();
            assert!(
                applied.last().is_none_or(|&last| r.seq > last),
                "partition {} applied {} after {:?}",
                r.partition,
                r.seq,
                applied.last()
            );
            applied.push(r.seq);
            let committed = self.committed_at_ms.get(&(r.partition.0, r.seq)).copied();
            self.lag_ms_max = self.lag_ms_max.max(self.now_ms - committed.unwrap_or(0));
            self.sink.handle_applied(r.partition, r.seq, self.now_ms);
        }
    }

    fn drained(&self) -> bool {
        self.delegator.backlog_records() == 0
            && self.sink.apply_queue_records() == 0
            && self.applied == self.expected
    }

    /// Faults stop; run until everything is applied and acknowledged.
    fn heal(&mut self, bound_ms: u64) {
        let until = self.now_ms + bound_ms;
        while !self.drained() && self.now_ms < until {
            self.step(0, false);
        }
    }

    fn assert_converged(&self) {
        assert_eq!(
            self.applied, self.expected,
            "every record applied once, in order"
        );
        assert_eq!(
            self.delegator.backlog_records(),
            0,
            "everything acknowledged"
        );
        assert_eq!(self.delegator.backlog_bytes(), 0);
        assert_eq!(
            self.records_back_to_origin, 0,
            "nothing shipped back to its origin"
        );
        assert_eq!(self.delegator.repair_needed().count(), 0);
    }
}

fn test_limits() -> GatewayLimits {
    GatewayLimits {
        batch_records_max: 16,
        inflight_batches_max: 4,
        ack_timeout_ms: 50,
        ..GatewayLimits::default()
    }
}

fn run(seed: u64, faults: Faults, chaos_ms: u64, commits_per_ms_max: u64) -> World {
    let mut world = World::new(seed, faults, test_limits());
    for _ in 0..chaos_ms {
        let commits = world.rng.below(commits_per_ms_max + 1);
        world.step(commits, true);
    }
    world.heal(60_000);
    world.assert_converged();
    world
}

#[test]
fn a_clean_link_applies_everything_within_the_batch_wait() {
    let world = run(1, Faults::default(), 2_000, 2);
    assert!(world.expected.values().map(Vec::len).sum::<usize>() > 1_000);
    assert!(
        world.lag_ms_max <= test_limits().batch_wait_ms_max,
        "lag {} ms",
        world.lag_ms_max
    );
    assert_eq!(world.delegator.stats().resends_total, 0);
    assert_eq!(world.sink.stats().duplicates_total, 0);
}

#[test]
fn named_fault_mixes_converge_exactly_once() {
    let outages = vec![(300, 200), (900, 50), (1_500, 400)];
    let cases: Vec<(&str, Faults)> = vec![
        (
            "drops",
            Faults {
                drop_per_mille: 200,
                ..Faults::default()
            },
        ),
        (
            "duplicates",
            Faults {
                duplicate_per_mille: 400,
                ..Faults::default()
            },
        ),
        (
            "reordering",
            Faults {
                delay_ms_max: 30,
                ..Faults::default()
            },
        ),
        (
            "disconnects",
            Faults {
                outages: outages.clone(),
                ..Faults::default()
            },
        ),
        (
            "failed applies and sink restarts",
            Faults {
                apply_fail_per_mille: 30,
                outages: outages.clone(),
                restart_sink_on_reconnect: true,
                ..Faults::default()
            },
        ),
        (
            "everything",
            Faults {
                drop_per_mille: 100,
                duplicate_per_mille: 100,
                delay_ms_max: 20,
                outages,
                apply_fail_per_mille: 20,
                restart_sink_on_reconnect: true,
                apply_stalled: Some((600, 200)),
                ..Faults::default()
            },
        ),
    ];
    for (name, faults) in cases {
        let world = run(7, faults, 2_000, 3);
        let shipped = world.delegator.stats().records_shipped_total;
        let expected: usize = world.expected.values().map(Vec::len).sum();
        assert!(shipped >= expected as u64, "{name}: shipped {shipped}");
    }
}

#[test]
fn a_stalled_sink_blocks_the_delegator_and_the_backlog_drains_after() {
    let faults = Faults {
        apply_stalled: Some((100, 1_000)),
        ..Faults::default()
    };
    let mut world = World::new(3, faults, test_limits());
    let mut blocked_at = None;
    for _ in 0..1_000 {
        world.step(2, true);
        if blocked_at.is_none() && world.delegator.is_blocked() {
            blocked_at = Some(world.now_ms);
        }
    }
    assert!(blocked_at.is_some(), "the window filled up");
    let limits = test_limits();
    assert!(world.delegator.inflight_batches() <= limits.inflight_batches_max);
    assert!(
        world.sink.apply_queue_records() <= limits.inflight_batches_max * limits.batch_records_max,
        "the sink holds at most the window"
    );
    assert!(
        world.delegator.backlog_records() > 1_000,
        "the backlog grows instead"
    );
    world.heal(60_000);
    world.assert_converged();
}

#[test]
fn the_same_seed_replays_the_same_run() {
    let faults = Faults {
        drop_per_mille: 100,
        duplicate_per_mille: 100,
        delay_ms_max: 10,
        outages: vec![(200, 100)],
        ..Faults::default()
    };
    let a = run(11, faults.clone(), 800, 3);
    let b = run(11, faults, 800, 3);
    assert_eq!(a.delegator.stats(), b.delegator.stats());
    assert_eq!(a.sink.stats(), b.sink.stats());
    assert_eq!(a.now_ms, b.now_ms);
}

fn arb_faults() -> impl Strategy<Value = Faults> {
    (
        0u64..300,
        0u64..300,
        0u64..25,
        proptest::collection::vec((0u64..1_500, 1u64..300), 0..4),
        0u64..50,
        any::<bool>(),
        proptest::option::of((0u64..1_500, 1u64..400)),
    )
        .prop_map(
            |(drop, duplicate, delay, outages, apply_fail, restart, stalled)| Faults {
                drop_per_mille: drop,
                duplicate_per_mille: duplicate,
                delay_ms_max: delay,
                outages,
                apply_fail_per_mille: apply_fail,
                restart_sink_on_reconnect: restart,
                wipe_sink_on_reconnect: false,
                apply_stalled: stalled,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn any_fault_schedule_heals_to_exactly_once_in_order(
        seed in any::<u64>(),
        faults in arb_faults(),
    ) {
        // `run` asserts convergence after the heal.
        run(seed, faults, 1_500, 3);
    }
}

#[test]
fn a_sink_that_lost_its_state_gets_the_live_stream_and_a_repair_mark() {
    let faults = Faults {
        outages: vec![(500, 100)],
        wipe_sink_on_reconnect: true,
        drop_per_mille: 50,
        delay_ms_max: 5,
        ..Faults::default()
    };
    let mut world = World::new(5, faults, test_limits());
    for _ in 0..1_000 {
        let commits = world.rng.below(3);
        world.step(commits, true);
    }
    world.heal(60_000);
    // Everything A could still send was applied once, in order, after the wipe: the stream
    // did not stall on the hole, and the hole is flagged for anti-entropy instead.
    assert_eq!(world.applied, world.expected);
    assert_eq!(world.delegator.backlog_records(), 0);
    let repair: Vec<PartitionId> = world.delegator.repair_needed().collect();
    assert_eq!(repair, (0..PARTITIONS).map(PartitionId).collect::<Vec<_>>());
}
