//! QUIC transport over real loopback UDP: framing, channels, mutual TLS refusals, reconnects,
//! backpressure. Every test is bounded by a timeout and binds port 0 (or a port it just freed).
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tern_node::transport::certs::{DevCa, generate_ca, init_dev_pki, issue};
use tern_node::transport::{
    Channel, Identity, Inbound, PeerConfig, SendError, TlsMaterial, Transport, TransportConfig,
    TransportLimits,
};
use tokio::sync::mpsc::Receiver;
use tokio::time::timeout;

const TEST_TIMEOUT: Duration = Duration::from_secs(20);

fn id(name: &str) -> Identity {
    Identity::parse(name).expect("test identity is valid")
}

fn material(ca: &DevCa, identity: &Identity) -> TlsMaterial {
    let issued = issue(ca, identity).expect("issue certificate");
    TlsMaterial::from_issued(ca, &issued).expect("load material")
}

/// Fast reconnects so tests spend their time on behaviour, not on backoff.
fn test_limits() -> TransportLimits {
    TransportLimits {
        connect_timeout_ms: 500,
        reconnect_backoff_min_ms: 20,
        reconnect_backoff_max_ms: 200,
        ..TransportLimits::default()
    }
}

fn bind(
    tls: TlsMaterial,
    addr: SocketAddr,
    peers: Vec<PeerConfig>,
    limits: TransportLimits,
) -> (Transport, Receiver<Inbound>) {
    Transport::bind(TransportConfig {
        bind_addr: addr,
        tls,
        peers,
        limits,
    })
    .expect("bind transport")
}

/// Each test binds its own loopback address (127.0.0.`host`), so a port one test frees and
/// binds again cannot be taken meanwhile by another test running in parallel.
fn any_port(host: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, host], 0))
}

fn peer(identity: &Identity, addr: Option<SocketAddr>) -> PeerConfig {
    PeerConfig {
        identity: identity.clone(),
        addr: addr.map(Into::into),
    }
}

/// `a` (sorts first, so it dials) and `b` (accepts), connected and allow-listing each other.
struct Pair {
    a: Transport,
    a_rx: Receiver<Inbound>,
    b: Transport,
    b_rx: Receiver<Inbound>,
    a_id: Identity,
    b_id: Identity,
}

