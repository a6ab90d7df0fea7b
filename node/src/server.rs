//! Starting and stopping a node.
//!
//! A node runs on its own threads, whatever runtime the caller uses: a control thread runs an
//! actix `System` with the cluster actor, the QUIC transport, the inbound dispatcher, the admin
//! HTTP server and the RESP accept loop; `workers` arbiter threads run the partition actors and
//! the client connections. [`start`] only waits for that to be ready, so it can be awaited from
//! any tokio runtime (current-thread `#[tokio::test]` included), and several nodes can run in
//! one process.
//!
//! Without `[cluster]` the node is a one-node site on the same path: the same replica cores,
//! router and cluster actor, over a local map of one node with no backups and no transport.
use crate::admin::{self, AdminRequest, AdminRequestSender, NodeStatus, StatusHub, WanHub};
use crate::cluster::{
    FilePersistence, MapCommand, NodeId, PartitionMap, PeerSpec, RaftGroup, RaftGroupConfig,
    RaftPersistence, tracing_logger,
};
use crate::config::{ClusterConfig, ConfigError, NodeConfig};
use crate::core::{Keyspace, KeyspaceError};
use crate::host_memory;
use crate::resp::{NodeContext, accept_loop};
use crate::shell::{
    Admin, ClusterActor, ClusterParts, CommitWatch, Dispatcher, DrainSelf, Forwarder, MapLog,
    MapView, PartitionLinks, Peers, ReplicaBoard, Router, Routes, StatusInput, StopCluster,
    Workers,
};
use crate::transport::{Identity, Inbound, PeerConfig, TlsMaterial, Transport, TransportConfig};
use actix::{Addr, AsyncContext};
use std::collections::BTreeMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tern_conflict::{KeyspaceResolvers, RegistryError, ResolverRegistry};
use tokio::sync::{mpsc, oneshot};

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
    #[error("invalid configuration: {setting}: {source}")]
    Resolver {
        /// The setting that names the resolver, e.g. `wan.resolvers[1].resolver (prefix "c:")`.
        setting: String,
        source: RegistryError,
    },
}

/// How the control thread ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StopKind {
    /// Tell peers the links close (they reconnect at once instead of timing out).
    Graceful,
    /// Drop everything as is (tests simulate a crash with it).
    Abrupt,
}

/// What the control thread hands back once the node runs.
struct Running {
    cluster: Addr<ClusterActor>,
    router: Router,
    commits: CommitWatch,
    wan: WanHub,
    hub: StatusHub,
    admin: AdminRequestSender,
    admin_addr: Option<SocketAddr>,
}

/// A running node. Dropping it stops the node in the background (without draining);
/// [`shutdown`](Self::shutdown) drains it first and waits until every thread has exited.
#[derive(Debug)]
pub struct NodeHandle {
    local_addr: SocketAddr,
    node_id: u64,
    clustered: bool,
    drain_bound: Duration,
    cluster: Addr<ClusterActor>,
    router: Router,
    commits: CommitWatch,
    resolvers: Arc<KeyspaceResolvers>,
    wan: WanHub,
    hub: StatusHub,
    admin: AdminRequestSender,
    admin_addr: Option<SocketAddr>,
    stop: Option<oneshot::Sender<StopKind>>,
    stopped: Option<oneshot::Receiver<()>>,
    thread: Option<JoinHandle<()>>,
}

impl NodeHandle {
    /// The address the RESP listener is bound to (with the real port when configured as 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The bound admin HTTP address, when `admin_listen` is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// This node's id in its site (1 for a standalone node).
    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// The latest published status.
    pub fn status(&self) -> NodeStatus {
        self.hub.get()
    }

    pub fn status_hub(&self) -> StatusHub {
        self.hub.clone()
    }

    /// Submits commands to partitions from outside the node (the WAN gateway host): routed to
    /// each partition's primary like a client request, from any tokio runtime.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// Signals of the local replicas' commits (the WAN gateway's feed waits on them).
    pub fn commit_watch(&self) -> CommitWatch {
        self.commits.clone()
    }

