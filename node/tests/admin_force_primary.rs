//! `POST /v1/partitions/{partition}/force-primary` against a fake shell: nothing reaches the
//! shell without the exact confirmation, the shell's answers map to status codes, and a shell
//! that never answers ends in 504. Then the real thing in an in-process site: a partition that
//! lost both copies gets a primary again only when an operator forces one.
mod common;
mod site_harness;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use tern_node::admin::http::{
    self, AdminContext, AdminLimits, ErrorBody, FORCE_PRIMARY_CONFIRMATION, ForcePrimaryDone,
};
use tern_node::admin::{AdminRequest, AdminRequestError, StatusHub};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use common::Raw;
use site_harness::{SERIAL, Site};

const TEST_TIMEOUT: Duration = Duration::from_secs(30);

async fn bounded<F: Future>(body: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .expect("test exceeded its time bound")
}

struct Reply {
    status: StatusCode,
    body: String,
}

async fn post(addr: SocketAddr, path: &str, body: &str) -> Reply {
    let stream = TcpStream::connect(addr).await.expect("connecting to admin");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP handshake");
    tokio::spawn(conn);
    let request = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::HOST, addr.to_string())
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("valid request");
    let response = sender.send_request(request).await.expect("response");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    Reply {
        status,
        body: String::from_utf8(body.to_vec()).expect("utf-8 body"),
    }
}

fn confirmed(node: u64) -> String {
    serde_json::json!({ "node": node, "confirm": FORCE_PRIMARY_CONFIRMATION }).to_string()
}

fn start(limits: AdminLimits) -> (http::AdminServer, mpsc::Receiver<AdminRequest>) {
    let (tx, requests) = mpsc::channel(4);
    let ctx = AdminContext {
        hub: StatusHub::new(),
        wan: Default::default(),
        requests: tx,
        transport_stats: None,
    };
    let addr = "127.0.0.1:0".parse().expect("literal address");
    let server = http::start_with_limits(addr, ctx, limits).expect("admin server starts");
    (server, requests)
}

/// A shell answering by node id, recording every (partition, node) it was asked for.
fn fake_shell(
    mut requests: mpsc::Receiver<AdminRequest>,
) -> tokio::task::JoinHandle<Vec<(u16, u64)>> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(request) = requests.recv().await {
            let AdminRequest::ForcePrimary {
                partition,
                node_id,
                reply,
            } = request
            else {
                panic!("only force-primary requests expected, got {request:?}");
            };
            seen.push((partition, node_id));
            let answer = match (partition, node_id) {
                (99, _) => Err(AdminRequestError::UnknownPartition(99)),
                (_, 1..=3) => Ok(()),
                (_, 8) => Err(AdminRequestError::NoLeader),
                (_, 9) => Err(AdminRequestError::Rejected(format!(
                    "partition {partition} has a primary"
                ))),
                (_, other) => Err(AdminRequestError::UnknownNode(other)),
            };
            let _ = reply.send(answer);
        }
        seen
    })
}

#[tokio::test]
async fn force_primary_needs_the_confirmation_and_maps_the_shells_answers() {
    bounded(async {
        let (server, requests) = start(AdminLimits::default());
        let addr = server.local_addr();
        let shell = fake_shell(requests);
        let no_confirm = r#"{"node": 2}"#.to_owned();
        let wrong_confirm = r#"{"node": 2, "confirm": "yes"}"#.to_owned();
        let almost = serde_json::json!({
            "node": 2,
            "confirm": FORCE_PRIMARY_CONFIRMATION.to_lowercase(),
        })
        .to_string();
        // (partition segment, body, status, error code or None for success)
        let cases: Vec<(&str, String, StatusCode, Option<&str>)> = vec![
            ("3", confirmed(2), StatusCode::OK, None),
            (
                "3",
                no_confirm,
                StatusCode::BAD_REQUEST,
                Some("bad_request"),
            ),
            (
                "3",
                wrong_confirm,
                StatusCode::BAD_REQUEST,
                Some("not_confirmed"),
            ),
            ("3", almost, StatusCode::BAD_REQUEST, Some("not_confirmed")),
            (
                "3",
                "not json".into(),
                StatusCode::BAD_REQUEST,
                Some("bad_request"),
            ),
            (
                "3",
                confirmed(0),
                StatusCode::BAD_REQUEST,
                Some("bad_node_id"),
            ),
            (
                "x",
                confirmed(2),
                StatusCode::BAD_REQUEST,
                Some("bad_partition"),
            ),
            (
                "70000",
                confirmed(2),
                StatusCode::BAD_REQUEST,
                Some("bad_partition"),
            ),
            ("3", confirmed(9), StatusCode::CONFLICT, Some("rejected")),
            (
                "3",
                confirmed(7),
                StatusCode::NOT_FOUND,
                Some("unknown_node"),
            ),
            (
                "99",
                confirmed(2),
                StatusCode::NOT_FOUND,
                Some("unknown_partition"),
            ),
            (
                "3",
                confirmed(8),
                StatusCode::SERVICE_UNAVAILABLE,
                Some("no_leader"),
            ),
        ];
        for (partition, body, status, code) in &cases {
            let path = format!("/v1/partitions/{partition}/force-primary");
            let reply = post(addr, &path, body).await;
            assert_eq!(reply.status, *status, "{path} {body}: {}", reply.body);
            match code {
                None => {
                    let done: ForcePrimaryDone =
                        serde_json::from_str(&reply.body).expect("done body");
                    assert_eq!(
                        done,
                        ForcePrimaryDone {
                            partition: partition.parse().expect("numeric"),
                            node_id: 2
                        }
                    );
                }
                Some(code) => {
                    let error: ErrorBody = serde_json::from_str(&reply.body).expect("error body");
                    assert_eq!(error.code, *code, "{path} {body}");
                }
            }
        }
        let rejected = post(addr, "/v1/partitions/3/force-primary", &confirmed(9)).await;
        let error: ErrorBody = serde_json::from_str(&rejected.body).expect("error body");
        assert!(
            error.error.contains("partition 3 has a primary"),
            "{}",
            error.error
        );
        server.shutdown().await;
        // Only requests with the confirmation and valid ids reached the shell.
        let seen = shell.await.expect("shell task");
        assert_eq!(
            seen,
            vec![(3, 2), (3, 9), (3, 7), (99, 2), (3, 8), (3, 9)],
            "what the shell was asked"
        );
    })
    .await;
}

