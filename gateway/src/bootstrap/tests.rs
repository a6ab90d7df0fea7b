//! Bootstrap of site B from site A while A keeps writing: snapshot chunks and the live stream
//! (A's delegator → B's sink) through the real encoder, both applied to B's partition core.
use super::*;
use crate::delegator::Delegator;
use crate::limits::GatewayLimits;
use crate::repair::CoreReplica;
use crate::repair::test_support::*;
use crate::sink::Sink;
use crate::wire::{Message, WanRecord};
use bytes::Bytes;
use std::collections::BTreeSet;
use tern_conflict::LastWriterWins;
use tern_node::core::partition::PartitionCore;

const RATE_BYTES_PER_SEC: u64 = 100_000;

fn limits() -> GatewayLimits {
    GatewayLimits {
        bootstrap_bytes_per_sec_max: RATE_BYTES_PER_SEC,
        bootstrap_chunk_bytes_max: 4 * 1024,
        bootstrap_chunks_inflight_max: 4,
        ..GatewayLimits::default()
    }
}

/// Site A (source) and site B (target) with one partition, linked by a delegator/sink pair
/// and a bootstrap session.
struct World {
    now_ms: u64,
    rng: Rng,
    limits: GatewayLimits,
    a: PartitionCore,
    b: PartitionCore,
    delegator: Delegator,
    sink: Sink,
    source: Option<BootstrapSource>,
    target: BootstrapTarget,
    /// A's change log position fed to the delegator.
    fed: u64,
    cost: Cost,
    /// Conflicts met applying the live stream at B.
    stream_conflicts: u64,
    /// Keys A may write while the bootstrap runs.
    live_keys: std::ops::Range<u64>,
}

impl World {
    fn new(seed: u64, a: PartitionCore, b: PartitionCore, now_ms: u64) -> Self {
        let limits = limits();
        Self {
            now_ms,
            rng: Rng(seed),
            delegator: Delegator::new(A, B, limits.clone()),
            sink: Sink::new(B, A, limits.clone()),
            limits,
            a,
            b,
            source: None,
            target: BootstrapTarget::new(1, A, vec![PARTITION]),
            fed: 0,
            cost: Cost::default(),
            stream_conflicts: 0,
            live_keys: 0..0,
        }
    }

    /// A's shell on the snapshot request: establish the stream at the change-log position,
    /// then start streaming the snapshot.
    fn on_snapshot_request(&mut self, partitions: Vec<tern_node::core::keyspace::PartitionId>) {
        let mut starts = Vec::new();
        for partition in partitions {
            let snapshot_seq = self.a.last_seq();
            assert!(self.delegator.start_after_snapshot(partition, snapshot_seq));
            self.fed = snapshot_seq;
            starts.push((partition, snapshot_seq));
        }
        self.source = Some(BootstrapSource::new(
            1,
            B,
            starts,
            &self.limits,
            self.now_ms,
        ));
        self.delegator.handle_connected(self.now_ms);
    }

    /// Feed A's new change records to the delegator.
    fn feed(&mut self) {
        let records: Vec<WanRecord> = self
            .a
            .changes_since(self.fed)
            .expect("the log reaches back")
            .map(|r| WanRecord {
                origin: r.entry.version.origin,
                partition: r.partition,
                prev_seq: 0,
                seq: r.seq,
                key: r.key.clone(),
                entry: r.entry.clone(),
                committed_at_ms: self.now_ms,
            })
            .collect();
        self.fed = self.a.last_seq();
        let intake = self
            .delegator
            .handle_records(records, self.now_ms)
            .expect("memory store takes all");
        assert!(intake.notices.is_empty(), "{:?}", intake.notices);
    }

    fn deliver_to_b(&mut self, message: Message) {
        let now = self.now_ms;
        match through_wire(message, &self.limits, &mut self.cost) {
            Message::Hello(hello) => self.sink.handle_hello(hello, now).expect("hello"),
            Message::Batch(batch) => self.sink.handle_batch(batch, now).expect("batch"),
            Message::SnapshotChunk(chunk) => self
                .target
                .handle_chunk(
                    chunk,
                    &mut CoreReplica::new(&mut self.b, &LastWriterWins),
                    now,
                )
                .expect("chunk applies"),
            other => panic!("unexpected at B: {other:?}"),
        }
    }

