//! Scenarios: a world set up a certain way, a workload, and the checkers that judge it. Each is
//! a function of its seed alone.
pub mod single_node;
pub mod site;
pub mod wan;

use crate::check::Violation;
use crate::check::linearizability::LinSummary;
use crate::net::NetStats;
use crate::time::SimTime;
use std::fmt;
use std::str::FromStr;

/// Every scenario, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scenario {
    /// One node with several partition cores, concurrent clients over a jittery network.
    SingleNode,
    /// A Raft-managed site of 3–5 nodes; crash/restart focus.
    SiteFailover,
    /// A site under network faults: partitions (full, split, one-way), loss, duplication,
    /// reordering, latency spikes.
    SitePartition,
    /// A site under every fault at once, clock steps and drift included.
    SiteChaos,
    /// A site under every fault while an operator drains, removes and adds nodes (rolling
    /// configuration changes, a node joining, a dead node dropped).
    SiteMembership,
    /// N sites over a WAN: full and one-way partitions, loss, duplication, reordering.
    WanPartition,
    /// N sites over a WAN: gateway crashes and restarts, repairs after lost history.
    WanCrash,
    /// N sites over a WAN: every fault at once, large clock skew and steps included.
    WanChaos,
}

impl Scenario {
    pub const ALL: &'static [Scenario] = &[
        Scenario::SingleNode,
        Scenario::SiteFailover,
        Scenario::SitePartition,
        Scenario::SiteChaos,
        Scenario::SiteMembership,
        Scenario::WanPartition,
        Scenario::WanCrash,
        Scenario::WanChaos,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::SingleNode => "single-node",
            Scenario::SiteFailover => "site-failover",
            Scenario::SitePartition => "site-partition",
            Scenario::SiteChaos => "site-chaos",
            Scenario::SiteMembership => "site-membership",
            Scenario::WanPartition => "wan-partition",
            Scenario::WanCrash => "wan-crash",
            Scenario::WanChaos => "wan-chaos",
        }
    }

    /// The site scenario's kind, if this is one.
    pub fn site_kind(self) -> Option<site::SiteKind> {
        match self {
            Scenario::SingleNode
            | Scenario::WanPartition
            | Scenario::WanCrash
            | Scenario::WanChaos => None,
            Scenario::SiteFailover => Some(site::SiteKind::Failover),
            Scenario::SitePartition => Some(site::SiteKind::Partition),
            Scenario::SiteChaos => Some(site::SiteKind::Chaos),
            Scenario::SiteMembership => Some(site::SiteKind::Membership),
        }
    }

    /// The WAN scenario's fault mix, if this is one.
    pub fn wan_flavor(self) -> Option<wan::Flavor> {
        match self {
            Scenario::WanPartition => Some(wan::Flavor::Partition),
            Scenario::WanCrash => Some(wan::Flavor::Crash),
            Scenario::WanChaos => Some(wan::Flavor::Chaos),
            _ => None,
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown scenario {given:?}; known: {known}")]
pub struct UnknownScenario {
    pub given: String,
    pub known: String,
}

impl FromStr for Scenario {
    type Err = UnknownScenario;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Scenario::ALL
            .iter()
            .copied()
            .find(|s| s.name() == name)
            .ok_or_else(|| UnknownScenario {
                given: name.to_string(),
                known: Scenario::ALL
                    .iter()
                    .map(|s| s.name())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

/// How to run (not *what* to run: that is the scenario and the seed).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// Keep the last this-many events as text in the report (0: hash only, the fast path).
    pub trace_lines: usize,
}

/// What one run did and found.
#[derive(Clone, Debug)]
pub struct RunReport {
    pub scenario: Scenario,
    pub seed: u64,
    /// FNV-1a over every event of the run: equal for equal seeds, the determinism check.
    pub trace_hash: u64,
    /// Client operations completed.
    pub ops: u64,
    pub events: u64,
    pub sim_time: SimTime,
    pub net: NetStats,
    pub lin: LinSummary,
    pub coverage: Coverage,
    /// The first invariant broken, if any (the run stops there).
    pub violation: Option<Violation>,
    /// The last events as text, when [`RunOptions::trace_lines`] asked for them.
    pub trace_tail: Vec<String>,
}

/// How much of the interesting behaviour a run exercised (so a quiet run is visible).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    /// Keys whose TTL ran out (not deleted by a command).
    pub expirations: u64,
    /// Tombstones purged after retention.
    pub purges: u64,
    /// Replies that were errors.
    pub error_replies: u64,
}

impl RunReport {
    pub fn passed(&self) -> bool {
        self.violation.is_none()
    }

    /// The command that replays this run.
    pub fn replay_command(&self) -> String {
        format!(
            "cargo run -p tern-sims --release -- run --scenario {} --seed {} --trace",
            self.scenario, self.seed
        )
    }
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = match &self.violation {
            None => "ok".to_string(),
            Some(v) => format!("VIOLATION {v}"),
        };
        write!(
            f,
            "{} seed {}: {verdict} | ops {} events {} sim {} | lin keys {} ops {} undecided {} | \
             expired {} purged {} errors {} | net sent {} lost {} dup {} | trace {:#018x}",
            self.scenario,
            self.seed,
            self.ops,
            self.events,
            self.sim_time,
            self.lin.keys,
            self.lin.ops,
            self.lin.undecided,
            self.coverage.expirations,
            self.coverage.purges,
            self.coverage.error_replies,
            self.net.sent,
            self.net.lost,
            self.net.duplicated,
            self.trace_hash
        )
    }
}

/// Run `scenario` with `seed`, hash-only tracing.
pub fn run(scenario: Scenario, seed: u64) -> RunReport {
    run_with(scenario, seed, &RunOptions::default())
}

pub fn run_with(scenario: Scenario, seed: u64, options: &RunOptions) -> RunReport {
    if let Some(flavor) = scenario.wan_flavor() {
        return wan::run(flavor, seed, options);
    }
    match scenario.site_kind() {
        None => single_node::run(seed, options),
        Some(kind) => site::run(kind, seed, options).report,
    }
}
