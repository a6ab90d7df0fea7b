//! tern-node: one grid node.
//!
//! - [`core`]: sans-IO partition state machines (no clock, socket, thread or global RNG);
//! - [`shell`]: the actix actors that drive the cores, one actor per partition replica;
//! - [`resp`]: the Redis-protocol front door;
//! - [`server`]: starts and stops a node; [`config`]: its configuration; [`limits`]: every limit.
pub mod admin;
pub mod cluster;
pub mod config;
pub mod core;
pub mod host_memory;
pub mod limits;
pub mod resp;
pub mod server;
pub mod shell;
pub mod transport;
