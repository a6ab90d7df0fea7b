//! Snapshots of a node's view of its site, and operator requests.
use serde::{Deserialize, Serialize};
use std::sync::{Arc, RwLock};
use tokio::sync::{mpsc, oneshot};

/// Everything `/readyz`, `/v1/partitions`, `tern status` and `tern space list-instances` show.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node_id: u64,
    /// Transport identity, e.g. `n1.a`.
    pub name: String,
    pub site: String,
    /// Where clients connect (RESP).
    pub resp_addr: String,
    /// This process's incarnation (rises on every restart).
    pub incarnation: u64,
    /// Every partition this node holds a replica of has caught up (and the node knows a map).
    pub ready: bool,
    /// Raft leader of the partition map, if known.
    pub map_leader: Option<u64>,
    pub map_version: u64,
    /// Every partition of the site as this node's map sees it, by partition id.
    pub partitions: Vec<PartitionStatus>,
    pub members: Vec<MemberStatus>,
    /// Primaries this node took over because another failed.
    pub failovers_total: u64,
    /// Client writes this node's primaries refused because the WAN gateway held their change
    /// logs (`[wan] overflow = "block_writes"` and a full backlog).
    #[serde(default)]
    pub wan_writes_refused_total: u64,
    /// Client writes this node's primaries refused because it was over `data_bytes_max`.
    #[serde(default)]
    pub memory_writes_refused_total: u64,
    /// What the node's partition copies (primaries and backups) cost, as counted against
    /// `data_bytes_max` (keys, values and a per-entry overhead).
    #[serde(default)]
    pub data_bytes: u64,
    /// The node's data cap; 0: none.
    #[serde(default)]
    pub data_bytes_max: u64,
    /// Requests this node forwarded to another node's primary and still waits on.
    #[serde(default)]
    pub forward_requests_pending: u64,
    /// The cap on them, `limits.forward_requests_pending_max` (0: the node forwards nothing,
    /// e.g. standalone).
    #[serde(default)]
    pub forward_requests_pending_max: u64,
    /// Requests that found the forwarding table full until their deadline and were answered
    /// `-TRYAGAIN` unsent.
    #[serde(default)]
    pub forward_requests_refused_pending_full_total: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionStatus {
    pub partition: u16,
    pub epoch: u64,
    pub primary: Option<u64>,
    pub replicas: Vec<ReplicaStatus>,
    /// A graceful primary move in progress, to this node.
    pub handover_to: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    pub node_id: u64,
    pub role: ReplicaRole,
    pub in_sync: bool,
    /// Last change-log seq this replica holds, when this node knows it (its own replicas, and
    /// backups' acknowledged seqs as seen by a local primary).
    pub last_seq: Option<u64>,
    /// Records behind the primary, when known.
    pub lag_records: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReplicaRole {
    Primary,
    Backup,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    pub node_id: u64,
    pub name: String,
    pub resp_addr: String,
    pub zone: Option<String>,
    pub state: MemberState,
    pub incarnation: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberState {
    Up,
    Down,
    Draining,
}

/// The latest published status, shared between the shell (writer) and the HTTP layer (readers).
#[derive(Clone, Debug, Default)]
pub struct StatusHub {
    latest: Arc<RwLock<NodeStatus>>,
}

impl StatusHub {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn publish(&self, status: NodeStatus) {
        // A poisoned lock only means a reader panicked mid-clone; the data is still whole.
        let mut latest = self.latest.write().unwrap_or_else(|e| e.into_inner());
        *latest = status;
    }

    pub fn get(&self) -> NodeStatus {
        self.latest
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// An operator request for the shell to carry out through the partition map.
#[derive(Debug)]
pub enum AdminRequest {
    /// Move every primary off `node_id` and give it none until undrained.
    Drain {
        node_id: u64,
        reply: oneshot::Sender<Result<(), AdminRequestError>>,
    },
    Undrain {
        node_id: u64,
        reply: oneshot::Sender<Result<(), AdminRequestError>>,
    },
    /// Make `node_id` primary of `partition`, which has no primary and no in-sync copy left
    /// (`MapCommand::ForcePrimary`): writes only its lost primary held are gone for good.
    /// Answered once the map applied or rejected the command.
    ForcePrimary {
        partition: u16,
        node_id: u64,
        reply: oneshot::Sender<Result<(), AdminRequestError>>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum AdminRequestError {
    #[error("unknown node {0}")]
    UnknownNode(u64),
    #[error("unknown partition {0}")]
    UnknownPartition(u16),
    #[error("no partition map leader reachable; retry")]
    NoLeader,
    #[error("rejected by the partition map: {0}")]
    Rejected(String),
    #[error("the node is shutting down")]
    ShuttingDown,
}

/// Where the HTTP layer sends [`AdminRequest`]s; the shell owns the receiver.
pub type AdminRequestSender = mpsc::Sender<AdminRequest>;
