//! `tern certs init`, `tern status` and `tern space list-instances` as real processes. The
//! status commands talk to an admin HTTP server started in this test process with a status the
//! test publishes, so their output is checked against known data.
mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use support::{path_str, run_bounded};
use tern_node::admin::http::{self, AdminContext};
use tern_node::admin::{
    MemberState, MemberStatus, NodeStatus, PartitionStatus, ReplicaRole, ReplicaStatus, StatusHub,
};

const RUN_MAX: Duration = Duration::from_secs(30);

#[test]
fn certs_init_writes_a_ca_and_one_certificate_per_identity() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("pki");
    let out_str = path_str(&out);
    let first = run_bounded(
        &[
            "certs", "init", "--sites", "a,b", "--nodes", "2", "--out", out_str,
        ],
        &[],
        RUN_MAX,
    );
    assert!(first.status.success(), "stderr: {}", first.stderr);
    assert!(first.stdout.contains("wrote CA"), "{}", first.stdout);
    for stem in ["ca", "a", "n1.a", "n2.a", "b", "n1.b", "n2.b"] {
        let cert = out.join(format!("{stem}.pem"));
        let key = out.join(format!("{stem}.key"));
        assert!(cert.is_file(), "{} missing", cert.display());
        let mode = std::fs::metadata(&key)
            .unwrap_or_else(|e| panic!("{}: {e}", key.display()))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{} is private", key.display());
        if stem != "ca" {
            assert!(
                first.stdout.contains(path_str(&cert)),
                "stdout names {}: {}",
                cert.display(),
                first.stdout
            );
        }
    }
    assert!(!out.join("n3.a.pem").exists(), "only --nodes 2 per site");

    // A second run keeps the CA, so certificates issued before stay valid.
    let ca_before = std::fs::read(out.join("ca.pem")).expect("ca.pem");
    let second = run_bounded(
        &[
            "certs", "init", "--sites", "c", "--nodes", "0", "--out", out_str,
        ],
        &[],
        RUN_MAX,
    );
    assert!(second.status.success(), "stderr: {}", second.stderr);
    assert!(second.stdout.contains("reused CA"), "{}", second.stdout);
    assert_eq!(
        std::fs::read(out.join("ca.pem")).expect("ca.pem"),
        ca_before
    );
    assert!(out.join("c.pem").is_file());
    assert!(
        !out.join("n1.c.pem").exists(),
        "--nodes 0 writes site certificates only"
    );
}

#[test]
fn certs_init_refuses_bad_names_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("pki");
    let run = run_bounded(
        &[
            "certs",
            "init",
            "--sites",
            "ok,Not_A_Label",
            "--out",
            path_str(&out),
        ],
        &[],
        RUN_MAX,
    );
    assert_eq!(run.status.code(), Some(1), "stderr: {}", run.stderr);
    assert!(run.stderr.contains("Not_A_Label"), "{}", run.stderr);
    assert!(
        !out.join("ca.pem").exists(),
        "nothing written on a bad name"
    );
}

fn replica(node_id: u64, role: ReplicaRole, in_sync: bool, lag: Option<u64>) -> ReplicaStatus {
    ReplicaStatus {
        node_id,
        role,
        in_sync,
        last_seq: None,
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

fn published_status() -> NodeStatus {
    use ReplicaRole::{Backup, Primary};
    NodeStatus {
        node_id: 2,
        name: "n2.a".into(),
        site: "a".into(),
        resp_addr: "127.0.0.1:7002".into(),
        incarnation: 1,
        ready: true,
        map_leader: Some(1),
        map_version: 9,
        partitions: vec![
            PartitionStatus {
                partition: 0,
                epoch: 1,
                primary: Some(1),
                replicas: vec![
                    replica(1, Primary, false, None),
                    replica(2, Backup, true, Some(0)),
                ],
                handover_to: None,
            },
            PartitionStatus {
                partition: 1,
                epoch: 4,
                primary: Some(2),
                replicas: vec![
                    replica(2, Primary, false, None),
                    replica(1, Backup, false, Some(3)),
                ],
                handover_to: None,
            },
        ],
        members: vec![member(1, MemberState::Up), member(2, MemberState::Up)],
        failovers_total: 1,
        wan_writes_refused_total: 0,
        ..Default::default()
    }
}

/// Runs the blocking `tern` process on a thread so this runtime keeps serving the admin HTTP.
async fn run_tern(args: Vec<String>) -> support::Finished {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_bounded(&args, &[], RUN_MAX)
    })
    .await
    .expect("running tern")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_list_instances_print_the_nodes_view() {
    let hub = StatusHub::new();
    hub.publish(published_status());
    let (tx, _rx) = tokio::sync::mpsc::channel(1);
    let ctx = AdminContext {
        hub,
        wan: Default::default(),
        requests: tx,
        transport_stats: None,
    };
    let server = http::start("127.0.0.1:0".parse().expect("literal"), ctx).expect("admin starts");
    let admin = server.local_addr().to_string();

    let instances = run_tern(vec![
        "space".into(),
        "list-instances".into(),
        "--admin".into(),
        admin.clone(),
    ])
    .await;
    assert!(instances.status.success(), "stderr: {}", instances.stderr);
    let lines: Vec<Vec<&str>> = instances
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    // (partition, mode, host, epoch, in-sync, lag) as columns, header first.
    let want: Vec<Vec<&str>> = vec![
        vec!["PARTITION", "MODE", "HOST", "EPOCH", "IN-SYNC", "LAG"],
        vec!["0", "PRIMARY", "n1.a", "(127.0.0.1:7001)", "1", "-", "-"],
        vec!["0", "BACKUP", "n2.a", "(127.0.0.1:7002)", "1", "yes", "0"],
        vec!["1", "PRIMARY", "n2.a", "(127.0.0.1:7002)", "4", "-", "-"],
        vec!["1", "BACKUP", "n1.a", "(127.0.0.1:7001)", "4", "no", "3"],
    ];
    assert_eq!(lines, want, "{}", instances.stdout);

    let status = run_tern(vec!["status".into(), "--admin".into(), admin.clone()]).await;
    assert!(status.status.success(), "stderr: {}", status.stderr);
    for fragment in [
        "node 2 (n2.a), site a",
        "ready: yes",
        "partition map: version 9, leader node 1 (n1.a)",
        "partitions: 2 (0 without a primary)",
    ] {
        assert!(
            status.stdout.contains(fragment),
            "{fragment:?} in {}",
            status.stdout
        );
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_of_an_unreachable_node_fails_naming_the_address() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("probe port");
    let run = run_tern(vec!["status".into(), "--admin".into(), addr.to_string()]).await;
    assert_eq!(run.status.code(), Some(1), "stdout: {}", run.stdout);
    assert!(
        run.stderr.contains(&format!("http://{addr}/v1/status")),
        "{}",
        run.stderr
    );
}
