//! The actix shell: one [`PartitionActor`] per partition, each driving the partition's sans-IO
//! [`ReplicaCore`](crate::core::ReplicaCore); one [`ClusterActor`] driving the site's partition
//! map (Raft, failure detector, planner). Partitions are spread round-robin over a pool of actix
//! arbiters ([`Workers`]); callers reach them through a cloneable [`Router`], which forwards a
//! request to the partition's primary on another node when this node is not it.
//!
//! - [`wire`]: node-to-node messages; [`peers`]: node id ↔ transport sender;
//! - [`map_view`]: the map as this node acts on it (incarnation rule); [`routes`]: primaries for
//!   the router; [`board`], [`status`]: what the node publishes;
//! - [`forward`]: forwarded requests; [`dispatch`]: inbound frames to actors.
mod actor;
mod board;
mod cluster;
mod dispatch;
mod forward;
mod map_view;
mod peers;
mod router;
mod routes;
mod status;
pub mod wire;
mod workers;

pub(crate) use actor::PartitionLinks;
pub use actor::{Execute, Outcome, PartitionActor, PartitionFailed, Reply, unix_now_ms};
pub use board::{CommitWatch, ReplicaBoard, ReplicaReport};
pub(crate) use cluster::{Admin, ClusterActor, ClusterParts, DrainSelf, MapLog, StopCluster};
pub(crate) use dispatch::Dispatcher;
pub(crate) use forward::Forwarder;
pub use map_view::MapView;
pub(crate) use peers::Peers;
pub use router::{PendingReplies, Router, ShellError};
pub(crate) use routes::Routes;
pub(crate) use status::StatusInput;
pub use workers::Workers;
