//! Site high availability with real processes: three `tern node` processes on 127.0.41.x, Redis
//! clients (the `redis` crate) writing continuously and logging every acknowledged write.
//!
//! 1. `kill -9` the node leading the most partitions: writes to its partitions succeed again
//!    through a survivor within a bound, every acknowledged write is readable, every counter
//!    equals its acknowledged INCRs; restarted from the same data directory, the node takes its
//!    preferred partitions back.
//! 2. A drained rolling restart (SIGTERM, exit, start, ready, settled — node by node) under
//!    load fails no client write. A client may retry on another node after a connection error;
//!    an error reply or a timeout is a failure.
#[path = "support/site.rs"]
mod site;
mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use site::ProcSite;
use tokio::sync::watch;

const PARTITIONS: u32 = 8;
/// Startup of three debug-build nodes on a busy 2-core machine, including the map election.
const FORMATION_MAX: Duration = Duration::from_secs(40);
/// Writes to a killed primary's partitions must succeed again within this (target ≤ 1 s in
/// release; a debug build on 2 shared cores gets slack).
const FAILOVER_MAX: Duration = Duration::from_secs(2);
/// A restarted node catches up and leads its preferred partitions again within this.
const FAILBACK_MAX: Duration = Duration::from_secs(30);
/// SIGTERM to exit: the drain bound plus margin.
const STOP_MAX: Duration = Duration::from_millis(site::SHUTDOWN_DRAIN_MS_MAX + 10_000);
/// One client write, retries included, must finish within this.
const WRITE_MAX: Duration = Duration::from_secs(10);
/// One reply; a timeout counts as a failed write.
const REPLY_MAX: Duration = Duration::from_secs(5);
const CONNECT_MAX: Duration = Duration::from_secs(2);
const RETRY_PAUSE: Duration = Duration::from_millis(10);
/// The whole test; a hang fails instead of blocking CI.
const TEST_MAX: Duration = Duration::from_secs(150);
const WRITERS: usize = 3;
const COUNTERS: u64 = 3;

/// What one writer saw.
#[derive(Debug, Default)]
struct WriterLog {
    /// Acknowledged SETs, (key, value).
    sets: Vec<(String, String)>,
    /// Acknowledged INCRs per counter.
    incrs: BTreeMap<String, u64>,
    /// INCRs whose connection broke before the reply: applied or not, the client cannot know,
    /// so the counter may exceed the acknowledged count by at most this.
    incrs_unknown: BTreeMap<String, u64>,
    /// Error replies (e.g. `-TRYAGAIN`) and timeouts: failed writes.
    failures: Vec<String>,
    /// Connections opened (the first one included).
    connects: u64,
    /// The longest a single write took, retries included.
    longest_write: Duration,
}

#[derive(Debug, Clone)]
enum Op {
    Set { key: String, value: String },
    Incr { key: String },
}

impl Op {
    fn cmd(&self) -> redis::Cmd {
        match self {
            Op::Set { key, value } => redis::cmd("SET").arg(key).arg(value).clone(),
            Op::Incr { key } => redis::cmd("INCR").arg(key).clone(),
        }
    }
}

async fn connect(addr: SocketAddr) -> redis::RedisResult<MultiplexedConnection> {
    let client = redis::Client::open(format!("redis://{addr}/"))?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_MAX))
        .set_response_timeout(Some(REPLY_MAX));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// Writes until `stop`: three SETs of unique keys, then an INCR of one of the phase's
