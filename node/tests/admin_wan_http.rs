//! The WAN routes of the admin HTTP server against a [`WanHub`] the test publishes into and a
//! fake gateway task that attaches to it and answers operator requests: status codes for every
//! gateway answer, the deadline when nobody answers, and the metrics a published status adds.
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use tern_node::admin::http::{
    self, AdminContext, AdminLimits, AdminServer, ErrorBody, WanActionDone,
};
use tern_node::admin::{
    StatusHub, WanAdminError, WanAdminRequest, WanHub, WanSourceStatus, WanStatus, WanTargetSpec,
    WanTargetStatus,
};
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
    body: String,
}

/// One request on a fresh connection (hyper's HTTP/1.1 client, no pool).
async fn call(addr: SocketAddr, method: Method, path: &str, body: &str) -> Reply {
    let stream = TcpStream::connect(addr).await.expect("connecting to admin");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP handshake");
    tokio::spawn(conn);
    let request = Request::builder()
        .method(method)
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

fn json<T: serde::de::DeserializeOwned>(reply: &Reply) -> T {
    serde_json::from_str(&reply.body).unwrap_or_else(|e| panic!("{e}: {:?}", reply.body))
}

fn start(wan: WanHub, limits: AdminLimits) -> AdminServer {
    let (tx, _requests) = mpsc::channel(1);
    let ctx = AdminContext {
        hub: StatusHub::new(),
        wan,
        requests: tx,
        transport_stats: None,
    };
    let addr = "127.0.0.1:0".parse().expect("literal address");
    http::start_with_limits(addr, ctx, limits).expect("admin server starts")
}

fn sample_wan() -> WanStatus {
    WanStatus {
        site: "a".into(),
        site_id: 1,
        targets: vec![WanTargetStatus {
            site: "b".into(),
            site_id: 2,
            addr: "127.0.0.1:7302".into(),
            connected: true,
            backlog_records: 4,
            backlog_bytes: 512,
            shipped_total: 99,
            repairing_partitions: vec![7],
            ..WanTargetStatus::default()
        }],
        sources: vec![WanSourceStatus {
            site: "b".into(),
            site_id: 2,
            connected: true,
            applied_total: 42,
            conflicts_total: vec![("lww".into(), 3)],
            lag_ms_p50: Some(2),
            lag_ms_p99: Some(9),
            lag_buckets: vec![(0.01, 40), (0.1, 42)],
            lag_seconds_sum: 0.2,
            lag_count: 42,
            ..WanSourceStatus::default()
        }],
        refused_total: vec![("unknown_ca".into(), 1)],
    }
}

/// What the fake gateway was asked, in a comparable form.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Asked {
    Add(WanTargetSpec),
    Remove(String),
    Repair(String),
}

/// Attaches to `hub` like the gateway host does and answers by a fixed rule: site `b` is
/// already a target, site `zz` is unknown, site id 0 is invalid, site `closing` makes it
/// answer that it is shutting down; everything else succeeds. Reports each request.
fn fake_gateway(hub: &WanHub) -> mpsc::UnboundedReceiver<Asked> {
    let mut requests = hub.attach(4);
    let (seen, asked) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(request) = requests.recv().await {
            let verdict = |site: &str| match site {
                "b" => Err(WanAdminError::AlreadyTarget(site.to_owned())),
                "zz" => Err(WanAdminError::UnknownSite(site.to_owned())),
                "closing" => Err(WanAdminError::ShuttingDown),
                _ => Ok(()),
            };
            match request {
                WanAdminRequest::AddTarget { spec, reply } => {
                    let answer = if spec.site_id == 0 {
                        Err(WanAdminError::Invalid("site id 0".into()))
                    } else {
                        verdict(&spec.site)
                    };
                    let _ = seen.send(Asked::Add(spec));
                    let _ = reply.send(answer);
                }
                WanAdminRequest::RemoveTarget { site, reply } => {
                    // Removing `b` is fine: it is a target.
                    let answer = if site == "b" { Ok(()) } else { verdict(&site) };
                    let _ = seen.send(Asked::Remove(site));
                    let _ = reply.send(answer);
                }
                WanAdminRequest::Repair { site, reply } => {
                    let answer = if site == "b" { Ok(()) } else { verdict(&site) };
                    let _ = seen.send(Asked::Repair(site));
                    let _ = reply.send(answer);
                }
            }
        }
    });
    asked
}

