//! The multi-site scene: two sites (`east`, `west`) in this process, one node each, each
//! hosting its site's WAN gateway; the gateways talk QUIC with mutual TLS through a UDP fault
//! proxy per direction, so the scene can cut the WAN. A write in one site is read in the
//! other, concurrent writes resolve identically, a cut grows the backlog, the heal drains it,
//! and the scene ends with the lag it measured.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use tern_gateway::fault_proxy::{Faults, UdpFaultProxy};
use tern_node::admin::WanStatus;
use tern_node::config::{NodeConfig, WanConfig, WanPeer, WanResolverRule};
use tern_node::transport::certs::init_dev_pki;

use super::narrator::{Expect, Narrator};
use crate::node_host::{self, HostedNode};

const PARTITIONS: u32 = 16;
/// Keys written while the WAN is cut.
const CUT_KEYS: usize = 1000;
/// Bounds for replication and convergence: generous for a debug build on a busy machine.
const REPLICATION_MAX: Duration = Duration::from_secs(20);
const POLL_INTERVAL: Duration = Duration::from_millis(1);
/// Writes timed one by one after the heal.
const STEADY_WRITES: usize = 100;

/// The scene's files (certificates, backlogs), removed when it ends.
struct SceneDir(PathBuf);

impl Drop for SceneDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Site {
    name: &'static str,
    hosted: HostedNode,
    con: MultiplexedConnection,
}

impl Site {
    fn wan(&self) -> WanStatus {
        self.hosted.node.wan_hub().get().unwrap_or_default()
    }
}

fn free_udp_port() -> anyhow::Result<SocketAddr> {
    let socket = std::net::UdpSocket::bind(node_host::LOOPBACK_ANY_PORT)
        .context("probing a free UDP port")?;
    Ok(socket.local_addr()?)
}

fn site_config(
    name: &str,
    id: u16,
    gateway: SocketAddr,
    dir: &Path,
    peer: (&str, u16, SocketAddr),
) -> anyhow::Result<NodeConfig> {
    let text = format!(
        "site = {name:?}\nlisten = \"{gateway}\"\ntls_dir = {:?}\ndata_dir = {:?}\n",
        dir.join("certs").display().to_string(),
        dir.join(name).display().to_string()
    );
    let mut wan: WanConfig = toml::from_str(&text).context("building a [wan] section")?;
    wan.peers = vec![WanPeer {
        site: peer.0.to_owned(),
        site_id: peer.1,
        addr: peer.2.into(),
    }];
    wan.resolvers = vec![WanResolverRule {
        prefix: "c:".to_owned(),
        resolver: "counter-merge".to_owned(),
    }];
    Ok(NodeConfig {
        listen: node_host::LOOPBACK_ANY_PORT,
        partitions: PARTITIONS,
        site: id,
        wan: Some(wan),
        ..NodeConfig::default()
    })
}

async fn open(addr: SocketAddr) -> anyhow::Result<MultiplexedConnection> {
    let client = redis::Client::open(format!("redis://{addr}/"))?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(super::CONNECT_MAX))
        .set_response_timeout(Some(super::REPLY_MAX));
    Ok(client
        .get_multiplexed_async_connection_with_config(&config)
        .await?)
}

