//! Requests forwarded between nodes (Forward channel).
//!
//! Origin side: [`Forwarder::send`] registers the attempt and queues the request for the
//! primary; the answer (or redirect) completes it. Only the current attempt of a request id
//! counts: registering a new attempt drops the previous one's waiter, so a late answer to an
//! abandoned attempt is never read (a write that changed nothing is remembered only by the
//! primary that answered it, so such an answer may contradict the retry's).
//!
//! Primary side: [`serve`] runs a forwarded request on the local replica and answers on the
//! Forward channel, the way it came.
use super::actor::{Outcome, Reply};
use super::peers::Peers;
use super::router::Router;
use super::wire::{self, ForwardMessage, WireCommand, WireKind};
use crate::cluster::NodeId;
use crate::core::{Command, PartitionId, Request, RequestId};
use crate::transport::Channel;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::oneshot;

#[derive(Debug)]
pub struct Forwarder {
    peers: Arc<Peers>,
    /// The current attempt of each request id sent to another node, and its waiter.
    pending: Mutex<HashMap<RequestId, (u32, oneshot::Sender<Reply>)>>,
}

impl Forwarder {
    pub fn new(peers: Arc<Peers>) -> Self {
        Self {
            peers,
            pending: Mutex::new(HashMap::new()),
        }
    }

    fn pending(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<RequestId, (u32, oneshot::Sender<Reply>)>> {
        // The map stays consistent even if a holder panicked (single inserts and removes).
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends attempt `attempt` of request `id` to node `to`. `None` if it could not be queued
    /// (unknown peer, full queue, closed link): the caller treats it as lost.
    pub fn send(
        &self,
        to: u64,
        partition: PartitionId,
        id: RequestId,
        attempt: u32,
        commands: &[Command],
    ) -> Option<oneshot::Receiver<Reply>> {
        let to = NodeId::new(to)?;
        let message = ForwardMessage::Request {
            id,
            attempt,
            partition: partition.0,
            commands: commands.iter().map(WireCommand::from).collect(),
        };
        let frame = match wire::encode(WireKind::Forward, &message) {
            Ok(frame) => frame,
            Err(e) => {
                tracing::error!(%partition, "encode a forwarded request: {e}");
                return None;
            }
        };
        let (tx, rx) = oneshot::channel();
        self.pending().insert(id, (attempt, tx));
        if self.peers.send(to, Channel::Forward, frame) {
            Some(rx)
        } else {
            self.forget(id, attempt);
            None
        }
    }

    /// An answer or redirect from the primary.
    pub fn complete(&self, id: RequestId, attempt: u32, outcome: Outcome) {
        let mut pending = self.pending();
        if pending
            .get(&id)
            .is_some_and(|(current, _)| *current == attempt)
            && let Some((_, waiter)) = pending.remove(&id)
        {
            drop(pending);
            let _ = waiter.send(Ok(outcome));
        }
    }

    fn forget(&self, id: RequestId, attempt: u32) {
        let mut pending = self.pending();
        if pending
            .get(&id)
            .is_some_and(|(current, _)| *current == attempt)
        {
            pending.remove(&id);
        }
    }

    /// Waiters whose origin gave up (the receiver is gone) are dropped here, so the table does
    /// not keep attempts whose answer never came.
    pub fn sweep(&self) {
        self.pending().retain(|_, (_, waiter)| !waiter.is_closed());
    }
}

/// Runs a request forwarded by `from` on the local replica and sends back its outcome.
pub async fn serve(
    router: Router,
    peers: Arc<Peers>,
    from: NodeId,
    id: RequestId,
    attempt: u32,
    partition: PartitionId,
    commands: Vec<WireCommand>,
) {
    let request = Request {
        id,
        commands: commands.into_iter().map(Command::from).collect(),
    };
    let reply = match router.submit_local(partition, request).await {
        Ok(rx) => rx.await.ok(),
        Err(_) => None,
    };
    let message = match reply {
        Some(Ok(Outcome::Answered(results))) => ForwardMessage::answer(id, attempt, results),
        Some(Ok(Outcome::Redirected { epoch, primary })) => ForwardMessage::Redirect {
            id,
            attempt,
            epoch,
            primary,
        },
        // A failed partition or a stopping node: the origin's retry finds another way, or
        // gives up with -TRYAGAIN.
        Some(Err(_)) | None => ForwardMessage::Redirect {
            id,
            attempt,
            epoch: 0,
            primary: None,
        },
    };
    match wire::encode(WireKind::Forward, &message) {
        Ok(frame) => {
            peers.send(from, Channel::Forward, frame);
        }
        Err(e) => tracing::error!(%partition, "encode a forwarded answer: {e}"),
    }
}
