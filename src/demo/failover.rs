//! The failover scene: a 3-node site in this process (real QUIC between nodes, real TCP to the
//! client), a node stopped abruptly, the new primary, no write lost, failback on restart.
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tern_node::admin::NodeStatus;
use tern_node::cluster::{NodeId, PartitionMap, PeerSpec};
use tern_node::core::Keyspace;
use tern_node::server::NodeHandle;
use tern_node::transport::certs::init_dev_pki;

use super::narrator::{Expect, Narrator};
use crate::node_host;
use crate::up::plan::{PortPlan, SiteSpec, allocate_ports, plan_site};

const NODES: u32 = 3;
const PARTITIONS: u32 = 8;
const KEYS: usize = 12;
/// Formation, failover and failback bounds: generous for a debug build on a busy machine.
const SETTLE_MAX: Duration = Duration::from_secs(20);
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// The site's files (certificates, Raft state), removed when the scene ends.
struct SiteDir(PathBuf);

impl Drop for SiteDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub async fn failover(n: &mut Narrator) -> anyhow::Result<()> {
    let dir = SiteDir(std::env::temp_dir().join(format!("tern-demo-site-{}", std::process::id())));
    let certs = dir.0.join("certs");
    let spec = SiteSpec {
        name: "demo".to_owned(),
        site_id: 1,
        nodes: NODES,
        partitions: PARTITIONS,
        backups: 1,
    };
    init_dev_pki(&certs, std::slice::from_ref(&spec.name), NODES).context("writing dev certs")?;
    let ports = allocate_ports(PortPlan::Free, NODES)?;
    let plan = plan_site(&spec, &dir.0, &certs, &ports)?;
    let mut nodes: Vec<Option<NodeHandle>> = Vec::new();
    for node in &plan.nodes {
        let config = tern_node::config::NodeConfig {
            admin_listen: None,
            ..node.config.clone()
        };
        nodes.push(Some(node_host::start(config).await?));
    }
    let outcome = play(n, &plan, &mut nodes).await;
    for node in nodes.into_iter().flatten() {
        node.stop_now().await;
    }
    outcome
}

async fn play(
    n: &mut Narrator,
    plan: &crate::up::plan::SitePlan,
    nodes: &mut [Option<NodeHandle>],
) -> anyhow::Result<()> {
    let preferred = preferred_primaries(plan)?;
    let formed = wait_for(nodes, "the site to form", |s| {
        settled(s) && primaries(&s[0]) == preferred
    })
    .await?;
    n.say(format!(
        "A second grid: 3 nodes in this process, {PARTITIONS} partitions, each with a primary \
         and one synchronous backup; formed in {} ms.",
        formed.as_millis()
    ));
    let mut site = n
        .connect_to(&format!("redis://{}/", plan.nodes[0].resp_addr))
        .await?;
    for i in 0..KEYS {
        let key = format!("order:{i}");
        site.check(&["SET", &key, &format!("paid-{i}")], Expect::Ok)
            .await?;
    }
    // A key whose primary is not node 1, the node the client talks to.
    let keyspace = Keyspace::new(PARTITIONS)?;
    let (key, partition, victim) = (0..KEYS)
        .find_map(|i| {
            let key = format!("order:{i}");
            let p = keyspace.partition_of(key.as_bytes()).0;
            match preferred.get(usize::from(p)).copied().flatten() {
                Some(primary) if primary != 1 => Some((key, p, primary)),
                _ => None,
            }
        })
        .context("some key lives on node 2 or 3")?;
    let epoch = status_of(nodes, 0)?.partitions[usize::from(partition)].epoch;
    n.say(format!(
        "{key} lives in partition {partition}; its primary is node {victim} (epoch {epoch})."
    ));
    let victim_index = usize::try_from(victim - 1)?;
    let handle = nodes[victim_index].take().context("victim running")?;
    handle.stop_now().await;
    let crashed = Instant::now();
    n.say(format!(
        "Node {victim} stops abruptly (no drain). Node 1 forwards the next write and holds it \
         until a backup is promoted:"
    ));
    site.check(&["SET", &key, "refunded"], Expect::Ok).await?;
    let failover = crashed.elapsed();
    let after = status_of(nodes, 0)?.partitions[usize::from(partition)].clone();
    let new_primary = after.primary.context("a new primary")?;
    if new_primary == victim || after.epoch <= epoch {
        bail!(
            "partition {partition} still on node {victim} (epoch {})",
            after.epoch
        );
    }
    n.say(format!(
        "New primary of partition {partition}: node {new_primary}, epoch {}; the write went \
         through {} ms after the crash.",
        after.epoch,
        failover.as_millis()
    ));
    n.say("No acknowledged write was lost:");
    for i in 0..KEYS {
        let k = format!("order:{i}");
        let want = if k == key {
            "refunded".to_owned()
        } else {
            format!("paid-{i}")
        };
        site.check(&["GET", &k], Expect::Text(want)).await?;
    }
    let config = plan.nodes[victim_index].config.clone();
    nodes[victim_index] = Some(
        node_host::start(tern_node::config::NodeConfig {
            admin_listen: None,
            ..config
        })
        .await?,
    );
    let restarted = Instant::now();
    wait_for(nodes, "failback", |s| {
        settled(s) && primaries(&s[0]) == preferred
    })
    .await?;
    let back = status_of(nodes, 0)?.partitions[usize::from(partition)].clone();
    n.say(format!(
        "Node {victim} restarts, catches up and takes partition {partition} back (primary node \
         {}, epoch {}) {} ms after its start.",
        back.primary.unwrap_or(0),
        back.epoch,
        restarted.elapsed().as_millis()
    ));
    site.check(&["GET", &key], Expect::Bulk("refunded")).await?;
    n.absorb(&site);
    Ok(())
}