/// Polls `key` at `site` until it reads `want`; returns how long that took.
async fn wait_for_value(site: &mut Site, key: &str, want: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let got: Option<String> = site.con.get(key).await?;
        if got.as_deref() == Some(want) {
            return Ok(started.elapsed());
        }
        if started.elapsed() > REPLICATION_MAX {
            bail!(
                "{key} reads {got:?} in {} after {REPLICATION_MAX:?}, expected {want:?}",
                site.name
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Polls until both sites read the same value of `key`.
async fn wait_equal(sites: &mut [Site; 2], key: &str) -> anyhow::Result<String> {
    let started = Instant::now();
    loop {
        let a: Option<String> = sites[0].con.get(key).await?;
        let b: Option<String> = sites[1].con.get(key).await?;
        if let (Some(a), Some(b)) = (&a, &b)
            && a == b
        {
            return Ok(a.clone());
        }
        if started.elapsed() > REPLICATION_MAX {
            bail!("{key} still differs after {REPLICATION_MAX:?}: {a:?} vs {b:?}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

pub async fn wan(n: &mut Narrator) -> anyhow::Result<()> {
    let dir = SceneDir(std::env::temp_dir().join(format!("tern-demo-wan-{}", std::process::id())));
    init_dev_pki(
        &dir.0.join("certs"),
        &["east".to_owned(), "west".to_owned()],
        0,
    )
    .context("writing dev certificates for the sites")?;
    let (gw_east, gw_west) = (free_udp_port()?, free_udp_port()?);
    let to_west = UdpFaultProxy::start(node_host::LOOPBACK_ANY_PORT, gw_west, 1).await?;
    let to_east = UdpFaultProxy::start(node_host::LOOPBACK_ANY_PORT, gw_east, 2).await?;
    let east = node_host::start_hosted(site_config(
        "east",
        1,
        gw_east,
        &dir.0,
        ("west", 2, to_west.local_addr()),
    )?)
    .await?;
    let west = node_host::start_hosted(site_config(
        "west",
        2,
        gw_west,
        &dir.0,
        ("east", 1, to_east.local_addr()),
    )?)
    .await?;
    let (east_addr, west_addr) = (east.node.local_addr(), west.node.local_addr());
    let mut sites = [
        Site {
            name: "east",
            con: open(east_addr).await?,
            hosted: east,
        },
        Site {
            name: "west",
            con: open(west_addr).await?,
            hosted: west,
        },
    ];
    let outcome = play(n, &mut sites, east_addr, west_addr, &[&to_west, &to_east]).await;
    for site in sites {
        site.hosted.shutdown().await;
    }
    outcome
}

async fn play(
    n: &mut Narrator,
    sites: &mut [Site; 2],
    east_addr: SocketAddr,
    west_addr: SocketAddr,
    proxies: &[&UdpFaultProxy; 2],
) -> anyhow::Result<()> {
    n.say(
        "Two sites in this process, east and west: one node each, each running its site's WAN \
         gateway. The gateways speak QUIC with mutual TLS (a dev CA, one certificate per site) \
         through a fault proxy per direction.",
    );
    let mut east = n.connect_to(&format!("redis://{east_addr}/")).await?;
    let mut west = n.connect_to(&format!("redis://{west_addr}/")).await?;
    let started = Instant::now();
    while !sites
        .iter()
        .all(|s| s.wan().targets.iter().all(|t| t.connected))
    {
        if started.elapsed() > REPLICATION_MAX {
            bail!("the gateways did not connect within {REPLICATION_MAX:?}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    n.say(format!(
        "(both gateways connected {} ms after start)",
        started.elapsed().as_millis()
    ));

    n.say("A write in east is read in west:");
    east.check(&["SET", "city:1", "Lisbon"], Expect::Ok).await?;
    let took = wait_for_value(&mut sites[1], "city:1", "Lisbon").await?;
    west.check(&["GET", "city:1"], Expect::Bulk("Lisbon"))
        .await?;
    n.say(format!(
        "(readable in west {} ms after east acknowledged it)",
        took.as_millis()
    ));

    n.say(
        "Both sites write the same key at the same moment; the conflict is resolved the same \
         way in both (last writer wins by hybrid logical clock, site id breaking ties):",
    );
    let [a, b] = sites;
    let (x, y) = tokio::join!(
        a.con.set::<_, _, ()>("color", "red (east)"),
        b.con.set::<_, _, ()>("color", "blue (west)")
    );
    x?;
    y?;
    let winner = wait_equal(sites, "color").await?;
    east.check(&["GET", "color"], Expect::Text(winner.clone()))
        .await?;
    west.check(&["GET", "color"], Expect::Text(winner)).await?;

    n.say("Counters (keys `c:*`, resolver counter-merge) add up increments made in both sites:");
    east.check(&["INCRBY", "c:likes", "3"], Expect::Int(3))
        .await?;
    west.check(&["INCRBY", "c:likes", "2"], Expect::Int(2))
        .await?;
    wait_for_value(&mut sites[0], "c:likes", "5").await?;
    wait_for_value(&mut sites[1], "c:likes", "5").await?;
    east.check(&["GET", "c:likes"], Expect::Bulk("5")).await?;
    west.check(&["GET", "c:likes"], Expect::Bulk("5")).await?;

    n.say(format!(
        "The WAN is cut. East keeps serving writes ({CUT_KEYS} keys in one MSET); its gateway \
         keeps them in the durable backlog:"
    ));
    for proxy in proxies {
        proxy.set_faults(Faults {
            cut: true,
            ..Faults::default()
        });
    }
    let mut mset = vec!["MSET".to_owned()];
    for i in 0..CUT_KEYS {
        mset.push(format!("order:{i}"));
        mset.push(format!("placed-{i}"));
    }
    let args: Vec<&str> = mset.iter().map(String::as_str).collect();
    let mut raw = sites[0].con.clone();
    let () = redis::cmd(args[0])
        .arg(&args[1..])
        .query_async(&mut raw)
        .await?;
    n.say(format!(
        "MSET order:0 placed-0 … order:{} placed-{} → OK",
        CUT_KEYS - 1,
        CUT_KEYS - 1
    ));
    let started = Instant::now();
    let backlog = loop {
        let target = sites[0]
            .wan()
            .targets
            .into_iter()
            .next()
            .unwrap_or_default();
        if target.backlog_records >= CUT_KEYS as u64 {
            break target;
        }
        if started.elapsed() > REPLICATION_MAX {
            bail!(
                "east's backlog did not grow during the cut: {} records",
                target.backlog_records
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    };
    n.say(format!(
        "east's backlog towards west: {} records ({} KiB, on disk); west has not seen them:",
        backlog.backlog_records,
        backlog.backlog_bytes / 1024
    ));
    let last = format!("order:{}", CUT_KEYS - 1);
    west.check(&["GET", &last], Expect::Nil).await?;

    n.say("The WAN heals; the backlog drains and the sites converge:");
    for proxy in proxies {
        proxy.set_faults(Faults::default());
    }
    let healed = Instant::now();
    wait_for_value(&mut sites[1], &last, &format!("placed-{}", CUT_KEYS - 1)).await?;
    let drained = loop {
        let target = sites[0]
            .wan()
            .targets
            .into_iter()
            .next()
            .unwrap_or_default();
        if target.backlog_records == 0 {
            break healed.elapsed();
        }
        if healed.elapsed() > REPLICATION_MAX {
            bail!(
                "east's backlog still holds {} records",
                target.backlog_records
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    };
    west.check(&["GET", "order:0"], Expect::Bulk("placed-0"))
        .await?;
    west.check(
        &["GET", &last],
        Expect::Text(format!("placed-{}", CUT_KEYS - 1)),
    )
    .await?;
    west.check(&["DBSIZE"], Expect::Int(CUT_KEYS as i64 + 3))
        .await?;
    east.check(&["DBSIZE"], Expect::Int(CUT_KEYS as i64 + 3))
        .await?;
    n.say(format!(
        "(backlog drained {} ms after the heal, reconnection included)",
        drained.as_millis()
    ));

    n.say(format!(
        "Steady state: {STEADY_WRITES} more writes in east, one at a time; each is polled for in \
         west:"
    ));
    let mut lags = Vec::with_capacity(STEADY_WRITES);
    for i in 0..STEADY_WRITES {
        let (key, value) = (format!("steady:{i}"), format!("s{i}"));
        let () = sites[0].con.set(&key, &value).await?;
        lags.push(wait_for_value(&mut sites[1], &key, &value).await?);
    }
    lags.sort_unstable();
    let pick = |q: f64| lags[((q * lags.len() as f64).ceil() as usize).clamp(1, lags.len()) - 1];
    n.say(format!(
        "  acknowledged in east → readable in west: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms \
         (polling every {} ms adds up to that much)",
        pick(0.5).as_secs_f64() * 1000.0,
        pick(0.99).as_secs_f64() * 1000.0,
        pick(1.0).as_secs_f64() * 1000.0,
        POLL_INTERVAL.as_millis()
    ));
    n.say(
        "The gateways' own figures (commit → applied; the records written during the cut count \
         with the time they waited for the heal):",
    );
    for site in sites.iter() {
        let status = site.wan();
        for source in &status.sources {
            n.say(format!(
                "  {} ← {}: {} records applied, lag p50 {} ms, p99 {} ms, conflicts resolved {:?}",
                status.site,
                source.site,
                source.applied_total,
                source.lag_ms_p50.map_or("-".to_owned(), |v| v.to_string()),
                source.lag_ms_p99.map_or("-".to_owned(), |v| v.to_string()),
                source.conflicts_total
            ));
        }
    }
    n.absorb(&east);
    n.absorb(&west);
    Ok(())
}
