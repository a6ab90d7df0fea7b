//! Timings of membership: failure detection and the Raft group. Names end in their unit; defaults
//! per docs/design/site-ha.md.
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterTimings {
    /// Every node sends a heartbeat to every peer this often.
    pub heartbeat_interval_ms: u64,
    /// A peer not heard for this long is dead (and a freshly started detector waits this long
    /// before calling anyone dead).
    pub node_failure_timeout_ms: u64,
    /// The shell calls `RaftGroup::handle_tick` this often.
    pub raft_tick_ms: u64,
    /// Ticks without a leader before a follower campaigns (fixed, see `raft_election_jitter_percent`).
    pub raft_election_ticks: usize,
    /// Ticks between a leader's heartbeats; below `raft_election_ticks`.
    pub raft_heartbeat_ticks: usize,
    /// Chance, in percent, that a follower or candidate ignores a tick. raft-rs would randomise
    /// election timeouts with the thread RNG; we pin its range to one value and randomise here
    /// from a seeded RNG instead, so elections do not collide and runs stay reproducible.
    pub raft_election_jitter_percent: u8,
    /// The Raft group snapshots the map and compacts its log every this many applied entries.
    pub raft_snapshot_entries: u64,
}

impl Default for ClusterTimings {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 100,
            node_failure_timeout_ms: 500,
            raft_tick_ms: 50,
            raft_election_ticks: 6,
            raft_heartbeat_ticks: 1,
            raft_election_jitter_percent: 33,
            raft_snapshot_entries: 1000,
        }
    }
}
