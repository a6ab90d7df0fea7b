//! State shared by a node's connections, and the state of one connection.
use super::cluster_cmd::Topology;
use crate::admin::StatusHub;
use crate::limits::Limits;
use crate::shell::Router;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

/// What every connection of a node needs to know.
#[derive(Debug)]
pub struct NodeContext {
    pub router: Router,
    pub limits: Limits,
    pub requirepass: Option<String>,
    pub started: Instant,
    pub port: u16,
    pub site: u16,
    pub workers: usize,
    /// The node's latest published view of its site (partition map, members' RESP addresses),
    /// which the CLUSTER topology commands answer from.
    pub status: StatusHub,
    /// Open client connections (for `connections_max` and INFO).
    pub connections: AtomicUsize,
    next_client_id: AtomicU64,
}

impl NodeContext {
    pub fn new(
        router: Router,
        limits: Limits,
        requirepass: Option<String>,
        port: u16,
        site: u16,
        workers: usize,
        status: StatusHub,
    ) -> Self {
        Self {
            router,
            limits,
            requirepass,
            started: Instant::now(),
            port,
            site,
            workers,
            status,
            connections: AtomicUsize::new(0),
            next_client_id: AtomicU64::new(1),
        }
    }

    /// A snapshot of the site for CLUSTER SLOTS / SHARDS / NODES / INFO.
    pub fn topology(&self) -> Topology {
        Topology::from_status(self.site, &self.status.get())
    }

    pub fn new_session(&self) -> Session {
        Session {
            id: self.next_client_id.fetch_add(1, Ordering::Relaxed),
            authenticated: self.requirepass.is_none(),
            name: None,
        }
    }

    /// Checks a password for `user` against `requirepass`. Without one, the default user
    /// accepts any password (Redis's `nopass`).
    pub fn password_matches(&self, user: &[u8], password: &[u8]) -> bool {
        if user != b"default" {
            return false;
        }
        match &self.requirepass {
            None => true,
            Some(expected) => constant_time_eq(expected.as_bytes(), password),
        }
    }
}

/// One client connection's state.
#[derive(Debug)]
pub struct Session {
    pub id: u64,
    pub authenticated: bool,
    pub name: Option<Vec<u8>>,
}

/// Compares without an early exit on the first differing byte, so response time does not
/// reveal how much of a guessed password was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}
