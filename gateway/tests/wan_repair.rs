//! Merkle anti-entropy between two live gateways, in process: two standalone nodes (sites `a`
//! and `b`, 8 partitions each), each with its gateway, linked over QUIC on localhost.
//!
//! The hole: entries injected with `WanApply` carry the *other* site as origin, so no
//! delegator ever ships them (a record is never sent back to its origin) — exactly what a lost
//! backlog leaves behind. The test checks the hole is real (the stream does not fill it), asks
//! `a` to repair against `b`, and checks both sites then hold the same value for every key
//! (over RESP), that `repairs_total` counts the sessions and no partition stays marked.
mod common;

use bytes::Bytes;
use common::{PARTITIONS, Site, admin, eventually_within, resp, target_status};
use redis::AsyncCommands;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tern_conflict::{HlcTimestamp, SiteId, Value, Version, Versioned};
use tern_node::admin::WanAdminRequest;
use tern_node::core::{Command, Keyspace, Response};
use tern_node::transport::certs::init_dev_pki;

const TEST_BOUND: Duration = Duration::from_secs(90);
const SITE_A: SiteId = SiteId(1);
const SITE_B: SiteId = SiteId(2);
/// Keys only one site holds, per site; keys both hold with concurrent versions.
const ONLY_KEYS: u64 = 60;
const BOTH_KEYS: u64 = 12;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

async fn start_site(name: &'static str, id: u16, pki: &std::path::Path) -> Site {
    let any_port = "127.0.0.1:0".parse().expect("literal");
    common::start_site(name, id, pki, any_port, |_, _| {}).await
}

async fn add_peer(from: &Site, to: &Site) {
    common::add_peer(from, to, to.gateway.local_addr()).await;
}

/// Polls `check` until it holds, within the test's bound.
async fn eventually(what: &str, check: impl AsyncFnMut() -> bool) {
    eventually_within(TEST_BOUND, what, check).await;
}

/// An entry written at `origin` `ago_ms` ago.
fn written_at(origin: SiteId, value: &str, ago_ms: u64) -> Versioned {
    Versioned {
        value: Value::Bytes(Bytes::from(value.to_owned())),
        version: Version::first(origin, HlcTimestamp::new(now_ms() - ago_ms, 0)),
        expires_at_ms: None,
    }
}

/// Stores `entry` at `site` as if it had come from its origin over the WAN.
async fn inject(site: &Site, key: &str, entry: Versioned) {
    let keyspace = Keyspace::new(PARTITIONS).expect("valid partition count");
    let partition = keyspace.partition_of(key.as_bytes());
    let command = Command::WanApply {
        key: Bytes::from(key.to_owned()),
        entry,
        resolver: None,
    };
    let results = site
        .node
        .router()
        .execute(partition, vec![command])
        .await
        .expect("the router reaches the primary");
    assert!(
        matches!(
            results.first(),
            Some(Ok(Response::WanApplied { changed: true, .. }))
        ),
        "inject {key}: {results:?}"
    );
}

fn all_keys() -> Vec<String> {
    let mut keys = vec!["streamed".to_owned()];
    for n in 0..ONLY_KEYS {
        keys.push(format!("only-a:{n}"));
        keys.push(format!("only-b:{n}"));
    }
    keys.extend((0..BOTH_KEYS).map(|n| format!("both:{n}")));
    keys
}

