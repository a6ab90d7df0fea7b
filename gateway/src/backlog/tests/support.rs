//! Shared helpers for the backlog tests.
use super::super::*;

/// Small segments so a few records span several of them.
pub fn small_config(policy: FsyncPolicy) -> BacklogConfig {
    BacklogConfig {
        segment_bytes_max: 256,
        backlog_bytes_max: 1 << 20,
        record_bytes_max: 128,
        cursor_sync_interval_ms: 1000,
        overflow_policy: OverflowPolicy::BlockWrites,
        ..BacklogConfig::default()
    }
    .with_fsync_policy(policy)
}

/// A payload that names its record, so replays can be checked byte for byte.
pub fn payload(partition: u16, seq: u64) -> Vec<u8> {
    format!("p{partition}-s{seq}-{}", "x".repeat((seq % 7) as usize)).into_bytes()
}

pub fn append_all<S: SegmentStorage>(backlog: &mut Backlog<S>, records: &[(u16, u64)]) {
    let payloads: Vec<Vec<u8>> = records.iter().map(|&(p, s)| payload(p, s)).collect();
    let batch: Vec<NewRecord<'_>> = records
        .iter()
        .zip(&payloads)
        .map(|(&(partition, seq), payload)| NewRecord {
            partition,
            seq,
            payload,
        })
        .collect();
    assert_eq!(
        backlog
            .append_batch(&batch)
            .expect("append in test")
            .overflow,
        None
    );
}

/// Every unacknowledged record as `(partition, seq)`, checking payloads on the way.
pub fn replay_keys<S: SegmentStorage>(backlog: &mut Backlog<S>) -> Vec<(u16, u64)> {
    backlog
        .replay()
        .map(|record| {
            let record = record.expect("replay in test");
            assert_eq!(
                record.payload.as_ref(),
                payload(record.partition, record.seq).as_slice()
            );
            (record.partition, record.seq)
        })
        .collect()
}

pub fn open_mem(
    storage: &MemStorage,
    config: &BacklogConfig,
) -> (Backlog<MemStorage>, RecoveryReport) {
    Backlog::open(storage.clone(), config.clone()).expect("open backlog in test")
}

pub fn segment_files(storage: &MemStorage) -> Vec<String> {
    storage
        .file_names()
        .into_iter()
        .filter(|name| name.ends_with(".seg"))
        .collect()
}
