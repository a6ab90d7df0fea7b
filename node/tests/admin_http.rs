//! The admin HTTP server against a hub the test publishes into and a request channel the test
//! answers: every route, status codes, the metrics families and values, drain round trips and
//! the deadline when nobody answers.
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use tern_node::admin::http::{
    self, AdminContext, AdminLimits, AdminServer, ErrorBody, NodeActionDone, PartitionsView,
    Readiness,
};
use tern_node::admin::{
    AdminRequest, AdminRequestError, MemberState, MemberStatus, NodeStatus, PartitionStatus,
    ReplicaRole, ReplicaStatus, StatusHub,
};
use tern_node::transport::TransportStats;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const TEST_TIMEOUT: Duration = Duration::from_secs(30);

async fn bounded<F: Future>(body: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .expect("test exceeded its time bound")
}

struct Reply {
    status: StatusCode,
    content_type: String,
    body: String,
}

/// One request on a fresh connection (hyper's HTTP/1.1 client, no pool).
async fn call(addr: SocketAddr, method: Method, path: &str) -> Reply {
    let stream = TcpStream::connect(addr).await.expect("connecting to admin");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP handshake");
    tokio::spawn(conn);
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .expect("valid request");
    let response = sender.send_request(request).await.expect("response");
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    Reply {
        status,
        content_type,
        body: String::from_utf8(body.to_vec()).expect("utf-8 body"),
    }
}

async fn get(addr: SocketAddr, path: &str) -> Reply {
    call(addr, Method::GET, path).await
}

async fn post(addr: SocketAddr, path: &str) -> Reply {
    call(addr, Method::POST, path).await
}

fn json<T: serde::de::DeserializeOwned>(reply: &Reply) -> T {
    serde_json::from_str(&reply.body).unwrap_or_else(|e| panic!("{e}: {:?}", reply.body))
}

struct Fixture {
    hub: StatusHub,
    server: AdminServer,
    requests: mpsc::Receiver<AdminRequest>,
    transport: Arc<TransportStats>,
}

fn start(limits: AdminLimits) -> Fixture {
    let hub = StatusHub::new();
    let (tx, requests) = mpsc::channel(4);
    let transport = Arc::new(TransportStats::default());
    let ctx = AdminContext {
        hub: hub.clone(),
        wan: Default::default(),
        requests: tx,
        transport_stats: Some(Arc::clone(&transport)),
    };
    let addr = "127.0.0.1:0".parse().expect("literal address");
    let server = http::start_with_limits(addr, ctx, limits).expect("admin server starts");
    Fixture {
        hub,
        server,
        requests,
        transport,
    }
}

fn replica(node_id: u64, role: ReplicaRole, in_sync: bool, lag: Option<u64>) -> ReplicaStatus {
    ReplicaStatus {
        node_id,
        role,
        in_sync,
        last_seq: lag.map(|l| 100 - l),
        lag_records: lag,
    }
}

fn member(node_id: u64, state: MemberState) -> MemberStatus {
    MemberStatus {
        node_id,
        name: format!("n{node_id}.a"),
        resp_addr: format!("127.0.0.1:700{node_id}"),
        zone: None,
        state,
        incarnation: 1,
    }
}