    /// The conflict resolver of every key, as the partitions apply remote writes with it (the
    /// WAN gateway counts conflicts per resolver with the same table).
    pub fn resolvers(&self) -> Arc<KeyspaceResolvers> {
        Arc::clone(&self.resolvers)
    }

    /// The WAN gateway's status and request channel, shared with the admin HTTP server.
    pub fn wan_hub(&self) -> WanHub {
        self.wan.clone()
    }

    /// Where operator requests (drain, undrain) go, as the admin HTTP server sends them.
    pub fn admin_requests(&self) -> AdminRequestSender {
        self.admin.clone()
    }

    /// Drains this node (its primaries move to in-sync backups, bounded by
    /// `cluster.shutdown_drain_ms_max`), then stops accepting, closes every client connection,
    /// stops the actors and joins the node's threads. A rolling restart through this path
    /// fails no client write.
    pub async fn shutdown(mut self) {
        if self.clustered {
            let (reply, drained) = oneshot::channel();
            let started = std::time::Instant::now();
            self.cluster.do_send(DrainSelf { reply });
            if tokio::time::timeout(self.drain_bound, drained)
                .await
                .is_err()
            {
                tracing::warn!(
                    node = self.node_id,
                    "drain did not finish within shutdown_drain_ms_max; stopping anyway"
                );
            } else {
                tracing::info!(node = self.node_id, took = ?started.elapsed(), "drained");
            }
        }
        self.stop_with(StopKind::Graceful).await;
    }

    /// Stops at once, without draining and without telling peers: what a crash looks like to
    /// the rest of the site (they notice through missing heartbeats).
    pub async fn stop_now(mut self) {
        self.stop_with(StopKind::Abrupt).await;
    }

    async fn stop_with(&mut self, kind: StopKind) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(kind);
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
            let _ = stop.send(StopKind::Abrupt);
        }
    }
}

/// Start a node whose `[wan]` resolver names refer to the built-in conflict resolvers.
pub async fn start(config: NodeConfig) -> Result<NodeHandle, StartError> {
    start_with_registry(config, ResolverRegistry::with_builtins()).await
}

/// Start a node whose `[wan]` resolver names are looked up in `registry`: how a binary that
/// embeds its own resolver plugins makes them configurable.
pub async fn start_with_registry(
    config: NodeConfig,
    registry: ResolverRegistry,
) -> Result<NodeHandle, StartError> {
    config.validate()?;
    let keyspace = Keyspace::new(config.partitions)?;
    let resolvers = Arc::new(keyspace_resolvers(&config, &registry)?);
    let bind_error = |source| StartError::Bind {
        addr: config.listen,
        source,
    };
    let listener = std::net::TcpListener::bind(config.listen).map_err(bind_error)?;
    listener.set_nonblocking(true).map_err(bind_error)?;
    let local_addr = listener.local_addr().map_err(bind_error)?;
    let node_id = config
        .cluster
        .as_ref()
        .map_or(STANDALONE_NODE, |c| c.node_id);
    let clustered = config.cluster.is_some();
    let drain_bound = Duration::from_millis(
        config
            .cluster
            .as_ref()
            .map_or(0, |c| c.shutdown_drain_ms_max),
    );

    let (ready_tx, ready_rx) = oneshot::channel();
    let (stop_tx, stop_rx) = oneshot::channel();
    let (stopped_tx, stopped_rx) = oneshot::channel();
    let node_resolvers = Arc::clone(&resolvers);
    let thread = std::thread::Builder::new()
        .name(format!("tern-node-{}", local_addr.port()))
        .spawn(move || {
            run_node(
                config,
                keyspace,
                node_resolvers,
                listener,
                local_addr,
                ready_tx,
                stop_rx,
            );
            let _ = stopped_tx.send(());
        })
        .map_err(StartError::Spawn)?;
    let startup_failed = |reason: String| StartError::Startup(reason);
    let running = match ready_rx.await {
        Ok(Ok(running)) => running,
        Ok(Err(reason)) => {
            join_quietly(stopped_rx, thread).await;
            return Err(startup_failed(reason));
        }
        Err(_) => {
            join_quietly(stopped_rx, thread).await;
            return Err(startup_failed(
                "the node's control thread exited during startup".to_owned(),
            ));
        }
    };
    Ok(NodeHandle {
        local_addr,
        node_id,
        clustered,
        drain_bound,
        cluster: running.cluster,
        router: running.router,
        commits: running.commits,
        resolvers,
        wan: running.wan,
        hub: running.hub,
        admin: running.admin,
        admin_addr: running.admin_addr,
        stop: Some(stop_tx),
        stopped: Some(stopped_rx),
        thread: Some(thread),
    })
}

