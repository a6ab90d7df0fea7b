//! In-process two-site harness shared by the gateway's integration tests: a one-node site with
//! its WAN gateway, peering, status and polling helpers.
// Each test file uses a different part of it.
#![allow(dead_code)]
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tern_gateway::host::{GatewayHandle, HostParams};
use tern_node::admin::{WanAdminError, WanAdminRequest, WanHub, WanTargetSpec, WanTargetStatus};
use tern_node::config::{NodeConfig, WanConfig};
use tern_node::limits::Limits;
use tern_node::server::NodeHandle;
use tokio::sync::oneshot;

/// Partitions of a site unless a test's `tune` says otherwise.
pub const PARTITIONS: u32 = 8;

pub struct Site {
    pub name: &'static str,
    pub id: u16,
    pub node: NodeHandle,
    pub gateway: GatewayHandle,
    pub hub: WanHub,
    /// The node's and the gateway's data (backlogs, cursors); dropped with the site.
    pub data: TempDir,
}

impl Site {
    /// Stops the gateway and the node; the site's memory, backlogs and cursors are gone.
    pub async fn stop(self) {
        self.gateway.shutdown().await;
        self.node.shutdown().await;
    }
}

/// Starts site `name` (site id `id`) with its gateway on `listen`; `tune` adjusts both configs
/// first. The gateway's start is retried for a while: a port just released by a stopped
/// gateway may take a moment to be free again.
pub async fn start_site(
    name: &'static str,
    id: u16,
    pki: &std::path::Path,
    listen: SocketAddr,
    tune: impl FnOnce(&mut NodeConfig, &mut WanConfig),
) -> Site {
    let data = tempfile::tempdir().expect("data dir");
    let mut wan = WanConfig::new(name, listen, pki.to_path_buf(), data.path().join("wan"));
    let mut config = NodeConfig {
        listen: "127.0.0.1:0".parse().expect("literal"),
        site: id,
        partitions: PARTITIONS,
        workers: 1,
        tick_ms: 10,
        ..NodeConfig::default()
    };
    tune(&mut config, &mut wan);
    config.wan = Some(wan.clone());
    let node = tern_node::server::start(config).await.expect("node starts");
    let hub = node.wan_hub();
    let started = Instant::now();
    let gateway = loop {
        let params = HostParams {
            config: wan.clone(),
            site_id: id,
            router: node.router(),
            hub: hub.clone(),
            resolvers: node.resolvers(),
            tombstone_retention_ms: Limits::default().tombstone_retention_ms,
            commits: node.commit_watch(),
        };
        match tern_gateway::host::start(params) {
            Ok(gateway) => break gateway,
            Err(error) if started.elapsed() < Duration::from_secs(10) => {
                eprintln!("gateway {name} not started yet ({error}); retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("gateway {name} starts: {error}"),
        }
    };
    Site {
        name,
        id,
        node,
        gateway,
        hub,
        data,
    }
}

/// An operator request to `hub`'s gateway, which must accept it.
pub async fn admin(
    hub: &WanHub,
    request: impl FnOnce(oneshot::Sender<Result<(), WanAdminError>>) -> WanAdminRequest,
) {
    let (reply, answer) = oneshot::channel();
    hub.sender()
        .expect("a gateway is attached")
        .send(request(reply))
        .await
        .expect("the gateway takes requests");
    answer
        .await
        .expect("the gateway answers")
        .expect("request accepted");
}

/// Make `from` ship to (and accept) `to`, whose gateway is reached at `addr` (its own address,
/// or a fault proxy in front of it).
pub async fn add_peer(from: &Site, to: &Site, addr: SocketAddr) {
    let spec = WanTargetSpec {
        site: to.name.to_owned(),
        site_id: to.id,
        addr: addr.to_string(),
    };
    admin(&from.hub, |reply| WanAdminRequest::AddTarget {
        spec,
        reply,
    })
    .await;
}

/// The status of `site`'s first (in these tests: only) target.
pub fn target_status(site: &Site) -> Option<WanTargetStatus> {
    site.hub.get().and_then(|s| s.targets.into_iter().next())
}

/// Polls `check` every 20 ms until it holds; fails the test after `bound`.
pub async fn eventually_within(bound: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < bound, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn resp(node: &NodeHandle) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://{}/", node.local_addr()))
        .expect("client url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis client connects")
}
