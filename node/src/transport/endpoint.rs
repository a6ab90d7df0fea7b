//! The [`Transport`] handle: one QUIC endpoint, one long-lived connection per peer.
//!
//! **Who dials.** For each pair of peers, the side whose identity sorts first (by DNS name)
//! dials, if it has the other's address; the other side only accepts. Both sides compute the
//! same answer, so conforming peers never race two connections. An accepted connection from a
//! configured peer always replaces that peer's current one (newest wins): a peer only dials
//! when it has no connection, so an older one is stale (e.g. the peer restarted).
//!
//! **Reconnect.** The dialer redials after `reconnect_backoff_min_ms`, doubling per failure up to
//! `reconnect_backoff_max_ms`; a connection that lasted longer than the max resets the backoff.
//! The peer's address may be a DNS name: it is resolved again before every dial (a restarted
//! Kubernetes pod keeps its name but not its IP), and a name that does not resolve yet (a pod
//! not scheduled) is one more failed attempt, retried with the same backoff.
//! Keepalives and the idle timeout notice a silent peer within ~`idle_timeout_ms`; a restarted
//! peer is noticed sooner, through a stateless reset (the reset key derives from the peer's
//! private key, so it survives restarts).
//!
//! Must be created inside a tokio runtime: it spawns its tasks there. Dropping the
//! [`Transport`] stops every task and closes the endpoint.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn::Runtime as _;
use thiserror::Error;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::addr::{PeerAddr, Resolve, SystemResolver};
use super::config::{PeerConfig, TransportConfig, TransportLimits};
use super::connection::{PeerLink, close_code, run_connection, run_writer};
use super::frame::Channel;
use super::identity::{Identity, IdentityError};
use super::stats::{PeerStatus, TransportStats, TransportStatsSnapshot, add};
use super::tls::{self, TlsError};

/// A frame received from a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    pub peer: Identity,
    pub channel: Channel,
    pub frame: Bytes,
}

#[derive(Debug, Error)]
pub enum TransportError {
    #[error("bind UDP socket on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("create QUIC endpoint: {0}")]
    Endpoint(std::io::Error),
    #[error("transport must be created inside a tokio runtime")]
    NoRuntime,
    #[error("invalid transport limits: {0}")]
    Limits(String),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("own certificate: {0}")]
    OwnIdentity(#[from] IdentityError),
    #[error("peer {0} is configured twice")]
    DuplicatePeer(Identity),
    #[error("peer {0} is this transport's own identity")]
    SelfPeer(Identity),
}

/// Why a frame was not queued. Nothing is ever dropped silently: every refusal is one of these.
#[derive(Debug, Error)]
pub enum SendError {
    #[error("unknown peer {0}")]
    UnknownPeer(Identity),
    #[error("frame of {bytes} bytes exceeds frame_bytes_max {max}")]
    FrameTooLarge { bytes: usize, max: usize },
    /// The (peer, channel) queue holds `send_queue_frames_max` frames; the frame is handed back.
    #[error("send queue to {peer} on channel {channel:?} is full")]
    QueueFull {
        peer: Identity,
        channel: Channel,
        frame: Bytes,
    },
    /// The peer was removed or the transport shut down.
    #[error("transport link closed")]
    Closed,
}

/// State shared by the handle and its tasks.
#[derive(Debug)]
pub(crate) struct Shared {
    pub local: Identity,
    pub endpoint: quinn::Endpoint,
    pub client_config: quinn::ClientConfig,
    pub limits: TransportLimits,
    pub stats: Arc<TransportStats>,
    pub inbound: mpsc::Sender<Inbound>,
    resolver: Arc<dyn Resolve>,
    peers: RwLock<BTreeMap<Identity, Arc<PeerLink>>>,
    generation: AtomicU64,
}

impl Shared {
    pub fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn peer(&self, identity: &Identity) -> Option<Arc<PeerLink>> {
        self.peers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(identity)
            .cloned()
    }
}

