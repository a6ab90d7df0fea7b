//! Cases that need a raw QUIC client (a node certificate, the node's ALPN, garbage bytes):
//! the public API can only dial as a site with valid frames.
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tern_node::transport::certs::init_dev_pki;
use tern_node::transport::{Identity, TlsMaterial, TransportLimits, TransportStats};
use tokio::time::timeout;

use super::*;

const BOUND: Duration = Duration::from_secs(10);

fn limits() -> WanNetLimits {
    WanNetLimits {
        frame_bytes_max: 64 * 1024,
        idle_timeout_ms: 2_000,
        keep_alive_ms: 200,
        connect_timeout_ms: 1_000,
    }
}

fn localhost() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn raw_client(config: quinn::ClientConfig) -> quinn::Endpoint {
    let mut endpoint = quinn::Endpoint::client(localhost()).expect("bind a client socket");
    endpoint.set_default_client_config(config);
    endpoint
}

fn material(dir: &Path, identity: &Identity) -> TlsMaterial {
    TlsMaterial::from_dir(dir, identity).expect("load test PKI")
}

async fn wait_for_refusal(endpoint: &WanEndpoint, reason: &str) -> Vec<(String, u64)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let refusals = endpoint.refusals();
        let counted = refusals.iter().any(|(r, n)| r == reason && *n > 0);
        if counted || tokio::time::Instant::now() > deadline {
            return refusals;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn only(reason: &str) -> Vec<(String, u64)> {
    REFUSAL_REASONS
        .iter()
        .map(|r| ((*r).to_owned(), u64::from(*r == reason)))
        .collect()
}

#[tokio::test]
async fn refuses_node_certificates_and_foreign_alpn() {
    let dir = tempfile::tempdir().expect("temp dir");
    init_dev_pki(dir.path(), &["a".into(), "b".into()], 1).expect("init PKI");
    let node_a = Identity::node("a", "n1").expect("valid identity");
    let site_a = Identity::site("a").expect("valid identity");
    let cases: Vec<(&str, quinn::ClientConfig, &str)> = vec![
        (
            "node certificate from the right CA",
            tls::client_config(&material(dir.path(), &node_a), &limits()).expect("config"),
            "not_a_site",
        ),
        (
            "site certificate speaking the node transport's ALPN",
            tern_node::transport::tls::client_config(
                &material(dir.path(), &site_a),
                &TransportLimits::default(),
                Arc::new(TransportStats::default()),
            )
            .expect("config"),
            "handshake",
        ),
    ];
    for (name, config, reason) in cases {
        timeout(BOUND, async {
            let b = WanEndpoint::bind(
                localhost(),
                dir.path(),
                "b",
                BTreeSet::from(["a".to_owned()]),
                limits(),
            )
            .expect("bind b");
            let client = raw_client(config);
            let connecting = client.connect(b.local_addr(), "b.tern").expect("dial");
            if let Ok(connection) = connecting.await
                && let Ok((mut send, mut recv)) = connection.open_bi().await
            {
                // Sending makes the stream visible; the refusal must still end the connection.
                let _ = send.write_all(b"TRNW").await;
                assert!(
                    recv.read_chunk(1024, true).await.is_err(),
                    "{name}: stream stayed up"
                );
            }
            assert_eq!(wait_for_refusal(&b, reason).await, only(reason), "{name}");
            assert!(
                timeout(Duration::from_millis(300), b.accept())
                    .await
                    .is_err(),
                "{name}: refused peer was accepted"
            );
            client.close(0u32.into(), b"");
            b.close();
        })
        .await
        .unwrap_or_else(|_| panic!("{name}: timed out"));
    }
}

#[tokio::test]
async fn bad_bytes_on_the_stream_fail_recv_without_panic() {
    let dir = tempfile::tempdir().expect("temp dir");
    init_dev_pki(dir.path(), &["a".into(), "b".into()], 0).expect("init PKI");
    let site_a = Identity::site("a").expect("valid identity");
    let mut oversized = b"TRNW\x01\x00\x03".to_vec();
    oversized.extend_from_slice(&u32::MAX.to_le_bytes());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("wrong magic", b"HTTP/1.1 200 OK\r\n\r\n".to_vec()),
        ("frame over frame_bytes_max", oversized),
        ("unknown kind", b"TRNW\x01\x00\x63\x00\x00\x00\x00".to_vec()),
        (
            "bad postcard payload",
            b"TRNW\x01\x00\x01\x02\x00\x00\x00\xff\xff".to_vec(),
        ),
    ];
    for (name, bytes) in cases {
        timeout(BOUND, async {
            let b = WanEndpoint::bind(
                localhost(),
                dir.path(),
                "b",
                BTreeSet::from(["a".to_owned()]),
                limits(),
            )
            .expect("bind b");
            let config =
                tls::client_config(&material(dir.path(), &site_a), &limits()).expect("config");
            let client = raw_client(config);
            let connection = client
                .connect(b.local_addr(), "b.tern")
                .expect("dial")
                .await
                .expect("handshake");
            let (mut send, _recv) = connection.open_bi().await.expect("open stream");
            send.write_all(&bytes).await.expect("write");
            let (site, mut link) = b.accept().await.expect("link from a");
            assert_eq!(site, "a");
            let got = link.rx.recv().await;
            assert!(
                matches!(got, Err(WanNetError::Decode { .. })),
                "{name}: {got:?}"
            );
            // Errors are final.
            assert!(link.rx.recv().await.is_err(), "{name}: second recv");
            client.close(0u32.into(), b"");
            b.close();
        })
        .await
        .unwrap_or_else(|_| panic!("{name}: timed out"));
    }
}

