//! A multi-node site in one process: formation, forwarding, crash failover, restart and
//! failback, drain. See `site_harness` for how the nodes run.
mod common;
mod site_harness;

use common::Raw;
use site_harness::{SERIAL, Site, bounded, settled};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const PARTITIONS: u32 = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_forms_and_any_node_serves_any_key() {
    let _serial = SERIAL.lock().await;
    bounded(Duration::from_secs(60), async {
        let site = Site::start(11, 3, PARTITIONS).await;
        let formed = site.wait_settled(Duration::from_secs(20)).await;
        eprintln!("site formed in {formed:?}");
        // Every partition has a primary and a backup, on distinct nodes.
        for p in &site.statuses()[0].partitions {
            assert_eq!(p.replicas.len(), 2, "partition {}: {p:?}", p.partition);
            assert_ne!(p.replicas[0].node_id, p.replicas[1].node_id);
        }

        let mut clients = Vec::new();
        for i in 0..3 {
            clients.push(Raw::connect(site.addr(i)).await);
        }
        // Written through one node, read through every node.
        for k in 0..30 {
            let key = format!("key-{k}");
            let via = k % 3;
            assert_eq!(
                clients[via].cmd(&["SET", &key, &format!("v{k}")]).await,
                "+OK"
            );
        }
        for k in 0..30 {
            let key = format!("key-{k}");
            for client in &mut clients {
                assert_eq!(client.cmd(&["GET", &key]).await, format!("\"v{k}\""));
            }
        }
        // A counter incremented through every node counts every increment once.
        for round in 0..5 {
            for client in &mut clients {
                client.cmd(&["INCR", "counter"]).await;
            }
            let want = 3 * (round + 1);
            assert_eq!(
                clients[0].cmd(&["GET", "counter"]).await,
                format!("\"{want}\"")
            );
        }
        // Multi-partition commands gather from every primary.
        assert_eq!(clients[1].cmd(&["DBSIZE"]).await, ":31");
        assert_eq!(
            clients[2].cmd(&["MGET", "key-0", "key-1", "missing"]).await,
            "[\"v0\", \"v1\", nil]"
        );
        site.stop_all().await;
    })
    .await;
}