/// A cheap, cloneable sender for one (peer, channel); skips the peer lookup of
/// [`Transport::send`] on hot paths.
#[derive(Debug, Clone)]
pub struct PeerSender {
    peer: Identity,
    channel: Channel,
    queue: mpsc::Sender<Bytes>,
    frame_bytes_max: usize,
    stats: Arc<TransportStats>,
}

impl PeerSender {
    /// Queues `frame` without waiting; a full queue is [`SendError::QueueFull`].
    pub fn send(&self, frame: Bytes) -> Result<(), SendError> {
        self.check_size(&frame)?;
        self.queue.try_send(frame).map_err(|error| match error {
            mpsc::error::TrySendError::Full(frame) => {
                add(&self.stats.send_queue_full_total, 1);
                SendError::QueueFull {
                    peer: self.peer.clone(),
                    channel: self.channel,
                    frame,
                }
            }
            mpsc::error::TrySendError::Closed(_) => SendError::Closed,
        })
    }

    /// Queues `frame`, waiting for room in the queue (backpressure).
    pub async fn send_wait(&self, frame: Bytes) -> Result<(), SendError> {
        self.check_size(&frame)?;
        self.queue.send(frame).await.map_err(|_| SendError::Closed)
    }

    pub fn peer(&self) -> &Identity {
        &self.peer
    }

    pub fn channel(&self) -> Channel {
        self.channel
    }

    fn check_size(&self, frame: &Bytes) -> Result<(), SendError> {
        if frame.len() > self.frame_bytes_max {
            return Err(SendError::FrameTooLarge {
                bytes: frame.len(),
                max: self.frame_bytes_max,
            });
        }
        Ok(())
    }
}

/// The transport handle. Not `Clone`: share it behind an `Arc`; dropping it shuts it down.
#[derive(Debug)]
pub struct Transport {
    shared: Arc<Shared>,
    accept_task: AbortHandle,
}

/// The one place a real UDP socket is created. A simulator (e.g. turmoil) passes its own
/// `AsyncUdpSocket` to [`Transport::bind_with_socket`] instead.
pub fn bind_udp_socket(addr: SocketAddr) -> Result<Arc<dyn quinn::AsyncUdpSocket>, TransportError> {
    let bind_error = |source| TransportError::Bind { addr, source };
    let socket = std::net::UdpSocket::bind(addr).map_err(bind_error)?;
    quinn::TokioRuntime
        .wrap_udp_socket(socket)
        .map_err(bind_error)
}