/// Node 1's view of a 3-node site with 4 partitions: it is primary of 0 and 1, an in-sync
/// backup of 2 and a lagging backup of 3; it leads the map.
fn sample_status(ready: bool) -> NodeStatus {
    use ReplicaRole::{Backup, Primary};
    NodeStatus {
        node_id: 1,
        name: "n1.a".to_owned(),
        site: "a".to_owned(),
        resp_addr: "127.0.0.1:7001".to_owned(),
        incarnation: 3,
        ready,
        map_leader: Some(1),
        map_version: 42,
        partitions: vec![
            PartitionStatus {
                partition: 0,
                epoch: 5,
                primary: Some(1),
                replicas: vec![
                    replica(1, Primary, false, None),
                    replica(2, Backup, true, Some(0)),
                ],
                handover_to: None,
            },
            PartitionStatus {
                partition: 1,
                epoch: 2,
                primary: Some(1),
                replicas: vec![
                    replica(1, Primary, false, None),
                    replica(3, Backup, true, Some(7)),
                ],
                handover_to: None,
            },
            PartitionStatus {
                partition: 2,
                epoch: 9,
                primary: Some(2),
                replicas: vec![
                    replica(2, Primary, false, None),
                    replica(1, Backup, true, Some(0)),
                ],
                handover_to: None,
            },
            PartitionStatus {
                partition: 3,
                epoch: 4,
                primary: Some(3),
                replicas: vec![
                    replica(3, Primary, false, None),
                    replica(1, Backup, false, Some(12)),
                ],
                handover_to: Some(1),
            },
        ],
        members: vec![
            member(1, MemberState::Up),
            member(2, MemberState::Draining),
            member(3, MemberState::Down),
        ],
        failovers_total: 2,
        wan_writes_refused_total: 7,
        memory_writes_refused_total: 3,
        data_bytes: 4096,
        data_bytes_max: 8192,
        forward_requests_pending: 17,
        forward_requests_pending_max: 100,
        forward_requests_refused_pending_full_total: 5,
    }
}

