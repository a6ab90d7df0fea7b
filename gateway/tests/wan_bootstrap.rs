//! Bootstrap of a wiped site at the configured rate, in process: two standalone nodes (sites
//! `a` and `b`, 8 partitions each), each with its gateway, linked over QUIC on localhost, with
//! `bootstrap_bytes_per_sec_max` set low.
//!
//! `a` holds a known amount of data, replicated to `b` by the stream. Then `b` is wiped (node
//! and gateway stopped, data dir deleted) and started empty on the same gateway address. `a`
//! sees `b`'s cursors fall to nothing, marks every partition and repairs them: every entry
//! travels in repair messages, paced. The test checks the data comes back no faster than
//! data / rate, that `a`'s status shows the target repairing meanwhile, and that a live write
//! made at `a` during the bootstrap reaches `b` before the bootstrap is over (the pacing holds
//! only repair messages, never the stream).
mod common;

use common::{Site, eventually_within, resp, start_site, target_status};
use redis::AsyncCommands;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tern_node::transport::certs::init_dev_pki;

const TEST_BOUND: Duration = Duration::from_secs(90);
/// The configured pace of repair traffic (each link, each direction).
const RATE_BYTES_PER_SEC: u64 = 50_000;
/// The data `a` holds: enough to take four seconds at the rate.
const KEYS: usize = 100;
const VALUE_BYTES: usize = 2_000;
/// How late the test may see the bootstrap start: the status is published every 250 ms and
/// polled every 20 ms.
const OBSERVATION_SLACK: Duration = Duration::from_millis(300);

/// Starts site `name` with its gateway on `listen`, repairs paced at the test's rate.
async fn start_paced_site(
    name: &'static str,
    id: u16,
    pki: &std::path::Path,
    listen: SocketAddr,
) -> Site {
    start_site(name, id, pki, listen, |_, wan| {
        wan.bootstrap_bytes_per_sec_max = RATE_BYTES_PER_SEC;
    })
    .await
}

async fn add_peer(from: &Site, to: &Site) {
    common::add_peer(from, to, to.gateway.local_addr()).await;
}

/// Polls `check` until it holds, within the test's bound.
async fn eventually(what: &str, check: impl AsyncFnMut() -> bool) {
    eventually_within(TEST_BOUND, what, check).await;
}

fn key(n: usize) -> String {
    format!("bulk:{n}")
}

/// A value of exactly `VALUE_BYTES`, different per key.
fn value(n: usize) -> String {
    let head = format!("v{n}:");
    format!("{head}{}", "x".repeat(VALUE_BYTES - head.len()))
}

/// How many of the bulk keys `conn` holds with their value.
async fn bulk_present(conn: &mut redis::aio::MultiplexedConnection) -> usize {
    let mut present = 0;
    for n in 0..KEYS {
        let got: Option<String> = conn.get(key(n)).await.expect("GET");
        present += usize::from(got.as_deref() == Some(value(n).as_str()));
    }
    present
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_site_is_bootstrapped_at_the_configured_rate_while_the_stream_flows() {
    tokio::time::timeout(TEST_BOUND, scenario())
        .await
        .expect("test exceeded its time bound");
}

async fn scenario() {
    let pki = tempfile::tempdir().expect("pki dir");
    init_dev_pki(pki.path(), &["a".to_owned(), "b".to_owned()], 0).expect("dev PKI");
    let any_port: SocketAddr = "127.0.0.1:0".parse().expect("literal");
    let a = start_paced_site("a", 1, pki.path(), any_port).await;
    let b = start_paced_site("b", 2, pki.path(), any_port).await;
    let b_gateway_addr = b.gateway.local_addr();
    add_peer(&a, &b).await;
    add_peer(&b, &a).await;
    let mut conn_a = resp(&a.node).await;
    for n in 0..KEYS {
        let () = conn_a.set(key(n), value(n)).await.expect("SET");
    }
    // The stream (not paced) brings everything to b, and b acknowledges it all.
    let mut conn_b = resp(&b.node).await;
    eventually("the stream brought every key to b", async || {
        bulk_present(&mut conn_b).await == KEYS
    })
    .await;
    eventually("b acknowledged everything", async || {
        target_status(&a).is_some_and(|t| t.connected && t.backlog_records == 0)
    })
    .await;
    assert!(
        target_status(&a).is_some_and(|t| t.repairing_partitions.is_empty()),
        "nothing to repair before the wipe"
    );

    // Wipe b; it comes back empty at the same gateway address.
    drop(conn_b);
    b.stop().await;
    let b = start_paced_site("b", 2, pki.path(), b_gateway_addr).await;
    add_peer(&b, &a).await;
    let mut conn_b = resp(&b.node).await;
    assert_eq!(bulk_present(&mut conn_b).await, 0, "b lost its data");

    eventually("a bootstraps b (or b has everything back)", async || {
        target_status(&a).is_some_and(|t| t.connected && !t.repairing_partitions.is_empty())
            || bulk_present(&mut conn_b).await == KEYS
    })
    .await;
    let bootstrap_seen = Instant::now();
    assert!(
        bulk_present(&mut conn_b).await < KEYS,
        "b had every key back before a's status showed a bootstrap: not paced"
    );

    // A live write during the bootstrap reaches b while the bootstrap still runs.
    let () = conn_a.set("live", "during-bootstrap").await.expect("SET");
    eventually("the live write reaches b", async || {
        let got: Option<String> = conn_b.get("live").await.expect("GET");
        got.as_deref() == Some("during-bootstrap")
    })
    .await;
    let live_after = bootstrap_seen.elapsed();
    let present_when_live_arrived = bulk_present(&mut conn_b).await;
    assert!(
        present_when_live_arrived < KEYS,
        "the live write arrived after {live_after:?}, behind the whole bootstrap"
    );

    eventually("the bootstrap brought every key back to b", async || {
        bulk_present(&mut conn_b).await == KEYS
    })
    .await;
    let took = bootstrap_seen.elapsed();
    eventually("a's repair of b is over", async || {
        target_status(&a).is_some_and(|t| t.repairing_partitions.is_empty())
    })
    .await;

    // The entries alone (values, not counting keys, versions or framing) are this many bytes;
    // a bucket's burst is 100 ms of the rate.
    let data_bytes = (KEYS * VALUE_BYTES) as u64;
    let burst_bytes = RATE_BYTES_PER_SEC / 10;
    let floor = Duration::from_millis((data_bytes - burst_bytes) * 1_000 / RATE_BYTES_PER_SEC)
        .saturating_sub(OBSERVATION_SLACK);
    eprintln!(
        "bootstrap of {data_bytes} bytes at {RATE_BYTES_PER_SEC} B/s took {took:?} \
         (floor {floor:?}); the live write arrived after {live_after:?} with \
         {present_when_live_arrived}/{KEYS} keys back"
    );
    assert!(
        took >= floor,
        "{data_bytes} bytes at {RATE_BYTES_PER_SEC} B/s came back in {took:?}, faster than {floor:?}"
    );
    assert!(
        target_status(&a).is_some_and(|t| t.repairs_total >= 1),
        "the data came by repair sessions"
    );

    drop((conn_a, conn_b));
    a.stop().await;
    b.stop().await;
}
