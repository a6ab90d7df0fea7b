//! The host's network edge: per target a dialer that keeps one link up (reconnecting with
//! backoff), and an acceptor for links from source sites. Each link gets a reader task
//! (messages → engine events) and a writer task (engine's outgoing messages → the stream).
//! Links carry a connection id so the engine ignores events of a link it already replaced.
use super::engine::Event;
use crate::net::{WanEndpoint, WanLink};
use crate::site::Side;
use crate::wire::Message;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tern_node::transport::{PeerAddr, Resolve, SystemResolver};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Where the engine sends a link's outgoing messages (one `Vec` = one write).
pub type LinkOut = mpsc::UnboundedSender<Vec<Message>>;

/// Connection ids, unique within the process.
#[derive(Clone, Debug, Default)]
pub struct ConnIds(Arc<AtomicU64>);

impl ConnIds {
    pub fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// Keeps a link to `site` at `addr` up until aborted. A DNS name is resolved again before
/// every attempt (a gateway that moved is found at its new address), and each address it
/// resolves to is tried in turn.
pub fn spawn_dialer(
    endpoint: WanEndpoint,
    site: String,
    addr: PeerAddr,
    reconnect_ms: u64,
    ids: ConnIds,
    events: mpsc::UnboundedSender<Event>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let base = Duration::from_millis(reconnect_ms.max(1));
        let mut backoff = base;
        loop {
            match dial(&endpoint, &site, &addr).await {
                Ok(link) => {
                    backoff = base;
                    let conn = ids.next();
                    tracing::info!(target_site = %site, %addr, conn, "WAN link to target up");
                    run_link(link, site.clone(), conn, Side::ToTarget, &events).await;
                    tracing::info!(target_site = %site, conn, "WAN link to target down");
                }
                Err(error) => {
                    tracing::debug!(target_site = %site, %addr, %error, "dialing WAN target");
                    backoff = (backoff * 2).min(base * 16);
                }
            }
            if events.is_closed() {
                return;
            }
            tokio::time::sleep(backoff).await;
        }
    })
}

/// One attempt: resolve `addr`, then try each address it names.
async fn dial(endpoint: &WanEndpoint, site: &str, addr: &PeerAddr) -> Result<WanLink, String> {
    let found = SystemResolver
        .resolve(addr)
        .await
        .map_err(|e| format!("resolving {addr}: {e}"))?;
    let mut last = format!("{addr} resolved to no address");
    for socket in found {
        match endpoint.connect(socket, site).await {
            Ok(link) => return Ok(link),
            Err(error) => last = format!("{socket}: {error}"),
        }
    }
    Err(last)
}

/// Accepts links from source sites until the endpoint closes.
pub fn spawn_acceptor(
    endpoint: WanEndpoint,
    ids: ConnIds,
    events: mpsc::UnboundedSender<Event>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some((site, link)) = endpoint.accept().await {
            let conn = ids.next();
            let events = events.clone();
            tracing::info!(source_site = %site, conn, "WAN link from source up");
            tokio::spawn(async move {
                run_link(link, site.clone(), conn, Side::FromSource, &events).await;
                tracing::info!(source_site = %site, conn, "WAN link from source down");
            });
        }
    })
}

/// Runs one link until either direction fails; tells the engine when it is up and down.
async fn run_link(
    link: WanLink,
    site: String,
    conn: u64,
    side: Side,
    events: &mpsc::UnboundedSender<Event>,
) {
    let WanLink { mut tx, mut rx, .. } = link;
    let (out, mut out_rx) = mpsc::unbounded_channel::<Vec<Message>>();
    if events
        .send(Event::LinkUp {
            side,
            site: site.clone(),
            conn,
            out,
        })
        .is_err()
    {
        return;
    }
    let writer = async {
        while let Some(messages) = out_rx.recv().await {
            if let Err(error) = tx.send(&messages).await {
                tracing::debug!(%site, conn, %error, "writing to WAN link");
                return;
            }
        }
    };
    let reader = async {
        loop {
            match rx.recv().await {
                Ok(Some(message)) => {
                    let event = Event::Received {
                        side,
                        site: site.clone(),
                        conn,
                        message,
                    };
                    if events.send(event).is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(error) => {
                    tracing::debug!(%site, conn, %error, "reading from WAN link");
                    return;
                }
            }
        }
    };
    tokio::select! {
        () = writer => {}
        () = reader => {}
    }
    let _ = events.send(Event::LinkDown {
        side,
        site: site.clone(),
        conn,
    });
}