impl Transport {
    /// Binds `config.bind_addr` and starts accepting and dialing. Returns the handle and the
    /// single queue of frames received from every peer on every channel.
    pub fn bind(
        config: TransportConfig,
    ) -> Result<(Self, mpsc::Receiver<Inbound>), TransportError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(TransportError::NoRuntime);
        }
        let socket = bind_udp_socket(config.bind_addr)?;
        Self::bind_with_socket(config, socket, Arc::new(quinn::TokioRuntime))
    }

    /// Like [`Transport::bind`], resolving peer addresses with `resolver` instead of the
    /// system's (tests script where a name points).
    pub fn bind_with_resolver(
        config: TransportConfig,
        resolver: Arc<dyn Resolve>,
    ) -> Result<(Self, mpsc::Receiver<Inbound>), TransportError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(TransportError::NoRuntime);
        }
        let socket = bind_udp_socket(config.bind_addr)?;
        Self::start(config, socket, Arc::new(quinn::TokioRuntime), resolver)
    }

    /// Like [`Transport::bind`] over a caller-made socket and runtime (simulation seam).
    /// `config.bind_addr` is ignored.
    pub fn bind_with_socket(
        config: TransportConfig,
        socket: Arc<dyn quinn::AsyncUdpSocket>,
        runtime: Arc<dyn quinn::Runtime>,
    ) -> Result<(Self, mpsc::Receiver<Inbound>), TransportError> {
        Self::start(config, socket, runtime, Arc::new(SystemResolver))
    }

    fn start(
        config: TransportConfig,
        socket: Arc<dyn quinn::AsyncUdpSocket>,
        runtime: Arc<dyn quinn::Runtime>,
        resolver: Arc<dyn Resolve>,
    ) -> Result<(Self, mpsc::Receiver<Inbound>), TransportError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(TransportError::NoRuntime);
        }
        let limits = config.limits;
        limits.validate().map_err(TransportError::Limits)?;
        let local = config.tls.identity()?;
        let stats = Arc::new(TransportStats::default());
        let server_config = tls::server_config(&config.tls, &limits, stats.clone())?;
        let client_config = tls::client_config(&config.tls, &limits, stats.clone())?;
        let endpoint_config =
            quinn::EndpointConfig::new(Arc::new(tls::stateless_reset_key(&config.tls)));
        let endpoint = quinn::Endpoint::new_with_abstract_socket(
            endpoint_config,
            Some(server_config),
            socket,
            runtime,
        )
        .map_err(TransportError::Endpoint)?;
        let (inbound, inbound_rx) = mpsc::channel(limits.inbound_queue_frames_max);
        let shared = Arc::new(Shared {
            local,
            endpoint,
            client_config,
            limits,
            stats,
            inbound,
            resolver,
            peers: RwLock::new(BTreeMap::new()),
            generation: AtomicU64::new(0),
        });
        // Peers first: a connection accepted before its peer is configured would be refused.
        for peer in config.peers {
            if let Err(error) = add_peer(&shared, peer) {
                stop(&shared);
                return Err(error);
            }
        }
        let accept_task = tokio::spawn(run_acceptor(shared.clone())).abort_handle();
        let transport = Self {
            shared,
            accept_task,
        };
        tracing::info!(identity = %transport.shared.local, addr = ?transport.local_addr().ok(), "transport bound");
        Ok((transport, inbound_rx))
    }

    /// Our identity, as named by our certificate.
    pub fn local_identity(&self) -> &Identity {
        &self.shared.local
    }

    /// The bound UDP address (the real port when bound to port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.shared.endpoint.local_addr()
    }

    pub fn limits(&self) -> &TransportLimits {
        &self.shared.limits
    }

    /// Queues `frame` for `peer` on `channel` without waiting.
    pub fn send(&self, peer: &Identity, channel: Channel, frame: Bytes) -> Result<(), SendError> {
        self.sender(peer, channel)?.send(frame)
    }

    /// Queues `frame`, waiting while the (peer, channel) queue is full.
    pub async fn send_wait(
        &self,
        peer: &Identity,
        channel: Channel,
        frame: Bytes,
    ) -> Result<(), SendError> {
        self.sender(peer, channel)?.send_wait(frame).await
    }

    /// A reusable sender for one (peer, channel).
    pub fn sender(&self, peer: &Identity, channel: Channel) -> Result<PeerSender, SendError> {
        let link = self
            .shared
            .peer(peer)
            .ok_or_else(|| SendError::UnknownPeer(peer.clone()))?;
        Ok(PeerSender {
            peer: link.identity.clone(),
            channel,
            queue: link.queues[channel.index()].clone(),
            frame_bytes_max: self.shared.limits.frame_bytes_max,
            stats: self.shared.stats.clone(),
        })
    }

    /// Adds a peer to the allow-list (and dials it if this side dials; see the module doc).
    pub fn add_peer(&self, peer: PeerConfig) -> Result<(), TransportError> {
        add_peer(&self.shared, peer)
    }

    /// Removes a peer: it leaves the allow-list, its queues are dropped and its connection is
    /// closed. Returns false if it was not configured.
    pub fn remove_peer(&self, peer: &Identity) -> bool {
        let removed = self
            .shared
            .peers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(peer);
        match removed {
            Some(link) => {
                link.shut(close_code::PEER_REMOVED, b"peer removed from configuration");
                true
            }
            None => false,
        }
    }

    pub fn peer_status(&self, peer: &Identity) -> Option<PeerStatus> {
        self.shared.peer(peer).map(|link| link.status())
    }

    /// Every configured peer's status, ordered by identity.
    pub fn peers_status(&self) -> Vec<PeerStatus> {
        let links: Vec<Arc<PeerLink>> = self
            .shared
            .peers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        links.iter().map(|link| link.status()).collect()
    }

    /// Live counters (for the metrics layer).
    pub fn stats(&self) -> Arc<TransportStats> {
        self.shared.stats.clone()
    }

    pub fn stats_snapshot(&self) -> TransportStatsSnapshot {
        self.shared.stats.snapshot()
    }

    /// Closes every connection with a reason and waits (up to `idle_timeout_ms`) for peers to be
    /// told, so they reconnect at once instead of waiting out their idle timeout.
    pub async fn shutdown(self) {
        self.stop();
        let wait = Duration::from_millis(self.shared.limits.idle_timeout_ms);
        let _ = tokio::time::timeout(wait, self.shared.endpoint.wait_idle()).await;
    }

    fn stop(&self) {
        self.accept_task.abort();
        stop(&self.shared);
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.stop();
    }
}