async fn values(
    conn: &mut redis::aio::MultiplexedConnection,
    keys: &[String],
) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for key in keys {
        out.push(conn.get(key).await.expect("GET"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_fills_a_hole_the_stream_never_would() {
    tokio::time::timeout(TEST_BOUND, scenario())
        .await
        .expect("test exceeded its time bound");
}

async fn scenario() {
    let pki = tempfile::tempdir().expect("pki dir");
    init_dev_pki(pki.path(), &["a".to_owned(), "b".to_owned()], 0).expect("dev PKI");
    let a = start_site("a", SITE_A.0, pki.path()).await;
    let b = start_site("b", SITE_B.0, pki.path()).await;
    add_peer(&a, &b).await;
    add_peer(&b, &a).await;
    eventually("both links are up", async || {
        target_status(&a).is_some_and(|t| t.connected)
            && target_status(&b).is_some_and(|t| t.connected)
    })
    .await;
    let mut conn_a = resp(&a.node).await;
    let mut conn_b = resp(&b.node).await;

    // The stream works: a write at a reaches b.
    let () = conn_a.set("streamed", "yes").await.expect("SET");
    eventually("the streamed write reaches b", async || {
        let got: Option<String> = conn_b.get("streamed").await.expect("GET");
        got.as_deref() == Some("yes")
    })
    .await;

    // The hole: entries only one site holds, and keys both hold with concurrent versions
    // (the resolver, last-writer-wins, must pick the same at both).
    for n in 0..ONLY_KEYS {
        inject(
            &b,
            &format!("only-b:{n}"),
            written_at(SITE_A, &format!("b{n}"), 2_000),
        )
        .await;
        inject(
            &a,
            &format!("only-a:{n}"),
            written_at(SITE_B, &format!("a{n}"), 2_000),
        )
        .await;
    }
    for n in 0..BOTH_KEYS {
        // a's copy is newer for even n, b's for odd n.
        let (age_a, age_b) = if n % 2 == 0 {
            (1_000, 1_500)
        } else {
            (1_500, 1_000)
        };
        inject(
            &a,
            &format!("both:{n}"),
            written_at(SITE_B, &format!("at-a{n}"), age_a),
        )
        .await;
        inject(
            &b,
            &format!("both:{n}"),
            written_at(SITE_A, &format!("at-b{n}"), age_b),
        )
        .await;
    }
    // The hole is real: after a while (many batch windows) the stream has not filled it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let keys = all_keys();
    let before_a = values(&mut conn_a, &keys).await;
    let before_b = values(&mut conn_b, &keys).await;
    let differing = keys
        .iter()
        .zip(before_a.iter().zip(&before_b))
        .filter(|(_, (x, y))| x != y)
        .count();
    assert_eq!(
        differing as u64,
        2 * ONLY_KEYS + BOTH_KEYS,
        "every injected key differs before the repair"
    );
    let status = target_status(&a).expect("a's status");
    assert_eq!(status.repairs_total, 0);
    assert!(status.repairing_partitions.is_empty(), "{status:?}");

    // The operator asks a to repair against b.
    admin(&a.hub, |reply| WanAdminRequest::Repair {
        site: "b".to_owned(),
        reply,
    })
    .await;
    eventually("a repaired every partition against b", async || {
        target_status(&a).is_some_and(|t| {
            t.repairs_total >= u64::from(PARTITIONS) && t.repairing_partitions.is_empty()
        })
    })
    .await;

    // Both sites now hold the same value for every key; the only-one-site keys have theirs.
    let after_a = values(&mut conn_a, &keys).await;
    let after_b = values(&mut conn_b, &keys).await;
    for (key, (x, y)) in keys.iter().zip(after_a.iter().zip(&after_b)) {
        assert_eq!(x, y, "{key} differs after the repair");
        assert!(x.is_some(), "{key} is missing at both sites");
    }
    for n in 0..ONLY_KEYS {
        let i = keys
            .iter()
            .position(|k| *k == format!("only-b:{n}"))
            .expect("listed");
        assert_eq!(after_a[i].as_deref(), Some(format!("b{n}").as_str()));
    }
    for n in 0..BOTH_KEYS {
        let i = keys
            .iter()
            .position(|k| *k == format!("both:{n}"))
            .expect("listed");
        let newer = if n % 2 == 0 {
            format!("at-a{n}")
        } else {
            format!("at-b{n}")
        };
        assert_eq!(after_a[i].as_deref(), Some(newer.as_str()), "both:{n}");
    }
    let status = target_status(&a).expect("a's status");
    assert_eq!(
        status.repairs_total,
        u64::from(PARTITIONS),
        "one session per partition: {status:?}"
    );
    // b was only asked: it initiated nothing.
    assert_eq!(target_status(&b).expect("b's status").repairs_total, 0);

    // A second repair finds every partition in sync.
    admin(&a.hub, |reply| WanAdminRequest::Repair {
        site: "b".to_owned(),
        reply,
    })
    .await;
    eventually("the second round completes", async || {
        target_status(&a).is_some_and(|t| {
            t.repairs_total >= 2 * u64::from(PARTITIONS) && t.repairing_partitions.is_empty()
        })
    })
    .await;
    assert_eq!(values(&mut conn_a, &keys).await, after_a);
    assert_eq!(values(&mut conn_b, &keys).await, after_b);

    drop((conn_a, conn_b));
    a.gateway.shutdown().await;
    b.gateway.shutdown().await;
    a.node.shutdown().await;
    b.node.shutdown().await;
}
