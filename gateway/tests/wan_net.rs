//! The WAN transport over real UDP sockets on localhost: message exchange, site admission and
//! refusals, runtime allow-list changes, a cut WAN through the fault proxy, and delivery over a
//! lossy path. Every test is bounded by `tokio::time::timeout`; endpoints and proxies are
//! closed/dropped at the end and temp dirs removed.
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tempfile::TempDir;
use tern_conflict::{HlcTimestamp, SiteId, Value, Version, VersionVector, Versioned};
use tern_gateway::fault_proxy::{Faults, UdpFaultProxy};
use tern_gateway::net::{REFUSAL_REASONS, WanEndpoint, WanLink, WanNetError, WanNetLimits};
use tern_gateway::wire::{Ack, Batch, Hello, Message, PROTOCOL_VERSION, WanRecord};
use tern_node::core::keyspace::PartitionId;
use tern_node::transport::certs::init_dev_pki;
use tokio::time::timeout;

/// Short timeouts so a cut is noticed quickly.
fn limits() -> WanNetLimits {
    WanNetLimits {
        idle_timeout_ms: 600,
        keep_alive_ms: 150,
        connect_timeout_ms: 2_000,
        ..WanNetLimits::default()
    }
}

fn localhost() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn site_id(site: &str) -> SiteId {
    match site {
        "a" => SiteId(1),
        "b" => SiteId(2),
        _ => SiteId(3),
    }
}

/// One CA with sites a, b, c.
fn pki() -> TempDir {
    let dir = tempfile::tempdir().expect("create temp dir");
    init_dev_pki(dir.path(), &["a".into(), "b".into(), "c".into()], 0).expect("init PKI");
    dir
}

fn bind(dir: &Path, site: &str, allowed: &[&str], limits: WanNetLimits) -> WanEndpoint {
    WanEndpoint::bind(
        localhost(),
        dir,
        site,
        allowed.iter().map(|s| (*s).to_owned()),
        limits,
    )
    .unwrap_or_else(|e| panic!("bind {site}: {e}"))
}

fn hello(from: &str, to: &str) -> Message {
    Message::Hello(Hello {
        site: site_id(from),
        target: site_id(to),
        protocol_version: PROTOCOL_VERSION,
    })
}

fn batch(batch_id: u64, records: usize) -> Message {
    let mut vv = VersionVector::new();
    vv.increment(SiteId(1));
    let records = (0..records as u64)
        .map(|i| WanRecord {
            origin: SiteId(1),
            partition: PartitionId(3),
            prev_seq: batch_id * 100 + i,
            seq: batch_id * 100 + i + 1,
            key: Bytes::from(format!("key-{batch_id}-{i}")),
            entry: Versioned {
                value: Value::Bytes(Bytes::from(vec![b'v'; 32])),
                version: Version {
                    hlc: HlcTimestamp::new(1_700_000_000_000 + batch_id, 0),
                    origin: SiteId(1),
                    vv: vv.clone(),
                },
                expires_at_ms: None,
            },
            committed_at_ms: 1_700_000_000_000,
        })
        .collect();
    Message::Batch(Batch {
        source: SiteId(1),
        batch_id,
        records,
    })
}

fn ack(batch_id: u64) -> Message {
    Message::Ack(Ack {
        source: SiteId(1),
        batch_id: Some(batch_id),
        cursors: vec![(PartitionId(3), batch_id * 100 + 2)],
    })
}

/// Dials `site` at `addr` and sends a Hello (so the acceptor sees the stream).
async fn dial(from: &WanEndpoint, addr: SocketAddr, from_site: &str, site: &str) -> WanLink {
    let mut link = from
        .connect(addr, site)
        .await
        .unwrap_or_else(|e| panic!("connect {from_site} → {site}: {e}"));
    link.tx
        .send(&[hello(from_site, site)])
        .await
        .expect("send hello");
    link
}

async fn accept(endpoint: &WanEndpoint) -> (String, WanLink) {
    timeout(Duration::from_secs(5), endpoint.accept())
        .await
        .expect("a link arrives within 5 s")
        .expect("endpoint open")
}

