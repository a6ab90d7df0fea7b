//! One peer's link: its send queues, its current connection, and the tasks that move frames.
//!
//! - One writer task per (peer, channel) drains that channel's bounded queue in batches onto one
//!   long-lived unidirectional stream of the peer's *current* connection, and moves to the next
//!   connection when one replaces it. The queue outlives connections, so frames queued while the
//!   peer is unreachable go out after the reconnect.
//! - Every established connection (dialed or accepted) runs [`run_connection`]: it becomes the
//!   peer's current connection (closing any older one: newest wins), accepts the peer's streams
//!   and spawns a reader per stream, and when the connection ends it is withdrawn.
//! - Delivery is at most once across a connection loss: a batch whose write fails is counted in
//!   `frames_lost_on_disconnect_total`, never retried (the protocols above acknowledge).
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;

use super::addr::PeerAddr;
use super::endpoint::{Inbound, Shared};
use super::frame::{Channel, FrameDecoder, encode_batch, parse_stream_header, stream_header};
use super::identity::Identity;
use super::stats::{PeerStatus, add};

/// Application close codes (the reason text says the same in words).
pub(crate) mod close_code {
    pub const SHUTDOWN: u32 = 0;
    pub const NOT_ALLOWED: u32 = 1;
    pub const REPLACED: u32 = 2;
    pub const IDENTITY_MISMATCH: u32 = 3;
    pub const PEER_REMOVED: u32 = 4;
}

/// Stream stop codes sent by a reader.
mod stop_code {
    pub const FRAME_TOO_LARGE: u32 = 1;
    pub const BAD_HEADER: u32 = 2;
}

/// Largest chunk a reader takes from quinn at once.
const READ_CHUNK_BYTES_MAX: usize = 256 * 1024;

/// The connection currently used for a peer; `generation` tells connections apart.
#[derive(Clone, Debug)]
pub(crate) struct LiveConnection {
    pub conn: quinn::Connection,
    pub generation: u64,
}

#[derive(Debug, Default)]
struct LinkState {
    connected: bool,
    ever_connected: bool,
    since_unix_ms: Option<u64>,
    reconnects: u64,
    last_error: Option<String>,
    /// The address the last dial went to (the peer address as resolved then).
    dialed: Option<SocketAddr>,
}

#[derive(Debug)]
pub(crate) struct PeerLink {
    pub identity: Identity,
    pub addr: Option<PeerAddr>,
    pub dials: bool,
    pub queues: [mpsc::Sender<Bytes>; Channel::COUNT],
    pub current: watch::Sender<Option<LiveConnection>>,
    state: Mutex<LinkState>,
    tasks: Mutex<Vec<AbortHandle>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded data stays consistent even if a holder panicked (plain field updates).
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl PeerLink {
    /// A link and the receiving ends of its channel queues (one per channel, for the writers).
    pub fn new(
        identity: Identity,
        addr: Option<PeerAddr>,
        dials: bool,
        send_queue_frames_max: usize,
    ) -> (Self, [mpsc::Receiver<Bytes>; Channel::COUNT]) {
        let (senders, receivers): (Vec<_>, Vec<_>) = Channel::ALL
            .iter()
            .map(|_| mpsc::channel(send_queue_frames_max))
            .unzip();
        let queues = senders
            .try_into()
            .expect("one queue per channel, built from Channel::ALL");
        let receivers = receivers
            .try_into()
            .expect("one queue per channel, built from Channel::ALL");
        let link = Self {
            identity,
            addr,
            dials,
            queues,
            current: watch::Sender::new(None),
            state: Mutex::new(LinkState::default()),
            tasks: Mutex::new(Vec::new()),
        };
        (link, receivers)
    }

    pub fn add_task(&self, task: AbortHandle) {
        lock(&self.tasks).push(task);
    }

    /// Stops this link's writers and dialer, and closes its connection with `reason`.
    pub fn shut(&self, code: u32, reason: &[u8]) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
        if let Some(live) = self.current.send_replace(None) {
            live.conn.close(quinn::VarInt::from_u32(code), reason);
        }
    }

    pub fn record_error(&self, error: String) {
        let mut state = lock(&self.state);
        if state.last_error.as_deref() != Some(error.as_str()) {
            tracing::warn!(peer = %self.identity, %error, "peer link problem");
        } else {
            tracing::debug!(peer = %self.identity, %error, "peer link problem (again)");
        }
        state.last_error = Some(error);
    }