/// Each partition's preferred primary: placement is deterministic, so the demo computes the
/// bootstrap map the nodes compute, and waits for it (a slow-starting node may briefly have
/// been marked down and its partitions placed elsewhere).
fn preferred_primaries(plan: &crate::up::plan::SitePlan) -> anyhow::Result<Vec<Option<u64>>> {
    let cluster = plan.nodes[0]
        .config
        .cluster
        .as_ref()
        .context("a site node has a cluster section")?;
    let peers = cluster
        .peers
        .iter()
        .map(|p| {
            Ok(PeerSpec {
                id: NodeId::new(p.id).context("peer ids are non-zero")?,
                addr: p.quic_addr.to_string(),
                zone: p.zone.clone(),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let map = PartitionMap::bootstrap(u16::try_from(PARTITIONS)?, cluster.backups, peers);
    Ok(map
        .partitions()
        .iter()
        .map(|a| a.preferred.first().map(|n| n.get()))
        .collect())
}

fn status_of(nodes: &[Option<NodeHandle>], i: usize) -> anyhow::Result<NodeStatus> {
    Ok(nodes[i].as_ref().context("node running")?.status())
}

fn primaries(status: &NodeStatus) -> Vec<Option<u64>> {
    status.partitions.iter().map(|p| p.primary).collect()
}

fn settled(statuses: &[NodeStatus]) -> bool {
    let Some(first) = statuses.first() else {
        return false;
    };
    statuses.iter().all(|s| {
        s.ready
            && s.map_version == first.map_version
            && s.partitions.len() == PARTITIONS as usize
            && s.partitions.iter().all(|p| {
                p.primary.is_some()
                    && p.handover_to.is_none()
                    && p.replicas
                        .iter()
                        .any(|r| r.in_sync && Some(r.node_id) != p.primary)
            })
    })
}

/// Polls the running nodes' statuses until `ok`; returns how long it took.
async fn wait_for(
    nodes: &[Option<NodeHandle>],
    what: &str,
    ok: impl Fn(&[NodeStatus]) -> bool,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let statuses: Vec<NodeStatus> = nodes.iter().flatten().map(NodeHandle::status).collect();
        if ok(&statuses) {
            return Ok(started.elapsed());
        }
        if started.elapsed() > SETTLE_MAX {
            let seen: Vec<String> = statuses
                .iter()
                .map(|s| {
                    format!(
                        "node {} ready={} map v{} primaries {:?} members {:?}",
                        s.node_id,
                        s.ready,
                        s.map_version,
                        primaries(s),
                        s.members
                            .iter()
                            .map(|m| (m.node_id, m.state, m.incarnation))
                            .collect::<Vec<_>>()
                    )
                })
                .collect();
            bail!(
                "waited {SETTLE_MAX:?} for {what}; statuses:\n{}",
                seen.join("\n")
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
