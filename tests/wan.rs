//! WAN replication with real processes: site `a` (three `tern node` processes on 127.0.20.x,
//! the gateway on node 1) and site `b` (one standalone node on 127.0.21.1), each gateway reaching the
//! other through a UDP fault proxy in this test process (so the test can cut the WAN); `a` knows
//! `b`'s gateway by a DNS name (`localhost:PORT`).
//!
//! 1. A write in `a` is read in `b`; concurrent writes of one key in both sites end equal.
//! 2. WAN cut: writes and counter increments in both sites; `a`'s backlog towards `b` grows
//!    and `b` does not see them; after the heal both sites converge and every counter equals
//!    the sum of the increments made in both sites (nothing lost, nothing applied twice).
//! 3. `kill -9` of `a`'s gateway node while a client writes to `a`: the node restarts from its
//!    durable backlog, and every write `a` acknowledged reaches `b`.
//! 4. Operations: `tern gateway status` shows the link; `tern gateway remove-target` stops
//!    shipping to `b` (a write stays in `a`), `add-target` brings `b` back and the write arrives.
//! 5. Site `b` loses its memory (`kill -9` of its only node, which restarts empty): it gets
//!    every key back from `a` (anti-entropy, while new writes flow), and its new writes — whose
//!    change-log seqs start again at 1 — still reach `a`; increments it makes to a counter
//!    before that counter is back are added to it in both sites, not absorbed.
#[path = "support/site.rs"]
mod site;
mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use site::{ProcSite, SiteSetup, free_port, ip};
use tern_gateway::fault_proxy::{Faults, UdpFaultProxy};
use tern_node::admin::WanStatus;
use tern_node::config::{NodeConfig, PeerAddr, WanConfig, WanPeer, WanResolverRule};
use tern_node::transport::certs::init_dev_pki;
use tokio::sync::watch;

const PARTITIONS: u32 = 8;
const FORMATION_MAX: Duration = Duration::from_secs(40);
/// A write reaches the other site within this (debug build, busy 2-core machine).
const REPLICATION_MAX: Duration = Duration::from_secs(20);
/// Convergence after a heal or a gateway restart.
const CONVERGE_MAX: Duration = Duration::from_secs(40);
const REPLY_MAX: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(50);
const TEST_MAX: Duration = Duration::from_secs(200);

/// Site `a`'s net (127.0.20.x) and `b`'s (127.0.21.x).
const NET_A: u8 = 20;
const NET_B: u8 = 21;

struct World {
    a: ProcSite,
    b: ProcSite,
    /// a → b and b → a.
    proxies: [UdpFaultProxy; 2],
    _pki: tempfile::TempDir,
}

/// Node 1's `[wan]` section: every knob at its serde default except the peer and resolvers.
fn wan_section(
    site: &str,
    listen: SocketAddr,
    pki: &Path,
    node_dir: &Path,
    peer: (&str, u16, PeerAddr),
) -> WanConfig {
    let text = format!(
        "site = {site:?}\nlisten = \"{listen}\"\ntls_dir = {:?}\ndata_dir = {:?}\n",
        pki.display().to_string(),
        node_dir.join("wan").display().to_string()
    );
    let mut wan: WanConfig = toml::from_str(&text).expect("a minimal [wan] section parses");
    wan.peers = vec![WanPeer {
        site: peer.0.to_owned(),
        site_id: peer.1,
        addr: peer.2,
    }];
    wan.resolvers = vec![WanResolverRule {
        prefix: "c:".to_owned(),
        resolver: "counter-merge".to_owned(),
    }];
    wan
}