#[tokio::test]
async fn livez_answers_whatever_the_status() {
    bounded(async {
        let f = start(AdminLimits::default());
        let addr = f.server.local_addr();
        for status in [
            NodeStatus::default(),
            sample_status(false),
            sample_status(true),
        ] {
            f.hub.publish(status);
            let reply = get(addr, "/livez").await;
            assert_eq!(reply.status, StatusCode::OK);
            assert_eq!(reply.body, "ok");
        }
        f.server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn readyz_follows_the_published_status_with_a_reason() {
    bounded(async {
        let f = start(AdminLimits::default());
        let addr = f.server.local_addr();
        let no_map = NodeStatus {
            node_id: 1,
            ..NodeStatus::default()
        };
        // (published status or none, expected code, fragment of the reason)
        let cases: Vec<(Option<NodeStatus>, StatusCode, Option<&str>)> = vec![
            (None, StatusCode::SERVICE_UNAVAILABLE, Some("starting")),
            (
                Some(no_map),
                StatusCode::SERVICE_UNAVAILABLE,
                Some("no partition map"),
            ),
            (
                Some(sample_status(false)),
                StatusCode::SERVICE_UNAVAILABLE,
                Some("partitions 3"),
            ),
            (Some(sample_status(true)), StatusCode::OK, None),
        ];
        for (status, code, reason) in cases {
            if let Some(status) = status {
                f.hub.publish(status);
            }
            let reply = get(addr, "/readyz").await;
            assert_eq!(reply.status, code, "{}", reply.body);
            assert!(reply.content_type.starts_with("application/json"));
            let readiness: Readiness = json(&reply);
            assert_eq!(readiness.ready, code == StatusCode::OK);
            match (reason, readiness.reason) {
                (None, None) => {}
                (Some(want), Some(got)) => assert!(got.contains(want), "{got:?} lacks {want:?}"),
                (want, got) => panic!("reason: wanted {want:?}, got {got:?}"),
            }
        }
        f.server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn status_and_partitions_serve_the_latest_snapshot() {
    bounded(async {
        let f = start(AdminLimits::default());
        let addr = f.server.local_addr();
        let published = sample_status(true);
        f.hub.publish(published.clone());

        let status: NodeStatus = json(&get(addr, "/v1/status").await);
        assert_eq!(status, published);

        let reply = get(addr, "/v1/partitions").await;
        assert_eq!(reply.status, StatusCode::OK);
        let view: PartitionsView = json(&reply);
        assert_eq!(
            view,
            PartitionsView {
                node_id: 1,
                map_version: 42,
                map_leader: Some(1),
                partitions: published.partitions.clone(),
                members: published.members.clone(),
            }
        );
        // Roles are spelled as in `tern space list-instances`.
        assert!(reply.body.contains("\"PRIMARY\""), "{}", reply.body);

        // A newer snapshot replaces the old one.
        let mut next = published;
        next.map_version = 43;
        f.hub.publish(next);
        let view: PartitionsView = json(&get(addr, "/v1/partitions").await);
        assert_eq!(view.map_version, 43);
        f.server.shutdown().await;
    })
    .await;
}

/// Samples of an OpenMetrics text exposition: `name{labels}` → value, plus `# TYPE` lines.
struct Exposition {
    types: BTreeMap<String, String>,
    samples: BTreeMap<String, f64>,
}

fn parse_openmetrics(text: &str) -> Exposition {
    assert!(text.ends_with("# EOF\n"), "exposition must end with # EOF");
    let mut types = BTreeMap::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE line has a kind");
            types.insert(name.to_owned(), kind.to_owned());
        } else if line.starts_with('#') {
            continue;
        } else {
            let (series, value) = line.rsplit_once(' ').expect("sample line has a value");
            let value: f64 = value.parse().expect("sample value is a number");
            let previous = samples.insert(series.to_owned(), value);
            assert!(previous.is_none(), "duplicate series {series}");
        }
    }
    Exposition { types, samples }
}

#[tokio::test]
async fn metrics_are_openmetrics_with_the_right_families_and_values() {
    bounded(async {
        let f = start(AdminLimits::default());
        let addr = f.server.local_addr();
        f.hub.publish(sample_status(true));
        f.transport
            .frames_sent_total
            .fetch_add(5, Ordering::Relaxed);
        f.transport
            .refused_unknown_ca_total
            .fetch_add(2, Ordering::Relaxed);

        let reply = get(addr, "/metrics").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(
            reply
                .content_type
                .starts_with("application/openmetrics-text"),
            "{}",
            reply.content_type
        );
        let exposition = parse_openmetrics(&reply.body);

        let families = [
            ("tern_node_ready", "gauge"),
            ("tern_map_version", "gauge"),
            ("tern_map_leader", "gauge"),
            ("tern_failovers", "counter"),
            ("tern_partition_role", "gauge"),
            ("tern_partition_epoch", "gauge"),
            ("tern_backup_lag_records", "gauge"),
            ("tern_member_up", "gauge"),
            ("tern_member_draining", "gauge"),
            ("tern_forward_requests_pending", "gauge"),
            ("tern_forward_requests_refused_pending_full", "counter"),
            ("tern_transport_frames_sent", "counter"),
            ("tern_transport_connections_established", "counter"),
        ];
        for (family, kind) in families {
            assert_eq!(
                exposition.types.get(family).map(String::as_str),
                Some(kind),
                "family {family}"
            );
        }

        let expected = [
            ("tern_node_ready", 1.0),
            ("tern_map_version", 42.0),
            ("tern_map_leader", 1.0),
            ("tern_failovers_total", 2.0),
            ("tern_writes_refused_wan_full_total", 7.0),
            ("tern_writes_refused_memory_full_total", 3.0),
            ("tern_data_bytes", 4096.0),
            ("tern_data_bytes_max", 8192.0),
            ("tern_forward_requests_pending", 17.0),
            ("tern_forward_requests_pending_max", 100.0),
            ("tern_forward_requests_refused_pending_full_total", 5.0),
            (r#"tern_partition_role{partition="0",role="primary"}"#, 1.0),
            (r#"tern_partition_role{partition="0",role="backup"}"#, 0.0),
            (r#"tern_partition_role{partition="2",role="primary"}"#, 0.0),
            (r#"tern_partition_role{partition="2",role="backup"}"#, 1.0),
            (r#"tern_partition_role{partition="3",role="backup"}"#, 1.0),
            (r#"tern_partition_epoch{partition="0"}"#, 5.0),
            (r#"tern_partition_epoch{partition="2"}"#, 9.0),
            (r#"tern_partition_epoch{partition="3"}"#, 4.0),
            (r#"tern_backup_lag_records{partition="1",node="3"}"#, 7.0),
            (r#"tern_backup_lag_records{partition="3",node="1"}"#, 12.0),
            (r#"tern_backup_lag_records{partition="0",node="2"}"#, 0.0),
            (r#"tern_member_up{node="1",name="n1.a"}"#, 1.0),
            (r#"tern_member_up{node="2",name="n2.a"}"#, 1.0),
            (r#"tern_member_up{node="3",name="n3.a"}"#, 0.0),
            (r#"tern_member_draining{node="2",name="n2.a"}"#, 1.0),
            (r#"tern_member_draining{node="1",name="n1.a"}"#, 0.0),
            ("tern_transport_frames_sent_total", 5.0),
            ("tern_transport_refused_unknown_ca_total", 2.0),
            ("tern_transport_bytes_received_total", 0.0),
        ];
        for (series, value) in expected {
            assert_eq!(
                exposition.samples.get(series),
                Some(&value),
                "series {series} in\n{}",
                reply.body
            );
        }
        // Each held partition has exactly two role series; partitions held elsewhere none.
        let role_series = exposition
            .samples
            .keys()
            .filter(|k| k.starts_with("tern_partition_role{"))
            .count();
        assert_eq!(role_series, 4 * 2);

        // Values are read at scrape time, not at start.
        let mut next = sample_status(false);
        next.map_leader = Some(2);
        next.failovers_total = 3;
        f.hub.publish(next);
        let exposition = parse_openmetrics(&get(addr, "/metrics").await.body);
        for (series, value) in [
            ("tern_node_ready", 0.0),
            ("tern_map_leader", 0.0),
            ("tern_failovers_total", 3.0),
        ] {
            assert_eq!(exposition.samples.get(series), Some(&value), "{series}");
        }
        f.server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn metrics_without_a_transport_or_a_status_still_parse() {
    bounded(async {
        let (tx, _rx) = mpsc::channel(1);
        let ctx = AdminContext {
            hub: StatusHub::new(),
            wan: Default::default(),
            requests: tx,
            transport_stats: None,
        };
        let server =
            http::start("127.0.0.1:0".parse().expect("literal"), ctx).expect("admin server starts");
        let exposition = parse_openmetrics(&get(server.local_addr(), "/metrics").await.body);
        assert_eq!(exposition.samples.get("tern_node_ready"), Some(&0.0));
        assert_eq!(exposition.samples.get("tern_map_leader"), Some(&0.0));
        assert!(
            !exposition
                .types
                .keys()
                .any(|k| k.starts_with("tern_transport_")),
            "no transport, no transport families"
        );
        server.shutdown().await;
    })
    .await;
}

/// Answers admin requests from a table: node id → result, recording what it received.
fn spawn_responder(
    mut requests: mpsc::Receiver<AdminRequest>,
) -> tokio::task::JoinHandle<Vec<(&'static str, u64)>> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(request) = requests.recv().await {
            let (action, node_id, reply) = match request {
                AdminRequest::Drain { node_id, reply } => ("drain", node_id, reply),
                AdminRequest::Undrain { node_id, reply } => ("undrain", node_id, reply),
                AdminRequest::ForcePrimary { node_id, reply, .. } => ("force", node_id, reply),
            };
            seen.push((action, node_id));
            let result = match node_id {
                1..=3 => Ok(()),
                8 => Err(AdminRequestError::NoLeader),
                9 => Err(AdminRequestError::Rejected(
                    "last in-sync replica".to_owned(),
                )),
                10 => Err(AdminRequestError::ShuttingDown),
                other => Err(AdminRequestError::UnknownNode(other)),
            };
            let _ = reply.send(result);
        }
        seen
    })
}

#[tokio::test]
async fn drain_and_undrain_round_trip_with_status_codes() {
    bounded(async {
        let f = start(AdminLimits::default());
        let addr = f.server.local_addr();
        let responder = spawn_responder(f.requests);
        // (path, code, error code or None for success)
        let cases: &[(&str, StatusCode, Option<&str>)] = &[
            ("/v1/nodes/2/drain", StatusCode::OK, None),
            ("/v1/nodes/2/undrain", StatusCode::OK, None),
            (
                "/v1/nodes/7/drain",
                StatusCode::NOT_FOUND,
                Some("unknown_node"),
            ),
            (
                "/v1/nodes/8/drain",
                StatusCode::SERVICE_UNAVAILABLE,
                Some("no_leader"),
            ),
            (
                "/v1/nodes/9/undrain",
                StatusCode::CONFLICT,
                Some("rejected"),
            ),
            (
                "/v1/nodes/10/drain",
                StatusCode::SERVICE_UNAVAILABLE,
                Some("shutting_down"),
            ),
            (
                "/v1/nodes/abc/drain",
                StatusCode::BAD_REQUEST,
                Some("bad_node_id"),
            ),
            (
                "/v1/nodes/0/drain",
                StatusCode::BAD_REQUEST,
                Some("bad_node_id"),
            ),
        ];
        for (path, code, error_code) in cases {
            let reply = post(addr, path).await;
            assert_eq!(reply.status, *code, "{path}: {}", reply.body);
            match error_code {
                None => {
                    let done: NodeActionDone = json(&reply);
                    assert_eq!(done.node_id, 2, "{path}");
                    assert!(path.ends_with(&format!("/{}", done.action)), "{path}");
                }
                Some(want) => {
                    let body: ErrorBody = json(&reply);
                    assert_eq!(body.code, *want, "{path}");
                    assert!(!body.error.is_empty());
                }
            }
        }
        f.server.shutdown().await;
        let seen = responder
            .await
            .expect("responder ends when the server is gone");
        // Bad ids never reach the shell; everything else does, in order, with its action.
        assert_eq!(
            seen,
            vec![
                ("drain", 2),
                ("undrain", 2),
                ("drain", 7),
                ("drain", 8),
                ("undrain", 9),
                ("drain", 10),
            ]
        );
    })
    .await;
}

#[tokio::test]
async fn drain_times_out_when_nobody_answers() {
    bounded(async {
        let limits = AdminLimits {
            request_timeout_ms: 300,
            ..AdminLimits::default()
        };
        let f = start(limits);
        let addr = f.server.local_addr();
        // The receiver stays alive (so sends succeed) but nobody replies.
        let _held = f.requests;
        let started = Instant::now();
        let reply = post(addr, "/v1/nodes/2/drain").await;
        let waited = started.elapsed();
        assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT, "{}", reply.body);
        assert_eq!(json::<ErrorBody>(&reply).code, "timeout");
        assert!(waited >= Duration::from_millis(300), "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        // Probes are unaffected by a stuck request path.
        assert_eq!(get(addr, "/livez").await.status, StatusCode::OK);
        f.server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn drain_when_the_shell_is_gone_is_503() {
    bounded(async {
        let f = start(AdminLimits::default());
        let addr = f.server.local_addr();
        drop(f.requests);
        let reply = post(addr, "/v1/nodes/2/drain").await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(json::<ErrorBody>(&reply).code, "shutting_down");
        f.server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn unknown_routes_and_methods_are_refused() {
    bounded(async {
        let f = start(AdminLimits::default());
        let addr = f.server.local_addr();
        let reply = get(addr, "/nope").await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
        assert_eq!(json::<ErrorBody>(&reply).code, "not_found");
        assert_eq!(
            get(addr, "/v1/nodes/2/drain").await.status,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            post(addr, "/livez").await.status,
            StatusCode::METHOD_NOT_ALLOWED
        );
        f.server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn start_fails_on_a_taken_port_and_shutdown_closes_the_listener() {
    bounded(async {
        let f = start(AdminLimits::default());
        let addr = f.server.local_addr();
        let (tx, _rx) = mpsc::channel(1);
        let ctx = AdminContext {
            hub: StatusHub::new(),
            wan: Default::default(),
            requests: tx,
            transport_stats: None,
        };
        let err = http::start(addr, ctx).expect_err("the port is taken");
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);

        f.server.shutdown().await;
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "nothing listens after shutdown"
        );
    })
    .await;
}

#[test]
fn start_outside_a_runtime_is_an_error_not_a_panic() {
    let (tx, _rx) = mpsc::channel(1);
    let ctx = AdminContext {
        hub: StatusHub::new(),
        wan: Default::default(),
        requests: tx,
        transport_stats: None,
    };
    let err = http::start("127.0.0.1:0".parse().expect("literal"), ctx).expect_err("no runtime");
    assert!(err.to_string().contains("tokio runtime"), "{err}");
}
