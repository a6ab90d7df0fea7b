//! The actix shell: one [`PartitionActor`] per partition, each owning a sans-IO
//! [`PartitionCore`](crate::core::PartitionCore) and doing nothing but drive it (client command
//! batches, a periodic tick with the wall clock). Partitions are spread round-robin over a pool
//! of actix arbiters ([`Workers`]); callers reach them through a cloneable [`Router`].
mod actor;
mod router;
mod workers;

pub use actor::{Execute, PartitionActor, PartitionFailed, unix_now_ms};
pub use router::{PendingReplies, Router, ShellError};
pub use workers::Workers;
