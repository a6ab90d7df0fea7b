//! The WAN endpoint: one UDP socket, dialing peer sites and admitting the allowed ones.
//!
//! Admission runs in one task per incoming connection, so a slow or failing handshake never
//! holds up the others; admitted links reach [`WanEndpoint::accept`] through a queue.
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tern_node::transport::tls::peer_identity;
use tern_node::transport::{Identity, TlsMaterial};
use tokio::sync::{Mutex, mpsc};
use tokio::task::AbortHandle;

use super::link::{CLOSE_NORMAL, CLOSE_REFUSED, WanLink};
use super::{WanNetError, WanNetLimits, tls};

/// Why an incoming connection was refused, as reported by [`WanEndpoint::refusals`] (sorted).
/// - `handshake`: the QUIC/TLS handshake failed for another reason (wrong ALPN, peer gave up,
///   timeout, too many pending handshakes) or the peer opened no stream in time;
/// - `not_a_site`: the certificate chains to the CA but names no site identity (e.g. a node's);
/// - `unknown_ca`: either side's verifier refused the other's certificate chain (issued by
///   another CA);
/// - `unknown_site`: a valid site certificate for a site not in the allowed set.
pub const REFUSAL_REASONS: [&str; 4] = ["handshake", "not_a_site", "unknown_ca", "unknown_site"];

#[derive(Clone, Copy, Debug)]
enum Refusal {
    Handshake = 0,
    NotASite = 1,
    UnknownCa = 2,
    UnknownSite = 3,
}

/// Handshakes admitted at once; more are refused so a flood cannot pile up tasks.
const PENDING_HANDSHAKES_MAX: usize = 256;
/// Admitted links waiting for [`WanEndpoint::accept`].
const ACCEPT_QUEUE_LINKS: usize = 16;

/// A gateway's WAN endpoint. Cheap to clone; dropping the last clone closes it (and its links).
#[derive(Clone, Debug)]
pub struct WanEndpoint {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    accepted: Mutex<mpsc::Receiver<(String, WanLink)>>,
    accept_task: AbortHandle,
    local_addr: SocketAddr,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.close();
        self.accept_task.abort();
    }
}

/// What the accept loop and the admission tasks share with the handle.
#[derive(Debug)]
struct Shared {
    endpoint: quinn::Endpoint,
    client_config: quinn::ClientConfig,
    local_site: String,
    limits: WanNetLimits,
    allowed: RwLock<BTreeSet<String>>,
    refusals: [AtomicU64; 4],
    pending_handshakes: AtomicUsize,
    closed: AtomicBool,
}

impl Shared {
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.endpoint
            .close(quinn::VarInt::from_u32(CLOSE_NORMAL), b"endpoint closed");
    }

    fn is_allowed(&self, site: &str) -> bool {
        self.allowed
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(site)
    }

    fn refuse(&self, reason: Refusal, remote: SocketAddr, detail: &str) {
        self.refusals[reason as usize].fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            local_site = %self.local_site,
            %remote,
            reason = REFUSAL_REASONS[reason as usize],
            detail,
            "refused WAN connection"
        );
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.limits.connect_timeout_ms)
    }
}

