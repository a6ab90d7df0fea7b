//! `[wan] overflow = "block_writes"` blocks local writes, in process: site `a` (one partition,
//! a 2 MiB change log, the smallest usable backlog) ships to site `b` through a UDP fault proxy.
//!
//! With the link cut, `a`'s writes fill the backlog, then the change log the gateway holds;
//! the next write is refused with `-TRYAGAIN` (and stays refused past the node's hold lease,
//! because the feed renews it). After the heal the writes go through again, and every write
//! `a` acknowledged reaches `b` — through the stream alone: no overflow, no repair.
mod common;

use common::{add_peer, eventually_within, resp, start_site, target_status};
use redis::AsyncCommands;
use std::time::Duration;
use tern_gateway::fault_proxy::{Faults, UdpFaultProxy};
use tern_node::config::WanOverflow;
use tern_node::transport::certs::init_dev_pki;

const TEST_BOUND: Duration = Duration::from_secs(120);
const CHANGE_LOG_BYTES_MAX: usize = 2 * 1024 * 1024;
/// The smallest backlog the gateway opens: one segment of the backlog's default
/// `segment_bytes_max` (64 MiB; `[wan] backlog_bytes_max` below that is refused by the backlog).
const BACKLOG_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// The node's cap on a hold: short, so the test can outwait it and see the feed renew it.
const WAN_HOLD_MS_MAX: u64 = 1_000;
const VALUE_BYTES: usize = 256 * 1024;
/// Far more writes than the backlog and the log hold together (about 264).
const WRITES_MAX: usize = 1_000;

/// Polls `check` until it holds, within the test's bound.
async fn eventually(what: &str, check: impl AsyncFnMut() -> bool) {
    eventually_within(TEST_BOUND, what, check).await;
}

fn value_of(n: usize) -> String {
    format!("{n:08}").repeat(VALUE_BYTES / 8)
}

