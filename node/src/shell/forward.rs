//! Requests forwarded between nodes (Forward channel).
//!
//! Origin side: [`Forwarder::send`] registers the attempt and encodes the request into the
//! primary node's [`Outbox`]; the outbox's flusher (a task on the node's control thread, next to
//! the transport) sends everything queued for that node since it last ran as one frame. So a
//! busy node pays one frame, one transport queue push and one thread wake-up per batch rather
//! than per request, and the primary one decode and one task. The answers (or redirects)
//! complete the attempts. Only the current attempt of a request id counts: registering a new
//! attempt drops the previous one's waiter, so a late answer to an abandoned attempt is never
//! read (a write that changed nothing is remembered only by the primary that answered it, so
//! such an answer may contradict the retry's). A frame the link refuses (closed link, full
//! queue) loses its attempts at once: their waiters are dropped, so the router's retry sees the
//! attempt lost and backs off before trying that node again.
//!
//! Primary side: [`serve_batch`] runs a frame's requests on the local replicas and answers them
//! as they complete, those ready together in one frame; [`serve`] runs a request that came
//! alone and answers it alone (what a node of an older release sends and reads).
mod outbox;
mod serve;

pub use serve::{serve, serve_batch};

use super::actor::{Outcome, Reply};
use super::peers::Peers;
use super::wire::{BatchFrame, CommandsRef, ForwardReply, ForwardRequestRef};
use crate::cluster::NodeId;
use crate::core::{Command, PartitionId, RequestId};
use crate::transport::Channel;
use outbox::Outbox;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::oneshot;

#[derive(Debug)]
pub struct Forwarder {
    peers: Arc<Peers>,
    pending: Arc<Pending>,
    /// One per peer, each with its flusher task. Empty when built outside a tokio runtime:
    /// then each request goes out at once in a frame of its own.
    outboxes: BTreeMap<NodeId, Arc<Outbox>>,
}

impl Forwarder {
    /// Inside a tokio runtime (the node's control thread), starts one flusher task per peer on
    /// it; they stop when the forwarder is dropped.
    pub fn new(peers: Arc<Peers>) -> Self {
        let pending = Arc::new(Pending::default());
        let outboxes = match tokio::runtime::Handle::try_current() {
            Ok(runtime) => peers
                .ids()
                .map(|to| {
                    let outbox = Arc::new(Outbox::new(to));
                    runtime.spawn(outbox::flush(
                        Arc::clone(&outbox),
                        Arc::clone(&peers),
                        Arc::clone(&pending),
                    ));
                    (to, outbox)
                })
                .collect(),
            Err(_) => BTreeMap::new(),
        };
        Self {
            peers,
            pending,
            outboxes,
        }
    }

    /// Sends attempt `attempt` of request `id` to node `to`. `None` if it could not be queued
    /// (unknown peer; without outboxes also a full queue or closed link): the caller treats it
    /// as lost. With an outbox, a refusal by the link drops the returned receiver's sender.
    pub fn send(
        &self,
        to: u64,
        partition: PartitionId,
        id: RequestId,
        attempt: u32,
        commands: &[Command],
    ) -> Option<oneshot::Receiver<Reply>> {
        let to = NodeId::new(to)?;
        let request = ForwardRequestRef {
            id,
            attempt,
            partition: partition.0,
            commands: CommandsRef(commands),
        };
        let rx = self.pending.register(id, attempt);
        let queued = match self.outboxes.get(&to) {
            Some(outbox) => outbox.push(id, attempt, &request).is_ok(),
            None => {
                let mut frame = BatchFrame::requests();
                frame.push(&request).is_ok()
                    && self.peers.send(to, Channel::Forward, frame.finish())
            }
        };
        if queued {
            Some(rx)
        } else {
            self.pending.forget(&[(id, attempt)]);
            None
        }
    }

    /// An answer or redirect from the primary.
    pub fn complete(&self, id: RequestId, attempt: u32, outcome: Outcome) {
        self.pending.complete([(id, attempt, outcome)]);
    }

    /// The answers and redirects of an `Answers` frame.
    pub fn complete_all(&self, replies: Vec<ForwardReply>) {
        self.pending
            .complete(replies.into_iter().map(|reply| match reply {
                ForwardReply::Answer { attempt, outcome } => {
                    (outcome.id, attempt, Outcome::Answered(outcome.results))
                }
                ForwardReply::Redirect {
                    id,
                    attempt,
                    epoch,
                    primary,
                } => (id, attempt, Outcome::Redirected { epoch, primary }),
            }));
    }

    /// Waiters whose origin gave up (the receiver is gone) are dropped here, so the table does
    /// not keep attempts whose answer never came.
    pub fn sweep(&self) {
        self.pending
            .lock()
            .retain(|_, (_, waiter)| !waiter.is_closed());
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        for outbox in self.outboxes.values() {
            outbox.close();
        }
    }
}

/// Each request id's current attempt and its waiter.
type Waiters = HashMap<RequestId, (u32, oneshot::Sender<Reply>), foldhash::fast::RandomState>;

