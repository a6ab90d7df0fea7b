//! Operations surface of a node: the status the shell publishes, the requests operators send,
//! and (in [`http`]) the admin HTTP server that serves them, with [`metrics`] computed from the
//! latest snapshot at scrape time.
//!
//! The boundary is data, not callbacks: the shell publishes a [`NodeStatus`] snapshot into the
//! [`StatusHub`] whenever something changes (and on each cluster tick), and reads
//! [`AdminRequest`]s from the channel it created; the HTTP layer only reads snapshots and sends
//! requests, so it can never block the event loop it reports on.
pub mod http;
pub mod metrics;
mod status;
pub mod wan;

pub use http::{AdminContext, AdminLimits, AdminServer};
pub use status::{
    AdminRequest, AdminRequestError, AdminRequestSender, MemberState, MemberStatus, NodeStatus,
    PartitionStatus, ReplicaRole, ReplicaStatus, StatusHub,
};
pub use wan::{
    WanAdminError, WanAdminRequest, WanHub, WanSourceStatus, WanStatus, WanTargetSpec,
    WanTargetStatus,
};