#[tokio::test]
async fn a_stream_cut_inside_a_frame_is_an_error_and_a_clean_finish_is_none() {
    let dir = tempfile::tempdir().expect("temp dir");
    init_dev_pki(dir.path(), &["a".into(), "b".into()], 0).expect("init PKI");
    let site_a = Identity::site("a").expect("valid identity");
    let cases: Vec<(&str, &[u8], bool)> = vec![
        ("finish after whole frames", b"", true),
        ("finish inside a header", b"TRN", false),
    ];
    for (name, bytes, clean) in cases {
        timeout(BOUND, async {
            let b = WanEndpoint::bind(
                localhost(),
                dir.path(),
                "b",
                BTreeSet::from(["a".to_owned()]),
                limits(),
            )
            .expect("bind b");
            let config =
                tls::client_config(&material(dir.path(), &site_a), &limits()).expect("config");
            let client = raw_client(config);
            let connection = client
                .connect(b.local_addr(), "b.tern")
                .expect("dial")
                .await
                .expect("handshake");
            let (mut send, _recv) = connection.open_bi().await.expect("open stream");
            let ack = crate::wire::Message::Ack(crate::wire::Ack {
                source: tern_conflict::SiteId(1),
                batch_id: Some(7),
                cursors: vec![],
            });
            let mut stream = crate::wire::encode(&ack, 1024).expect("encode");
            stream.extend_from_slice(bytes);
            send.write_all(&stream).await.expect("write");
            send.finish().expect("finish");
            let (_, mut link) = b.accept().await.expect("link from a");
            assert_eq!(link.rx.recv().await.expect("first message"), Some(ack));
            let end = link.rx.recv().await;
            if clean {
                assert!(matches!(end, Ok(None)), "{name}: {end:?}");
                assert!(
                    matches!(link.rx.recv().await, Ok(None)),
                    "{name}: stays ended"
                );
            } else {
                assert!(
                    matches!(end, Err(WanNetError::Truncated { .. })),
                    "{name}: {end:?}"
                );
            }
            client.close(0u32.into(), b"");
            b.close();
        })
        .await
        .unwrap_or_else(|_| panic!("{name}: timed out"));
    }
}
