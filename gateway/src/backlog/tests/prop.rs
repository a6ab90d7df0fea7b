//! Model-based proptest: random appends, acknowledgements, syncs, ticks, injected I/O failures
//! and crash-restarts on the in-memory disk (losing unsynced tails, torn) never lose a record
//! that was appended, synced and not acknowledged, and replay in append order.
use super::super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

const PARTITIONS: u16 = 4;

#[derive(Clone, Debug)]
enum Op {
    /// Records as (partition, filler length).
    Append(Vec<(u16, u8)>),
    /// Acknowledge partition up to a fraction (/255) of what was appended to it.
    Ack(u16, u8),
    Sync,
    Tick(u16),
    /// Read everything back through `read_from` in steps of this many records.
    Read(u8),
    Crash,
    Restart,
    FailNextSync,
    FailNextAppend,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec((0..PARTITIONS, 0u8..40), 1..8).prop_map(Op::Append),
        3 => (0..PARTITIONS, any::<u8>()).prop_map(|(p, f)| Op::Ack(p, f)),
        1 => Just(Op::Sync),
        2 => (0u16..30).prop_map(Op::Tick),
        1 => (1u8..6).prop_map(Op::Read),
        1 => Just(Op::Crash),
        1 => Just(Op::Restart),
        1 => Just(Op::FailNextSync),
        1 => Just(Op::FailNextAppend),
    ]
}

fn config() -> impl Strategy<Value = BacklogConfig> {
    let policy = prop_oneof![
        Just(FsyncPolicy::Always),
        Just(FsyncPolicy::EveryMs(10)),
        Just(FsyncPolicy::Never)
    ];
    let overflow = prop_oneof![
        Just(OverflowPolicy::BlockWrites),
        Just(OverflowPolicy::DropAndRepair)
    ];
    (policy, overflow, prop_oneof![Just(1500u64), Just(1 << 20)]).prop_map(
        |(policy, overflow, cap)| {
            BacklogConfig {
                segment_bytes_max: 200,
                backlog_bytes_max: cap,
                record_bytes_max: 64,
                cursor_sync_interval_ms: 25,
                overflow_policy: overflow,
                ..BacklogConfig::default()
            }
            .with_fsync_policy(policy)
        },
    )
}

#[derive(Clone, Debug)]
struct ModelRecord {
    partition: u16,
    seq: u64,
    payload: Vec<u8>,
    /// Guaranteed on disk: appended and then synced.
    durable: bool,
    /// Model time of the append (or of the reopen that found it).
    appended_at_ms: u64,
}

/// What the caller (delegator + sink) knows.
struct Model {
    /// Records that may be in the backlog, in append order.
    records: Vec<ModelRecord>,
    /// What the target acknowledged.
    acked: BTreeMap<u16, u64>,
    next_seq: BTreeMap<u16, u64>,
    next_global: u64,
    now_ms: u64,
}

impl Model {
    fn acked(&self, partition: u16) -> u64 {
        self.acked.get(&partition).copied().unwrap_or(0)
    }

    fn expected_replay(&self) -> Vec<(u16, u64, Vec<u8>)> {
        self.records
            .iter()
            .filter(|r| r.seq > self.acked(r.partition))
            .map(|r| (r.partition, r.seq, r.payload.clone()))
            .collect()
    }

    fn global_of(payload: &[u8]) -> u64 {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&payload[..8]);
        u64::from_le_bytes(bytes)
    }
}

fn open(
    storage: &MemStorage,
    config: &BacklogConfig,
) -> Result<(Backlog<MemStorage>, RecoveryReport), TestCaseError> {
    // A failure armed for the next fsync may hit recovery itself; it is one-shot.
    for _ in 0..3 {
        match Backlog::open(storage.clone(), config.clone()) {
            Ok(opened) => return Ok(opened),
            Err(BacklogError::Io { .. }) => continue,
            Err(e) => return Err(TestCaseError::fail(format!("open: {e}"))),
        }
    }
    Err(TestCaseError::fail("open kept failing"))
}

fn read_all(
    backlog: &mut Backlog<MemStorage>,
    step: usize,
) -> Result<Vec<(u16, u64, Vec<u8>)>, TestCaseError> {
    let mut out = Vec::new();
    let mut cursor = ReadCursor::START;
    let limits = ReadLimits {
        records_max: step,
        bytes_max: 1 << 20,
    };
    loop {
        let batch = backlog
            .read_from(cursor, limits)
            .map_err(|e| TestCaseError::fail(format!("read: {e}")))?;
        prop_assert!(batch.corruptions.is_empty(), "{:?}", batch.corruptions);
        prop_assert!(batch.records.len() <= step);
        out.extend(
            batch
                .records
                .into_iter()
                .map(|r| (r.partition, r.seq, r.payload.to_vec())),
        );
        cursor = batch.next;
        if batch.at_end {
            return Ok(out);
        }
    }
}