    /// The peer's name does not resolve (yet): normal while a pod is not scheduled, so only
    /// logged at debug; status shows it as the last error.
    pub fn record_unresolved(&self, error: String) {
        tracing::debug!(peer = %self.identity, %error, "peer address does not resolve yet");
        lock(&self.state).last_error = Some(error);
    }

    pub fn record_dialed(&self, addr: SocketAddr) {
        lock(&self.state).dialed = Some(addr);
    }

    pub fn status(&self) -> PeerStatus {
        let state = lock(&self.state);
        let rtt_us = self.current.borrow().as_ref().and_then(|live| {
            live.conn
                .close_reason()
                .is_none()
                .then(|| u64::try_from(live.conn.rtt().as_micros()).unwrap_or(u64::MAX))
        });
        PeerStatus {
            identity: self.identity.clone(),
            addr: self.addr.clone(),
            dialed_addr: state.dialed,
            dials: self.dials,
            connected: state.connected,
            since_unix_ms: state.since_unix_ms,
            reconnects: state.reconnects,
            rtt_us,
            last_error: state.last_error.clone(),
            queued_frames: std::array::from_fn(|i| {
                self.queues[i].max_capacity() - self.queues[i].capacity()
            }),
        }
    }

    fn mark_connected(&self) {
        let mut state = lock(&self.state);
        if state.ever_connected {
            state.reconnects += 1;
        }
        state.ever_connected = true;
        state.connected = true;
        state.since_unix_ms = Some(unix_ms());
    }

    fn mark_disconnected(&self, reason: String) {
        let mut state = lock(&self.state);
        state.connected = false;
        state.since_unix_ms = Some(unix_ms());
        state.last_error = Some(reason);
    }
}

/// Runs an established, allow-listed connection to `link`'s peer until it ends.
pub(crate) async fn run_connection(
    shared: Arc<Shared>,
    link: Arc<PeerLink>,
    conn: quinn::Connection,
) {
    let generation = shared.next_generation();
    let replaced = link.current.send_replace(Some(LiveConnection {
        conn: conn.clone(),
        generation,
    }));
    if let Some(old) = replaced {
        old.conn.close(
            quinn::VarInt::from_u32(close_code::REPLACED),
            b"replaced by a newer connection from the same peer",
        );
    }
    link.mark_connected();
    add(&shared.stats.connections_established_total, 1);
    tracing::info!(peer = %link.identity, remote = %conn.remote_address(), generation, "peer connected");

    let ended = loop {
        match conn.accept_uni().await {
            Ok(recv) => {
                tokio::spawn(read_stream(shared.clone(), link.identity.clone(), recv));
            }
            Err(error) => break error,
        }
    };
    let withdrawn = link.current.send_if_modified(|current| {
        let ours = current.as_ref().map(|live| live.generation) == Some(generation);
        if ours {
            *current = None;
        }
        ours
    });
    if withdrawn {
        tracing::warn!(peer = %link.identity, generation, reason = %ended, "peer disconnected");
        link.mark_disconnected(ended.to_string());
    } else {
        tracing::debug!(peer = %link.identity, generation, reason = %ended, "superseded connection ended");
    }
}

