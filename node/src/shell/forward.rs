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
//! Bound: at most `forward_requests_pending_max` requests wait for an answer at once (module
//! `pending`). At the cap [`Forwarder::send`] waits for one to end, which holds up the
//! caller's client connection (backpressure), until the request's own deadline
//! (`forward_retry_ms_max`); then it is not sent and the router answers `-TRYAGAIN`. Nothing
//! already in flight is dropped.
//!
//! Primary side: [`serve_batch`] runs a frame's requests on the local replicas and answers them
//! as they complete, those ready together in one frame; [`serve`] runs a request that came
//! alone and answers it alone (what a node of an older release sends and reads).
#[cfg(test)]
mod bound_tests;
mod outbox;
mod pending;
mod serve;

pub use pending::Answer;
pub use serve::{serve, serve_batch};

use super::actor::Outcome;
use super::peers::Peers;
use super::wire::{BatchFrame, CommandsRef, ForwardReply, ForwardRequestRef};
use crate::cluster::NodeId;
use crate::core::{Command, PartitionId, RequestId};
use crate::limits::Limits;
use crate::transport::Channel;
use outbox::Outbox;
use pending::Pending;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// Forwarding's figures for the node's status and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ForwardStats {
    /// Requests sent to another node and not answered yet.
    pub pending: u64,
    /// `limits.forward_requests_pending_max`.
    pub pending_max: u64,
    /// Requests that got no place in the table by their deadline (answered `-TRYAGAIN`).
    pub refused_pending_full_total: u64,
}

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
    /// it; they stop when the forwarder is dropped. Takes `forward_requests_pending_max`.
    pub fn new(peers: Arc<Peers>, limits: &Limits) -> Self {
        let pending = Arc::new(Pending::new(limits.forward_requests_pending_max));
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

    /// Sends attempt `attempt` of request `id` to node `to`, first waiting (until `deadline`)
    /// for a slot if `forward_requests_pending_max` requests are already waiting for answers;
    /// a retry of `id` whose previous attempt is still registered reuses that attempt's slot.
    /// `None` if it was not queued (unknown peer, no slot by `deadline`; without outboxes
    /// also a full queue or closed link): the caller treats it as lost. With an outbox, a
    /// refusal by the link ends the returned [`Answer`] without a reply.
    pub async fn send(
        &self,
        to: u64,
        partition: PartitionId,
        id: RequestId,
        attempt: u32,
        commands: &[Command],
        deadline: Instant,
    ) -> Option<Answer> {
        let to = NodeId::new(to)?;
        let slot = self.pending.slot(id, deadline).await?;
        let request = ForwardRequestRef {
            id,
            attempt,
            partition: partition.0,
            commands: CommandsRef(commands),
        };
        let rx = self.pending.register(id, attempt, slot);
        // From here on, every way out (including this function's `None`) drops the entry and
        // its slot through the answer.
        let answer = Answer::new(rx, id, attempt, Arc::clone(&self.pending));
        let queued = match self.outboxes.get(&to) {
            Some(outbox) => outbox.push(id, attempt, &request).is_ok(),
            None => {
                let mut frame = BatchFrame::requests();
                frame.push(&request).is_ok()
                    && self.peers.send(to, Channel::Forward, frame.finish())
            }
        };
        queued.then_some(answer)
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

    /// What the node's status reports about forwarding.
    pub fn stats(&self) -> ForwardStats {
        let (pending, pending_max, refused_pending_full_total) = self.pending.stats();
        ForwardStats {
            pending: pending as u64,
            pending_max: pending_max as u64,
            refused_pending_full_total,
        }
    }

    /// Waiters whose origin gave up (the receiver is gone) are dropped here, so the table does
    /// not keep attempts whose answer never came.
    pub fn sweep(&self) {
        self.pending.sweep();
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        for outbox in self.outboxes.values() {
            outbox.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{RequestOutcome, Response};
    use std::time::Duration;

    fn id(counter: u64) -> RequestId {
        RequestId { origin: 1, counter }
    }

    fn answered(n: i64) -> Outcome {
        Outcome::Answered(vec![Ok(Response::Int(n))])
    }

    fn forwarder() -> Forwarder {
        Forwarder::new(Arc::new(Peers::none()), &Limits::default())
    }

    #[test]
    fn an_answers_frame_completes_each_of_its_attempts() {
        let forwarder = forwarder();
        let register = |counter, attempt| {
            let slot = forwarder.pending.try_slot().expect("below the cap");
            forwarder.pending.register(id(counter), attempt, slot)
        };
        let mut answered_rx = register(1, 1);
        let mut redirected_rx = register(2, 3);
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

    /// A request for a node that is not a peer is refused at once (the router backs off), and
    /// gives its slot back.
    #[tokio::test]
    async fn a_request_for_an_unknown_node_is_refused_at_once() {
        let forwarder = forwarder();
        let deadline = Instant::now() + Duration::from_secs(5);
        assert!(
            forwarder
                .send(2, PartitionId(0), id(1), 1, &[Command::DbSize], deadline)
                .await
                .is_none()
        );
        assert!(forwarder.pending.is_empty());
        assert_eq!(
            forwarder.pending.slots_free(),
            Limits::default().forward_requests_pending_max
        );
    }
}
