//! Site membership (docs/design/site-ha.md): who is in the site, which node holds which partition
//! replica at which epoch, and how that changes when nodes fail, return, join, leave or drain.
//! Every piece is pure or sans-IO (time comes in as `now_ms`, messages in and out as values), so
//! the actix/quinn shell and sims/ drive the same code.
//!
//! - [`ids`] — `NodeId`;
//! - [`map`] — the partition map and its conditional commands (`PartitionMap::apply`);
//! - [`placement`] — deterministic, zone-aware, balanced placement (bounded-load rendezvous);
//! - [`planner`] — map + liveness → commands the Raft leader proposes;
//! - [`membership`] — the leader's steps towards its configured members (add, remove);
//! - [`detector`] — heartbeat failure detector; [`timings`] — its and Raft's timings;
//! - [`raft_group`] — the Raft group (raft-rs `RawNode`) replicating map commands;
//!   [`raft_storage`] — its storage and the persistence seam (in memory, or files);
//! - [`codec`] — the versioned envelope for everything persisted or replicated here;
//! - [`testing`] — an in-memory network of Raft groups for tests and sims.
pub mod codec;
pub mod detector;
pub mod ids;
pub mod map;
pub mod membership;
pub mod placement;
pub mod planner;
pub mod raft_group;
pub mod raft_storage;
pub mod testing;
pub mod timings;

pub use detector::{FailureDetector, Heartbeat, Liveness};
pub use ids::NodeId;
pub use map::{
    Applied, Assignment, Epoch, MapCommand, MapRole, NodeInfo, NodeStatus, PartitionMap, PeerSpec,
    Rejected,
};
pub use planner::plan;
pub use raft_group::{
    Committed, ProposeError, RaftGroup, RaftGroupConfig, RaftGroupError, ReadyOut, discard_logger,
    tracing_logger,
};
pub use raft_storage::{
    FilePersistence, MemPersistence, PersistError, PersistOps, PersistedState, RaftPersistence,
};
pub use timings::ClusterTimings;