    fn deliver_to_a(&mut self, message: Message) {
        let now = self.now_ms;
        match through_wire(message, &self.limits, &mut self.cost) {
            Message::SnapshotRequest(request) => self.on_snapshot_request(request.partitions),
            Message::SnapshotAck(ack) => self
                .source
                .as_mut()
                .expect("a session")
                .handle_ack(ack, now)
                .expect("ack"),
            Message::HelloAck(answer) => self
                .delegator
                .handle_hello_ack(answer, now)
                .expect("hello ack"),
            Message::Ack(ack) => self.delegator.handle_ack(ack, now).expect("ack"),
            other => panic!("unexpected at A: {other:?}"),
        }
    }

    /// One millisecond: A writes (if `writes`), feeds, everyone exchanges.
    fn step(&mut self, writes: u64) {
        let now = self.now_ms;
        for _ in 0..writes {
            let n =
                self.live_keys.start + self.rng.below(self.live_keys.end - self.live_keys.start);
            if self.rng.below(5) == 0 {
                del(&mut self.a, key(n), now);
            } else {
                set(&mut self.a, key(n), &format!("live{now}"), None, now);
            }
        }
        if self.source.is_some() {
            self.feed();
        }
        for _ in 0..32 {
            let mut moved = false;
            if self.delegator.poll_timeout().is_some_and(|t| t <= now) {
                self.delegator.handle_timeout(now);
            }
            if let Some(source) = self.source.as_mut() {
                source
                    .drive(&CoreReplica::new(&mut self.a, &LastWriterWins), now)
                    .expect("drive");
            }
            let mut to_b = Vec::new();
            while let Some(m) = self.delegator.poll_transmit() {
                to_b.push(m);
            }
            while let Some(m) = self
                .source
                .as_mut()
                .and_then(BootstrapSource::poll_transmit)
            {
                to_b.push(m);
            }
            for m in to_b {
                moved = true;
                self.deliver_to_b(m);
            }
            while let Some(r) = self.sink.poll_apply() {
                moved = true;
                let applied = self.b.apply_remote(r.key, r.entry, &LastWriterWins, now);
                self.stream_conflicts += u64::from(applied.is_conflict());
                self.sink.handle_applied(r.partition, r.seq, now);
            }
            if self.sink.poll_timeout().is_some_and(|t| t <= now) {
                self.sink.handle_timeout(now);
            }
            let mut to_a = Vec::new();
            while let Some(m) = self.sink.poll_transmit() {
                to_a.push(m);
            }
            while let Some(m) = self.target.poll_transmit() {
                to_a.push(m);
            }
            for m in to_a {
                moved = true;
                self.deliver_to_a(m);
            }
            if !moved {
                break;
            }
        }
        self.now_ms += 1;
    }

    fn bootstrap_done(&self) -> bool {
        self.target.is_done() && self.source.as_ref().is_some_and(BootstrapSource::is_done)
    }

    /// Run with writes until the bootstrap is done, then without until the stream drains.
    fn run(&mut self, writes_per_ms: u64) {
        let until = self.now_ms + 60_000;
        while !self.bootstrap_done() && self.now_ms < until {
            self.step(writes_per_ms);
        }
        assert!(self.bootstrap_done(), "bootstrap finished in time");
        for _ in 0..50 {
            self.step(writes_per_ms);
        }
        while self.delegator.backlog_records() > 0 && self.now_ms < until {
            self.step(0);
        }
        assert_eq!(self.delegator.backlog_records(), 0, "stream drained");
    }

    fn assert_rate_limited(&self) {
        let source = self.source.as_ref().expect("a session");
        let progress = source.progress();
        let last = progress.last_sent_at_ms.expect("chunks went out");
        let elapsed_ms = last - progress.started_at_ms;
        assert!(
            elapsed_ms * RATE_BYTES_PER_SEC >= progress.bytes_sent * 1_000,
            "{} bytes in {elapsed_ms} ms is faster than {RATE_BYTES_PER_SEC} B/s",
            progress.bytes_sent
        );
        assert!(progress.chunks_sent > 10, "{progress:?}");
    }
}

fn populate(core: &mut PartitionCore, keys: std::ops::Range<u64>, now_ms: u64) {
    for n in keys {
        let ttl = (n % 7 == 0).then_some(60_000);
        set(core, key(n), &format!("value-{n}-{now_ms}"), ttl, now_ms);
        if n % 11 == 0 {
            del(core, key(n), now_ms);
        }
    }
}

