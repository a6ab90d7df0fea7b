//! Append throughput on the real file system without fsync (ignored: run with
//! `cargo test -p tern-gateway --release -- --ignored backlog_append_throughput --nocapture`).
use super::super::*;
use std::time::Instant;

#[test]
#[ignore = "measurement, not a check: run by hand in release mode"]
fn backlog_append_throughput() {
    let temp = tempfile::tempdir().expect("tempdir");
    let config = BacklogConfig::default().with_fsync_policy(FsyncPolicy::Never);
    let (mut backlog, _) = Backlog::open_dir(temp.path(), config).expect("open");
    let payload = [0x5au8; 64];
    let batch_records = 2048;
    let batches = 2_000;
    let mut seq = 0u64;
    let mut batch = Vec::with_capacity(batch_records);
    let started = Instant::now();
    for _ in 0..batches {
        batch.clear();
        for i in 0..batch_records {
            let partition = (i % 16) as u16;
            if partition == 0 {
                seq += 1;
            }
            batch.push(NewRecord {
                partition,
                seq,
                payload: &payload,
            });
        }
        assert_eq!(backlog.append_batch(&batch).expect("append").overflow, None);
    }
    let elapsed = started.elapsed();
    let records = (batch_records * batches) as f64;
    let stats = backlog.stats();
    println!(
        "appended {records} records of 64 B in {elapsed:?}: {:.2} M records/s, {:.0} MiB/s, {} segments",
        records / elapsed.as_secs_f64() / 1e6,
        stats.bytes as f64 / elapsed.as_secs_f64() / (1024.0 * 1024.0),
        stats.segments
    );
    let started = Instant::now();
    let replayed = backlog.replay().count();
    println!("replayed {replayed} records in {:?}", started.elapsed());
    assert_eq!(replayed as f64, records);
}
