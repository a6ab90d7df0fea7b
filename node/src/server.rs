//! Starting and stopping a node.
//!
//! A node runs on its own threads, whatever runtime the caller uses: a control thread runs an
//! actix `System` and the accept loop; `workers` arbiter threads run the partition actors and
//! the client connections. [`start`] only waits for that to be ready, so it can be awaited from
//! any tokio runtime (current-thread `#[tokio::test]` included), and several nodes can run in
//! one process.
use crate::config::{ConfigError, NodeConfig};
use crate::core::{Keyspace, KeyspaceError};
use crate::resp::{NodeContext, accept_loop};
use crate::shell::Workers;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use tokio::sync::oneshot;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("invalid configuration: {0}")]
    Keyspace(#[from] KeyspaceError),
    #[error("binding the RESP listener on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("starting the node's control thread: {0}")]
    Spawn(std::io::Error),
    #[error("starting the node: {0}")]
    Startup(String),
}

/// A running node. Dropping it stops the node in the background; [`shutdown`](Self::shutdown)
/// stops it and waits until every thread has exited.
#[derive(Debug)]
pub struct NodeHandle {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    stopped: Option<oneshot::Receiver<()>>,
    thread: Option<JoinHandle<()>>,
}

impl NodeHandle {
    /// The address the RESP listener is bound to (with the real port when configured as 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, closes every client connection, stops the partition actors and joins
    /// the node's threads.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(stopped) = self.stopped.take() {
            // An error means the control thread ended without signalling (it panicked); it is
            // gone either way.
            let _ = stopped.await;
        }
        if let Some(thread) = self.thread.take() {
            // The control thread signals `stopped` as its last act, so this join is immediate.
            if thread.join().is_err() {
                tracing::error!("the node's control thread panicked");
            }
        }
    }
}

impl Drop for NodeHandle {
    fn drop(&mut self) {
        // Best effort and non-blocking: the control thread stops everything on its own.
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub async fn start(config: NodeConfig) -> Result<NodeHandle, StartError> {
    config.validate()?;
    let keyspace = Keyspace::new(config.partitions)?;
    let bind_error = |source| StartError::Bind {
        addr: config.listen,
        source,
    };
    let listener = std::net::TcpListener::bind(config.listen).map_err(bind_error)?;
    listener.set_nonblocking(true).map_err(bind_error)?;
    let local_addr = listener.local_addr().map_err(bind_error)?;

    let (ready_tx, ready_rx) = oneshot::channel();
    let (stop_tx, stop_rx) = oneshot::channel();
    let (stopped_tx, stopped_rx) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name(format!("tern-node-{}", local_addr.port()))
        .spawn(move || {
            run_node(
                config,
                keyspace,
                listener,
                local_addr.port(),
                ready_tx,
                stop_rx,
            );
            let _ = stopped_tx.send(());
        })
        .map_err(StartError::Spawn)?;
    let mut handle = NodeHandle {
        local_addr,
        stop: Some(stop_tx),
        stopped: Some(stopped_rx),
        thread: Some(thread),
    };
    match ready_rx.await {
        Ok(Ok(())) => Ok(handle),
        Ok(Err(reason)) => {
            handle.stop.take();
            handle.shutdown().await;
            Err(StartError::Startup(reason))
        }
        Err(_) => {
            handle.shutdown().await;
            Err(StartError::Startup(
                "the node's control thread exited during startup".to_owned(),
            ))
        }
    }
}

/// The control thread: actix System, arbiters and actors, then the accept loop until told to
/// stop; then arbiters are stopped and joined (outside the System's runtime, as join blocks).
fn run_node(
    config: NodeConfig,
    keyspace: Keyspace,
    listener: std::net::TcpListener,
    port: u16,
    ready: oneshot::Sender<Result<(), String>>,
    stop: oneshot::Receiver<()>,
) {
    let system = actix::System::new();
    let workers = system.block_on(async move {
        let workers = Workers::start(&config, keyspace);
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(err) => {
                let _ = ready.send(Err(format!("registering the listener: {err}")));
                return workers;
            }
        };
        let node = Arc::new(NodeContext::new(
            workers.router().clone(),
            config.limits.clone(),
            config.requirepass.clone(),
            port,
            config.site,
            workers.len(),
        ));
        let _ = ready.send(Ok(()));
        accept_loop(listener, node, workers.handles(), stop).await;
        workers
    });
    workers.stop_and_join();
    drop(system);
}