#[test]
fn bootstrap_into_an_empty_target_while_writes_continue() {
    let mut a = core(A);
    populate(&mut a, 0..2_000, 1_000);
    let first_writes = a.last_seq();
    let mut world = World::new(1, a, core(B), 2_000);
    world.live_keys = 0..2_500;
    world.run(3);
    world.assert_rate_limited();
    let (a_entries, b_entries) = (entries(&world.a), entries(&world.b));
    let diff = differences(&a_entries, &b_entries);
    assert!(
        diff.is_empty(),
        "identical: {:#?}",
        &diff[..diff.len().min(3)]
    );
    assert!(a_entries.len() > 2_000);
    assert_eq!(world.target.progress().conflicts, 0);
    assert_eq!(world.stream_conflicts, 0);
    assert_eq!(
        world.delegator.repair_needed().count(),
        0,
        "no hole below the snapshot"
    );
    // The snapshot started after A's first live writes (those of the first millisecond).
    let snapshot_seq = world.target.snapshot_seq(PARTITION).expect("chunks came");
    assert!((first_writes..first_writes + 4).contains(&snapshot_seq));
}

#[test]
fn bootstrap_into_a_stale_divergent_target_raises_only_real_conflicts() {
    // B once had A's data, then lost touch: A overwrote keys 0..300 (B's copies are stale,
    // causally older: no conflict), both wrote 300..350 (real conflicts), B deleted
    // 350..400 (B's deletes are newer), B alone has 5_000..5_100.
    let mut a = core(A);
    populate(&mut a, 0..2_000, 1_000);
    let mut b = core(B);
    copy_all(&a, &mut b, 1_000);
    for n in 0..350 {
        set(&mut a, key(n), "a-newer", None, 1_100);
    }
    for n in 300..350 {
        set(&mut b, key(n), "b-concurrent", None, 1_200);
    }
    for n in 350..400 {
        del(&mut b, key(n), 1_200);
    }
    for n in 5_000..5_100 {
        set(&mut b, key(n), "b-only", None, 1_200);
    }
    let mut world = World::new(2, a, b, 2_000);
    // A's live writes avoid the conflicting keys, so every conflict is one of the 50.
    world.live_keys = 1_000..2_500;
    world.run(3);
    world.assert_rate_limited();
    assert_eq!(
        world.target.progress().conflicts + world.stream_conflicts,
        50,
        "only the keys both sites wrote concurrently"
    );
    for n in 0..300 {
        let value = world.b.entry(&key(n)).map(|e| e.value.clone());
        assert_eq!(
            value,
            Some(tern_conflict::Value::Bytes(Bytes::from("a-newer")))
        );
    }
    for n in 350..400 {
        assert!(
            world.b.entry(&key(n)).is_some_and(|e| e.is_tombstone()),
            "B's newer delete stands"
        );
    }
    let b_only: BTreeSet<u64> = (5_000..5_100)
        .filter(|&n| world.b.entry(&key(n)).is_some())
        .collect();
    assert_eq!(b_only.len(), 100, "a bootstrap never wipes the target");
    // B's own writes reach A through one repair session; then the sites are identical.
    let now = world.now_ms;
    repair(&mut world.b, &mut world.a, now, &world.limits);
    settle(&mut world.a, now);
    settle(&mut world.b, now);
    let diff = differences(&entries(&world.a), &entries(&world.b));
    assert!(
        diff.is_empty(),
        "identical: {:#?}",
        &diff[..diff.len().min(3)]
    );
}

#[test]
fn a_lost_link_resumes_from_the_acknowledged_position() {
    let mut a = core(A);
    populate(&mut a, 0..1_000, 1_000);
    let mut world = World::new(3, a, core(B), 2_000);
    world.live_keys = 0..1_000;
    // Get the session going, then cut the link for a while.
    while world
        .source
        .as_ref()
        .is_none_or(|s| s.progress().chunks_sent < 5)
    {
        world.step(1);
    }
    world
        .source
        .as_mut()
        .expect("a session")
        .handle_disconnected();
    world.delegator.handle_disconnected(world.now_ms);
    world.sink.handle_disconnected(world.now_ms);
    let chunks_before = world.target.progress().chunks_applied;
    for _ in 0..100 {
        world.step(1);
    }
    assert_eq!(
        world.target.progress().chunks_applied,
        chunks_before,
        "link down"
    );
    world.source.as_mut().expect("a session").handle_connected();
    world.delegator.handle_connected(world.now_ms);
    world.run(1);
    let diff = differences(&entries(&world.a), &entries(&world.b));
    assert!(
        diff.is_empty(),
        "identical: {:#?}",
        &diff[..diff.len().min(3)]
    );
}