/// Drains one (peer, channel) queue onto the peer's current connection, batch by batch.
pub(crate) async fn run_writer(
    shared: Arc<Shared>,
    link: Arc<PeerLink>,
    channel: Channel,
    mut queue: mpsc::Receiver<Bytes>,
) {
    let batch_max = shared.limits.write_batch_frames_max;
    let mut current = link.current.subscribe();
    let mut batch: Vec<Bytes> = Vec::with_capacity(batch_max);
    let mut chunks: Vec<Bytes> = Vec::new();
    loop {
        let live = match current.wait_for(Option::is_some).await {
            Ok(live) => live.clone().expect("wait_for returned a connection"),
            Err(_) => return, // link dropped
        };
        let mut stream = match open_stream(&live.conn, channel).await {
            Ok(stream) => stream,
            Err(error) => {
                tracing::debug!(peer = %link.identity, ?channel, %error, "cannot open stream; waiting for a new connection");
                if current
                    .wait_for(|c| c.as_ref().map(|l| l.generation) != Some(live.generation))
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            }
        };
        // A stop from the reader (e.g. an oversized frame) or a lost connection: reopen before
        // the next batch instead of losing it on a dead stream.
        let mut stopped = std::pin::pin!(stream.stopped());
        loop {
            tokio::select! {
                _ = &mut stopped => {
                    tracing::debug!(peer = %link.identity, ?channel, "stream stopped by peer; reopening");
                    break;
                }
                changed = current.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if current.borrow().as_ref().map(|l| l.generation) != Some(live.generation) {
                        break; // a newer connection (or none): reopen there
                    }
                }
                received = queue.recv_many(&mut batch, batch_max) => {
                    if received == 0 {
                        return; // every sender dropped: the link was removed
                    }
                    if batch.len() < batch_max {
                        // Let the thread's other ready tasks (packets just received, answers
                        // being produced) queue their frames first: one write for all of them
                        // makes fewer, fuller packets, which is what a frame costs most.
                        tokio::task::yield_now().await;
                        while batch.len() < batch_max {
                            match queue.try_recv() {
                                Ok(frame) => batch.push(frame),
                                Err(_) => break,
                            }
                        }
                    }
                    chunks.clear();
                    encode_batch(&batch, &mut chunks);
                    let frames = batch.len() as u64;
                    let bytes: u64 = batch.iter().map(|f| f.len() as u64).sum();
                    batch.clear();
                    match stream.write_all_chunks(&mut chunks).await {
                        Ok(()) => {
                            add(&shared.stats.frames_sent_total, frames);
                            add(&shared.stats.bytes_sent_total, bytes);
                            add(&shared.stats.write_batches_total, 1);
                        }
                        Err(error) => {
                            add(&shared.stats.frames_lost_on_disconnect_total, frames);
                            tracing::debug!(peer = %link.identity, ?channel, %error, frames, "stream write failed");
                            break; // reopen: on this connection if it lives, else the next
                        }
                    }
                }
            }
        }
    }
}

async fn open_stream(
    conn: &quinn::Connection,
    channel: Channel,
) -> Result<quinn::SendStream, String> {
    let mut stream = conn.open_uni().await.map_err(|e| e.to_string())?;
    // Raft and heartbeats must not queue behind bulk replication or WAN batches.
    let priority = if channel == Channel::Control { 1 } else { 0 };
    stream.set_priority(priority).map_err(|e| e.to_string())?;
    stream
        .write_all(&stream_header(channel))
        .await
        .map_err(|e| e.to_string())?;
    Ok(stream)
}

/// Reads one peer stream: header, then frames into the inbound queue.
async fn read_stream(shared: Arc<Shared>, peer: Identity, mut recv: quinn::RecvStream) {
    let mut header = [0u8; super::frame::STREAM_HEADER_BYTES];
    if let Err(error) = recv.read_exact(&mut header).await {
        tracing::debug!(%peer, %error, "stream ended before its header");
        return;
    }
    let channel = match parse_stream_header(&header) {
        Ok(channel) => channel,
        Err(error) => {
            add(&shared.stats.streams_rejected_total, 1);
            tracing::warn!(%peer, %error, "refused stream");
            let _ = recv.stop(quinn::VarInt::from_u32(stop_code::BAD_HEADER));
            return;
        }
    };
    let mut decoder = FrameDecoder::new(shared.limits.frame_bytes_max);
    loop {
        let chunk = match recv.read_chunk(READ_CHUNK_BYTES_MAX, true).await {
            Ok(Some(chunk)) => chunk.bytes,
            Ok(None) => return, // peer finished the stream
            Err(error) => {
                tracing::debug!(%peer, ?channel, %error, "stream read ended");
                return;
            }
        };
        decoder.push(&chunk);
        let (mut frames, mut bytes) = (0u64, 0u64);
        let outcome = loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    frames += 1;
                    bytes += frame.len() as u64;
                    let inbound = Inbound {
                        peer: peer.clone(),
                        channel,
                        frame,
                    };
                    if shared.inbound.send(inbound).await.is_err() {
                        break Err(None); // consumer gone
                    }
                }
                Ok(None) => break Ok(()),
                Err(error) => break Err(Some(error)),
            }
        };
        add(&shared.stats.frames_received_total, frames);
        add(&shared.stats.bytes_received_total, bytes);
        match outcome {
            Ok(()) => {}
            Err(None) => return,
            Err(Some(error)) => {
                add(&shared.stats.frames_oversized_rejected_total, 1);
                tracing::warn!(%peer, ?channel, %error, "refused frame; stopping this stream (other channels unaffected)");
                let _ = recv.stop(quinn::VarInt::from_u32(stop_code::FRAME_TOO_LARGE));
                return;
            }
        }
    }
}
