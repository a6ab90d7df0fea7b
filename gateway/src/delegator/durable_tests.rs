//! The delegator over the durable backlog: crashes mid-stream (torn tails included), overflow
//! under both policies, store failures. Frames go through the real encoder; the target's sink
//! applies in order and its applied sequence is checked exactly.
use super::tests_support::record;
use super::*;
use crate::backlog::{FsyncPolicy, MemFaults, MemStorage, OverflowPolicy};
use crate::sink::Sink;
use crate::wire::{decode, encode};

const LOCAL: SiteId = SiteId(1);
const TARGET: SiteId = SiteId(2);
const PARTITIONS: u16 = 3;

fn limits() -> GatewayLimits {
    GatewayLimits {
        batch_records_max: 8,
        inflight_batches_max: 4,
        ack_timeout_ms: 50,
        ..GatewayLimits::default()
    }
}

fn config(policy: FsyncPolicy, overflow: OverflowPolicy, cap_bytes: u64) -> BacklogConfig {
    BacklogConfig {
        segment_bytes_max: 512,
        backlog_bytes_max: cap_bytes,
        record_bytes_max: 256,
        cursor_sync_interval_ms: 20,
        overflow_policy: overflow,
        ..BacklogConfig::default()
    }
    .with_fsync_policy(policy)
}

/// splitmix64, so runs replay exactly.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n.max(1)
    }
}

/// Site A's change log, its delegator on a `MemStorage` disk, and site B's sink.
#[derive(Debug)]
struct Harness {
    storage: MemStorage,
    config: BacklogConfig,
    delegator: Delegator<BacklogStore<MemStorage>>,
    sink: Sink,
    /// Per partition, A's committed records (seq = index + 1).
    log: BTreeMap<u16, Vec<WanRecord>>,
    /// Per partition, the seqs B must apply (origin not B), in order.
    expected: BTreeMap<u16, Vec<u64>>,
    applied: BTreeMap<u16, Vec<u64>>,
    connected: bool,
    now_ms: u64,
    rng: Rng,
    crashes: u64,
}

impl Harness {
    fn new(seed: u64, faults: MemFaults, config: BacklogConfig) -> Self {
        let storage = MemStorage::with_faults(seed, faults);
        let delegator = open(&storage, &config);
        Self {
            storage,
            config,
            delegator,
            sink: Sink::new(TARGET, LOCAL, limits()),
            log: BTreeMap::new(),
            expected: BTreeMap::new(),
            applied: BTreeMap::new(),
            connected: false,
            now_ms: 0,
            rng: Rng(seed),
            crashes: 0,
        }
    }

    /// A commits `n` changes in random partitions; one in ten was written at B.
    fn commit(&mut self, n: u64) {
        for _ in 0..n {
            let partition = self.rng.below(u64::from(PARTITIONS)) as u16;
            let log = self.log.entry(partition).or_default();
            let seq = log.len() as u64 + 1;
            let origin = if self.rng.below(10) == 0 {
                TARGET
            } else {
                LOCAL
            };
            if origin != TARGET {
                self.expected.entry(partition).or_default().push(seq);
            }
            log.push(record(origin, partition, seq, 16));
        }
    }

    /// Hand the delegator every record it has not taken, as the node shell would: per
    /// partition from `resume_after`, all in one call.
    fn feed(&mut self) -> Result<Intake, StoreError> {
        let mut records = Vec::new();
        for (&partition, log) in &self.log {
            let after = self
                .delegator
                .resume_after(PartitionId(partition))
                .unwrap_or(0);
            records.extend(log.iter().skip(after as usize).cloned());
        }
        self.delegator.handle_records(records, self.now_ms)
    }

    fn connect(&mut self) {
        self.connected = true;
        self.delegator.handle_connected(self.now_ms);
    }

    fn disconnect(&mut self) {
        self.connected = false;
        self.delegator.handle_disconnected(self.now_ms);
        self.sink.handle_disconnected(self.now_ms);
    }

