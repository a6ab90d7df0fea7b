//! Hosts a `tern_node` server inside this process: the runtime it needs and how to start it.
//! `tern node` and `tern demo` both go through here, so they run the node the same way.
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};

use anyhow::Context;
use tern_node::config::NodeConfig;
use tern_node::server::{self, NodeHandle};

/// Loopback, port chosen by the OS: what the demo listens on.
pub const LOOPBACK_ANY_PORT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// Runs `fut` to completion on the runtime the node's actors and listener need.
pub fn block_on<T, F: Future<Output = anyhow::Result<T>>>(fut: F) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    runtime.block_on(fut)
}

pub async fn start(config: NodeConfig) -> anyhow::Result<NodeHandle> {
    server::start(config).await.context("starting the node")
}

/// The stdout line announcing the WAN gateway's bound UDP address (when `[wan]` is set).
pub const GATEWAY_LISTENING_PREFIX: &str = "tern gateway listening on ";

/// A node and, when its config has `[wan]`, the site's WAN gateway it hosts.
pub struct HostedNode {
    pub node: NodeHandle,
    pub gateway: Option<tern_gateway::host::GatewayHandle>,
}

impl HostedNode {
    /// Stops the gateway first (cursors saved, backlogs synced), then drains and stops the node.
    pub async fn shutdown(self) {
        if let Some(gateway) = self.gateway {
            gateway.shutdown().await;
        }
        self.node.shutdown().await;
    }
}

/// Starts the node, then its WAN gateway if configured (the gateway reads and applies through
/// the node's router, so the node comes first).
pub async fn start_hosted(config: NodeConfig) -> anyhow::Result<HostedNode> {
    let wan = config.wan.clone();
    let site_id = config.site;
    let tombstone_retention_ms = config.limits.tombstone_retention_ms;
    let node = start(config).await?;
    let gateway = match wan {
        None => None,
        Some(wan) => {
            let params = tern_gateway::host::HostParams {
                config: wan,
                site_id,
                router: node.router(),
                hub: node.wan_hub(),
                resolvers: node.resolvers(),
                tombstone_retention_ms,
                commits: node.commit_watch(),
            };
            Some(tern_gateway::host::start(params).context("starting the WAN gateway")?)
        }
    };
    Ok(HostedNode { node, gateway })
}