impl WanEndpoint {
    /// Binds `listen` (UDP) as `<local_site>.tern` with `ca.pem` and `<local_site>.pem`/`.key`
    /// from `tls_dir`, accepting connections from `allowed_sites`. Needs a tokio runtime.
    pub fn bind(
        listen: SocketAddr,
        tls_dir: &Path,
        local_site: &str,
        allowed_sites: impl IntoIterator<Item = String>,
        limits: WanNetLimits,
    ) -> Result<Self, WanNetError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(WanNetError::NoRuntime);
        }
        limits.validate()?;
        let identity = site_identity(local_site)?;
        let material =
            TlsMaterial::from_dir(tls_dir, &identity).map_err(|source| WanNetError::LoadTls {
                site: local_site.to_owned(),
                dir: tls_dir.to_owned(),
                source,
            })?;
        // A certificate for another name would make every peer refuse us; say so at startup.
        match material.identity() {
            Ok(own) if own == identity => {}
            other => {
                return Err(WanNetError::OwnCertificate {
                    expected: identity.to_string(),
                    found: other.map_or_else(|e| e.to_string(), |own| own.to_string()),
                });
            }
        }
        let server_config = tls::server_config(&material, &limits)?;
        let client_config = tls::client_config(&material, &limits)?;
        let bind_error = |source| WanNetError::Bind {
            addr: listen,
            source,
        };
        let socket = std::net::UdpSocket::bind(listen).map_err(bind_error)?;
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::new(Arc::new(tls::stateless_reset_key(&material))),
            Some(server_config),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(bind_error)?;
        let local_addr = endpoint.local_addr().map_err(bind_error)?;
        let shared = Arc::new(Shared {
            endpoint,
            client_config,
            local_site: local_site.to_owned(),
            limits,
            allowed: RwLock::new(allowed_sites.into_iter().collect()),
            refusals: Default::default(),
            pending_handshakes: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        });
        let (links, accepted) = mpsc::channel(ACCEPT_QUEUE_LINKS);
        let accept_task = tokio::spawn(run_acceptor(shared.clone(), links)).abort_handle();
        tracing::info!(site = %local_site, %local_addr, "WAN endpoint bound");
        Ok(Self {
            inner: Arc::new(Inner {
                shared,
                accepted: Mutex::new(accepted),
                accept_task,
                local_addr,
            }),
        })
    }

    /// The bound UDP address (the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// Our site name.
    pub fn local_site(&self) -> &str {
        &self.inner.shared.local_site
    }

    /// Replaces the set of sites whose connections are accepted. Applies to connections
    /// admitted from now on; links already up are the caller's to close.
    pub fn set_allowed(&self, sites: BTreeSet<String>) {
        *self
            .inner
            .shared
            .allowed
            .write()
            .unwrap_or_else(PoisonError::into_inner) = sites;
    }

    /// The sites currently accepted.
    pub fn allowed(&self) -> BTreeSet<String> {
        self.inner
            .shared
            .allowed
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Dials `site`'s gateway at `addr`; the server's certificate must name `<site>.tern`.
    /// Opens the link's one bidirectional stream, but writes nothing: the peer only learns of
    /// the stream (and [`WanEndpoint::accept`] only yields the link) once the caller sends, so
    /// the dialer must send first (its `Hello`). Bounded by `connect_timeout_ms`.
    pub async fn connect(&self, addr: SocketAddr, site: &str) -> Result<WanLink, WanNetError> {
        let shared = &self.inner.shared;
        if shared.closed.load(Ordering::SeqCst) {
            return Err(WanNetError::EndpointClosed);
        }
        let identity = site_identity(site)?;
        let connecting = shared
            .endpoint
            .connect_with(shared.client_config.clone(), addr, identity.dns_name())
            .map_err(|source| WanNetError::Dial {
                site: site.to_owned(),
                addr,
                source,
            })?;
        let connect_error = |source| WanNetError::Connect {
            site: site.to_owned(),
            addr,
            source,
        };
        let dial = async {
            let connection = connecting.await.map_err(connect_error)?;
            // rustls already checked the name; this re-check guards against a verifier change.
            match peer_identity(&connection) {
                Ok(peer) if peer == identity => {}
                other => {
                    connection.close(quinn::VarInt::from_u32(CLOSE_REFUSED), b"wrong peer");
                    return Err(WanNetError::WrongPeer {
                        expected: site.to_owned(),
                        addr,
                        found: other.map_or_else(|e| e.to_string(), |peer| peer.to_string()),
                    });
                }
            }
            let (send, recv) = connection.open_bi().await.map_err(connect_error)?;
            Ok(WanLink::new(
                connection,
                site,
                send,
                recv,
                shared.limits.frame_bytes_max,
            ))
        };
        tokio::time::timeout(shared.timeout(), dial)
            .await
            .map_err(|_| WanNetError::ConnectTimeout {
                site: site.to_owned(),
                addr,
                timeout_ms: shared.limits.connect_timeout_ms,
            })?
    }

    /// The next incoming link from an allowed site, with that site's name. Refused peers are
    /// closed, logged and counted (see [`REFUSAL_REASONS`]) and waiting goes on. `None` once the
    /// endpoint is closed. Cancel-safe; concurrent callers take turns.
    pub async fn accept(&self) -> Option<(String, WanLink)> {
        let mut accepted = self.inner.accepted.lock().await;
        let next = accepted.recv().await;
        // A link queued just before close is dead already; don't hand it out.
        if self.inner.shared.closed.load(Ordering::SeqCst) {
            return None;
        }
        next
    }

    /// Refusals so far by reason, every reason listed (zero included), sorted by reason.
    pub fn refusals(&self) -> Vec<(String, u64)> {
        REFUSAL_REASONS
            .iter()
            .zip(&self.inner.shared.refusals)
            .map(|(reason, count)| ((*reason).to_owned(), count.load(Ordering::Relaxed)))
            .collect()
    }

    /// Closes the endpoint and every link on it; `accept` returns `None` from now on.
    pub fn close(&self) {
        self.inner.shared.close();
    }
}