    /// Messages both ways (through the encoder) and B's applies, until quiet.
    fn exchange(&mut self) {
        let frame_max = limits().frame_bytes_max;
        for _ in 0..64 {
            let mut moved = false;
            while let Some(message) = self.delegator.poll_transmit() {
                moved = true;
                if !self.connected {
                    continue;
                }
                let bytes = encode(&message, frame_max).expect("delegator frames fit");
                match decode(&bytes, frame_max).expect("delegator frames decode") {
                    Message::Hello(hello) => {
                        self.sink.handle_hello(hello, self.now_ms).expect("hello");
                    }
                    Message::Batch(batch) => {
                        self.sink.handle_batch(batch, self.now_ms).expect("batch");
                    }
                    other => panic!("unexpected at B: {other:?}"),
                }
            }
            while let Some(r) = self.sink.poll_apply() {
                moved = true;
                let applied = self.applied.entry(r.partition.0).or_default();
                assert!(
                    applied.last().is_none_or(|&last| r.seq > last),
                    "{} applied {} after {:?}",
                    r.partition,
                    r.seq,
                    applied.last()
                );
                applied.push(r.seq);
                self.sink.handle_applied(r.partition, r.seq, self.now_ms);
            }
            if self.sink.poll_timeout().is_some_and(|t| t <= self.now_ms) {
                self.sink.handle_timeout(self.now_ms);
            }
            while let Some(message) = self.sink.poll_transmit() {
                moved = true;
                if !self.connected {
                    continue;
                }
                let bytes = encode(&message, frame_max).expect("sink frames fit");
                match decode(&bytes, frame_max).expect("sink frames decode") {
                    Message::HelloAck(answer) => self
                        .delegator
                        .handle_hello_ack(answer, self.now_ms)
                        .expect("hello ack"),
                    Message::Ack(ack) => self.delegator.handle_ack(ack, self.now_ms).expect("ack"),
                    other => panic!("unexpected at A: {other:?}"),
                }
            }
            if !moved {
                break;
            }
        }
    }

    /// One millisecond: commits, feeding, timers, messages.
    fn step(&mut self, commits: u64) {
        self.commit(commits);
        // Under `BlockWrites` a full backlog refuses: the records are fed again next time.
        match self.feed() {
            Ok(intake) => assert!(intake.notices.is_empty(), "{:?}", intake.notices),
            Err(StoreError::Full { .. }) => assert!(self.delegator.is_write_blocked()),
            Err(error) => panic!("store failed: {error}"),
        }
        if self
            .delegator
            .poll_timeout()
            .is_some_and(|t| t <= self.now_ms)
        {
            self.delegator.handle_timeout(self.now_ms);
        }
        self.exchange();
        self.now_ms += 1;
    }

    /// The gateway process dies: unsynced bytes are lost (torn with `torn_writes`), the
    /// delegator is rebuilt from the disk, the link comes back.
    fn crash(&mut self) {
        self.crashes += 1;
        let connected = self.connected;
        self.disconnect();
        self.storage.crash();
        self.delegator = open(&self.storage, &self.config);
        if connected {
            self.connect();
        }
    }

    fn run_until_drained(&mut self, bound_ms: u64) {
        let until = self.now_ms + bound_ms;
        while self.now_ms < until
            && (self.applied != self.expected || self.delegator.backlog_records() > 0)
        {
            self.step(0);
        }
    }
}

fn open(storage: &MemStorage, config: &BacklogConfig) -> Delegator<BacklogStore<MemStorage>> {
    let (delegator, _report) =
        Delegator::open(LOCAL, TARGET, limits(), storage.clone(), config.clone())
            .expect("open the backlog");
    delegator
}