/// After a reopen: check nothing durable and unacknowledged was lost, nothing foreign or
/// out of order appeared; then resync the model with what survived. `Ok(false)`: an injected
/// failure struck, reopen and check again.
fn reconcile(
    backlog: &mut Backlog<MemStorage>,
    report: &RecoveryReport,
    model: &mut Model,
) -> Result<bool, TestCaseError> {
    for event in &report.events {
        prop_assert!(
            matches!(
                event,
                RecoveryEvent::TornTailTruncated { .. }
                    | RecoveryEvent::TornSegmentRemoved { .. }
                    | RecoveryEvent::CursorTempRemoved
            ),
            "crashes must look like torn writes, not corruption: {event:?}"
        );
    }
    let replayed = read_all(backlog, 7)?;
    let mut last_global = None;
    for (partition, seq, payload) in &replayed {
        let known = model
            .records
            .iter()
            .any(|r| r.partition == *partition && r.seq == *seq && &r.payload == payload);
        prop_assert!(
            known,
            "replayed a record never appended: p{partition} s{seq}"
        );
        let global = Model::global_of(payload);
        prop_assert!(last_global < Some(global), "replay out of append order");
        last_global = Some(global);
    }
    for record in &model.records {
        if record.durable && record.seq > model.acked(record.partition) {
            prop_assert!(
                replayed
                    .iter()
                    .any(|(p, s, _)| *p == record.partition && *s == record.seq),
                "lost a synced, unacknowledged record: p{} s{}",
                record.partition,
                record.seq
            );
        }
    }
    // The sink re-acknowledges on resume. An injected failure here means: reopen again.
    let acks: Vec<(u16, u64)> = model.acked.iter().map(|(&p, &s)| (p, s)).collect();
    match backlog.acknowledge_many(&acks) {
        Ok(_) => {}
        Err(BacklogError::Io { .. }) => return Ok(false),
        Err(e) => return Err(TestCaseError::fail(format!("re-ack: {e}"))),
    }
    let survivors: Vec<ModelRecord> = replayed
        .into_iter()
        .map(|(partition, seq, payload)| ModelRecord {
            partition,
            seq,
            payload,
            durable: false,
            appended_at_ms: model.now_ms,
        })
        .collect();
    for record in &survivors {
        prop_assert!(backlog.last_appended(record.partition) >= Some(record.seq));
    }
    model.records = survivors;
    for partition in 0..PARTITIONS {
        let next = backlog.last_appended(partition).map_or(1, |s| s + 1);
        let entry = model.next_seq.entry(partition).or_insert(1);
        *entry = next;
    }
    Ok(true)
}

/// Open the backlog again (retrying through injected failures) and reconcile the model.
fn reopen(
    storage: &MemStorage,
    config: &BacklogConfig,
    model: &mut Model,
) -> Result<Backlog<MemStorage>, TestCaseError> {
    for _ in 0..4 {
        let (mut backlog, report) = open(storage, config)?;
        if reconcile(&mut backlog, &report, model)? {
            return Ok(backlog);
        }
    }
    Err(TestCaseError::fail("reopen kept failing"))
}

impl Model {
    /// The API promised everything appended so far is on stable storage.
    fn all_durable(&mut self) {
        for record in &mut self.records {
            record.durable = true;
        }
    }
}

