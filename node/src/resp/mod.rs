//! The RESP (Redis protocol, RESP2) front door.
//!
//! - [`framing`]: bytes → request frames, with `frame_bytes_max` / `args_per_command_max`;
//! - [`planner`]: a request → an immediate reply or core commands for partitions
//!   ([`table`]: the command list; [`admin`]: HELLO, CLIENT, COMMAND, CONFIG, INFO;
//!   [`cluster_cmd`]: CLUSTER SLOTS / SHARDS / NODES / INFO from a topology snapshot);
//! - [`batch`] / [`execute`]: group a read's requests per partition, one actor message each,
//!   replies in request order; [`reply`]: encoding;
//! - [`connection`]: one client's loop; [`listener`]: accepting, `connections_max`.
mod admin;
mod args;
mod batch;
mod cluster_cmd;
mod connection;
mod execute;
mod framing;
mod listener;
mod planner;
mod reply;
mod session;
mod table;

pub(crate) use listener::accept_loop;
pub(crate) use session::NodeContext;