#[test]
fn crashes_mid_stream_lose_nothing_and_keep_order() {
    // (fsync policy, torn writes at the crash)
    let cases = [
        (FsyncPolicy::Always, false),
        (FsyncPolicy::Always, true),
        (FsyncPolicy::EveryMs(7), false),
        (FsyncPolicy::EveryMs(7), true),
    ];
    for seed in 1..=6u64 {
        for (policy, torn_writes) in cases {
            let faults = MemFaults {
                torn_writes,
                ..MemFaults::default()
            };
            let config = config(policy, OverflowPolicy::BlockWrites, 1 << 20);
            let mut h = Harness::new(seed, faults, config);
            h.connect();
            for ms in 0..600u64 {
                let commits = h.rng.below(4);
                h.step(commits);
                // Crash at random moments, sometimes while the link is down (records pile up
                // in the backlog, unacknowledged by anyone).
                if h.rng.below(60) == 0 {
                    h.crash();
                }
                if ms == 200 {
                    h.disconnect();
                }
                if ms == 320 {
                    h.connect();
                }
            }
            h.run_until_drained(10_000);
            let case = format!("seed {seed}, {policy:?}, torn {torn_writes}");
            assert!(h.crashes > 3, "{case}: crashed {} times", h.crashes);
            assert_eq!(h.applied, h.expected, "{case}: every record once, in order");
            assert_eq!(h.delegator.backlog_records(), 0, "{case}");
            assert_eq!(h.delegator.repair_needed().count(), 0, "{case}: no hole");
            assert_eq!(h.delegator.target_repair_mark(), None, "{case}");
        }
    }
}

#[test]
fn without_fsync_a_crash_loses_older_tails_but_never_silently() {
    // With `Never`, closed segments may lose their tails too: records later ones build on are
    // gone, so the target needs repair. Whatever happens, it is applied in order or flagged.
    for seed in 1..=8u64 {
        let faults = MemFaults {
            torn_writes: true,
            ..MemFaults::default()
        };
        let config = config(FsyncPolicy::Never, OverflowPolicy::BlockWrites, 1 << 20);
        let mut h = Harness::new(seed, faults, config);
        for _ in 0..150 {
            h.step(3);
        }
        h.crash();
        h.connect();
        h.run_until_drained(10_000);
        let flagged =
            h.delegator.target_repair_mark().is_some() || h.delegator.repair_needed().count() > 0;
        assert!(
            h.applied == h.expected || flagged,
            "seed {seed}: lost records without a repair mark"
        );
        assert_eq!(
            h.delegator.backlog_records(),
            0,
            "seed {seed}: the stream went on"
        );
    }
}

#[test]
fn a_full_backlog_blocks_writes_until_acks_free_it() {
    let config = config(FsyncPolicy::Always, OverflowPolicy::BlockWrites, 2_048);
    let mut h = Harness::new(3, MemFaults::default(), config);
    // The target is away: records pile up until the cap refuses them.
    let mut refused = None;
    for _ in 0..200 {
        h.commit(1);
        match h.feed() {
            Ok(_) => {}
            Err(error) => {
                refused = Some(error);
                break;
            }
        }
    }
    assert!(
        matches!(
            refused,
            Some(StoreError::Full {
                bytes_max: 2_048,
                ..
            })
        ),
        "{refused:?}"
    );
    assert!(h.delegator.is_write_blocked());
    assert_eq!(h.delegator.stats().store_full_total, 1);
    // Nothing of the refused call was taken: feeding resumes from the same place.
    let taken: u64 = (0..PARTITIONS)
        .map(|p| h.delegator.resume_after(PartitionId(p)).unwrap_or(0))
        .sum();
    let committed: u64 = h.log.values().map(|l| l.len() as u64).sum();
    assert_eq!(taken + 1, committed, "only the refused record is left out");
    // The target comes back: acks delete segments, the block lifts, everything arrives.
    h.connect();
    for _ in 0..400 {
        h.step(1);
    }
    h.run_until_drained(10_000);
    assert!(!h.delegator.is_write_blocked());
    assert_eq!(h.applied, h.expected);
    assert_eq!(h.delegator.repair_needed().count(), 0);
    assert_eq!(h.delegator.target_repair_mark(), None);
}