#[tokio::test]
async fn wan_status_is_404_without_a_gateway_and_the_published_status_with_one() {
    bounded(async {
        let hub = WanHub::new();
        let server = start(hub.clone(), AdminLimits::default());
        let addr = server.local_addr();

        let reply = call(addr, Method::GET, "/v1/wan", "").await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.body);
        let err: ErrorBody = json(&reply);
        assert_eq!(err.code, "no_gateway");
        assert!(err.error.contains("no WAN gateway"), "{}", err.error);
        let metrics = call(addr, Method::GET, "/metrics", "").await;
        assert!(!metrics.body.contains("tern_wan_"), "{}", metrics.body);

        hub.publish(sample_wan());
        let reply = call(addr, Method::GET, "/v1/wan", "").await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(json::<WanStatus>(&reply), sample_wan());

        // /v1/status keeps its shape: the gateway is not part of the node's status.
        let status = call(addr, Method::GET, "/v1/status", "").await;
        let value: serde_json::Value = json(&status);
        assert!(value.get("wan").is_none(), "{}", status.body);

        let metrics = call(addr, Method::GET, "/metrics", "").await;
        for line in [
            "tern_wan_connected{target=\"b\"} 1",
            "tern_wan_backlog_records{target=\"b\"} 4",
            "tern_wan_shipped_total{target=\"b\"} 99",
            "tern_wan_applied_total{source=\"b\"} 42",
            "tern_wan_conflicts_total{source=\"b\",resolver=\"lww\"} 3",
            "tern_wan_lag_seconds_bucket{le=\"+Inf\",source=\"b\"} 42",
            "tern_wan_refused_total{reason=\"unknown_ca\"} 1",
        ] {
            assert!(
                metrics.body.lines().any(|l| l == line),
                "missing {line:?}:\n{}",
                metrics.body
            );
        }
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn requests_reach_the_gateway_and_its_answers_map_to_status_codes() {
    bounded(async {
        let hub = WanHub::new();
        let server = start(hub.clone(), AdminLimits::default());
        let addr = server.local_addr();
        let mut asked = fake_gateway(&hub);
        let spec = |site: &str, site_id: u16| WanTargetSpec {
            site: site.into(),
            site_id,
            addr: "127.0.0.1:7304".into(),
        };
        let body = |s: &WanTargetSpec| serde_json::to_string(s).expect("spec serialises");
        // (method, path, body, what the gateway should see, status, error code or action)
        type Case = (
            Method,
            &'static str,
            String,
            Option<Asked>,
            StatusCode,
            &'static str,
        );
        let cases: Vec<Case> = vec![
            (
                Method::POST,
                "/v1/wan/targets",
                body(&spec("d", 4)),
                Some(Asked::Add(spec("d", 4))),
                StatusCode::OK,
                "add_target",
            ),
            (
                Method::POST,
                "/v1/wan/targets",
                body(&spec("b", 2)),
                Some(Asked::Add(spec("b", 2))),
                StatusCode::CONFLICT,
                "already_target",
            ),
            (
                Method::POST,
                "/v1/wan/targets",
                body(&spec("e", 0)),
                Some(Asked::Add(spec("e", 0))),
                StatusCode::BAD_REQUEST,
                "invalid_target",
            ),
            (
                Method::POST,
                "/v1/wan/targets",
                r#"{"site":"d"}"#.into(),
                None,
                StatusCode::BAD_REQUEST,
                "bad_request",
            ),
            (
                Method::POST,
                "/v1/wan/targets",
                "not json".into(),
                None,
                StatusCode::BAD_REQUEST,
                "bad_request",
            ),
            (
                Method::DELETE,
                "/v1/wan/targets/b",
                String::new(),
                Some(Asked::Remove("b".into())),
                StatusCode::OK,
                "remove_target",
            ),
            (
                Method::DELETE,
                "/v1/wan/targets/zz",
                String::new(),
                Some(Asked::Remove("zz".into())),
                StatusCode::NOT_FOUND,
                "unknown_site",
            ),
            (
                Method::POST,
                "/v1/wan/targets/b/repair",
                String::new(),
                Some(Asked::Repair("b".into())),
                StatusCode::OK,
                "repair",
            ),
            (
                Method::POST,
                "/v1/wan/targets/zz/repair",
                String::new(),
                Some(Asked::Repair("zz".into())),
                StatusCode::NOT_FOUND,
                "unknown_site",
            ),
            (
                Method::POST,
                "/v1/wan/targets/closing/repair",
                String::new(),
                Some(Asked::Repair("closing".into())),
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
            ),
        ];
        for (method, path, body, want_asked, want_status, want) in cases {
            let what = format!("{method} {path} {body}");
            let reply = call(addr, method, path, &body).await;
            assert_eq!(reply.status, want_status, "{what}: {}", reply.body);
            if want_status == StatusCode::OK {
                let done: WanActionDone = json(&reply);
                assert_eq!(done.action, want, "{what}");
            } else {
                let err: ErrorBody = json(&reply);
                assert_eq!(err.code, want, "{what}: {}", err.error);
                assert!(!err.error.is_empty(), "{what}");
            }
            match want_asked {
                Some(want) => assert_eq!(asked.recv().await, Some(want), "{what}"),
                None => assert!(asked.try_recv().is_err(), "{what}: reached the gateway"),
            }
        }
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn requests_without_a_gateway_or_after_it_stopped_are_503() {
    bounded(async {
        let hub = WanHub::new();
        let server = start(hub.clone(), AdminLimits::default());
        let addr = server.local_addr();
        let add = r#"{"site":"d","site_id":4,"addr":"127.0.0.1:7304"}"#;
        let requests = [
            (Method::POST, "/v1/wan/targets", add),
            (Method::DELETE, "/v1/wan/targets/b", ""),
            (Method::POST, "/v1/wan/targets/b/repair", ""),
        ];
        // (attach and drop the receiver first, expected code)
        for (gateway_gone, code) in [(false, "no_gateway"), (true, "shutting_down")] {
            if gateway_gone {
                drop(hub.attach(1));
            }
            for (method, path, body) in &requests {
                let reply = call(addr, method.clone(), path, body).await;
                assert_eq!(
                    reply.status,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "{method} {path}: {}",
                    reply.body
                );
                assert_eq!(json::<ErrorBody>(&reply).code, code, "{method} {path}");
            }
        }
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_gateway_that_never_answers_times_out_with_504() {
    bounded(async {
        let hub = WanHub::new();
        let limits = AdminLimits {
            request_timeout_ms: 200,
            ..AdminLimits::default()
        };
        let server = start(hub.clone(), limits);
        // Attached and holding requests without answering them.
        let mut requests = hub.attach(4);
        let held = tokio::spawn(async move {
            let mut kept = Vec::new();
            while let Some(request) = requests.recv().await {
                kept.push(request);
            }
        });
        let reply = call(
            server.local_addr(),
            Method::POST,
            "/v1/wan/targets/b/repair",
            "",
        )
        .await;
        assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT, "{}", reply.body);
        let err: ErrorBody = json(&reply);
        assert_eq!(err.code, "timeout");
        assert!(err.error.contains("200 ms"), "{}", err.error);
        server.shutdown().await;
        held.abort();
    })
    .await;
}
