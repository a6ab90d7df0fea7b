//! The other nodes of the site as the shell addresses them: node id ↔ transport identity, and a
//! ready sender per (peer, channel). Empty on a standalone node.
use crate::cluster::NodeId;
use crate::transport::{Channel, Identity, PeerSender, SendError, Transport};
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};

#[derive(Debug)]
struct Peer {
    replication: PeerSender,
    control: PeerSender,
    forward: PeerSender,
}

#[derive(Debug, Default)]
pub struct Peers {
    by_id: BTreeMap<NodeId, Peer>,
    by_identity: HashMap<Identity, NodeId>,
}

#[derive(Debug, thiserror::Error)]
pub enum PeersError {
    #[error("peer {0} is not configured in the transport: {1}")]
    Sender(NodeId, SendError),
}

impl Peers {
    /// No peers: a standalone node.
    pub fn none() -> Self {
        Self::default()
    }

    /// Every peer other than this node, as configured in `transport`.
    pub fn new(
        transport: &Transport,
        peers: impl IntoIterator<Item = (NodeId, Identity)>,
    ) -> Result<Self, PeersError> {
        let mut out = Self::default();
        for (id, identity) in peers {
            let sender = |channel| {
                transport
                    .sender(&identity, channel)
                    .map_err(|e| PeersError::Sender(id, e))
            };
            out.by_id.insert(
                id,
                Peer {
                    replication: sender(Channel::Replication)?,
                    control: sender(Channel::Control)?,
                    forward: sender(Channel::Forward)?,
                },
            );
            out.by_identity.insert(identity, id);
        }
        Ok(out)
    }

    pub fn node_of(&self, identity: &Identity) -> Option<NodeId> {
        self.by_identity.get(identity).copied()
    }

    pub fn ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.by_id.keys().copied()
    }

    /// Queues `frame` without waiting. A frame that cannot be queued (unknown peer, full queue,
    /// link closed) is dropped: every sender above retransmits or retries on its own, and
    /// waiting here would stall an actor on one slow peer.
    pub fn send(&self, to: NodeId, channel: Channel, frame: Bytes) -> bool {
        let Some(peer) = self.by_id.get(&to) else {
            return false;
        };
        let sender = match channel {
            Channel::Replication => &peer.replication,
            Channel::Control => &peer.control,
            Channel::Forward => &peer.forward,
            Channel::Wan => return false,
        };
        match sender.send(frame) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(peer = %to, ?channel, "frame dropped: {e}");
                false
            }
        }
    }
}