/// The write `a` refuses while the WAN holds its log (any other error fails the test).
fn is_wan_refusal(error: &redis::RedisError) -> bool {
    let refusal = error.code() == Some("TRYAGAIN")
        && error.detail()
            == Some(
                "WAN backlog to a remote site is full (overflow = block_writes); write refused",
            );
    assert!(refusal, "unexpected error: {error}");
    refusal
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_writes_refuses_local_writes_until_the_target_is_back_and_loses_none() {
    tokio::time::timeout(TEST_BOUND, scenario())
        .await
        .expect("test exceeded its time bound");
}

async fn scenario() {
    let pki = tempfile::tempdir().expect("pki dir");
    init_dev_pki(pki.path(), &["a".to_owned(), "b".to_owned()], 0).expect("dev PKI");
    let any_port = "127.0.0.1:0".parse().expect("literal");
    let a = start_site("a", 1, pki.path(), any_port, |node, wan| {
        node.partitions = 1;
        node.limits.change_log_bytes_max = CHANGE_LOG_BYTES_MAX;
        node.limits.wan_hold_ms_max = WAN_HOLD_MS_MAX;
        wan.overflow = WanOverflow::BlockWrites;
        wan.backlog_bytes_max = BACKLOG_BYTES_MAX;
    })
    .await;
    let b = start_site("b", 2, pki.path(), any_port, |node, _| node.partitions = 1).await;
    let proxy = UdpFaultProxy::start(
        "127.0.0.1:0".parse().expect("literal"),
        b.gateway.local_addr(),
        11,
    )
    .await
    .expect("proxy starts");
    add_peer(&a, &b, proxy.local_addr()).await;
    add_peer(&b, &a, a.gateway.local_addr()).await;
    let mut conn_a = resp(&a.node).await;
    let mut conn_b = resp(&b.node).await;

    // The stream works.
    let () = conn_a.set("first", "yes").await.expect("SET");
    eventually("the first write reaches b", async || {
        let got: Option<String> = conn_b.get("first").await.expect("GET");
        got.as_deref() == Some("yes")
    })
    .await;

    // Target down: writes fill the backlog, then the held log, then are refused.
    proxy.set_faults(Faults {
        cut: true,
        ..Faults::default()
    });
    let mut acknowledged = vec![("first".to_owned(), "yes".to_owned())];
    // A refusal while the backlog still has room only means the writes outran the feed (the
    // log filled before it was read): retry then, as a client would.
    let mut blocked = false;
    let mut n = 0;
    while n < WRITES_MAX {
        let (key, value) = (format!("k{n}"), value_of(n));
        match conn_a.set::<_, _, ()>(&key, &value).await {
            Ok(()) => {
                acknowledged.push((key, value));
                n += 1;
            }
            Err(error) => {
                assert!(is_wan_refusal(&error));
                if target_status(&a).is_some_and(|t| t.write_blocked) {
                    blocked = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    assert!(
        blocked,
        "{WRITES_MAX} writes acknowledged with the target down"
    );
    let blocked_at = acknowledged.len();
    let backlog_records = blocked_at as u64 - 1;
    assert!(
        backlog_records > (BACKLOG_BYTES_MAX / VALUE_BYTES as u64) / 2,
        "refused after only {blocked_at} writes: the backlog should have taken more"
    );
    let status = target_status(&a).expect("a's status");
    assert!(status.write_blocked, "{status:?}");

    // Still refused after the node's longest hold: the feed keeps renewing it. (A smaller
    // write could still fit the log: only writes that would drop unread records are refused.)
    // Reads answer.
    tokio::time::sleep(Duration::from_millis(2 * WAN_HOLD_MS_MAX)).await;
    let error = conn_a
        .set::<_, _, ()>("late", value_of(0))
        .await
        .expect_err("still blocked");
    assert!(is_wan_refusal(&error));
    // Counted for the operator (`tern_writes_refused_wan_full_total`, published with the status).
    eventually("a's status counts the refusals", async || {
        a.node.status().wan_writes_refused_total > 0
    })
    .await;
    let last = &acknowledged[blocked_at - 1];
    let got: Option<String> = conn_a.get(&last.0).await.expect("GET at a");
    assert_eq!(got.as_ref(), Some(&last.1));

    // Target back: the backlog drains and writes go through again.
    proxy.set_faults(Faults::default());
    // Writes as large as the refused ones go through again once the backlog drains (a client
    // retries a refusal; the writer may still outrun the feed now and then).
    for n in WRITES_MAX..WRITES_MAX + 40 {
        let (key, value) = (format!("k{n}"), value_of(n));
        eventually("a accepts writes again", async || {
            match conn_a.set::<_, _, ()>(&key, &value).await {
                Ok(()) => true,
                Err(error) => !is_wan_refusal(&error),
            }
        })
        .await;
        acknowledged.push((key, value));
    }

    // Every acknowledged write reaches b, by the stream: nothing overflowed or needed repair.
    let last = acknowledged.last().cloned().expect("writes");
    eventually("the last write reaches b", async || {
        let got: Option<String> = conn_b.get(&last.0).await.expect("GET");
        got.as_ref() == Some(&last.1)
    })
    .await;
    for (key, value) in &acknowledged {
        let got: Option<String> = conn_b.get(key).await.expect("GET at b");
        assert_eq!(got.as_ref(), Some(value), "{key} did not reach b");
    }
    let status = target_status(&a).expect("a's status");
    assert_eq!(status.overflows_total, 0, "{status:?}");
    assert_eq!(status.repairs_total, 0, "{status:?}");
    assert!(status.repairing_partitions.is_empty(), "{status:?}");
    assert!(!status.write_blocked, "{status:?}");

    drop((conn_a, conn_b));
    proxy.stop();
    a.gateway.shutdown().await;
    b.gateway.shutdown().await;
    a.node.shutdown().await;
    b.node.shutdown().await;
}