#[test]
fn an_overflow_under_drop_and_repair_is_reported_marked_and_the_stream_goes_on() {
    let config = config(FsyncPolicy::Always, OverflowPolicy::DropAndRepair, 2_048);
    let mut h = Harness::new(4, MemFaults::default(), config.clone());
    // Ship some, so the target holds a prefix.
    h.connect();
    for _ in 0..20 {
        h.step(1);
    }
    h.run_until_drained(1_000);
    assert_eq!(h.applied, h.expected);
    let before: BTreeMap<u16, Vec<u64>> = h.applied.clone();
    h.disconnect();
    let mut overflow = None;
    for _ in 0..200 {
        h.commit(1);
        let intake = h.feed().expect("drop-and-repair never refuses");
        if intake.overflow.is_some() {
            overflow = intake.overflow;
            break;
        }
    }
    let dropped = overflow.expect("the cap was passed");
    assert!(dropped.records > 0 && !dropped.batch_dropped);
    let stats = h.delegator.stats();
    assert_eq!(
        (stats.overflow_drops_total, stats.records_dropped_total),
        (1, dropped.records)
    );
    assert_eq!(
        h.delegator.target_repair_mark(),
        Some(dropped.repair_generation)
    );
    let marked: Vec<PartitionId> = h.delegator.repair_needed().collect();
    assert!(
        !marked.is_empty(),
        "partitions that lost records are marked"
    );

    // The mark survives a restart; the stream goes on past the hole without stalling.
    h.crash();
    assert_eq!(
        h.delegator.target_repair_mark(),
        Some(dropped.repair_generation)
    );
    h.connect();
    for _ in 0..50 {
        h.step(1);
    }
    h.run_until_drained(10_000);
    assert_eq!(h.delegator.backlog_records(), 0, "nothing stuck");
    for (partition, seqs) in &h.applied {
        let expected = &h.expected[partition];
        let prefix = before.get(partition).map_or(0, Vec::len);
        assert_eq!(
            &seqs[..prefix],
            &expected[..prefix],
            "{partition}: prefix kept"
        );
        assert_eq!(
            seqs.last(),
            expected.last(),
            "{partition}: the newest records arrived after the hole"
        );
    }
    assert!(
        h.applied != h.expected,
        "the dropped records are for repair to bring"
    );
    // The repair driver clears the mark of the generation it repaired.
    assert_eq!(
        h.delegator.clear_target_repair(dropped.repair_generation),
        Ok(true)
    );
    assert_eq!(h.delegator.target_repair_mark(), None);
}

#[test]
fn a_failed_fsync_stops_the_delegator_and_reopening_recovers() {
    let config = config(FsyncPolicy::Always, OverflowPolicy::BlockWrites, 1 << 20);
    let mut h = Harness::new(5, MemFaults::default(), config);
    h.connect();
    for _ in 0..30 {
        h.step(2);
    }
    h.storage.fail_next_sync();
    // Enough that some are for the target (one in ten is filtered as B's own).
    h.commit(10);
    assert!(matches!(h.feed(), Err(StoreError::Failed { .. })));
    assert!(h.delegator.failure().is_some());
    assert_eq!(
        h.delegator.poll_timeout(),
        None,
        "a failed delegator waits for nothing"
    );
    assert!(
        matches!(h.feed(), Err(StoreError::Failed { .. })),
        "and stays failed"
    );
    h.crash();
    assert!(h.delegator.failure().is_none());
    for _ in 0..30 {
        h.step(2);
    }
    h.run_until_drained(10_000);
    assert_eq!(h.applied, h.expected);
}

#[test]
fn one_delegator_batch_is_one_backlog_write() {
    let config = config(FsyncPolicy::Always, OverflowPolicy::BlockWrites, 1 << 20);
    let mut h = Harness::new(6, MemFaults::default(), config);
    h.commit(5);
    let appends = h.storage.counters().appends;
    let intake = h.feed().expect("feed");
    assert_eq!(intake.taken, 5);
    // One segment header plus one frame run at most: one write per segment touched.
    let writes = h.storage.counters().appends - appends;
    assert!(writes <= 2, "{writes} writes for one batch");
}