async fn world(a_nodes: u8) -> World {
    let pki = tempfile::tempdir().expect("pki dir");
    init_dev_pki(pki.path(), &["a".to_owned(), "b".to_owned()], 3).expect("dev PKI");
    let gw_a = SocketAddr::new(ip(NET_A, 1), free_port(ip(NET_A, 1), true));
    let gw_b = SocketAddr::new(ip(NET_B, 1), free_port(ip(NET_B, 1), true));
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let a_to_b = UdpFaultProxy::start(any, gw_b, 1).await.expect("proxy a→b");
    let b_to_a = UdpFaultProxy::start(any, gw_a, 2).await.expect("proxy b→a");
    let (via_ab, via_ba) = (a_to_b.local_addr(), b_to_a.local_addr());
    let pki_path = pki.path().to_owned();
    let mut configure_a = |index: usize, dir: &Path, config: &mut NodeConfig| {
        if index == 0 {
            // By name: the gateway resolves it before every dial.
            let via = PeerAddr::parse(&format!("localhost:{}", via_ab.port())).expect("name");
            config.wan = Some(wan_section("a", gw_a, &pki_path, dir, ("b", 2, via)));
        }
    };
    let a = ProcSite::start_site(SiteSetup {
        net: NET_A,
        site: "a",
        site_id: 1,
        nodes: a_nodes,
        partitions: PARTITIONS,
        pki: Some(pki.path()),
        configure: &mut configure_a,
    });
    // Site b is one standalone node: its data lives and dies with the process, so a kill -9
    // wipes the site (phase 5).
    let mut configure_b = |_: usize, dir: &Path, config: &mut NodeConfig| {
        config.cluster = None;
        config.wan = Some(wan_section(
            "b",
            gw_b,
            &pki_path,
            dir,
            ("a", 1, via_ba.into()),
        ));
    };
    let b = ProcSite::start_site(SiteSetup {
        net: NET_B,
        site: "b",
        site_id: 2,
        nodes: 1,
        partitions: PARTITIONS,
        pki: Some(pki.path()),
        configure: &mut configure_b,
    });
    let mut world = World {
        a,
        b,
        proxies: [a_to_b, b_to_a],
        _pki: pki,
    };
    for i in 0..usize::from(a_nodes) {
        world.a.wait_ready(i, FORMATION_MAX).await;
    }
    world.b.wait_ready(0, FORMATION_MAX).await;
    world
}

impl World {
    fn cut(&self, cut: bool) {
        for proxy in &self.proxies {
            proxy.set_faults(Faults {
                cut,
                ..Faults::default()
            });
        }
    }
}

async fn connect(addr: SocketAddr) -> MultiplexedConnection {
    let client = redis::Client::open(format!("redis://{addr}/")).expect("redis url");
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(REPLY_MAX))
        .set_response_timeout(Some(REPLY_MAX));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .expect("connecting to a node")
}

async fn wan_status(site: &ProcSite, i: usize) -> Option<WanStatus> {
    let (code, body) = site.admin_get(i, "/v1/wan").await?;
    if code != 200 {
        return None;
    }
    serde_json::from_str(&body).ok()
}

/// Waits until every key of `expected` reads its value at `con`.
/// Waits until `key` reads `expected` at `con`; a larger value fails at once (applied twice).
async fn wait_counter(con: &mut MultiplexedConnection, key: &str, expected: i64, what: &str) {
    let started = Instant::now();
    loop {
        let n: Option<i64> = con.get(key).await.expect("GET of a counter");
        if n == Some(expected) {
            return;
        }
        assert!(
            n.is_none_or(|n| n < expected),
            "{what}: counter {key} = {n:?} exceeds the {expected} increments (applied twice?)"
        );
        assert!(
            started.elapsed() < CONVERGE_MAX,
            "{what}: counter {key} = {n:?}, expected {expected}"
        );
        tokio::time::sleep(POLL).await;
    }
}

async fn wait_values(
    con: &mut MultiplexedConnection,
    expected: &BTreeMap<String, String>,
    within: Duration,
    what: &str,
) -> Duration {
    let started = Instant::now();
    let keys: Vec<&String> = expected.keys().collect();
    loop {
        let mut missing = Vec::new();
        for chunk in keys.chunks(200) {
            let values: Vec<Option<String>> = con.mget(chunk).await.expect("MGET");
            for (key, value) in chunk.iter().zip(values) {
                if value.as_deref() != Some(expected[*key].as_str()) {
                    missing.push(((*key).clone(), value));
                }
            }
        }
        if missing.is_empty() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{what}: {} keys not replicated within {within:?}, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        tokio::time::sleep(POLL).await;
    }
}

