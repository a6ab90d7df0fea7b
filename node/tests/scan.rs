//! SCAN across partitions: cursor encoding, full iterations, MATCH / COUNT / TYPE.
mod common;

use common::{Raw, bounded, redis_connection, start, test_config};
use redis::AsyncCommands;
use std::collections::{BTreeMap, BTreeSet};

/// Runs a full SCAN iteration with the given options; returns each key with how often it
/// was returned, and the number of calls.
async fn full_scan(
    con: &mut redis::aio::MultiplexedConnection,
    options: &[&str],
) -> (BTreeMap<String, usize>, usize) {
    let mut seen = BTreeMap::new();
    let mut cursor: u64 = 0;
    let mut calls = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg(options)
            .query_async(con)
            .await
            .expect("SCAN");
        calls += 1;
        for key in keys {
            *seen.entry(key).or_insert(0) += 1;
        }
        if next == 0 {
            return (seen, calls);
        }
        cursor = next;
        assert!(calls < 100_000, "SCAN does not terminate");
    }
}

#[tokio::test]
async fn a_full_iteration_returns_every_key_exactly_once() {
    bounded(async {
        let node = start(test_config()).await;
        let mut con = redis_connection(node.local_addr()).await;
        let keys: Vec<String> = (0..2000).map(|i| format!("key:{i}")).collect();
        for chunk in keys.chunks(100) {
            let pairs: Vec<(&str, &str)> = chunk.iter().map(|k| (k.as_str(), "v")).collect();
            let () = con.mset(&pairs).await.expect("MSET");
        }
        for count in ["1", "7", "10", "500", "5000"] {
            let (seen, calls) = full_scan(&mut con, &["COUNT", count]).await;
            assert_eq!(seen.len(), keys.len(), "COUNT {count}: every key");
            assert!(
                seen.values().all(|&n| n == 1),
                "COUNT {count}: no key twice"
            );
            if count == "1" {
                assert!(
                    calls >= keys.len(),
                    "COUNT 1 takes a call per key, took {calls}"
                );
            }
        }
        let (matched, _) = full_scan(&mut con, &["MATCH", "key:1*", "COUNT", "100"]).await;
        let expected: BTreeSet<String> = keys
            .iter()
            .filter(|k| k.starts_with("key:1"))
            .cloned()
            .collect();
        assert_eq!(matched.keys().cloned().collect::<BTreeSet<_>>(), expected);
        let (strings, _) = full_scan(&mut con, &["TYPE", "string"]).await;
        assert_eq!(strings.len(), keys.len());
        let (hashes, calls) = full_scan(&mut con, &["TYPE", "hash"]).await;
        assert!(hashes.is_empty() && calls == 1, "no hashes exist");
        node.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn keys_present_throughout_are_returned_despite_concurrent_writes() {
    bounded(async {
        let node = start(test_config()).await;
        let addr = node.local_addr();
        let mut con = redis_connection(addr).await;
        let stable: Vec<String> = (0..1000).map(|i| format!("stable:{i}")).collect();
        for key in &stable {
            let () = con.set(key, "v").await.expect("SET");
        }
        let writer = tokio::spawn(async move {
            let mut con = redis_connection(addr).await;
            for i in 0..3000 {
                let key = format!("churn:{}", i % 300);
                if i % 3 == 0 {
                    let _: i64 = con.del(&key).await.expect("DEL");
                } else {
                    let () = con.set(&key, i).await.expect("SET");
                }
            }
        });
        let (seen, _) = full_scan(&mut con, &["COUNT", "20"]).await;
        writer.await.expect("writer task");
        for key in &stable {
            assert!(
                seen.contains_key(key),
                "{key} missing from a SCAN with concurrent writes"
            );
        }
        node.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn cursors_are_validated_and_options_checked() {
    bounded(async {
        let mut config = test_config();
        config.partitions = 4;
        config.limits.scan_count_max = 100;
        let node = start(config).await;
        let mut c = Raw::connect(node.local_addr()).await;
        let beyond_last_partition = (4u64 << 48).to_string();
        c.expect_table(&[
            (&["SCAN", "0"], "[\"0\", []]"),
            (&["SCAN", "abc"], "-ERR invalid cursor"),
            (&["SCAN", "-1"], "-ERR invalid cursor"),
            (&["SCAN", "18446744073709551616"], "-ERR invalid cursor"),
            (&["SCAN", &beyond_last_partition], "-ERR invalid cursor"),
            (&["SCAN", "0", "COUNT", "0"], "-ERR syntax error"),
            (
                &["SCAN", "0", "COUNT", "x"],
                "-ERR value is not an integer or out of range",
            ),
            (
                &["SCAN", "0", "COUNT", "101"],
                "-ERR COUNT 101 exceeds scan_count_max (100)",
            ),
            (&["SCAN", "0", "COUNT"], "-ERR syntax error"),
            (&["SCAN", "0", "BOGUS", "1"], "-ERR syntax error"),
            (
                &["SCAN"],
                "-ERR wrong number of arguments for 'scan' command",
            ),
            (&["SET", "only", "v"], "+OK"),
            (&["SCAN", "0", "COUNT", "100"], "[\"0\", [\"only\"]]"),
            (&["SCAN", "0", "MATCH", "o*"], "[\"0\", [\"only\"]]"),
            (&["SCAN", "0", "MATCH", "x*"], "[\"0\", []]"),
        ])
        .await;
        node.shutdown().await;
    })
    .await;
}
