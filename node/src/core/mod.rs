//! The sans-IO partition core: pure state machines driven by the actix shell and by sims/.
//! Nothing here reads a clock, touches a socket, spawns a thread or draws global randomness.
mod change_log;
pub mod command;
pub mod glob;
mod integer;
pub mod keyspace;
pub mod partition;
pub mod replica;

pub use command::{
    Command, CommandError, CommandResult, Expiry, Response, SetCondition, TtlUnit, WanChangesPage,
    WanDumpPage,
};
pub use integer::parse_strict_i64;
pub use keyspace::{Keyspace, KeyspaceError, PartitionId, SLOT_COUNT, slot_of};
pub use partition::{
    ChangeRecord, LogTruncated, PartitionConfig, PartitionCore, RemoteApplied, SCAN_POSITION_END,
    SeqGap, scan_position, stored_bytes,
};
pub use replica::{
    Answer, AssignmentFacts, MapProposal, Redirect, ReplicaCore, ReplicaId, Replicate,
    ReplicatedRecord, ReplicationLimits, ReplicationMessage, Request, RequestId, RequestOutcome,
    Role, SnapshotChunk,
};