async fn wait_equal(
    cons: &mut [MultiplexedConnection; 2],
    key: &str,
    within: Duration,
) -> (Option<String>, Duration) {
    let started = Instant::now();
    loop {
        let x: Option<String> = cons[0].get(key).await.expect("GET a");
        let y: Option<String> = cons[1].get(key).await.expect("GET b");
        if x == y && x.is_some() {
            return (x, started.elapsed());
        }
        assert!(
            started.elapsed() < within,
            "{key}: sites still differ after {within:?}: a={x:?} b={y:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wan_replicates_through_a_cut_and_a_gateway_kill() {
    tokio::time::timeout(TEST_MAX, scenario())
        .await
        .expect("the WAN scenario finishes in time");
}

async fn scenario() {
    let mut w = world(3).await;
    // Clients of `a` use node 2: node 1 hosts the gateway and is killed in phase 3.
    let a_addr = w.a.resp_addr(1);
    let mut cons = [connect(a_addr).await, connect(w.b.resp_addr(0)).await];

    // 1. a → b, and concurrent writes of one key.
    let mut expected = BTreeMap::new();
    for i in 0..100 {
        let (key, value) = (format!("k:{i}"), format!("v{i}"));
        let () = cons[0].set(&key, &value).await.expect("SET at a");
        expected.insert(key, value);
    }
    let took = wait_values(&mut cons[1], &expected, REPLICATION_MAX, "a → b").await;
    eprintln!("100 writes in a readable in b after {took:?}");
    let (set_a, set_b) = {
        let [ca, cb] = &mut cons;
        tokio::join!(
            ca.set::<_, _, ()>("x", "from-a"),
            cb.set::<_, _, ()>("x", "from-b")
        )
    };
    set_a.expect("SET x at a");
    set_b.expect("SET x at b");
    let (winner, took) = wait_equal(&mut cons, "x", REPLICATION_MAX).await;
    eprintln!("concurrent SET x resolved to {winner:?} in both sites after {took:?}");
    assert!(matches!(winner.as_deref(), Some("from-a" | "from-b")));

    // 2. WAN cut: both sites write; the backlog grows; heal; converge.
    w.cut(true);
    let mut during_cut = BTreeMap::new();
    for i in 0..300 {
        let (key, value) = (format!("w:{i}"), format!("cut{i}"));
        let () = cons[0]
            .set(&key, &value)
            .await
            .expect("SET at a during the cut");
        during_cut.insert(key, value);
    }
    for (side, n) in [(0, 50), (1, 30)] {
        for _ in 0..n {
            let _: i64 = cons[side]
                .incr("c:n", 1)
                .await
                .expect("INCR during the cut");
        }
    }
    let started = Instant::now();
    loop {
        let backlog = wan_status(&w.a, 0)
            .await
            .and_then(|s| s.targets.first().map(|t| t.backlog_records));
        if backlog.is_some_and(|b| b >= 300) {
            eprintln!("a's backlog towards b during the cut: {backlog:?} records");
            break;
        }
        assert!(
            started.elapsed() < REPLICATION_MAX,
            "a's backlog towards b did not grow during the cut: {backlog:?}"
        );
        tokio::time::sleep(POLL).await;
    }
    let seen: Option<String> = cons[1].get("w:299").await.expect("GET at b");
    assert_eq!(seen, None, "b must not see a's writes through a cut WAN");
    w.cut(false);
    let took = wait_values(&mut cons[1], &during_cut, CONVERGE_MAX, "after the heal").await;
    eprintln!("after the heal, b caught up in {took:?}");
    for (side, con) in cons.iter_mut().enumerate() {
        wait_counter(con, "c:n", 80, &format!("site {side}")).await;
    }

    // 3. kill -9 of a's gateway node while a client writes to a.
    let (stop_tx, stop_rx) = watch::channel(false);
    let writer = tokio::spawn(write_until(a_addr, stop_rx));
    tokio::time::sleep(Duration::from_millis(700)).await;
    w.a.kill9(0);
    tokio::time::sleep(Duration::from_millis(700)).await;
    w.a.spawn(0);
    w.a.wait_ready(0, FORMATION_MAX).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_tx.send(true).expect("stop the writer");
    let acked = writer.await.expect("writer task");
    assert!(
        acked.len() > 50,
        "the writer made little progress: {}",
        acked.len()
    );
    let took = wait_values(&mut cons[1], &acked, CONVERGE_MAX, "after the gateway kill").await;
    eprintln!(
        "{} writes acknowledged by a around the gateway kill all readable in b after {took:?}",
        acked.len()
    );
    let status = wan_status(&w.b, 0).await.expect("b's /v1/wan");
    let from_a = &status.sources[0];
    assert!(from_a.applied_total > 0, "b applied nothing? {status:?}");
    // 4. Operations through the CLI against a's gateway node.
    let admin_a = w.a.nodes[0].admin;
    let shown = gateway_cli(admin_a, &["status"]);
    assert!(shown.contains("WAN gateway of site a"), "{shown}");
    let b_row = shown
        .lines()
        .find(|l| l.trim_start().starts_with("b "))
        .unwrap_or_else(|| panic!("no row for target b:\n{shown}"));
    assert!(b_row.contains("yes"), "b not connected: {b_row}");
    gateway_cli(admin_a, &["remove-target", "--site", "b"]);
    let () = cons[0].set("after-remove", "1").await.expect("SET at a");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let seen: Option<String> = cons[1].get("after-remove").await.expect("GET at b");
    assert_eq!(seen, None, "a removed target b, yet b received a write");
    let via = w.proxies[0].local_addr().to_string();
    gateway_cli(
        admin_a,
        &[
            "add-target",
            "--site",
            "b",
            "--site-id",
            "2",
            "--addr",
            &via,
        ],
    );
    let back = BTreeMap::from([("after-remove".to_owned(), "1".to_owned())]);
    let took = wait_values(&mut cons[1], &back, CONVERGE_MAX, "after add-target").await;
    eprintln!(
        "target b removed and added back at runtime; the write made meanwhile arrived {took:?} after"
    );

    // 5. b loses its memory.
    let mut everything = expected.clone();
    everything.extend(during_cut.clone());
    everything.extend(acked.clone());
    everything.insert("after-remove".to_owned(), "1".to_owned());
    // A counter only b counts in, replicated to a before the wipe.
    for _ in 0..7 {
        let _: i64 = cons[1].incr("c:b-only", 1).await.expect("INCR at b");
    }
    wait_counter(
        &mut cons[0],
        "c:b-only",
        7,
        "b's counter at a before the wipe",
    )
    .await;
    w.b.kill9(0);
    w.b.spawn(0);
    w.b.wait_ready(0, FORMATION_MAX).await;
    cons[1] = connect(w.b.resp_addr(0)).await;
    let n: Option<String> = cons[1].get("k:0").await.expect("GET at b");
    eprintln!("b restarted empty (k:0 = {n:?}); waiting for anti-entropy to bring a's data back");
    let () = cons[1].set("b-after-wipe", "new").await.expect("SET at b");
    // Increments of a counter b had counted in before, made before its keys are back: they
    // count under b's new data lineage, so the merge adds them to the 30 a kept for b.
    for _ in 0..5 {
        let _: i64 = cons[1]
            .incr("c:n", 1)
            .await
            .expect("INCR at b after the wipe");
    }
    // And of the counter only b had counted in: b's new data line is a new writer, so its
    // entry meets the old line's (which a kept) as concurrent and merges, instead of claiming
    // to follow it and replacing it. (With versions counted per site, a ended at 3. So it did
    // while a's primary for this key, a node without `[wan]`, resolved with its own default
    // last-writer-wins instead of the `counter-merge` the gateway host is configured with.)
    for _ in 0..3 {
        let _: i64 = cons[1]
            .incr("c:b-only", 1)
            .await
            .expect("INCR at b after the wipe");
    }
    let took = wait_values(
        &mut cons[1],
        &everything,
        CONVERGE_MAX,
        "b bootstrapped from a",
    )
    .await;
    eprintln!(
        "b has all {} keys of a back after {took:?}",
        everything.len()
    );
    let fresh = BTreeMap::from([("b-after-wipe".to_owned(), "new".to_owned())]);
    wait_values(
        &mut cons[0],
        &fresh,
        CONVERGE_MAX,
        "b's first write after the wipe reaches a",
    )
    .await;
    for (side, con) in cons.iter_mut().enumerate() {
        wait_counter(con, "c:n", 85, &format!("site {side} after b's wipe")).await;
        wait_counter(con, "c:b-only", 10, &format!("site {side} after b's wipe")).await;
    }
    let status = wan_status(&w.b, 0).await.expect("b's /v1/wan");
    eprintln!("b after the wipe: {:?}", status.targets);

    eprintln!(
        "b from a: applied {} duplicates {} conflicts {:?} lag p50 {:?} p99 {:?} ms",
        from_a.applied_total,
        from_a.duplicates_total,
        from_a.conflicts_total,
        from_a.lag_ms_p50,
        from_a.lag_ms_p99
    );
}

/// `tern gateway ARGS --admin ADDR`, which must succeed; its stdout.
fn gateway_cli(admin: SocketAddr, args: &[&str]) -> String {
    let admin = admin.to_string();
    let mut all = vec!["gateway"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--admin", &admin]);
    let done = support::run_bounded(&all, &[], Duration::from_secs(30));
    assert!(
        done.status.success(),
        "tern {all:?} failed: {}\n{}",
        done.stdout,
        done.stderr
    );
    done.stdout
}

/// SETs unique keys at `addr` until told to stop; returns the acknowledged ones. A failed
/// write is retried (SET of the same value is idempotent).
async fn write_until(addr: SocketAddr, stop: watch::Receiver<bool>) -> BTreeMap<String, String> {
    let mut con = connect(addr).await;
    let mut acked = BTreeMap::new();
    let mut n = 0u64;
    while !*stop.borrow() {
        let (key, value) = (format!("m:{n}"), format!("kill{n}"));
        loop {
            match con.set::<_, _, ()>(&key, &value).await {
                Ok(()) => break,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    if *stop.borrow() {
                        return acked;
                    }
                }
            }
        }
        acked.insert(key, value);
        n += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    acked
}