/// counters, over and over. Starts on node `first`; on a broken connection moves to the next
/// node and retries the same write.
async fn writer(
    id: usize,
    phase: &'static str,
    addrs: Vec<SocketAddr>,
    first: usize,
    stop: watch::Receiver<bool>,
) -> WriterLog {
    let mut log = WriterLog::default();
    let mut current = first;
    let mut con: Option<MultiplexedConnection> = None;
    let mut n = 0u64;
    while !*stop.borrow() {
        let op = if n % 4 == 3 {
            Op::Incr {
                key: format!("ctr-{phase}-{}", n % COUNTERS),
            }
        } else {
            Op::Set {
                key: format!("{phase}-w{id}-{n}"),
                value: format!("v{n}"),
            }
        };
        let began = Instant::now();
        loop {
            assert!(
                began.elapsed() < WRITE_MAX,
                "writer {id}: {op:?} not acknowledged within {WRITE_MAX:?}; log so far: \
                 failures {:?}",
                log.failures
            );
            let connection = match con.as_mut() {
                Some(c) => c,
                None => match connect(addrs[current]).await {
                    Ok(c) => {
                        log.connects += 1;
                        con.insert(c)
                    }
                    Err(_) => {
                        current = (current + 1) % addrs.len();
                        tokio::time::sleep(RETRY_PAUSE).await;
                        continue;
                    }
                },
            };
            let reply: redis::RedisResult<redis::Value> = op.cmd().query_async(connection).await;
            match reply {
                Ok(_) => {
                    match &op {
                        Op::Set { key, value } => log.sets.push((key.clone(), value.clone())),
                        Op::Incr { key } => *log.incrs.entry(key.clone()).or_default() += 1,
                    }
                    break;
                }
                Err(err) if err.code().is_some() || err.is_timeout() => {
                    // A reply the client would surface to its caller: a failed write.
                    log.failures
                        .push(format!("{op:?} via {}: {err}", addrs[current]));
                    if let Op::Incr { key } = &op
                        && err.is_timeout()
                    {
                        *log.incrs_unknown.entry(key.clone()).or_default() += 1;
                    }
                    if err.is_timeout() {
                        con = None;
                        current = (current + 1) % addrs.len();
                    }
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(_) => {
                    // The connection broke (its node stopped): retry on the next node.
                    if let Op::Incr { key } = &op {
                        *log.incrs_unknown.entry(key.clone()).or_default() += 1;
                    }
                    con = None;
                    current = (current + 1) % addrs.len();
                }
            }
        }
        log.longest_write = log.longest_write.max(began.elapsed());
        n += 1;
    }
    log
}

/// Writers started on nodes 1, 2, 3 (one each), stopped by the returned sender.
fn start_writers(
    site: &ProcSite,
    phase: &'static str,
) -> (watch::Sender<bool>, Vec<tokio::task::JoinHandle<WriterLog>>) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let addrs = site.resp_addrs();
    let tasks = (0..WRITERS)
        .map(|id| {
            tokio::spawn(writer(
                id,
                phase,
                addrs.clone(),
                id % addrs.len(),
                stop_rx.clone(),
            ))
        })
        .collect();
    (stop_tx, tasks)
}

async fn stop_writers(
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<WriterLog>>,
) -> Vec<WriterLog> {
    let _ = stop.send(true);
    let mut logs = Vec::new();
    for task in tasks {
        logs.push(task.await.expect("writer task"));
    }
    logs
}

/// Every acknowledged SET reads back through `addr`; every counter is its acknowledged INCRs
/// (plus at most the INCRs whose outcome the client could not know).
async fn verify(addr: SocketAddr, logs: &[WriterLog], phase: &str) {
    let mut con = connect(addr).await.expect("connecting to verify");
    let sets: Vec<&(String, String)> = logs.iter().flat_map(|l| &l.sets).collect();
    assert!(!sets.is_empty(), "{phase}: no write was acknowledged");
    for chunk in sets.chunks(500) {
        let keys: Vec<&str> = chunk.iter().map(|(k, _)| k.as_str()).collect();
        let got: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut con)
            .await
            .expect("MGET of acknowledged keys");
        for ((key, value), got) in chunk.iter().zip(got) {
            assert_eq!(
                got.as_deref(),
                Some(value.as_str()),
                "{phase}: acknowledged write of {key} lost"
            );
        }
    }
    let mut acked: BTreeMap<&str, u64> = BTreeMap::new();
    let mut unknown: BTreeMap<&str, u64> = BTreeMap::new();
    for log in logs {
        for (k, n) in &log.incrs {
            *acked.entry(k).or_default() += n;
        }
        for (k, n) in &log.incrs_unknown {
            *unknown.entry(k).or_default() += n;
        }
    }
    for (key, &want) in &acked {
        let got: i64 = redis::cmd("GET")
            .arg(key)
            .query_async(&mut con)
            .await
            .expect("GET of a counter");
        let got = u64::try_from(got).expect("counters only go up");
        let slack = unknown.get(key).copied().unwrap_or(0);
        assert!(
            (want..=want + slack).contains(&got),
            "{phase}: counter {key} is {got}, acknowledged INCRs {want} (+{slack} unknown)"
        );
    }
    eprintln!(
        "{phase}: {} SETs and {} INCRs acknowledged, all readable through {addr}",
        sets.len(),
        acked.values().sum::<u64>()
    );
}

