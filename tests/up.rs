//! `tern up --nodes 3` as a real process: a local site becomes ready, serves clients, is listed
//! by `tern space list-instances`, and stops with no node left behind — on SIGTERM, and when
//! `tern up` itself is killed with SIGKILL.
mod support;

use std::collections::BTreeSet;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use support::{ChildGuard, path_str, run_bounded, tern_command};

/// Startup of three debug-build nodes on a busy 2-core machine, including map election.
const READY_MAX: Duration = Duration::from_secs(90);
/// `tern up`'s stop: each node's shutdown drain bound (10 s) plus margin.
const STOP_MAX: Duration = Duration::from_secs(40);
const PARTITIONS: usize = 8;

#[derive(Debug)]
struct NodeRow {
    identity: String,
    resp: String,
    admin: String,
    pid: u32,
}

struct Site {
    guard: ChildGuard,
    nodes: Vec<NodeRow>,
    stdout: Vec<String>,
    /// Kept open: dropping it closes `tern up`'s stdout, and it must survive that anyway.
    _lines: Receiver<String>,
    _dir: tempfile::TempDir,
}

fn start_site() -> Site {
    let dir = tempfile::tempdir().expect("temp dir");
    let args = [
        "up",
        "--nodes",
        "3",
        "--partitions",
        "8",
        "--base-port",
        "0",
        "--ready-timeout-secs",
        "80",
        "--base-dir",
        path_str(dir.path()),
    ];
    let (mut guard, lines) = ChildGuard::spawn(tern_command(&args, &[]));
    let stdout = read_until_ready(&mut guard, &lines, dir.path());
    let nodes: Vec<NodeRow> = stdout
        .iter()
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            match cols.as_slice() {
                [identity, resp, admin, pid] if identity.ends_with(".a") => Some(NodeRow {
                    identity: (*identity).to_owned(),
                    resp: (*resp).to_owned(),
                    admin: (*admin).to_owned(),
                    pid: pid.parse().ok()?,
                }),
                _ => None,
            }
        })
        .collect();
    assert_eq!(nodes.len(), 3, "node table in {stdout:#?}");
    Site {
        guard,
        nodes,
        stdout,
        _lines: lines,
        _dir: dir,
    }
}

fn read_until_ready(
    guard: &mut ChildGuard,
    lines: &Receiver<String>,
    dir: &std::path::Path,
) -> Vec<String> {
    let deadline = Instant::now() + READY_MAX;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                let ready = line.starts_with("tern up: site a ready");
                seen.push(line);
                if ready {
                    return seen;
                }
            }
            Err(_) => {
                let status = guard.wait_timeout(Duration::ZERO);
                let logs: String = ["n1", "n2", "n3"]
                    .iter()
                    .map(|n| {
                        let path = dir.join("a").join(n).join("node.log");
                        let text = std::fs::read_to_string(&path).unwrap_or_default();
                        let tail: Vec<&str> = text.lines().rev().take(15).collect();
                        let tail: Vec<&str> = tail.into_iter().rev().collect();
                        format!("--- {}:\n{}\n", path.display(), tail.join("\n"))
                    })
                    .collect();
                panic!(
                    "tern up not ready within {READY_MAX:?} (exit {status:?})\nstdout: \
                     {seen:#?}\nstderr: {}\n{logs}",
                    guard.stderr()
                );
            }
        }
    }
}

/// True while `pid` is a live process (a zombie waiting for its reaper counts as gone).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(status) => !status
            .lines()
            .any(|l| l.starts_with("State:") && l.contains('Z')),
        Err(_) => false,
    }
}

fn wait_all_gone(pids: &[u32], timeout: Duration) -> BTreeSet<u32> {
    let deadline = Instant::now() + timeout;
    loop {
        let left: BTreeSet<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn count_modes(text: &str) -> (usize, usize) {
    let mode_of = |line: &str| line.split_whitespace().nth(1).map(str::to_owned);
    let modes: Vec<String> = text.lines().filter_map(mode_of).collect();
    (
        modes.iter().filter(|m| *m == "PRIMARY").count(),
        modes.iter().filter(|m| *m == "BACKUP").count(),
    )
}

#[test]
fn up_launches_a_ready_site_and_stops_it_on_sigterm() {
    let mut site = start_site();
    let printed = site.stdout.join("\n");
    assert_eq!(
        count_modes(&printed),
        (PARTITIONS, PARTITIONS),
        "one primary and one backup per partition in {printed}"
    );

    // Every node sees the same placement.
    for node in &site.nodes {
        let run = run_bounded(
            &["space", "list-instances", "--admin", &node.admin],
            &[],
            Duration::from_secs(20),
        );
        assert!(run.status.success(), "{}: {}", node.identity, run.stderr);
        assert_eq!(
            count_modes(&run.stdout),
            (PARTITIONS, PARTITIONS),
            "{}",
            run.stdout
        );
    }

    // Clients can use any node: write through one, read through another.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let open = |addr: &str| {
            let client = redis::Client::open(format!("redis://{addr}/")).expect("url");
            let config = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(10)))
                .set_response_timeout(Some(Duration::from_secs(10)));
            async move {
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .expect("connecting")
            }
        };
        let mut first = open(&site.nodes[0].resp).await;
        let mut last = open(&site.nodes[2].resp).await;
        for i in 0..20 {
            let key = format!("up-key-{i}");
            let _: () = redis::cmd("SET")
                .arg(&key)
                .arg(i)
                .query_async(&mut first)
                .await
                .expect("SET through node 1");
            let got: i64 = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut last)
                .await
                .expect("GET through node 3");
            assert_eq!(got, i);
        }
    });

    let pids: Vec<u32> = site.nodes.iter().map(|n| n.pid).collect();
    site.guard.signal("TERM");
    let status = site.guard.wait_timeout(STOP_MAX);
    assert!(
        status.is_some_and(|s| s.success()),
        "tern up exits 0 on SIGTERM, got {status:?}; stderr: {}",
        site.guard.stderr()
    );
    assert_eq!(
        wait_all_gone(&pids, Duration::from_secs(5)),
        BTreeSet::new()
    );
}

#[test]
fn nodes_stop_by_themselves_when_tern_up_is_killed() {
    let mut site = start_site();
    let pids: Vec<u32> = site.nodes.iter().map(|n| n.pid).collect();
    site.guard.signal("KILL");
    assert!(site.guard.wait_timeout(Duration::from_secs(5)).is_some());
    // stdin EOF → each node's graceful stop (bounded by its drain time) → exit.
    assert_eq!(
        wait_all_gone(&pids, STOP_MAX),
        BTreeSet::new(),
        "orphaned nodes"
    );
}