fn site_identity(site: &str) -> Result<Identity, WanNetError> {
    Identity::site(site).map_err(|source| WanNetError::InvalidSite {
        site: site.to_owned(),
        source,
    })
}

async fn run_acceptor(shared: Arc<Shared>, links: mpsc::Sender<(String, WanLink)>) {
    while let Some(incoming) = shared.endpoint.accept().await {
        let remote = incoming.remote_address();
        if shared.pending_handshakes.load(Ordering::SeqCst) >= PENDING_HANDSHAKES_MAX {
            incoming.refuse();
            shared.refuse(Refusal::Handshake, remote, "too many pending handshakes");
            continue;
        }
        shared.pending_handshakes.fetch_add(1, Ordering::SeqCst);
        let (shared, links) = (shared.clone(), links.clone());
        tokio::spawn(async move {
            admit(&shared, incoming, remote, &links).await;
            shared.pending_handshakes.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// Handshake, identity checks and the first stream of one incoming connection; refusals are
/// counted and the connection closed (dropping a handshake in progress closes it too).
async fn admit(
    shared: &Shared,
    incoming: quinn::Incoming,
    remote: SocketAddr,
    links: &mpsc::Sender<(String, WanLink)>,
) {
    let connecting = match incoming.accept() {
        Ok(connecting) => connecting,
        Err(error) => return shared.refuse(Refusal::Handshake, remote, &error.to_string()),
    };
    let connection = match tokio::time::timeout(shared.timeout(), connecting).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(error)) => {
            return shared.refuse(classify_handshake_error(&error), remote, &error.to_string());
        }
        Err(_) => return shared.refuse(Refusal::Handshake, remote, "handshake timed out"),
    };
    let refuse = |reason, detail: &str| {
        connection.close(quinn::VarInt::from_u32(CLOSE_REFUSED), detail.as_bytes());
        shared.refuse(reason, remote, detail);
    };
    let site = match peer_identity(&connection) {
        Ok(peer) if peer.node_name().is_none() => peer.site_name().to_owned(),
        Ok(peer) => return refuse(Refusal::NotASite, &format!("{peer} is not a site identity")),
        Err(error) => return refuse(Refusal::NotASite, &error.to_string()),
    };
    if !shared.is_allowed(&site) {
        return refuse(Refusal::UnknownSite, &format!("site {site} is not allowed"));
    }
    let (send, recv) = match tokio::time::timeout(shared.timeout(), connection.accept_bi()).await {
        Ok(Ok(streams)) => streams,
        Ok(Err(error)) => {
            return shared.refuse(Refusal::Handshake, remote, &format!("site {site}: {error}"));
        }
        Err(_) => {
            return refuse(
                Refusal::Handshake,
                &format!("site {site} sent nothing within connect_timeout_ms"),
            );
        }
    };
    tracing::info!(local_site = %shared.local_site, %site, %remote, "accepted WAN link");
    let link = WanLink::new(connection, &site, send, recv, shared.limits.frame_bytes_max);
    // An error means the endpoint is gone; the link is dropped with it.
    let _ = links.send((site, link)).await;
}

/// A failed handshake is `unknown_ca` when either side's certificate verifier refused the
/// other's chain, raised here or received from the peer: TLS alert `unknown_ca` (no CA of that
/// name) or `decrypt_error` (a CA of that name, but not the one that signed: every dev CA is
/// called "tern development CA", so another grid's certificates end up here).
fn classify_handshake_error(error: &quinn::ConnectionError) -> Refusal {
    let chain_refused = |code: quinn::TransportErrorCode| {
        [
            rustls::AlertDescription::UnknownCA,
            rustls::AlertDescription::DecryptError,
        ]
        .into_iter()
        .any(|alert| code == quinn::TransportErrorCode::crypto(u8::from(alert)))
    };
    match error {
        quinn::ConnectionError::TransportError(e) if chain_refused(e.code) => Refusal::UnknownCa,
        quinn::ConnectionError::ConnectionClosed(close) if chain_refused(close.error_code) => {
            Refusal::UnknownCa
        }
        _ => Refusal::Handshake,
    }
}