async fn connected_pair(host: u8, a_limits: TransportLimits, b_limits: TransportLimits) -> Pair {
    let ca = generate_ca("test CA").expect("CA");
    let (a_id, b_id) = (id("n1.s"), id("n2.s"));
    let (b, b_rx) = bind(
        material(&ca, &b_id),
        any_port(host),
        vec![peer(&a_id, None)],
        b_limits,
    );
    let b_addr = b.local_addr().expect("bound");
    let (a, a_rx) = bind(
        material(&ca, &a_id),
        any_port(host),
        vec![peer(&b_id, Some(b_addr))],
        a_limits,
    );
    wait_connected(&a, &b_id).await;
    wait_connected(&b, &a_id).await;
    Pair {
        a,
        a_rx,
        b,
        b_rx,
        a_id,
        b_id,
    }
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn wait_connected(transport: &Transport, peer: &Identity) {
    wait_until(&format!("connected to {peer}"), || {
        transport
            .peer_status(peer)
            .is_some_and(|status| status.connected)
    })
    .await;
}

async fn recv(rx: &mut Receiver<Inbound>) -> Inbound {
    timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("frame arrives in time")
        .expect("inbound queue open")
}

fn numbered(channel: Channel, i: u32) -> Bytes {
    Bytes::from(format!("{channel:?}-{i}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_flow_both_ways_on_every_channel_in_order() {
    timeout(TEST_TIMEOUT, async {
        let mut pair = connected_pair(10, test_limits(), test_limits()).await;
        const PER_CHANNEL: u32 = 200;
        for i in 0..PER_CHANNEL {
            for channel in Channel::ALL {
                pair.a
                    .send(&pair.b_id, channel, numbered(channel, i))
                    .expect("a sends");
                pair.b
                    .send(&pair.a_id, channel, numbered(channel, i))
                    .expect("b sends");
            }
        }
        for (rx, from) in [(&mut pair.b_rx, &pair.a_id), (&mut pair.a_rx, &pair.b_id)] {
            let mut next = [0u32; Channel::COUNT];
            for _ in 0..PER_CHANNEL * Channel::COUNT as u32 {
                let inbound = recv(rx).await;
                assert_eq!(&inbound.peer, from);
                let expected = numbered(inbound.channel, next[inbound.channel.index()]);
                assert_eq!(
                    inbound.frame, expected,
                    "order within {:?}",
                    inbound.channel
                );
                next[inbound.channel.index()] += 1;
            }
            assert_eq!(next, [PER_CHANNEL; Channel::COUNT]);
        }
        let status = pair.a.peer_status(&pair.b_id).expect("configured");
        assert!(status.dials && status.connected && status.rtt_us.is_some());
        assert!(!pair.b.peer_status(&pair.a_id).expect("configured").dials);
    })
    .await
    .expect("test finishes in time");
}

// Current-thread runtime: all frames are queued before the writer runs, so batching is certain.
#[tokio::test]
async fn ten_thousand_small_frames_are_batched_and_arrive_quickly() {
    timeout(TEST_TIMEOUT, async {
        let limits = TransportLimits {
            send_queue_frames_max: 16 * 1024,
            ..test_limits()
        };
        let mut pair = connected_pair(11, limits.clone(), limits).await;
        const FRAMES: u32 = 10_000;
        let started = Instant::now();
        let sender = pair
            .a
            .sender(&pair.b_id, Channel::Replication)
            .expect("peer");
        for i in 0..FRAMES {
            let mut frame = vec![0u8; 64];
            frame[..4].copy_from_slice(&i.to_be_bytes());
            sender.send(Bytes::from(frame)).expect("queue has room");
        }
        for i in 0..FRAMES {
            let inbound = recv(&mut pair.b_rx).await;
            assert_eq!(inbound.frame.len(), 64);
            assert_eq!(inbound.frame[..4], i.to_be_bytes(), "frame order");
        }
        let elapsed = started.elapsed();
        let stats = pair.a.stats_snapshot();
        assert_eq!(stats.frames_sent_total, u64::from(FRAMES));
        assert!(
            stats.write_batches_total <= 100,
            "expected batched writes, got {} writes for {FRAMES} frames",
            stats.write_batches_total
        );
        assert!(
            elapsed < Duration::from_secs(5),
            "10k frames took {elapsed:?}"
        );
    })
    .await
    .expect("test finishes in time");
}

/// A certificate from another CA is refused and counted, whichever side presents it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_from_another_ca_is_refused_and_counted() {
    timeout(TEST_TIMEOUT, async {
        let ca = generate_ca("site CA").expect("CA");
        let rogue_ca = generate_ca("rogue CA").expect("CA");
        let (dialer_id, server_id) = (id("n1.s"), id("n2.s"));
        // (dialer trusts the server's CA?, which side must refuse)
        for dialer_trusts_server in [true, false] {
            let (server, mut server_rx) = bind(
                material(&ca, &server_id),
                any_port(12),
                vec![peer(&dialer_id, None)],
                test_limits(),
            );
            let rogue = issue(&rogue_ca, &dialer_id).expect("issue");
            let trusted = if dialer_trusts_server { &ca } else { &rogue_ca };
            let rogue_tls =
                TlsMaterial::from_pem(trusted.cert_pem(), &rogue.cert_pem, &rogue.key_pem)
                    .expect("material");
            let server_addr = server.local_addr().expect("bound");
            let (dialer, _dialer_rx) = bind(
                rogue_tls,
                any_port(12),
                vec![peer(&server_id, Some(server_addr))],
                test_limits(),
            );
            let refuser = if dialer_trusts_server {
                &server
            } else {
                &dialer
            };
            wait_until("the refusal is counted", || {
                refuser.stats_snapshot().refused_unknown_ca_total > 0
            })
            .await;
            let _ = dialer.send(
                &server_id,
                Channel::Control,
                Bytes::from_static(b"let me in"),
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert!(server_rx.try_recv().is_err(), "no frame from a rogue peer");
            assert!(
                !server
                    .peer_status(&dialer_id)
                    .expect("configured")
                    .connected
            );
            assert_eq!(server.stats_snapshot().connections_established_total, 0);
        }
    })
    .await
    .expect("test finishes in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_certificate_with_identity_outside_the_allow_list_is_refused() {
    timeout(TEST_TIMEOUT, async {
        let ca = generate_ca("site CA").expect("CA");
        let (stranger_id, server_id, friend_id) = (id("n0.s"), id("n2.s"), id("n1.s"));
        let (server, mut server_rx) = bind(
            material(&ca, &server_id),
            any_port(13),
            vec![peer(&friend_id, None)],
            test_limits(),
        );
        let server_addr = server.local_addr().expect("bound");
        let (stranger, _stranger_rx) = bind(
            material(&ca, &stranger_id),
            any_port(13),
            vec![peer(&server_id, Some(server_addr))],
            test_limits(),
        );
        wait_until("the refusal is counted", || {
            server.stats_snapshot().refused_identity_not_allowed_total > 0
        })
        .await;
        wait_until("the stranger learns why", || {
            stranger
                .peer_status(&server_id)
                .and_then(|s| s.last_error)
                .is_some_and(|e| e.contains("allow-list"))
        })
        .await;
        let _ = stranger.send(&server_id, Channel::Control, Bytes::from_static(b"hello"));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(server_rx.try_recv().is_err(), "no frame from a stranger");
        assert_eq!(server.stats_snapshot().connections_established_total, 0);
    })
    .await
    .expect("test finishes in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frames_are_refused_without_harming_other_channels() {
    timeout(TEST_TIMEOUT, async {
        let sender_limits = TransportLimits {
            frame_bytes_max: 64 * 1024,
            ..test_limits()
        };
        let receiver_limits = TransportLimits {
            frame_bytes_max: 1024,
            ..test_limits()
        };
        let mut pair = connected_pair(14, sender_limits, receiver_limits).await;

        // Over the sender's own limit: refused at once, nothing queued.
        let huge = Bytes::from(vec![1u8; 64 * 1024 + 1]);
        assert!(matches!(
            pair.a.send(&pair.b_id, Channel::Replication, huge),
            Err(SendError::FrameTooLarge {
                bytes: 65537,
                max: 65536
            })
        ));
        // Under the sender's limit but over the receiver's: the receiver stops that stream.
        pair.a
            .send(
                &pair.b_id,
                Channel::Replication,
                Bytes::from(vec![2u8; 2048]),
            )
            .expect("queued");
        wait_until("the receiver refuses the frame", || {
            pair.b.stats_snapshot().frames_oversized_rejected_total == 1
        })
        .await;
        // Other channels carry on, on the same connection.
        pair.a
            .send(
                &pair.b_id,
                Channel::Control,
                Bytes::from_static(b"still here"),
            )
            .expect("queued");
        let inbound = recv(&mut pair.b_rx).await;
        assert_eq!(
            (inbound.channel, &inbound.frame[..]),
            (Channel::Control, &b"still here"[..])
        );
        // The refused channel recovers on a fresh stream.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            assert!(
                Instant::now() < deadline,
                "replication channel never recovered"
            );
            pair.a
                .send(
                    &pair.b_id,
                    Channel::Replication,
                    Bytes::from_static(b"small"),
                )
                .expect("queued");
            if let Ok(Some(inbound)) = timeout(Duration::from_millis(200), pair.b_rx.recv()).await {
                assert_eq!(inbound.channel, Channel::Replication);
                assert_eq!(&inbound.frame[..], b"small");
                break;
            }
        }
        let status = pair.a.peer_status(&pair.b_id).expect("configured");
        assert!(status.connected);
        assert_eq!(status.reconnects, 0, "the connection survived");
    })
    .await
    .expect("test finishes in time");
}

/// Binds `addr` again after its previous owner shut down (the port may take a moment to free).
async fn rebind(
    tls: &TlsMaterial,
    addr: SocketAddr,
    peers: Vec<PeerConfig>,
) -> (Transport, Receiver<Inbound>) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match Transport::bind(TransportConfig {
            bind_addr: addr,
            tls: tls.clone(),
            peers: peers.clone(),
            limits: test_limits(),
        }) {
            Ok(bound) => return bound,
            Err(error) => {
                assert!(Instant::now() < deadline, "cannot rebind {addr}: {error}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Sends on `channel` until a frame arrives (frames written into a dying connection may be lost;
/// that is the documented at-most-once behaviour).
async fn until_delivered(
    from: &Transport,
    to: &Identity,
    rx: &mut Receiver<Inbound>,
    payload: &'static [u8],
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "traffic to {to} never resumed");
        match from.send(to, Channel::Forward, Bytes::from_static(payload)) {
            Ok(()) | Err(SendError::QueueFull { .. }) => {}
            Err(other) => panic!("unexpected send error: {other}"),
        }
        if let Ok(Some(inbound)) = timeout(Duration::from_millis(100), rx.recv()).await {
            assert_eq!(&inbound.frame[..], payload);
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_peer_is_reconnected_and_traffic_resumes() {
    timeout(TEST_TIMEOUT, async {
        let ca = generate_ca("site CA").expect("CA");
        let (dialer_id, acceptor_id) = (id("n1.s"), id("n2.s"));
        let dialer_tls = material(&ca, &dialer_id);
        let acceptor_tls = material(&ca, &acceptor_id);
        for restart_dialer in [false, true] {
            let (acceptor, mut acceptor_rx) = bind(
                acceptor_tls.clone(),
                any_port(15),
                vec![peer(&dialer_id, None)],
                test_limits(),
            );
            let acceptor_addr = acceptor.local_addr().expect("bound");
            let dialer_peers = vec![peer(&acceptor_id, Some(acceptor_addr))];
            let (dialer, dialer_rx) = bind(
                dialer_tls.clone(),
                any_port(15),
                dialer_peers.clone(),
                test_limits(),
            );
            wait_connected(&dialer, &acceptor_id).await;
            until_delivered(&dialer, &acceptor_id, &mut acceptor_rx, b"before").await;

            let (survivor, survivor_rx, restarted, restarted_rx, survivor_id, restarted_id);
            if restart_dialer {
                dialer.shutdown().await;
                drop(dialer_rx);
                let (new_dialer, new_rx) = bind(
                    dialer_tls.clone(),
                    any_port(15),
                    dialer_peers,
                    test_limits(),
                );
                (survivor, survivor_rx, restarted, restarted_rx) =
                    (acceptor, acceptor_rx, new_dialer, new_rx);
                (survivor_id, restarted_id) = (&acceptor_id, &dialer_id);
            } else {
                acceptor.shutdown().await;
                drop(acceptor_rx);
                let (new_acceptor, new_rx) =
                    rebind(&acceptor_tls, acceptor_addr, vec![peer(&dialer_id, None)]).await;
                (survivor, survivor_rx, restarted, restarted_rx) =
                    (dialer, dialer_rx, new_acceptor, new_rx);
                (survivor_id, restarted_id) = (&dialer_id, &acceptor_id);
            }
            let (mut survivor_rx, mut restarted_rx) = (survivor_rx, restarted_rx);
            until_delivered(
                &survivor,
                restarted_id,
                &mut restarted_rx,
                b"after, to restarted",
            )
            .await;
            until_delivered(
                &restarted,
                survivor_id,
                &mut survivor_rx,
                b"after, from restarted",
            )
            .await;
            let status = survivor.peer_status(restarted_id).expect("configured");
            assert!(status.connected, "restart_dialer={restart_dialer}");
            assert!(
                status.reconnects >= 1,
                "restart_dialer={restart_dialer}: {status:?}"
            );
        }
    })
    .await
    .expect("test finishes in time");
}

/// A peer that vanishes without closing (its runtime dies, like `kill -9`) is noticed within
/// about the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silently_dead_peer_is_noticed_within_the_idle_timeout() {
    timeout(TEST_TIMEOUT, async {
        let ca = generate_ca("site CA").expect("CA");
        let (dialer_id, victim_id) = (id("n1.s"), id("n2.s"));
        let victim_runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let victim_tls = material(&ca, &victim_id);
        let victim_peers = vec![peer(&dialer_id, None)];
        let (victim, victim_rx) = victim_runtime
            .spawn(async move { bind(victim_tls, any_port(16), victim_peers, test_limits()) })
            .await
            .expect("victim binds");
        let victim_addr = victim.local_addr().expect("bound");
        let (dialer, _dialer_rx) = bind(
            material(&ca, &dialer_id),
            any_port(16),
            vec![peer(&victim_id, Some(victim_addr))],
            test_limits(),
        );
        wait_connected(&dialer, &victim_id).await;

        victim_runtime.shutdown_background(); // no CONNECTION_CLOSE is ever sent
        let died = Instant::now();
        wait_until("the dialer notices", || {
            dialer
                .peer_status(&victim_id)
                .is_some_and(|status| !status.connected)
        })
        .await;
        let noticed_after = died.elapsed();
        let idle = Duration::from_millis(test_limits().idle_timeout_ms);
        assert!(
            noticed_after <= idle + Duration::from_millis(500),
            "dead peer noticed after {noticed_after:?}"
        );
        drop((victim, victim_rx));
    })
    .await
    .expect("test finishes in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_send_queue_is_an_error_and_queued_frames_are_not_dropped() {
    timeout(TEST_TIMEOUT, async {
        let ca = generate_ca("site CA").expect("CA");
        let (a_id, b_id) = (id("n1.s"), id("n2.s"));
        // Hold a port where nobody answers: the peer is unreachable for now.
        let placeholder = std::net::UdpSocket::bind(any_port(17)).expect("bind");
        let b_addr = placeholder.local_addr().expect("bound");
        let limits = TransportLimits {
            send_queue_frames_max: 8,
            ..test_limits()
        };
        let (a, _a_rx) = bind(
            material(&ca, &a_id),
            any_port(17),
            vec![peer(&b_id, Some(b_addr))],
            limits,
        );
        for i in 0..8u32 {
            a.send(
                &b_id,
                Channel::Replication,
                numbered(Channel::Replication, i),
            )
            .expect("queue has room");
        }
        match a.send(
            &b_id,
            Channel::Replication,
            Bytes::from_static(b"one too many"),
        ) {
            Err(SendError::QueueFull {
                peer,
                channel,
                frame,
            }) => {
                assert_eq!((peer, channel), (b_id.clone(), Channel::Replication));
                assert_eq!(&frame[..], b"one too many", "the frame is handed back");
            }
            other => panic!("expected QueueFull, got {other:?}"),
        }
        // Queues are per channel: another channel still has room.
        a.send(&b_id, Channel::Control, Bytes::from_static(b"control"))
            .expect("control queue has room");
        let status = a.peer_status(&b_id).expect("configured");
        assert_eq!(status.queued_frames[Channel::Replication.index()], 8);
        assert_eq!(a.stats_snapshot().send_queue_full_total, 1);
        assert!(matches!(
            a.send(&id("n9.s"), Channel::Control, Bytes::new()),
            Err(SendError::UnknownPeer(_))
        ));

        // The peer comes up: every queued frame is delivered, in order.
        drop(placeholder);
        let (_b, mut b_rx) = rebind(&material(&ca, &b_id), b_addr, vec![peer(&a_id, None)]).await;
        let mut replication = Vec::new();
        while replication.len() < 8 {
            let inbound = recv(&mut b_rx).await;
            if inbound.channel == Channel::Replication {
                replication.push(inbound.frame);
            }
        }
        let expected: Vec<Bytes> = (0..8).map(|i| numbered(Channel::Replication, i)).collect();
        assert_eq!(replication, expected);
    })
    .await
    .expect("test finishes in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_pki_written_to_disk_connects_two_nodes() {
    timeout(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().expect("temp dir");
        let summary = init_dev_pki(dir.path(), &["s".to_owned(), "t".to_owned()], 2).expect("init");
        let names: Vec<&str> = summary.identities.iter().map(Identity::dns_name).collect();
        assert_eq!(
            names,
            [
                "s.tern",
                "n1.s.tern",
                "n2.s.tern",
                "t.tern",
                "n1.t.tern",
                "n2.t.tern"
            ]
        );
        #[cfg(unix)]
        for file in ["ca.key", "n1.s.key", "t.key"] {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(file))
                .expect("exists")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
        // Running it again reuses the CA, so certificates from the first run still verify.
        let again = init_dev_pki(dir.path(), &["u".to_owned()], 0).expect("init again");
        assert!(again.ca_reused && !summary.ca_reused);

        let (site_s, site_u) = (id("s"), id("u"));
        let load = |identity: &Identity| TlsMaterial::from_dir(dir.path(), identity).expect("load");
        let (b, mut b_rx) = bind(
            load(&site_u),
            any_port(18),
            vec![peer(&site_s, None)],
            test_limits(),
        );
        let b_addr = b.local_addr().expect("bound");
        let (a, _a_rx) = bind(
            load(&site_s),
            any_port(18),
            vec![peer(&site_u, Some(b_addr))],
            test_limits(),
        );
        a.send(&site_u, Channel::Wan, Bytes::from_static(b"batch"))
            .expect("queued");
        let inbound = recv(&mut b_rx).await;
        assert_eq!((inbound.peer, inbound.channel), (site_s, Channel::Wan));
    })
    .await
    .expect("test finishes in time");
}

/// Throughput figure, not a pass/fail check:
/// `cargo test -p tern-node --release --test transport -- --ignored --nocapture`
#[ignore]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throughput_of_64_byte_frames_on_loopback() {
    const FRAMES: u64 = 2_000_000;
    const FRAME_BYTES: usize = 64;
    let limits = TransportLimits {
        send_queue_frames_max: 64 * 1024,
        inbound_queue_frames_max: 64 * 1024,
        ..test_limits()
    };
    let mut pair = connected_pair(19, limits.clone(), limits).await;
    let sender = pair.a.sender(&pair.b_id, Channel::Wan).expect("peer");
    let frame = Bytes::from(vec![7u8; FRAME_BYTES]);
    let started = Instant::now();
    let producer = tokio::spawn(async move {
        for _ in 0..FRAMES {
            sender.send_wait(frame.clone()).await.expect("queued");
        }
    });
    for _ in 0..FRAMES {
        recv(&mut pair.b_rx).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    producer.await.expect("producer done");
    let stats = pair.a.stats_snapshot();
    println!(
        "{FRAMES} frames of {FRAME_BYTES} B in {elapsed:.2} s: {:.0} frames/s, {:.1} MB/s payload, \
         {:.0} frames per write",
        FRAMES as f64 / elapsed,
        (FRAMES * FRAME_BYTES as u64) as f64 / elapsed / 1e6,
        stats.frames_sent_total as f64 / stats.write_batches_total.max(1) as f64
    );
}
