//! Accepts client connections and hands each to a worker arbiter, enforcing
//! `connections_max`.
//!
//! Why connections run on the partition arbiters rather than on a tokio multi-thread runtime:
//! a request then costs one wakeup when its partition lives on the connection's own arbiter
//! (a same-thread actor message) and two cross-thread wakeups otherwise, instead of always
//! two plus contention between tokio workers and arbiters for the same cores.
use super::connection::serve;
use super::session::NodeContext;
use actix::ArbiterHandle;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

const MAX_CLIENTS_REACHED: &[u8] = b"-ERR max number of clients reached\r\n";

/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(50);

/// One counted client connection; the count drops when this does.
struct ConnectionSlot(Arc<NodeContext>);

impl ConnectionSlot {
    fn claim(node: &Arc<NodeContext>) -> Option<Self> {
        let max = node.limits.connections_max;
        let taken = node.connections.fetch_add(1, Ordering::AcqRel);
        if taken >= max {
            node.connections.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Self(Arc::clone(node)))
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Accepts until `stop` fires (or its sender is dropped).
pub async fn accept_loop(
    listener: TcpListener,
    node: Arc<NodeContext>,
    workers: Vec<ArbiterHandle>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut next_worker = 0usize;
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(err) => {
                tracing::warn!(error = %err, "accepting a client connection failed");
                tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
                continue;
            }
        };
        let Some(slot) = ConnectionSlot::claim(&node) else {
            // Best effort: a fresh socket's send buffer takes this without blocking.
            let _ = stream.try_write(MAX_CLIENTS_REACHED);
            continue;
        };
        // Replies are written whole per batch, so Nagle would only add latency.
        let _ = stream.set_nodelay(true);
        // The socket moves to the worker's own reactor.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(err) => {
                tracing::warn!(error = %err, "detaching a client socket failed");
                continue;
            }
        };
        let Some(worker) = workers.get(next_worker % workers.len().max(1)) else {
            return;
        };
        next_worker = next_worker.wrapping_add(1);
        worker.spawn(async move {
            let slot = slot;
            match TcpStream::from_std(stream) {
                Ok(stream) => serve(stream, &slot.0).await,
                Err(err) => tracing::warn!(error = %err, "registering a client socket failed"),
            }
        });
    }
}