/// The node's conflict resolvers per key prefix, from `[wan]` (every key last-writer-wins
/// without it). Built once; every partition shares it.
fn keyspace_resolvers(
    config: &NodeConfig,
    registry: &ResolverRegistry,
) -> Result<KeyspaceResolvers, StartError> {
    let Some(wan) = &config.wan else {
        return Ok(KeyspaceResolvers::default());
    };
    // Each rule is looked up on its own first, so the error names the setting at fault.
    for (i, rule) in wan.resolvers.iter().enumerate() {
        registry
            .get(&rule.resolver)
            .map_err(|source| StartError::Resolver {
                setting: format!("wan.resolvers[{i}].resolver (prefix {:?})", rule.prefix),
                source,
            })?;
    }
    let rules = wan
        .resolvers
        .iter()
        .map(|rule| (rule.prefix.as_str(), rule.resolver.as_str()));
    KeyspaceResolvers::new(registry, rules, &wan.default_resolver).map_err(|source| {
        StartError::Resolver {
            setting: "wan.default_resolver".to_owned(),
            source,
        }
    })
}

async fn join_quietly(stopped: oneshot::Receiver<()>, thread: JoinHandle<()>) {
    let _ = stopped.await;
    if thread.join().is_err() {
        tracing::error!("the node's control thread panicked during startup");
    }
}

/// In a node's empty data directory: start by joining the running site (see `join_site`).
pub const JOIN_MARKER: &str = "join";

/// A standalone node is node 1 of its own one-node site.
const STANDALONE_NODE: u64 = 1;
/// Its only incarnation: its data lives and dies with the process.
const STANDALONE_INCARNATION: u64 = 1;