fn summary(logs: &[WriterLog]) -> (Vec<&String>, u64, Duration) {
    let failures: Vec<&String> = logs.iter().flat_map(|l| &l.failures).collect();
    let reconnects = logs.iter().map(|l| l.connects.saturating_sub(1)).sum();
    let longest = logs
        .iter()
        .map(|l| l.longest_write)
        .max()
        .unwrap_or_default();
    (failures, reconnects, longest)
}

/// Both tests start a site of three processes; on 2 shared cores they take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_a_primary_fails_over_loses_no_write_and_fails_back() {
    let _serial = SERIAL.lock().await;
    tokio::time::timeout(TEST_MAX, kill_and_failback())
        .await
        .expect("the failover test exceeded its time bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_rolling_restart_fails_no_client_write() {
    let _serial = SERIAL.lock().await;
    tokio::time::timeout(TEST_MAX, rolling_restart())
        .await
        .expect("the rolling restart test exceeded its time bound");
}

/// Three nodes on 127.0.`net`.1..=3, ready, with every partition on its preferred primary.
async fn formed_site(net: u8) -> ProcSite {
    let mut site = ProcSite::start(net, 3, PARTITIONS);
    let started = Instant::now();
    for i in 0..3 {
        site.wait_ready(i, FORMATION_MAX).await;
    }
    site.wait_settled("site formed", FORMATION_MAX).await;
    eprintln!("site of 3 processes formed in {:?}", started.elapsed());
    site
}

