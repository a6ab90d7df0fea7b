//! The gateway host: runs a site's WAN gateway inside a node process, driving the sans-IO
//! [`Delegator`](crate::Delegator)s and [`Sink`](crate::Sink)s over the QUIC links of
//! [`crate::net`] and the node's partitions through its [`Router`](tern_node::shell::Router).
//!
//! ```text
//!  feed (task per partition) ── WanChanges via router ──▶ primaries' change logs
//!        │ Event::Feed                                      ▲ WanApply via router
//!        ▼                                                  │
//!  engine (one task: delegators, sinks, timers) ── Event::Applied ── apply tasks
//!        │ LinkOut                    ▲ Event::Received
//!        ▼                            │
//!  links (dialer per target, acceptor for sources; reader + writer per link)
//! ```
//!
//! One engine task owns all protocol state — the sans-IO [`SiteGateway`](crate::site::SiteGateway),
//! which makes every decision — so no locks guard it; tasks talk to it through one unbounded
//! event channel (bounded in practice: each feed and apply task has at most one event
//! outstanding, and links only carry what the peers' windows allow).
mod apply;
pub mod cursors;
mod engine;
mod feed;
pub mod generations;
pub mod limits;
mod links;
pub mod params;
mod repair;
pub mod storage;

pub use crate::site::lag;
pub use params::HostParams;

use crate::site::{SiteGateway, SiteGatewayConfig};
use engine::{Engine, EngineIo, Event};
use feed::{FeedRewind, FeedSettings, spawn_feed};
use limits::ADMIN_QUEUE_LEN;
use links::spawn_acceptor;
use std::time::Duration;
use tern_conflict::SiteId;
use tern_node::admin::{WanAdminRequest, WanTargetSpec};
use tern_node::shell::unix_now_ms;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::net::{WanEndpoint, WanNetLimits};

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("binding the WAN endpoint: {0}")]
    Endpoint(#[from] crate::net::WanNetError),
    #[error("loading the WAN log generations: {0}")]
    Generations(#[from] generations::GenerationsError),
    #[error("wan.peers: {0}")]
    Peer(String),
    #[error("creating {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
}

/// A running gateway; [`GatewayHandle::shutdown`] stops it cleanly (cursors saved, backlogs
/// synced). Dropping it aborts the tasks without saving (like a crash: the backlog and the
/// cursors on disk still bring everything back).
pub struct GatewayHandle {
    events: mpsc::UnboundedSender<Event>,
    engine: Option<JoinHandle<()>>,
    tasks: Vec<JoinHandle<()>>,
    local_addr: std::net::SocketAddr,
}

impl std::fmt::Debug for GatewayHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayHandle")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl GatewayHandle {
    /// The bound UDP address of the gateway's QUIC endpoint.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.local_addr
    }

    pub async fn shutdown(mut self) {
        for task in &self.tasks {
            task.abort();
        }
        let (done, wait) = oneshot::channel();
        if self.events.send(Event::Shutdown(done)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), wait).await;
        }
        if let Some(engine) = self.engine.take() {
            let _ = engine.await;
        }
    }
}

impl Drop for GatewayHandle {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Some(engine) = &self.engine {
            engine.abort();
        }
    }
}