/// The control thread: actix System, arbiters and actors, then the accept loop until told to
/// stop; then arbiters are stopped and joined (outside the System's runtime, as join blocks).
fn run_node(
    config: NodeConfig,
    keyspace: Keyspace,
    resolvers: Arc<KeyspaceResolvers>,
    listener: std::net::TcpListener,
    local_addr: SocketAddr,
    ready: oneshot::Sender<Result<Running, String>>,
    stop: oneshot::Receiver<StopKind>,
) {
    let system = actix::System::new();
    let workers = system.block_on(async move {
        let node = match boot(&config, keyspace, resolvers, local_addr) {
            Ok(node) => node,
            Err(reason) => {
                let _ = ready.send(Err(reason));
                return None;
            }
        };
        let Booted {
            workers,
            router,
            board,
            cluster,
            hub,
            transport,
            inbound,
            peers,
            forwarder,
        } = node;
        if let (Some(inbound), Some(forwarder)) = (inbound, forwarder) {
            let dispatcher = Dispatcher {
                peers,
                cluster: cluster.clone(),
                router: router.clone(),
                forwarder,
            };
            actix::spawn(dispatcher.run(inbound));
        }
        let wan = WanHub::new();
        let (admin, mut admin_rx) = mpsc::channel::<AdminRequest>(64);
        let admin_cluster = cluster.clone();
        actix::spawn(async move {
            while let Some(request) = admin_rx.recv().await {
                admin_cluster.do_send(Admin(request));
            }
        });
        let admin_server = match config.admin_listen {
            Some(addr) => {
                let ctx = admin::AdminContext {
                    hub: hub.clone(),
                    wan: wan.clone(),
                    requests: admin.clone(),
                    transport_stats: transport.as_ref().map(|t| t.stats()),
                };
                match admin::http::start(addr, ctx) {
                    Ok(server) => Some(server),
                    Err(e) => {
                        let _ = ready
                            .send(Err(format!("binding the admin HTTP server on {addr}: {e}")));
                        return Some(workers);
                    }
                }
            }
            None => None,
        };
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(err) => {
                let _ = ready.send(Err(format!("registering the listener: {err}")));
                return Some(workers);
            }
        };
        let node = Arc::new(NodeContext::new(
            router.clone(),
            config.limits.clone(),
            config.requirepass.clone(),
            local_addr.port(),
            config.site,
            workers.len(),
            hub.clone(),
        ));
        let running = Running {
            cluster: cluster.clone(),
            router,
            commits: CommitWatch(board),
            wan,
            hub,
            admin,
            admin_addr: admin_server.as_ref().map(|s| s.local_addr()),
        };
        if ready.send(Ok(running)).is_err() {
            return Some(workers);
        }
        let (stop_accepting, stopped_accepting) = oneshot::channel();
        let kind = tokio::spawn(async move {
            let kind = stop.await.unwrap_or(StopKind::Abrupt);
            let _ = stop_accepting.send(());
            kind
        });
        accept_loop(listener, node, workers.handles(), stopped_accepting).await;
        let kind = kind.await.unwrap_or(StopKind::Abrupt);
        cluster.do_send(StopCluster);
        if let Some(server) = admin_server {
            server.shutdown().await;
        }
        if let Some(transport) = transport {
            match kind {
                StopKind::Graceful => transport.shutdown().await,
                StopKind::Abrupt => drop(transport),
            }
        }
        Some(workers)
    });
    if let Some(workers) = workers {
        workers.stop_and_join();
    }
    drop(system);
}

/// Everything `boot` started.
struct Booted {
    workers: Workers,
    router: Router,
    board: Arc<ReplicaBoard>,
    cluster: Addr<ClusterActor>,
    hub: StatusHub,
    transport: Option<Transport>,
    inbound: Option<mpsc::Receiver<Inbound>>,
    peers: Arc<Peers>,
    forwarder: Option<Arc<Forwarder>>,
}

/// Membership and transport: what differs between a standalone node and a site member.
struct Membership {
    me: NodeId,
    incarnation: u64,
    log: MapLog,
    transport: Option<Transport>,
    inbound: Option<mpsc::Receiver<Inbound>>,
    peers: Arc<Peers>,
    status: StatusInput,
    timings: crate::cluster::ClusterTimings,
    planner_repropose_ms: u64,
    configured: Vec<PeerSpec>,
}