/// The current attempt of each request id sent to another node, and its waiter.
#[derive(Debug, Default)]
struct Pending(Mutex<Waiters>);

impl Pending {
    fn lock(&self) -> MutexGuard<'_, Waiters> {
        // The map stays consistent even if a holder panicked (single inserts and removes).
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes `attempt` the current one of `id` (dropping an older attempt's waiter).
    fn register(&self, id: RequestId, attempt: u32) -> oneshot::Receiver<Reply> {
        let (tx, rx) = oneshot::channel();
        let replaced = self.lock().insert(id, (attempt, tx));
        drop(replaced);
        rx
    }

    /// Hands each outcome to its attempt's waiter, if that attempt is still the current one.
    fn complete(&self, outcomes: impl IntoIterator<Item = (RequestId, u32, Outcome)>) {
        let mut ready = Vec::new();
        {
            let mut pending = self.lock();
            for (id, attempt, outcome) in outcomes {
                if let Some(waiter) = take_current(&mut pending, id, attempt) {
                    ready.push((waiter, outcome));
                }
            }
        }
        // Outside the lock: each send may wake a task on another thread.
        for (waiter, outcome) in ready {
            let _ = waiter.send(Ok(outcome));
        }
    }

    /// Drops the waiters of these attempts (if still current): they end as lost.
    fn forget(&self, attempts: &[(RequestId, u32)]) {
        let mut dropped = Vec::with_capacity(attempts.len());
        {
            let mut pending = self.lock();
            dropped.extend(
                attempts
                    .iter()
                    .filter_map(|&(id, attempt)| take_current(&mut pending, id, attempt)),
            );
        }
        drop(dropped);
    }
}

fn take_current(
    pending: &mut Waiters,
    id: RequestId,
    attempt: u32,
) -> Option<oneshot::Sender<Reply>> {
    if pending
        .get(&id)
        .is_some_and(|(current, _)| *current == attempt)
    {
        pending.remove(&id).map(|(_, waiter)| waiter)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{RequestOutcome, Response};

    fn id(counter: u64) -> RequestId {
        RequestId { origin: 1, counter }
    }

    fn answered(n: i64) -> Outcome {
        Outcome::Answered(vec![Ok(Response::Int(n))])
    }

    /// Only the current attempt of an id is completed; a retry's registration drops the
    /// earlier attempt's waiter, and a late answer to it is ignored.
    #[test]
    fn only_the_current_attempt_is_completed() {
        let pending = Pending::default();
        let mut first = pending.register(id(1), 1);
        let mut second = pending.register(id(1), 2);
        let mut other = pending.register(id(2), 1);
        assert!(
            first
                .try_recv()
                .is_err_and(|e| e == oneshot::error::TryRecvError::Closed)
        );
        pending.complete([
            (id(1), 1, answered(1)),
            (id(1), 2, answered(2)),
            (id(2), 5, answered(3)),
        ]);
        assert_eq!(second.try_recv(), Ok(Ok(answered(2))));
        assert!(
            other
                .try_recv()
                .is_err_and(|e| e == oneshot::error::TryRecvError::Empty)
        );
        pending.forget(&[(id(2), 9)]);
        assert!(
            other
                .try_recv()
                .is_err_and(|e| e == oneshot::error::TryRecvError::Empty)
        );
        pending.forget(&[(id(2), 1)]);
        assert!(
            other
                .try_recv()
                .is_err_and(|e| e == oneshot::error::TryRecvError::Closed)
        );
        assert!(pending.lock().is_empty());
    }

    #[test]
    fn an_answers_frame_completes_each_of_its_attempts() {
        let forwarder = Forwarder::new(Arc::new(Peers::none()));
        let mut answered_rx = forwarder.pending.register(id(1), 1);
        let mut redirected_rx = forwarder.pending.register(id(2), 3);
        forwarder.complete_all(vec![
            ForwardReply::Redirect {
                id: id(2),
                attempt: 3,
                epoch: 7,
                primary: Some(2),
            },
            ForwardReply::Answer {
                attempt: 1,
                outcome: RequestOutcome {
                    id: id(1),
                    seq: 0,
                    results: vec![Ok(Response::Int(4))],
                },
            },
        ]);
        assert_eq!(answered_rx.try_recv(), Ok(Ok(answered(4))));
        assert_eq!(
            redirected_rx.try_recv(),
            Ok(Ok(Outcome::Redirected {
                epoch: 7,
                primary: Some(2)
            }))
        );
    }

    /// A request for a node that is not a peer is refused at once (the router backs off).
    #[tokio::test]
    async fn a_request_for_an_unknown_node_is_refused_at_once() {
        let forwarder = Forwarder::new(Arc::new(Peers::none()));
        assert!(
            forwarder
                .send(2, PartitionId(0), id(1), 1, &[Command::DbSize])
                .is_none()
        );
        assert!(forwarder.pending.lock().is_empty());
    }
}