fn refusal_counts(pairs: &[(&str, u64)]) -> Vec<(String, u64)> {
    REFUSAL_REASONS
        .iter()
        .map(|r| {
            let n = pairs.iter().find(|(p, _)| p == r).map_or(0, |(_, n)| *n);
            ((*r).to_owned(), n)
        })
        .collect()
}

/// Refusals are counted by a background task: poll until they match or 5 s pass.
async fn wait_for_refusals(endpoint: &WanEndpoint, expected: &[(String, u64)]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while endpoint.refusals() != expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(endpoint.refusals(), expected);
}

#[tokio::test]
async fn sites_exchange_messages_both_ways_and_close_cleanly() {
    timeout(Duration::from_secs(30), async {
        let dir = pki();
        let a = bind(dir.path(), "a", &["b"], limits());
        let b = bind(dir.path(), "b", &["a"], limits());
        let mut to_b = a.connect(b.local_addr(), "b").await.expect("connect a → b");
        assert_eq!(to_b.peer_site(), "b");
        let sent = vec![hello("a", "b"), batch(1, 3)];
        to_b.tx.send(&sent).await.expect("send hello and batch");

        let (site, mut from_a) = accept(&b).await;
        assert_eq!((site.as_str(), from_a.peer_site()), ("a", "a"));
        for expected in &sent {
            let got = from_a.rx.recv().await.expect("recv at b");
            assert_eq!(got.as_ref(), Some(expected));
        }
        from_a.tx.send(&[ack(1)]).await.expect("send ack");
        assert_eq!(to_b.rx.recv().await.expect("recv at a"), Some(ack(1)));

        // A deliberate close is a clean end for the peer, not an error.
        to_b.close();
        assert!(matches!(from_a.rx.recv().await, Ok(None)));
        assert_eq!(b.refusals(), refusal_counts(&[]));
        a.close();
        b.close();
        assert!(b.accept().await.is_none(), "accept after close");
        assert!(matches!(
            a.connect(b.local_addr(), "b").await,
            Err(WanNetError::EndpointClosed)
        ));
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn refuses_unknown_sites_foreign_cas_and_wrong_names() {
    timeout(Duration::from_secs(60), async {
        let dir = pki();
        // A second CA issuing the same site names.
        let rogue = tempfile::tempdir().expect("create temp dir");
        init_dev_pki(rogue.path(), &["a".into()], 0).expect("init rogue PKI");
        // A rogue that trusts our CA too: only the acceptor's verifier can catch it.
        let rogue_trusting = tempfile::tempdir().expect("create temp dir");
        let read = |p: &Path| std::fs::read_to_string(p).expect("read PKI file");
        let both_cas = read(&rogue.path().join("ca.pem")) + &read(&dir.path().join("ca.pem"));
        std::fs::write(rogue_trusting.path().join("ca.pem"), both_cas).expect("write CA bundle");
        for file in ["a.pem", "a.key"] {
            std::fs::copy(rogue.path().join(file), rogue_trusting.path().join(file))
                .expect("copy rogue cert");
        }

        // (case, dialer's PKI dir, dialer site, expected refusal at b)
        let cases: [(&str, &Path, &str, &str); 3] = [
            ("site c is not allowed", dir.path(), "c", "unknown_site"),
            ("a from another CA", rogue.path(), "a", "unknown_ca"),
            (
                "a from another CA that trusts ours",
                rogue_trusting.path(),
                "a",
                "unknown_ca",
            ),
        ];
        for (name, dialer_dir, dialer_site, reason) in cases {
            let b = bind(dir.path(), "b", &["a"], limits());
            let dialer = bind(dialer_dir, dialer_site, &[], limits());
            // Either the dial fails, or the link dies at the first receive.
            if let Ok(mut link) = dialer.connect(b.local_addr(), "b").await {
                let _ = link.tx.send(&[hello(dialer_site, "b")]).await;
                let got = timeout(Duration::from_secs(5), link.rx.recv())
                    .await
                    .unwrap_or_else(|_| panic!("{name}: refused link stayed up"));
                assert!(got.is_err(), "{name}: first recv gave {got:?}");
            }
            wait_for_refusals(&b, &refusal_counts(&[(reason, 1)])).await;
            assert!(
                timeout(Duration::from_millis(500), b.accept())
                    .await
                    .is_err(),
                "{name}: refused peer was accepted"
            );
            dialer.close();
            b.close();
        }

        // Dialing b while expecting c: the client refuses b's certificate.
        let a = bind(dir.path(), "a", &[], limits());
        let b = bind(dir.path(), "b", &["a"], limits());
        let got = a.connect(b.local_addr(), "c").await;
        assert!(
            matches!(got, Err(WanNetError::Connect { ref site, .. }) if site == "c"),
            "wrong name: {got:?}"
        );
        // b sees a handshake the client aborted.
        wait_for_refusals(&b, &refusal_counts(&[("handshake", 1)])).await;
        // An invalid site name is refused before dialing.
        assert!(matches!(
            a.connect(b.local_addr(), "B!").await,
            Err(WanNetError::InvalidSite { .. })
        ));
        a.close();
        b.close();
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn set_allowed_admits_a_site_at_runtime() {
    timeout(Duration::from_secs(30), async {
        let dir = pki();
        let b = bind(dir.path(), "b", &["a"], limits());
        let c = bind(dir.path(), "c", &[], limits());

        let mut refused = dial(&c, b.local_addr(), "c", "b").await;
        assert!(
            refused.rx.recv().await.is_err(),
            "c refused before set_allowed"
        );
        wait_for_refusals(&b, &refusal_counts(&[("unknown_site", 1)])).await;

        b.set_allowed(BTreeSet::from(["a".to_owned(), "c".to_owned()]));
        assert_eq!(b.allowed().len(), 2);
        let _link = dial(&c, b.local_addr(), "c", "b").await;
        let (site, mut from_c) = accept(&b).await;
        assert_eq!(site, "c");
        assert_eq!(from_c.rx.recv().await.expect("recv"), Some(hello("c", "b")));
        assert_eq!(b.refusals(), refusal_counts(&[("unknown_site", 1)]));
        b.close();
        c.close();
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn a_cut_wan_fails_both_sides_within_the_idle_timeout_and_heals() {
    timeout(Duration::from_secs(30), async {
        let dir = pki();
        let limits = limits();
        let a = bind(dir.path(), "a", &[], limits);
        let b = bind(dir.path(), "b", &["a"], limits);
        let proxy = UdpFaultProxy::start(localhost(), b.local_addr(), 7)
            .await
            .expect("start proxy");

        let mut to_b = dial(&a, proxy.local_addr(), "a", "b").await;
        let (_, mut from_a) = accept(&b).await;
        assert_eq!(
            from_a.rx.recv().await.expect("hello"),
            Some(hello("a", "b"))
        );
        from_a.tx.send(&[ack(0)]).await.expect("send ack");
        assert_eq!(to_b.rx.recv().await.expect("ack"), Some(ack(0)));
        // Quiet for several idle timeouts: keep-alives hold the link up.
        tokio::time::sleep(Duration::from_millis(3 * limits.idle_timeout_ms)).await;
        from_a
            .tx
            .send(&[ack(1)])
            .await
            .expect("send after a quiet spell");
        assert_eq!(to_b.rx.recv().await.expect("ack"), Some(ack(1)));

        proxy.set_faults(Faults {
            cut: true,
            ..Faults::default()
        });
        let cut_at = Instant::now();
        let bound = Duration::from_millis(3 * limits.idle_timeout_ms);
        let (at_a, at_b) = tokio::join!(
            timeout(bound, to_b.rx.recv()),
            timeout(bound, from_a.rx.recv())
        );
        assert!(
            matches!(at_a, Ok(Err(_))),
            "a's recv: {at_a:?} after {:?}",
            cut_at.elapsed()
        );
        assert!(matches!(at_b, Ok(Err(_))), "b's recv: {at_b:?}");
        assert!(
            proxy.stats().dropped_total > 0,
            "the cut dropped keep-alives"
        );

        proxy.set_faults(Faults::default());
        let _again = dial(&a, proxy.local_addr(), "a", "b").await;
        let (site, mut from_a) = accept(&b).await;
        assert_eq!(site, "a");
        assert_eq!(
            from_a.rx.recv().await.expect("hello"),
            Some(hello("a", "b"))
        );
        proxy.stop();
        a.close();
        b.close();
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn a_lossy_path_still_delivers_every_message_in_order() {
    timeout(Duration::from_secs(90), async {
        let dir = pki();
        // Loss slows the handshake (retransmitted on PTO) and can leave long gaps: roomy timeouts.
        let limits = WanNetLimits {
            idle_timeout_ms: 10_000,
            keep_alive_ms: 500,
            connect_timeout_ms: 20_000,
            ..WanNetLimits::default()
        };
        let a = bind(dir.path(), "a", &[], limits);
        let b = bind(dir.path(), "b", &["a"], limits);
        let proxy = UdpFaultProxy::start(localhost(), b.local_addr(), 42)
            .await
            .expect("start proxy");
        proxy.set_faults(Faults {
            drop_ratio: 0.2,
            delay_ms: 1,
            jitter_ms: 2,
            cut: false,
        });
        const MESSAGES: u64 = 1_000;
        let mut to_b = dial(&a, proxy.local_addr(), "a", "b").await;
        let sender = tokio::spawn(async move {
            for first in (0..MESSAGES).step_by(10) {
                let chunk: Vec<Message> = (first..first + 10).map(|id| batch(id, 2)).collect();
                to_b.tx
                    .send(&chunk)
                    .await
                    .expect("send over the lossy path");
            }
            to_b
        });
        let (_, mut from_a) = accept(&b).await;
        assert_eq!(
            from_a.rx.recv().await.expect("hello"),
            Some(hello("a", "b"))
        );
        for id in 0..MESSAGES {
            let got = from_a.rx.recv().await.expect("recv over the lossy path");
            assert_eq!(got, Some(batch(id, 2)), "message {id}");
        }
        let to_b = sender.await.expect("sender task");
        let stats = proxy.stats();
        assert!(
            stats.dropped_total > stats.forwarded_total / 10,
            "the proxy really dropped ~20%: {stats:?}"
        );
        to_b.close();
        a.close();
        b.close();
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn a_frame_over_the_receivers_limit_fails_the_link() {
    timeout(Duration::from_secs(30), async {
        let dir = pki();
        let a = bind(dir.path(), "a", &[], limits());
        let small = WanNetLimits {
            frame_bytes_max: 4 * 1024,
            ..limits()
        };
        let b = bind(dir.path(), "b", &["a"], small);
        let mut to_b = dial(&a, b.local_addr(), "a", "b").await;
        to_b.tx
            .send(&[batch(1, 200)])
            .await
            .expect("a's limit allows it");
        let (_, mut from_a) = accept(&b).await;
        assert_eq!(
            from_a.rx.recv().await.expect("hello"),
            Some(hello("a", "b"))
        );
        let got = from_a.rx.recv().await;
        assert!(matches!(got, Err(WanNetError::Decode { .. })), "{got:?}");

        // The sender refuses to encode past its own limit, writing nothing.
        let a_small = bind(dir.path(), "a", &[], small);
        let mut to_b_small = a_small.connect(b.local_addr(), "b").await.expect("connect");
        let got = to_b_small.tx.send(&[batch(2, 200)]).await;
        assert!(matches!(got, Err(WanNetError::Encode { .. })), "{got:?}");
        a_small.close();
        a.close();
        b.close();
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn bind_reports_bad_configuration() {
    timeout(Duration::from_secs(10), async {
        let dir = pki();
        let empty = tempfile::tempdir().expect("create temp dir");
        // c's certificate copied under the name d: the endpoint would present the wrong site.
        for (from, to) in [("c.pem", "d.pem"), ("c.key", "d.key"), ("ca.pem", "ca.pem")] {
            std::fs::copy(dir.path().join(from), empty.path().join(to)).expect("copy");
        }
        let bad_limits = WanNetLimits {
            keep_alive_ms: 600,
            ..limits()
        };
        type Case<'a> = (
            &'a str,
            &'a Path,
            &'a str,
            WanNetLimits,
            fn(&WanNetError) -> bool,
        );
        let cases: [Case; 4] = [
            ("no such site files", dir.path(), "zz", limits(), |e| {
                matches!(e, WanNetError::LoadTls { .. })
            }),
            (
                "invalid site name",
                dir.path(),
                "Not A Site",
                limits(),
                |e| matches!(e, WanNetError::InvalidSite { .. }),
            ),
            (
                "certificate names another site",
                empty.path(),
                "d",
                limits(),
                |e| matches!(e, WanNetError::OwnCertificate { .. }),
            ),
            (
                "keep-alive not below idle timeout",
                dir.path(),
                "a",
                bad_limits,
                |e| matches!(e, WanNetError::Limits(_)),
            ),
        ];
        for (name, tls_dir, site, limits, expected) in cases {
            match WanEndpoint::bind(localhost(), tls_dir, site, [], limits) {
                Ok(_) => panic!("{name}: bind succeeded"),
                Err(e) => assert!(expected(&e), "{name}: {e}"),
            }
        }
    })
    .await
    .expect("test timed out");
}

/// The proxy itself, in front of a UDP echo server: delay and jitter keep order, the drop ratio
/// is applied per datagram and direction, a cut passes nothing.
#[tokio::test]
async fn fault_proxy_delays_in_order_drops_by_ratio_and_cuts() {
    timeout(Duration::from_secs(30), async {
        let echo = tokio::net::UdpSocket::bind(localhost())
            .await
            .expect("bind echo");
        let echo_addr = echo.local_addr().expect("echo addr");
        let echo_task = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            while let Ok((n, from)) = echo.recv_from(&mut buf).await {
                let _ = echo.send_to(&buf[..n], from).await;
            }
        });
        let proxy = UdpFaultProxy::start(localhost(), echo_addr, 3)
            .await
            .expect("start proxy");
        let client = tokio::net::UdpSocket::bind(localhost())
            .await
            .expect("bind client");
        client
            .connect(proxy.local_addr())
            .await
            .expect("connect client");

        // Sends `count` numbered datagrams, then collects echoes until `quiet` passes without one.
        async fn round(client: &tokio::net::UdpSocket, count: u32, quiet: Duration) -> Vec<u32> {
            for i in 0..count {
                client.send(&i.to_le_bytes()).await.expect("send");
            }
            let mut got = Vec::new();
            let mut buf = [0u8; 64];
            while let Ok(Ok(n)) = timeout(quiet, client.recv(&mut buf)).await {
                let bytes: [u8; 4] = buf[..n].try_into().expect("4-byte echo");
                got.push(u32::from_le_bytes(bytes));
            }
            got
        }

        proxy.set_faults(Faults {
            delay_ms: 40,
            jitter_ms: 20,
            ..Faults::default()
        });
        let started = Instant::now();
        let got = round(&client, 200, Duration::from_millis(300)).await;
        assert_eq!(got, (0..200).collect::<Vec<_>>(), "all echoed, in order");
        assert!(
            started.elapsed() >= Duration::from_millis(80),
            "delayed both ways"
        );
        assert_eq!(proxy.stats().forwarded_total, 400);

        proxy.set_faults(Faults {
            drop_ratio: 0.5,
            ..Faults::default()
        });
        let got = round(&client, 400, Duration::from_millis(200)).await;
        // Each echo survives two independent 50% drops: about 100 of 400 (σ ≈ 9).
        assert!((50..150).contains(&got.len()), "{} echoes", got.len());
        assert!(got.windows(2).all(|w| w[0] < w[1]), "still in order");

        proxy.set_faults(Faults {
            cut: true,
            ..Faults::default()
        });
        let before = proxy.stats();
        assert!(
            round(&client, 50, Duration::from_millis(200))
                .await
                .is_empty()
        );
        let after = proxy.stats();
        assert_eq!(after.forwarded_total, before.forwarded_total);
        assert_eq!(after.dropped_total, before.dropped_total + 50);

        proxy.stop();
        echo_task.abort();
    })
    .await
    .expect("test timed out");
}