fn boot(
    config: &NodeConfig,
    keyspace: Keyspace,
    resolvers: Arc<KeyspaceResolvers>,
    local_addr: SocketAddr,
) -> Result<Booted, String> {
    let membership = match &config.cluster {
        Some(cluster) => join_site(config, cluster, keyspace)?,
        None => standalone(keyspace, local_addr)?,
    };
    let Membership {
        me,
        incarnation,
        log,
        transport,
        inbound,
        peers,
        status,
        timings,
        planner_repropose_ms,
        configured,
    } = membership;
    let view = Arc::new(MapView::new(log.map().clone(), me, incarnation));
    let routes = Arc::new(Routes::new(&view));
    let data_cap = host_memory::effective_data_cap(
        config.limits.data_bytes_max,
        host_memory::container_memory_limit_bytes(),
    );
    match data_cap {
        host_memory::DataCap::HalfOfContainerLimit { limit_bytes, cap } => tracing::info!(
            limit_bytes,
            data_bytes_max = cap,
            "limits.data_bytes_max not set: capping data at half the container's memory limit"
        ),
        host_memory::DataCap::None => tracing::info!(
            "limits.data_bytes_max not set and no container memory limit: data is not capped"
        ),
        host_memory::DataCap::Configured(_) => {}
    }
    let board = Arc::new(
        ReplicaBoard::new(keyspace.partition_count()).with_data_bytes_max(data_cap.bytes()),
    );
    let forwarder = transport
        .as_ref()
        .map(|_| Arc::new(Forwarder::new(Arc::clone(&peers), &config.limits)));
    // The cluster actor's address exists before the actor, so partition actors can hold it.
    let cluster_ctx = actix::Context::<ClusterActor>::new();
    let cluster_addr = cluster_ctx.address();
    let links = PartitionLinks {
        peers: Arc::clone(&peers),
        cluster: cluster_addr.clone().recipient(),
        board: Arc::clone(&board),
    };
    let workers = Workers::start(config, keyspace, me, &view, &links, &resolvers);
    let router = Router::new(
        keyspace,
        workers.actors(),
        &config.limits,
        me.get(),
        incarnation,
        Arc::clone(&routes),
        forwarder.clone(),
    );
    let hub = StatusHub::new();
    let actor = ClusterActor::new(ClusterParts {
        me,
        incarnation,
        log,
        peers: Arc::clone(&peers),
        forwarder: forwarder.clone(),
        partitions: workers.actors(),
        routes,
        board: Arc::clone(&board),
        hub: hub.clone(),
        status,
        timings,
        planner_repropose_ms,
        configured,
    });
    let cluster = cluster_ctx.run(actor);
    Ok(Booted {
        workers,
        router,
        board,
        cluster,
        hub,
        transport,
        inbound,
        peers,
        forwarder,
    })
}

/// A one-node site: node 1, registered, primary of every partition, no backups.
fn standalone(keyspace: Keyspace, local_addr: SocketAddr) -> Result<Membership, String> {
    let me = NodeId::new(STANDALONE_NODE).ok_or("node id 1 is non-zero")?;
    let mut map = PartitionMap::bootstrap(
        keyspace.partition_count(),
        0,
        [PeerSpec {
            id: me,
            addr: local_addr.to_string(),
            zone: None,
        }],
    );
    map.apply(&MapCommand::MarkUp {
        id: me,
        incarnation: STANDALONE_INCARNATION,
    })
    .map_err(|e| format!("register the standalone node: {e}"))?;
    let resp = local_addr.to_string();
    Ok(Membership {
        me,
        incarnation: STANDALONE_INCARNATION,
        log: MapLog::Local(map),
        transport: None,
        inbound: None,
        peers: Arc::new(Peers::none()),
        status: StatusInput {
            name: "standalone".to_owned(),
            site: String::new(),
            resp_addr: resp.clone(),
            members: BTreeMap::from([(me, ("standalone".to_owned(), resp))]),
        },
        timings: crate::cluster::ClusterTimings::default(),
        planner_repropose_ms: 500,
        configured: Vec::new(),
    })
}