/// Starts the gateway on the current tokio runtime.
pub fn start(params: HostParams) -> Result<GatewayHandle, HostError> {
    let HostParams {
        config,
        site_id,
        router,
        hub,
        resolvers,
        tombstone_retention_ms,
        commits,
    } = params;
    std::fs::create_dir_all(&config.data_dir).map_err(|source| HostError::DataDir {
        path: config.data_dir.display().to_string(),
        source,
    })?;
    let generations = generations::load(&generations::path_in(&config.data_dir))?;
    let endpoint = WanEndpoint::bind(
        config.listen,
        &config.tls_dir,
        &config.site,
        config.peers.iter().map(|p| p.site.clone()),
        WanNetLimits::default(),
    )?;
    let local_addr = endpoint.local_addr();
    let (events, mut event_rx) = mpsc::unbounded_channel::<Event>();
    let now_ms = unix_now_ms();
    let core = SiteGateway::new(
        SiteGatewayConfig {
            site: config.site.clone(),
            site_id: SiteId(site_id),
            partition_count: router.keyspace().partition_count(),
            limits: params::gateway_limits(&config),
            resolvers,
            tombstone_retention_ms,
            apply_records_max: config.feed_records_max,
            apply_bytes_max: config.feed_bytes_max,
            repair_interval_ms: config.repair_interval_ms,
            cursor_persist_ms: config.cursor_persist_ms,
        },
        storage::FsSiteStorage::new(config.data_dir.clone(), params::backlog_config(&config)),
        generations,
        now_ms,
    );
    let mut engine = Engine::new(
        core,
        EngineIo {
            router: router.clone(),
            hub: hub.clone(),
            endpoint: endpoint.clone(),
            ids: links::ConnIds::default(),
            events: events.clone(),
            reconnect_ms: config.reconnect_ms,
        },
    );
    for peer in &config.peers {
        let spec = WanTargetSpec {
            site: peer.site.clone(),
            site_id: peer.site_id,
            addr: peer.addr.to_string(),
        };
        engine
            .add_peer(&spec, now_ms)
            .map_err(|e| HostError::Peer(e.to_string()))?;
    }
    let mut tasks = vec![spawn_acceptor(
        endpoint,
        engine.ids().clone(),
        events.clone(),
    )];
    let settings = FeedSettings {
        poll_ms_max: config.feed_poll_ms_max,
        records_max: config.feed_records_max,
        bytes_max: config.feed_bytes_max,
        // `block_writes`: hold each partition's log after the feed's cursor, so a full backlog
        // blocks local writes at the primaries instead of letting the log drop records.
        hold_ms: match config.overflow {
            tern_node::config::WanOverflow::BlockWrites => {
                feed::hold_ms_for(config.feed_poll_ms_max)
            }
            tern_node::config::WanOverflow::DropAndRepair => 0,
        },
    };
    let rewind = FeedRewind::new(router.keyspace().partitions().count());
    engine.feed_rewind = Some(rewind.clone());
    for partition in router.keyspace().partitions() {
        let after = engine.feed_start(partition);
        tasks.push(spawn_feed(
            router.clone(),
            partition,
            after,
            settings,
            rewind.clone(),
            commits.subscribe(partition),
            events.clone(),
        ));
    }
    let mut admin_rx = hub.attach(ADMIN_QUEUE_LEN);
    let admin_events = events.clone();
    tasks.push(tokio::spawn(async move {
        while let Some(request) = admin_rx.recv().await {
            if admin_events.send(Event::Admin(request)).is_err() {
                return;
            }
        }
    }));
    let engine_task = tokio::spawn(async move {
        engine.handle_timers(unix_now_ms());
        loop {
            let now = unix_now_ms();
            let wait = engine.next_deadline_ms().saturating_sub(now);
            tokio::select! {
                event = event_rx.recv() => {
                    let Some(event) = event else { return };
                    if !engine.handle(event, unix_now_ms()) {
                        return;
                    }
                    // Drain what else is queued before looking at timers: fewer wakeups.
                    while let Ok(event) = event_rx.try_recv() {
                        if !engine.handle(event, unix_now_ms()) {
                            return;
                        }
                    }
                }
                () = tokio::time::sleep(Duration::from_millis(wait)) => {}
            }
            engine.handle_timers(unix_now_ms());
        }
    });
    tracing::info!(site = %config.site, %local_addr, peers = config.peers.len(), "WAN gateway started");
    Ok(GatewayHandle {
        events,
        engine: Some(engine_task),
        tasks,
        local_addr,
    })
}

/// Keeps the admin request type reachable for callers building their own hubs.
pub type AdminRequest = WanAdminRequest;