#[tokio::test]
async fn a_shell_that_never_answers_is_a_timeout() {
    bounded(async {
        let (server, mut requests) = start(AdminLimits {
            request_timeout_ms: 200,
            ..AdminLimits::default()
        });
        let addr = server.local_addr();
        // Holds the requests (and their reply senders) without answering.
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Some(request) = requests.recv().await {
                held.push(request);
            }
            held.len()
        });
        let reply = post(addr, "/v1/partitions/0/force-primary", &confirmed(1)).await;
        assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT, "{}", reply.body);
        let error: ErrorBody = serde_json::from_str(&reply.body).expect("error body");
        assert_eq!(error.code, "timeout");
        server.shutdown().await;
        assert_eq!(hold.await.expect("holder task"), 1);
    })
    .await;
}

/// Sends a force-primary to the shell of node `via` (what the HTTP route does) and waits.
async fn force(
    site: &Site,
    via: usize,
    partition: u16,
    node_id: u64,
) -> Result<(), AdminRequestError> {
    let (reply, answer) = oneshot::channel();
    site.node(via)
        .admin_requests()
        .send(AdminRequest::ForcePrimary {
            partition,
            node_id,
            reply,
        })
        .await
        .expect("admin channel open");
    answer.await.expect("the shell answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_that_lost_both_copies_recovers_only_when_forced() {
    let _serial = SERIAL.lock().await;
    site_harness::bounded(Duration::from_secs(120), async {
        // Five nodes, so the map keeps its Raft quorum with two of them gone.
        let mut site = Site::start(41, 5, 8).await;
        site.wait_settled(Duration::from_secs(30)).await;
        let before = site.statuses()[0].partitions[0].clone();
        let lost: Vec<u64> = before.replicas.iter().map(|r| r.node_id).collect();
        assert_eq!(lost.len(), 2, "one primary, one backup: {before:?}");
        for &id in &lost {
            site.crash(usize::try_from(id - 1).expect("small id")).await;
        }
        let survivors = site.running();
        let orphaned = site
            .wait_for(
                "partition 0 left without primary",
                Duration::from_secs(20),
                |s| s.iter().all(|s| s.partitions[0].primary.is_none()),
            )
            .await;
        eprintln!("partition 0 orphaned {orphaned:?} after its two copies crashed");
        let epoch = site.statuses()[0].partitions[0].epoch;

        // Refusals first: a partition with a primary, an unknown partition, a node gone.
        let with_primary = site.statuses()[0]
            .partitions
            .iter()
            .find(|p| p.primary.is_some())
            .map(|p| p.partition)
            .expect("some partition still has a primary");
        let to = u64::try_from(survivors[1] + 1).expect("small id");
        let via = survivors[0];
        match force(&site, via, with_primary, to).await {
            Err(AdminRequestError::Rejected(why)) => {
                assert!(why.contains("has a primary"), "{why}")
            }
            other => panic!("forcing partition {with_primary} with a primary: {other:?}"),
        }
        assert_eq!(
            force(&site, via, 999, to).await,
            Err(AdminRequestError::UnknownPartition(999))
        );
        match force(&site, via, 0, lost[0]).await {
            Err(AdminRequestError::Rejected(why)) => assert!(why.contains("Down"), "{why}"),
            other => panic!("forcing onto a crashed node: {other:?}"),
        }
        // Still orphaned: nothing but an operator gives it a primary.
        assert!(
            site.statuses()
                .iter()
                .all(|s| s.partitions[0].primary.is_none())
        );

        // Forced through one survivor onto another; every survivor's map shows it.
        force(&site, via, 0, to)
            .await
            .expect("force-primary accepted");
        site.wait_for(
            "every survivor sees the forced primary",
            Duration::from_secs(10),
            |s| {
                s.iter().all(|s| {
                    let p = &s.partitions[0];
                    p.primary == Some(to) && p.epoch == epoch + 1
                })
            },
        )
        .await;
        // And the partition serves writes again.
        let key = site.key_in(0, "forced");
        let mut client = Raw::connect(site.addr(via)).await;
        assert_eq!(client.cmd(&["SET", &key, "again"]).await, "+OK");
        assert_eq!(client.cmd(&["GET", &key]).await, "\"again\"");
        site.stop_all().await;
    })
    .await;
}
