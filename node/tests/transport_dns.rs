//! Peers addressed by DNS name: the system resolver (`localhost`), and a scripted resolver that
//! shows a name is looked up again on every dial — not resolving at first (a pod not scheduled),
//! then moving to a new IP (a restarted pod). Every test is bounded by a timeout.
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tern_node::transport::certs::{DevCa, generate_ca, issue};
use tern_node::transport::{
    Channel, Identity, Inbound, PeerAddr, PeerConfig, Resolve, Resolving, TlsMaterial, Transport,
    TransportConfig, TransportLimits,
};
use tokio::sync::mpsc::Receiver;
use tokio::time::timeout;

const TEST_TIMEOUT: Duration = Duration::from_secs(30);

fn id(name: &str) -> Identity {
    Identity::parse(name).expect("test identity is valid")
}

fn material(ca: &DevCa, identity: &Identity) -> TlsMaterial {
    let issued = issue(ca, identity).expect("issue certificate");
    TlsMaterial::from_issued(ca, &issued).expect("load material")
}

fn test_limits() -> TransportLimits {
    TransportLimits {
        connect_timeout_ms: 500,
        reconnect_backoff_min_ms: 20,
        reconnect_backoff_max_ms: 200,
        ..TransportLimits::default()
    }
}

fn config(tls: TlsMaterial, bind_addr: SocketAddr, peers: Vec<PeerConfig>) -> TransportConfig {
    TransportConfig {
        bind_addr,
        tls,
        peers,
        limits: test_limits(),
    }
}

fn peer(identity: &Identity, addr: Option<&str>) -> PeerConfig {
    PeerConfig {
        identity: identity.clone(),
        addr: addr.map(|a| PeerAddr::parse(a).expect("valid peer address")),
    }
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn recv(rx: &mut Receiver<Inbound>) -> Inbound {
    timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("frame arrives in time")
        .expect("inbound queue open")
}

/// Answers every name with whatever address the test set last (or "no such host").
#[derive(Debug, Default)]
struct ScriptedDns {
    target: Mutex<Option<SocketAddr>>,
    lookups: AtomicUsize,
}

impl ScriptedDns {
    fn point_at(&self, addr: Option<SocketAddr>) {
        *self.target.lock().expect("not poisoned") = addr;
    }

    fn lookups(&self) -> usize {
        self.lookups.load(Ordering::SeqCst)
    }
}

impl Resolve for ScriptedDns {
    fn resolve(&self, addr: &PeerAddr) -> Resolving {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let target = *self.target.lock().expect("not poisoned");
        let name = addr.to_string();
        Box::pin(async move {
            target.map(|a| vec![a]).ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{name}: no such host"),
                )
            })
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_addressed_as_localhost_connects() {
    timeout(TEST_TIMEOUT, async {
        let ca = generate_ca("test CA").expect("CA");
        let (a_id, b_id) = (id("n1.dns"), id("n2.dns"));
        // `localhost` resolves to 127.0.0.1 (and maybe ::1, which an IPv4 endpoint skips).
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let (b, mut b_rx) = Transport::bind(config(
            material(&ca, &b_id),
            loopback,
            vec![peer(&a_id, None)],
        ))
        .expect("bind b");
        let b_addr = b.local_addr().expect("bound");
        let name = format!("localhost:{}", b_addr.port());
        let (a, _a_rx) = Transport::bind(config(
            material(&ca, &a_id),
            loopback,
            vec![peer(&b_id, Some(&name))],
        ))
        .expect("bind a");
        wait_until("a connects to b by name", || {
            a.peer_status(&b_id).is_some_and(|s| s.connected)
        })
        .await;
        let status = a.peer_status(&b_id).expect("configured");
        assert_eq!(status.addr.map(|a| a.to_string()), Some(name));
        assert_eq!(status.dialed_addr, Some(b_addr));
        a.send(&b_id, Channel::Control, Bytes::from_static(b"hello"))
            .expect("queued");
        let got = recv(&mut b_rx).await;
        assert_eq!((got.peer, got.frame), (a_id, Bytes::from_static(b"hello")));
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_is_resolved_again_on_every_dial() {
    timeout(TEST_TIMEOUT, async {
        let ca = generate_ca("test CA").expect("CA");
        let (a_id, b_id) = (id("n1.dns"), id("n2.dns"));
        let dns = Arc::new(ScriptedDns::default());
        let (a, _a_rx) = Transport::bind_with_resolver(
            config(
                material(&ca, &a_id),
                SocketAddr::from(([127, 0, 0, 151], 0)),
                vec![peer(&b_id, Some("tern-1.tern-peers:7400"))],
            ),
            dns.clone(),
        )
        .expect("an unresolvable peer does not stop the transport from starting");

        // The pod is not scheduled yet: every attempt looks the name up, none connects, and
        // status says why.
        wait_until("a few lookups failed", || dns.lookups() >= 3).await;
        let status = a.peer_status(&b_id).expect("configured");
        assert!(!status.connected);
        assert_eq!(status.dialed_addr, None);
        let error = status.last_error.unwrap_or_default();
        assert!(
            error.contains("resolve tern-1.tern-peers:7400") && error.contains("no such host"),
            "{error}"
        );

        // The pod comes up: the next lookup finds it.
        let b_tls = material(&ca, &b_id);
        let (b, _b_rx) = Transport::bind(config(
            b_tls.clone(),
            SocketAddr::from(([127, 0, 0, 152], 0)),
            vec![peer(&a_id, None)],
        ))
        .expect("bind b");
        let first_ip = b.local_addr().expect("bound");
        dns.point_at(Some(first_ip));
        wait_until("a connects to b's first IP", || {
            a.peer_status(&b_id).is_some_and(|s| s.connected)
        })
        .await;
        assert_eq!(
            a.peer_status(&b_id).and_then(|s| s.dialed_addr),
            Some(first_ip)
        );

        // The pod restarts with another IP: the name now points there, and the redial after
        // the lost connection goes to the new address, not the remembered one.
        b.shutdown().await;
        let (b2, mut b2_rx) = Transport::bind(config(
            b_tls,
            SocketAddr::from(([127, 0, 0, 153], 0)),
            vec![peer(&a_id, None)],
        ))
        .expect("bind b again");
        let second_ip = b2.local_addr().expect("bound");
        dns.point_at(Some(second_ip));
        wait_until("a reconnects to b's new IP", || {
            a.peer_status(&b_id)
                .is_some_and(|s| s.connected && s.dialed_addr == Some(second_ip))
        })
        .await;
        assert!(a.peer_status(&b_id).is_some_and(|s| s.reconnects >= 1));
        a.send(&b_id, Channel::Control, Bytes::from_static(b"moved"))
            .expect("queued");
        assert_eq!(recv(&mut b2_rx).await.frame, Bytes::from_static(b"moved"));
    })
    .await
    .expect("test finished in time");
}