/// A member of a multi-node site: Raft state from `data_dir`, a new incarnation, the QUIC
/// transport to every peer.
fn join_site(
    config: &NodeConfig,
    cluster: &ClusterConfig,
    keyspace: Keyspace,
) -> Result<Membership, String> {
    let me = NodeId::new(cluster.node_id).ok_or("cluster.node_id: must be non-zero")?;
    let identity = cluster.identity().map_err(|e| e.to_string())?;
    let tls = TlsMaterial::from_dir(&cluster.tls_dir, &identity).map_err(|e| {
        format!(
            "loading TLS material for {identity} from {}: {e}",
            cluster.tls_dir.display()
        )
    })?;
    let mut persistence = FilePersistence::open(&cluster.data_dir)
        .map_err(|e| format!("opening the data directory: {e}"))?;
    let incarnation = persistence
        .next_incarnation()
        .map_err(|e| format!("reading the incarnation counter: {e}"))?;
    let restored = persistence
        .load()
        .map_err(|e| format!("loading the Raft state: {e}"))?;
    let mut peers_by_id: Vec<_> = cluster.peers.iter().collect();
    peers_by_id.sort_by_key(|p| p.id);
    let mut specs = Vec::new();
    let mut others = Vec::new();
    let mut members = BTreeMap::new();
    for peer in peers_by_id {
        let id = NodeId::new(peer.id).ok_or("cluster.peers: ids must be non-zero")?;
        let peer_identity =
            Identity::node(&cluster.site, &peer.name).map_err(|e| format!("cluster.peers: {e}"))?;
        specs.push(PeerSpec {
            id,
            addr: peer.quic_addr.to_string(),
            zone: peer.zone.clone(),
        });
        members.insert(
            id,
            (
                peer_identity.short_name().to_owned(),
                peer.resp_addr.to_string(),
            ),
        );
        if id != me {
            others.push((id, peer_identity, peer.quic_addr.clone()));
        }
    }
    let configured = specs.clone();
    // A node added to a running site joins it (no voters, an empty map, until the leader adds
    // it and sends its snapshot) instead of bootstrapping a site of its own: the operator marks
    // it so with the file `join` in its empty data directory. Ignored once state is persisted.
    let joining = restored.is_none()
        && (cluster.join_existing || cluster.data_dir.join(JOIN_MARKER).exists());
    let (voters, initial) = if joining {
        tracing::info!(node = %me, "new member with an empty data directory: joining the running site");
        (
            Vec::new(),
            PartitionMap::new(keyspace.partition_count(), cluster.backups),
        )
    } else {
        let voters: Vec<NodeId> = specs.iter().map(|s| s.id).collect();
        let initial = PartitionMap::bootstrap(keyspace.partition_count(), cluster.backups, specs);
        (voters, initial)
    };
    let group = RaftGroup::new(
        RaftGroupConfig {
            id: me,
            voters,
            timings: cluster.timings.clone(),
            seed: RandomState::new().hash_one(me.get()),
        },
        initial,
        restored,
        &tracing_logger(),
    )
    .map_err(|e| format!("starting the partition map's Raft group: {e}"))?;
    if group.map().partition_count() != keyspace.partition_count() {
        return Err(format!(
            "{} holds a map of {} partitions but the configuration says {}",
            cluster.data_dir.display(),
            group.map().partition_count(),
            keyspace.partition_count()
        ));
    }
    let (transport, inbound) = Transport::bind(TransportConfig {
        bind_addr: cluster.listen_quic,
        tls,
        peers: others
            .iter()
            .map(|(_, identity, addr)| PeerConfig {
                identity: identity.clone(),
                addr: Some(addr.clone()),
            })
            .collect(),
        limits: cluster.transport.clone(),
    })
    .map_err(|e| {
        format!(
            "starting the QUIC transport on {}: {e}",
            cluster.listen_quic
        )
    })?;
    let peers = Peers::new(
        &transport,
        others.into_iter().map(|(id, identity, _)| (id, identity)),
    )
    .map_err(|e| e.to_string())?;
    let own = cluster.own_peer().map(|p| p.resp_addr.to_string());
    tracing::info!(node = %me, %identity, incarnation, "joining the site");
    Ok(Membership {
        me,
        incarnation,
        log: MapLog::Raft {
            group: Box::new(group),
            persistence,
        },
        transport: Some(transport),
        inbound: Some(inbound),
        peers: Arc::new(peers),
        status: StatusInput {
            name: identity.short_name().to_owned(),
            site: cluster.site.clone(),
            resp_addr: own.unwrap_or_else(|| config.listen.to_string()),
            members,
        },
        timings: cluster.timings.clone(),
        planner_repropose_ms: cluster.planner_repropose_ms,
        configured,
    })
}