/// Writes keys `<tag>-<n>` through `addr` until told to stop; returns every acknowledged
/// (key, value) and the errors seen.
async fn writer(
    addr: std::net::SocketAddr,
    tag: String,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (Vec<(String, String)>, Vec<String>) {
    let mut client = Raw::connect(addr).await;
    let mut acked = Vec::new();
    let mut errors = Vec::new();
    let mut n = 0u64;
    while !*stop.borrow() {
        let key = format!("{tag}-{n}");
        let value = format!("{tag}-value-{n}");
        let reply = client.cmd(&["SET", &key, &value]).await;
        if reply == "+OK" {
            acked.push((key, value));
        } else {
            errors.push(reply);
        }
        n += 1;
    }
    (acked, errors)
}

async fn assert_readable(addr: std::net::SocketAddr, writes: &[(String, String)]) {
    let mut client = Raw::connect(addr).await;
    for (key, value) in writes {
        assert_eq!(
            client.cmd(&["GET", key]).await,
            format!("\"{value}\""),
            "acknowledged write {key} lost"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_node_fails_over_loses_no_write_and_fails_back_after_restart() {
    let _serial = SERIAL.lock().await;
    bounded(Duration::from_secs(90), async {
        let mut site = Site::start(12, 3, PARTITIONS).await;
        site.wait_settled(Duration::from_secs(20)).await;
        let preferred = site.primaries();
        let victim = 2usize; // node id 3
        let victim_id = 3u64;
        let victim_partitions: Vec<u16> = preferred
            .iter()
            .filter(|(_, p)| **p == Some(victim_id))
            .map(|(&p, _)| p)
            .collect();
        assert!(!victim_partitions.is_empty(), "node 3 leads something: {preferred:?}");

        let failovers_before: u64 = site.statuses().iter().map(|s| s.failovers_total).sum();
        // Continuous writers through the survivors.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let writers: Vec<_> = (0..2)
            .map(|i| tokio::spawn(writer(site.addr(i), format!("w{i}"), stop_rx.clone())))
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;

        site.crash(victim).await;
        let crashed_at = Instant::now();
        // One write per partition the victim led, through a survivor: each is forwarded,
        // retried until the partition has a new primary, then acknowledged.
        let mut probes = Vec::new();
        for &p in &victim_partitions {
            let key = site.key_in(p, "probe");
            let addr = site.addr(0);
            probes.push(tokio::spawn(async move {
                let mut client = Raw::connect(addr).await;
                let reply = client.cmd(&["SET", &key, "after-crash"]).await;
                (key, reply, crashed_at.elapsed())
            }));
        }
        let mut failover = Duration::ZERO;
        let mut probe_writes = Vec::new();
        for probe in probes {
            let (key, reply, took) = probe.await.expect("probe task");
            assert_eq!(reply, "+OK", "write to {key} after the crash");
            failover = failover.max(took);
            probe_writes.push((key, "after-crash".to_owned()));
        }
        eprintln!("FAILOVER: writes to every partition of the crashed node succeed again after {failover:?}");
        assert!(failover < Duration::from_secs(2), "failover took {failover:?}");

        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = stop_tx.send(true);
        let mut acked = probe_writes;
        for w in writers {
            let (writes, errors) = w.await.expect("writer task");
            assert!(errors.is_empty(), "writes failed during failover: {errors:?}");
            acked.extend(writes);
        }
        eprintln!("{} writes acknowledged around the crash", acked.len());
        let failovers: Vec<(u64, u64)> = site
            .statuses()
            .iter()
            .map(|s| (s.node_id, s.failovers_total))
            .collect();
        assert_eq!(
            failovers.iter().map(|(_, f)| f).sum::<u64>() - failovers_before,
            victim_partitions.len() as u64,
            "failovers counted per node {failovers:?}; the victim led {victim_partitions:?}"
        );
        for i in 0..2 {
            assert_readable(site.addr(i), &acked).await;
        }

        // Back with the same data directory: a new incarnation that catches up, then takes
        // its preferred partitions back.
        site.restart(victim).await;
        let restarted_at = Instant::now();
        let preferred_now = preferred.clone();
        let took = site
            .wait_for("failback", Duration::from_secs(20), |statuses| {
                settled(statuses)
                    && statuses.len() == 3
                    && statuses[0]
                        .partitions
                        .iter()
                        .all(|p| preferred_now.get(&p.partition) == Some(&p.primary))
            })
            .await;
        eprintln!("FAILBACK: restarted node caught up and led its partitions again after {took:?} ({:?} since restart)", restarted_at.elapsed());
        let status = site.node(victim).status();
        assert!(status.incarnation > 1, "a restart is a new incarnation");
        for i in 0..3 {
            assert_readable(site.addr(i), &acked).await;
        }
        site.stop_all().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_node_hands_over_its_primaries_and_no_write_fails() {
    let _serial = SERIAL.lock().await;
    bounded(Duration::from_secs(90), async {
        let mut site = Site::start(13, 3, PARTITIONS).await;
        site.wait_settled(Duration::from_secs(20)).await;
        let drained = 1usize; // node id 2
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let writers: Vec<_> = [0usize, 2]
            .into_iter()
            .map(|i| tokio::spawn(writer(site.addr(i), format!("d{i}"), stop_rx.clone())))
            .collect();
        tokio::time::sleep(Duration::from_millis(200)).await;

        site.drain(0, 2).await;
        let took = site
            .wait_for("drain", Duration::from_secs(10), |statuses| {
                statuses
                    .iter()
                    .all(|s| s.partitions.iter().all(|p| p.primary != Some(2)))
            })
            .await;
        eprintln!("DRAIN: node 2 led nothing after {took:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Then stopped like a rolling restart would: drain (already done), stop.
        site.shutdown(drained).await;
        tokio::time::sleep(Duration::from_millis(800)).await;
        let _ = stop_tx.send(true);
        let mut acked = Vec::new();
        for w in writers {
            let (writes, errors) = w.await.expect("writer task");
            assert!(errors.is_empty(), "writes failed during drain: {errors:?}");
            acked.extend(writes);
        }
        eprintln!("{} writes acknowledged around the drain", acked.len());
        assert!(!acked.is_empty());
        for i in [0usize, 2] {
            assert_readable(site.addr(i), &acked).await;
        }
        let primaries: BTreeMap<u16, Option<u64>> = site.primaries();
        assert!(
            primaries.values().all(|p| p.is_some() && *p != Some(2)),
            "{primaries:?}"
        );
        site.stop_all().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_map_leader_with_its_primaries_still_fails_over_quickly() {
    let _serial = SERIAL.lock().await;
    bounded(Duration::from_secs(60), async {
        let mut site = Site::start(14, 3, PARTITIONS).await;
        site.wait_settled(Duration::from_secs(20)).await;
        let leader = site.statuses()[0].map_leader.expect("a map leader");
        let victim = usize::try_from(leader - 1).expect("small id");
        let survivor = (0..3).find(|&i| i != victim).expect("a survivor");
        let led: Vec<u16> = site
            .primaries()
            .iter()
            .filter(|(_, p)| **p == Some(leader))
            .map(|(&p, _)| p)
            .collect();
        let mut before = Raw::connect(site.addr(survivor)).await;
        let mut acked = Vec::new();
        for &p in &led {
            let key = site.key_in(p, "before");
            assert_eq!(before.cmd(&["SET", &key, "v"]).await, "+OK");
            acked.push((key, "v".to_owned()));
        }

        site.crash(victim).await;
        let crashed_at = Instant::now();
        let mut probes = Vec::new();
        for &p in &led {
            let key = site.key_in(p, "after");
            let addr = site.addr(survivor);
            probes.push(tokio::spawn(async move {
                let mut client = Raw::connect(addr).await;
                (
                    client.cmd(&["SET", &key, "w"]).await,
                    key,
                    crashed_at.elapsed(),
                )
            }));
        }
        let mut failover = Duration::ZERO;
        for probe in probes {
            let (reply, key, took) = probe.await.expect("probe task");
            assert_eq!(reply, "+OK", "write to {key} after the leader crashed");
            failover = failover.max(took);
            acked.push((key, "w".to_owned()));
        }
        eprintln!("FAILOVER (map leader crashed too): writes succeed again after {failover:?}");
        assert!(
            failover < Duration::from_secs(2),
            "failover took {failover:?}"
        );
        for i in (0..3).filter(|&i| i != victim) {
            assert_readable(site.addr(i), &acked).await;
        }
        site.stop_all().await;
    })
    .await;
}

/// Like [`writer`], but through a node that is about to stop: a closed connection ends it
/// (a client would reconnect elsewhere), an error reply is a failure.
async fn writer_until_closed(
    addr: std::net::SocketAddr,
    tag: String,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (Vec<(String, String)>, Vec<String>) {
    let mut client = Raw::connect(addr).await;
    let mut acked = Vec::new();
    let mut errors = Vec::new();
    let mut n = 0u64;
    while !*stop.borrow() {
        let key = format!("{tag}-{n}");
        let value = format!("{tag}-value-{n}");
        let args: Vec<&[u8]> = vec![b"SET", key.as_bytes(), value.as_bytes()];
        client.send(&common::encode_request(&args)).await;
        match client.try_reply().await.map(|f| common::render(&f)) {
            Some(reply) if reply == "+OK" => acked.push((key, value)),
            Some(reply) => errors.push(reply),
            None => break,
        }
        n += 1;
    }
    (acked, errors)
}

/// The Raft map leader stopping gracefully (a rolling restart's SIGTERM): it drains, hands
/// the map's leadership over, and stops promptly — with requests still in flight through it
/// (forwarded to the new primaries when its transport closes) — and no write through any
/// node fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_map_leader_drains_fast_and_fails_no_write() {
    let _serial = SERIAL.lock().await;
    bounded(Duration::from_secs(90), async {
        let mut site = Site::start(15, 3, PARTITIONS).await;
        site.wait_settled(Duration::from_secs(20)).await;
        let leader = site.statuses()[0].map_leader.expect("a map leader");
        let victim = usize::try_from(leader - 1).expect("small id");
        let survivors: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
        assert!(
            site.primaries().values().any(|p| *p == Some(leader)),
            "the leader leads partitions: {:?}",
            site.primaries()
        );
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut writers = Vec::new();
        for (n, &i) in survivors.iter().enumerate() {
            writers.push(tokio::spawn(writer(
                site.addr(i),
                format!("s{n}"),
                stop_rx.clone(),
            )));
        }
        let through_victim: Vec<_> = (0..4)
            .map(|n| {
                tokio::spawn(writer_until_closed(
                    site.addr(victim),
                    format!("v{n}"),
                    stop_rx.clone(),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;

        let stopping = Instant::now();
        site.shutdown(victim).await;
        let took = stopping.elapsed();
        eprintln!("LEADER DRAIN: node {leader} (map leader) drained and stopped in {took:?}");
        assert!(
            took < Duration::from_millis(2_000),
            "stopping the map leader took {took:?} (the drain bound is 5 s)"
        );
        // Someone else leads the map, and every partition has a live primary.
        site.wait_for("a new map leader", Duration::from_secs(5), |statuses| {
            statuses.iter().all(|s| {
                s.map_leader.is_some_and(|l| l != leader)
                    && s.partitions
                        .iter()
                        .all(|p| p.primary.is_some_and(|n| n != leader))
            })
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = stop_tx.send(true);
        let mut acked = Vec::new();
        for w in writers.into_iter().chain(through_victim) {
            let (writes, errors) = w.await.expect("writer task");
            assert!(
                errors.is_empty(),
                "writes failed while the map leader stopped: {errors:?}"
            );
            acked.extend(writes);
        }
        eprintln!(
            "{} writes acknowledged around the leader's stop",
            acked.len()
        );
        for &i in &survivors {
            assert_readable(site.addr(i), &acked).await;
        }
        site.stop_all().await;
    })
    .await;
}