fn add_peer(shared: &Arc<Shared>, peer: PeerConfig) -> Result<(), TransportError> {
    if peer.identity == shared.local {
        return Err(TransportError::SelfPeer(peer.identity));
    }
    let dials = shared.local < peer.identity;
    let (link, queues) = PeerLink::new(
        peer.identity.clone(),
        peer.addr.clone(),
        dials && peer.addr.is_some(),
        shared.limits.send_queue_frames_max,
    );
    let link = Arc::new(link);
    {
        let mut peers = shared.peers.write().unwrap_or_else(PoisonError::into_inner);
        if peers.contains_key(&peer.identity) {
            return Err(TransportError::DuplicatePeer(peer.identity));
        }
        peers.insert(peer.identity.clone(), link.clone());
    }
    for (channel, queue) in Channel::ALL.into_iter().zip(queues) {
        let task = tokio::spawn(run_writer(shared.clone(), link.clone(), channel, queue));
        link.add_task(task.abort_handle());
    }
    match (dials, peer.addr.clone()) {
        (true, Some(addr)) => {
            let task = tokio::spawn(run_dialer(shared.clone(), link.clone(), addr));
            link.add_task(task.abort_handle());
        }
        (true, None) => tracing::warn!(
            peer = %peer.identity,
            "this side should dial the peer (its identity sorts first) but has no address for it; \
             they will not connect"
        ),
        (false, _) => {}
    }
    Ok(())
}

/// Closes every link and the endpoint (tasks end with them).
fn stop(shared: &Shared) {
    let links: Vec<Arc<PeerLink>> = shared
        .peers
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .values()
        .cloned()
        .collect();
    for link in links {
        link.shut(close_code::SHUTDOWN, b"transport shutting down");
    }
    shared.endpoint.close(
        quinn::VarInt::from_u32(close_code::SHUTDOWN),
        b"transport shutting down",
    );
}

async fn run_acceptor(shared: Arc<Shared>) {
    while let Some(incoming) = shared.endpoint.accept().await {
        tokio::spawn(accept_one(shared.clone(), incoming));
    }
}

async fn accept_one(shared: Arc<Shared>, incoming: quinn::Incoming) {
    let remote = incoming.remote_address();
    let timeout = Duration::from_millis(shared.limits.connect_timeout_ms);
    let conn = match tokio::time::timeout(timeout, incoming).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(error)) => {
            add(&shared.stats.handshakes_failed_total, 1);
            tracing::warn!(%remote, %error, "inbound handshake failed");
            return;
        }
        Err(_) => {
            add(&shared.stats.handshakes_failed_total, 1);
            tracing::warn!(%remote, "inbound handshake timed out");
            return;
        }
    };
    let identity = match tls::peer_identity(&conn) {
        Ok(identity) => identity,
        Err(error) => {
            add(&shared.stats.refused_bad_certificate_total, 1);
            tracing::warn!(%remote, %error, "refused connection: certificate names no identity");
            conn.close(
                quinn::VarInt::from_u32(close_code::IDENTITY_MISMATCH),
                b"certificate names no tern identity",
            );
            return;
        }
    };
    let Some(link) = shared.peer(&identity) else {
        add(&shared.stats.refused_identity_not_allowed_total, 1);
        tracing::warn!(%remote, peer = %identity, "refused connection: identity not in the allow-list");
        conn.close(
            quinn::VarInt::from_u32(close_code::NOT_ALLOWED),
            b"identity not in the allow-list",
        );
        return;
    };
    run_connection(shared, link, conn).await;
}

