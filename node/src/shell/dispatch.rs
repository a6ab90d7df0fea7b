//! Frames from peers → the actor that handles them: Control to the cluster actor, Replication
//! to the partition's actor, Forward requests to a task per frame that runs them on the local
//! replicas and Forward answers to the waiting origin. Runs on the node's control thread; it never waits on
//! an actor (a forwarded request waits in its own task), so one busy partition cannot stall
//! replication or membership traffic.
use super::actor::{Outcome, Replicated};
use super::cluster::{ClusterActor, ControlIn};
use super::forward::{self, Forwarder};
use super::peers::Peers;
use super::router::Router;
use super::wire::{self, ControlMessage, ForwardMessage, ReplicationFrame, WireKind};
use crate::cluster::NodeId;
use crate::core::PartitionId;
use crate::transport::{Channel, Inbound};
use actix::Addr;
use std::sync::Arc;
use tokio::sync::mpsc;

#[derive(Debug)]
pub struct Dispatcher {
    pub peers: Arc<Peers>,
    pub cluster: Addr<ClusterActor>,
    pub router: Router,
    pub forwarder: Arc<Forwarder>,
}

impl Dispatcher {
    /// Until the transport closes its inbound queue.
    pub async fn run(self, mut inbound: mpsc::Receiver<Inbound>) {
        while let Some(Inbound {
            peer,
            channel,
            frame,
        }) = inbound.recv().await
        {
            let Some(from) = self.peers.node_of(&peer) else {
                tracing::debug!(%peer, "frame from a peer outside the site; dropped");
                continue;
            };
            let handled = match channel {
                Channel::Control => self.control(from, &frame),
                Channel::Replication => self.replication(from, &frame),
                Channel::Forward => self.forward(from, &frame),
                Channel::Wan => Ok(()),
            };
            if let Err(e) = handled {
                tracing::warn!(%from, ?channel, "undecodable frame dropped: {e}");
            }
        }
    }

    fn control(&self, from: NodeId, frame: &[u8]) -> Result<(), wire::WireError> {
        let message: ControlMessage = wire::decode(WireKind::Control, frame)?;
        self.cluster.do_send(ControlIn { from, message });
        Ok(())
    }

    fn replication(&self, from: NodeId, frame: &[u8]) -> Result<(), wire::WireError> {
        let ReplicationFrame { partition, message } = wire::decode(WireKind::Replication, frame)?;
        if let Some(actor) = self.router.actor(PartitionId(partition)) {
            actor.do_send(Replicated { from, message });
        }
        Ok(())
    }

    fn forward(&self, from: NodeId, frame: &[u8]) -> Result<(), wire::WireError> {
        match wire::decode(WireKind::Forward, frame)? {
            ForwardMessage::Request {
                id,
                attempt,
                partition,
                commands,
            } => {
                // The origin named itself; the transport says who really sent it.
                if id.origin != from.get() {
                    tracing::warn!(%from, origin = id.origin, "forwarded request with a foreign origin dropped");
                    return Ok(());
                }
                actix::spawn(forward::serve(
                    self.router.clone(),
                    Arc::clone(&self.peers),
                    from,
                    id,
                    attempt,
                    PartitionId(partition),
                    commands,
                ));
            }
            ForwardMessage::Requests(mut requests) => {
                requests.retain(|request| {
                    // As above, per request.
                    let ours = request.id.origin == from.get();
                    if !ours {
                        tracing::warn!(%from, origin = request.id.origin, "forwarded request with a foreign origin dropped");
                    }
                    ours
                });
                if !requests.is_empty() {
                    actix::spawn(forward::serve_batch(
                        self.router.clone(),
                        Arc::clone(&self.peers),
                        from,
                        requests,
                    ));
                }
            }
            ForwardMessage::Answers(replies) => self.forwarder.complete_all(replies),
            ForwardMessage::Answer { attempt, outcome } => {
                self.forwarder
                    .complete(outcome.id, attempt, Outcome::Answered(outcome.results));
            }
            ForwardMessage::Redirect {
                id,
                attempt,
                epoch,
                primary,
            } => {
                self.forwarder
                    .complete(id, attempt, Outcome::Redirected { epoch, primary });
            }
        }
        Ok(())
    }
}
