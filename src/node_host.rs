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