async fn run_dialer(shared: Arc<Shared>, link: Arc<PeerLink>, addr: PeerAddr) {
    let min = Duration::from_millis(shared.limits.reconnect_backoff_min_ms);
    let max = Duration::from_millis(shared.limits.reconnect_backoff_max_ms);
    let mut backoff = min;
    // Which of several resolved addresses to try: moves on after a failed dial.
    let mut pick = 0usize;
    loop {
        // Resolved again on every attempt: the peer may have moved since the last one.
        match resolve(&shared, &addr, pick).await {
            Ok(target) => {
                link.record_dialed(target);
                match dial(&shared, &link, target).await {
                    Ok(conn) => {
                        let started = Instant::now();
                        run_connection(shared.clone(), link.clone(), conn).await;
                        if started.elapsed() >= max {
                            backoff = min;
                        }
                    }
                    Err(error) => {
                        pick = pick.wrapping_add(1);
                        link.record_error(error);
                    }
                }
            }
            Err(error) => link.record_unresolved(error),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(max);
    }
}

/// One address of `addr` to dial, the `pick`-th (modulo) of those the endpoint can reach: an
/// IPv4 socket cannot send to IPv6 addresses (`localhost` often resolves to both).
async fn resolve(shared: &Shared, addr: &PeerAddr, pick: usize) -> Result<SocketAddr, String> {
    let timeout = Duration::from_millis(shared.limits.connect_timeout_ms);
    let found = match tokio::time::timeout(timeout, shared.resolver.resolve(addr)).await {
        Ok(Ok(found)) => found,
        Ok(Err(error)) => return Err(format!("resolve {addr}: {error}")),
        Err(_) => return Err(format!("resolve {addr}: timed out")),
    };
    let local_v4 = shared
        .endpoint
        .local_addr()
        .is_ok_and(|local| local.is_ipv4());
    let usable: Vec<SocketAddr> = found
        .into_iter()
        .filter(|a| !local_v4 || a.is_ipv4())
        .collect();
    if usable.is_empty() {
        return Err(format!(
            "resolve {addr}: no address reachable from this endpoint"
        ));
    }
    Ok(usable[pick % usable.len()])
}

async fn dial(
    shared: &Shared,
    link: &PeerLink,
    addr: SocketAddr,
) -> Result<quinn::Connection, String> {
    let connecting = shared
        .endpoint
        .connect_with(shared.client_config.clone(), addr, link.identity.dns_name())
        .map_err(|e| format!("dial {addr}: {e}"))?;
    let timeout = Duration::from_millis(shared.limits.connect_timeout_ms);
    let conn = match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(error)) => {
            add(&shared.stats.handshakes_failed_total, 1);
            return Err(format!("handshake with {addr}: {error}"));
        }
        Err(_) => {
            add(&shared.stats.handshakes_failed_total, 1);
            return Err(format!("handshake with {addr} timed out"));
        }
    };
    // rustls already checked the certificate is valid for the dialed name; check that the
    // identity we route by is exactly that one (a certificate may carry other names).
    match tls::peer_identity(&conn) {
        Ok(identity) if identity == link.identity => Ok(conn),
        other => {
            conn.close(
                quinn::VarInt::from_u32(close_code::IDENTITY_MISMATCH),
                b"certificate does not name the dialed identity",
            );
            add(&shared.stats.refused_bad_certificate_total, 1);
            Err(format!(
                "{addr} presented {other:?}, expected {}",
                link.identity
            ))
        }
    }
}