async fn kill_and_failback() {
    let mut site = formed_site(41).await;
    // --- kill -9 a primary -------------------------------------------------------------------
    let before = site.partitions_view(0).await.expect("node 1 answers");
    let mut led: BTreeMap<u64, Vec<u16>> = BTreeMap::new();
    for p in &before.partitions {
        led.entry(p.primary.expect("settled"))
            .or_default()
            .push(p.partition);
    }
    let (&victim_id, victim_parts) = led
        .iter()
        .max_by_key(|(id, parts)| (parts.len(), std::cmp::Reverse(**id)))
        .expect("someone leads");
    let victim_parts = victim_parts.clone();
    let victim = usize::try_from(victim_id - 1).expect("small id");
    let survivor = (victim + 1) % 3;
    let epochs_before: BTreeMap<u16, u64> = before
        .partitions
        .iter()
        .map(|p| (p.partition, p.epoch))
        .collect();

    let victim_incarnation = site
        .incarnation(victim)
        .await
        .expect("the map lists the victim");
    let (stop, writers) = start_writers(&site, "kill");
    tokio::time::sleep(Duration::from_millis(500)).await;
    site.kill9(victim);
    let killed_at = Instant::now();
    // One probe per partition the victim led, through a survivor: forwarded, held until the
    // partition has a new primary, then acknowledged.
    let survivor_addr = site.resp_addr(survivor);
    let probes: Vec<_> = victim_parts
        .iter()
        .map(|&p| {
            let key = site.key_in(p, "probe");
            tokio::spawn(async move {
                let mut con = connect(survivor_addr).await.expect("connecting a probe");
                let reply: redis::RedisResult<()> = redis::cmd("SET")
                    .arg(&key)
                    .arg("after-kill")
                    .query_async(&mut con)
                    .await;
                (key, reply, killed_at.elapsed())
            })
        })
        .collect();
    let mut failover = Duration::ZERO;
    let mut probe_keys = Vec::new();
    for probe in probes {
        let (key, reply, took) = probe.await.expect("probe task");
        reply.unwrap_or_else(|e| panic!("SET {key} after the kill: {e}"));
        failover = failover.max(took);
        probe_keys.push(key);
    }
    eprintln!(
        "FAILOVER: node {victim_id} (led partitions {victim_parts:?}) killed with SIGKILL; \
         writes to all of them succeed again after {failover:?}"
    );
    assert!(failover <= FAILOVER_MAX, "failover took {failover:?}");
    // The map agrees: new primaries, on a higher epoch (fencing the dead one).
    site.wait_for("promotion visible", FAILOVER_MAX, |views| {
        views.iter().all(|v| {
            v.partitions.iter().all(|p| {
                !victim_parts.contains(&p.partition)
                    || (p.primary.is_some()
                        && p.primary != Some(victim_id)
                        && p.epoch > epochs_before[&p.partition])
            })
        })
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let logs = stop_writers(stop, writers).await;
    let (failures, reconnects, longest) = summary(&logs);
    eprintln!("kill phase: {reconnects} client reconnect(s), longest single write {longest:?}");
    assert!(
        failures.is_empty(),
        "writes failed around the kill: {failures:#?}"
    );
    verify(survivor_addr, &logs, "after kill -9").await;
    let mut con = connect(survivor_addr).await.expect("connecting");
    for key in &probe_keys {
        let got: Option<String> = redis::cmd("GET")
            .arg(key)
            .query_async(&mut con)
            .await
            .expect("GET probe");
        assert_eq!(got.as_deref(), Some("after-kill"), "probe {key}");
    }

    // --- restart with the same config and data directory: failback ----------------------------
    site.spawn(victim);
    let restarted = Instant::now();
    site.wait_ready(victim, FAILBACK_MAX).await;
    site.wait_rejoined(victim, victim_incarnation, FAILBACK_MAX)
        .await;
    let took = site.wait_settled("failback", FAILBACK_MAX).await;
    eprintln!(
        "FAILBACK: node {victim_id} restarted, caught up and leads {victim_parts:?} again \
         {:?} after its start ({took:?} after ready)",
        restarted.elapsed()
    );
    let view = site.partitions_view(victim).await.expect("victim answers");
    for p in view
        .partitions
        .iter()
        .filter(|p| victim_parts.contains(&p.partition))
    {
        assert_eq!(
            p.primary,
            Some(victim_id),
            "partition {} failed back",
            p.partition
        );
    }
    verify(site.resp_addr(victim), &logs, "after failback").await;
}

/// For each node in turn: SIGTERM (the node drains its primaries first), exit 0, start again
/// from the same data directory, ready, noticed by the site, settled — with writers running.
async fn rolling_restart() {
    let mut site = formed_site(42).await;
    let started = Instant::now();
    let (stop, writers) = start_writers(&site, "roll");
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..3 {
        let incarnation = site.incarnation(i).await.expect("the map lists the node");
        let t = Instant::now();
        let status = site.terminate(i, STOP_MAX).await;
        assert!(
            status.success(),
            "node {} exited with {status} after SIGTERM",
            i + 1
        );
        let stopped = t.elapsed();
        site.spawn(i);
        site.wait_ready(i, FAILBACK_MAX).await;
        site.wait_rejoined(i, incarnation, FAILBACK_MAX).await;
        site.wait_settled("settled after a restart", FAILBACK_MAX)
            .await;
        eprintln!(
            "ROLLING: node {} drained and stopped in {stopped:?}, back and settled after {:?}",
            i + 1,
            t.elapsed()
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logs = stop_writers(stop, writers).await;
    let (failures, reconnects, longest) = summary(&logs);
    eprintln!(
        "rolling restart: {reconnects} client reconnect(s), longest single write {longest:?}"
    );
    assert!(
        failures.is_empty(),
        "client writes failed during the drained rolling restart: {failures:#?}"
    );
    verify(site.resp_addr(0), &logs, "after the rolling restart").await;
    eprintln!("whole scenario took {:?}", started.elapsed());
}