fn run(config: BacklogConfig, seed: u64, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let storage = MemStorage::with_faults(
        seed,
        MemFaults {
            torn_writes: true,
            ..MemFaults::default()
        },
    );
    let (mut backlog, _) = open(&storage, &config)?;
    let mut model = Model {
        records: Vec::new(),
        acked: BTreeMap::new(),
        next_seq: (0..PARTITIONS).map(|p| (p, 1)).collect(),
        next_global: 0,
        now_ms: 0,
    };
    for op in ops {
        let mut must_reopen = false;
        match op {
            Op::Append(spec) => {
                let mut batch_records = Vec::new();
                for (partition, filler) in spec {
                    let seq = model.next_seq[&partition];
                    model.next_seq.insert(partition, seq + 1);
                    let mut payload = model.next_global.to_le_bytes().to_vec();
                    model.next_global += 1;
                    payload.extend(std::iter::repeat_n(filler, usize::from(filler)));
                    batch_records.push(ModelRecord {
                        partition,
                        seq,
                        payload,
                        durable: false,
                        appended_at_ms: model.now_ms,
                    });
                }
                let batch: Vec<NewRecord<'_>> = batch_records
                    .iter()
                    .map(|r| NewRecord {
                        partition: r.partition,
                        seq: r.seq,
                        payload: &r.payload,
                    })
                    .collect();
                match backlog.append_batch(&batch) {
                    Ok(outcome) => {
                        if let Some(dropped) = &outcome.overflow {
                            prop_assert_eq!(config.overflow_policy, OverflowPolicy::DropAndRepair);
                            prop_assert!(backlog.needs_repair().is_some());
                            model.records.clear();
                            if dropped.batch_dropped {
                                batch_records.clear();
                            }
                        }
                        model.records.extend(batch_records);
                        prop_assert_eq!(outcome.synced, config.fsync_mode == FsyncMode::Always);
                        if outcome.synced {
                            model.all_durable();
                        }
                    }
                    Err(e) if e.is_full() => {
                        prop_assert_eq!(config.overflow_policy, OverflowPolicy::BlockWrites);
                        for r in &batch_records {
                            model
                                .next_seq
                                .insert(r.partition, r.seq.min(model.next_seq[&r.partition]));
                        }
                    }
                    Err(BacklogError::Io { .. }) => {
                        // Some of the batch may have reached the file before the failure, and
                        // an overflow drop may have begun: nothing is guaranteed any more.
                        for record in &mut model.records {
                            record.durable = false;
                        }
                        model.records.extend(batch_records);
                        must_reopen = true;
                    }
                    Err(e) => return Err(TestCaseError::fail(format!("append: {e}"))),
                }
            }
            Op::Ack(partition, fraction) => {
                let appended = model.next_seq[&partition] - 1;
                let seq = appended * u64::from(fraction) / 255;
                match backlog.acknowledge(partition, seq) {
                    Ok(_) => {
                        let acked = model.acked.entry(partition).or_insert(0);
                        *acked = (*acked).max(seq);
                    }
                    Err(BacklogError::Io { .. }) => {
                        // The target did acknowledge; only our bookkeeping failed.
                        let acked = model.acked.entry(partition).or_insert(0);
                        *acked = (*acked).max(seq);
                        must_reopen = true;
                    }
                    Err(e) => return Err(TestCaseError::fail(format!("ack: {e}"))),
                }
            }
            Op::Sync => match backlog.sync() {
                Ok(()) => {
                    prop_assert!(!backlog.stats().unsynced);
                    model.all_durable();
                }
                Err(_) => must_reopen = true,
            },
            Op::Tick(advance_ms) => {
                model.now_ms += u64::from(advance_ms);
                match backlog.handle_tick(model.now_ms) {
                    // The promise of `EveryMs(n)`: data waits at most n ms for its fsync,
                    // given ticks.
                    Ok(_) => {
                        if let FsyncPolicy::EveryMs(interval_ms) = config.fsync_policy() {
                            let now_ms = model.now_ms;
                            for record in &mut model.records {
                                if record.appended_at_ms + interval_ms <= now_ms {
                                    record.durable = true;
                                }
                            }
                        }
                    }
                    Err(_) => must_reopen = true,
                }
            }
            Op::Read(step) => {
                let read = read_all(&mut backlog, usize::from(step))?;
                prop_assert_eq!(
                    read,
                    model.expected_replay(),
                    "replay differs from the model"
                );
            }
            Op::Crash => {
                drop(backlog);
                storage.crash();
                backlog = reopen(&storage, &config, &mut model)?;
            }
            Op::Restart => must_reopen = true,
            Op::FailNextSync => storage.fail_next_sync(),
            Op::FailNextAppend => storage.fail_next_append(),
        }
        if must_reopen {
            drop(backlog);
            backlog = reopen(&storage, &config, &mut model)?;
        }
    }
    // Final crash: everything synced and unacknowledged is still there.
    drop(backlog);
    storage.crash();
    reopen(&storage, &config, &mut model).map(drop)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn no_synced_unacknowledged_record_is_lost_across_crashes(
        config in config(),
        seed in any::<u64>(),
        ops in prop::collection::vec(op(), 1..80),
    ) {
        run(config, seed, ops)?;
    }
}
