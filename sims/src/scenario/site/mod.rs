//! Site scenarios: 3–5 node hosts, each with its own skewed, drifting clock, running the real
//! cores — the map's Raft group (raft-rs), the failure detector, the planner, and one
//! `ReplicaCore` per partition — through the shell of [`node`]. Clients on their own hosts send
//! GET/SET/INCRBY/DEL (and TTL commands on separate keys) to random nodes, which forward them to
//! the primary they believe in.
//!
//! Each run has four phases (global simulated time):
//!
//! 1. **warm-up** (`warmup_ms`): no faults; Raft elects, nodes register their incarnations,
//!    backups catch up;
//! 2. **chaos** (`chaos_ms`): faults drawn from the seed by the scenario's [`FaultMix`]: node
//!    crash (volatile state lost, Raft's persisted state kept) and restart with a new
//!    incarnation, full / split / one-way partitions, links that lose, duplicate, reorder and
//!    delay messages, clock steps;
//! 3. **heal**: every link restored, every node up; within `resume_bound_ms` every partition
//!    must have a serving primary, and every operation invoked after that must be answered
//!    within `op_bound_ms` (invariant 9);
//! 4. **quiet**: clients stop, one reads every key, the site settles for `quiet_ms`; then all
//!    nodes must hold the same map, every partition must be back on its preferred primary with
//!    every replica in sync and holding the same entries.
//!
//! Checked all along by [`crate::check::site`] (invariants 3–6, Raft agreement) and at the end by
//! per-key linearizability of the whole client history, unknown outcomes included (invariants
//! 1, 2 and 6: a lost acknowledged write, a stale read or a double INCR makes it fail).
//!
//! Crashes are only injected while every partition keeps, besides the node to crash, a live
//! copy the map trusts (the primary or an in-sync backup of the current incarnation): losing
//! the memory of every copy at once loses data by definition, whatever the protocol.
//!
//! `site-membership` adds an operator ([`operator`]) who, during the chaos phase, changes the
//! site's members the way docs/design/site-ha.md ("Membership") tells an operator to: drain a
//! node, wait until it holds no copy, restart the others with a configuration without it, stop
//! it; add a node (`join_existing`) and restart the others with it in their configuration; drop
//! a node that died for good from the configurations. The heal waits for the operator to
//! finish; the end adds membership checks: every node's map, configuration and Raft voters
//! list exactly the final members, and no partition names anyone else.
mod chaos;
mod clients;
mod heal;
pub mod msg;
pub mod node;
mod operator;

pub use chaos::{Fault, FaultMix};
pub use operator::Flow;

use super::{Coverage, RunOptions, RunReport, Scenario};
use crate::check::Violation;
use crate::check::linearizability::{self, HistoryOp, LinSummary};
use crate::check::site::{CheckerStats, Fingerprint, SiteChecker, SiteViolation};
use crate::net::{HostId, Latency, LinkConfig};
use crate::rng::SimRng;
use crate::time::{HostClock, SimTime};
use crate::trace::Trace;
use crate::world::{Event, World};
use bytes::Bytes;
use clients::Client;
use msg::Msg;
pub use node::ShellFault;
use node::{Durable, Observation, ShellConfig, SiteNode};
use rand::RngCore;
use std::collections::BTreeMap;
use tern_node::cluster::{ClusterTimings, MapCommand, NodeId};
use tern_node::core::ReplicationLimits;
use tern_node::limits::Limits;

/// Which faults a site scenario injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SiteKind {
    /// Crash/restart focus (short and long outages, restarts before detection), some clock
    /// steps and mild loss.
    Failover,
    /// Network focus: isolations, splits, one-way cuts, lossy/duplicating/reordering links.
    Partition,
    /// Everything.
    Chaos,
    /// Everything, while an operator drains, removes and adds nodes.
    Membership,
}

impl SiteKind {
    pub fn scenario(self) -> Scenario {
        match self {
            SiteKind::Failover => Scenario::SiteFailover,
            SiteKind::Partition => Scenario::SitePartition,
            SiteKind::Chaos => Scenario::SiteChaos,
            SiteKind::Membership => Scenario::SiteMembership,
        }
    }
}

/// The scenario's knobs, drawn from the seed by [`Config::for_seed`].
#[derive(Clone, Debug)]
pub struct Config {
    pub kind: SiteKind,
    pub nodes: u64,
    pub clients: u32,
    pub shell: ShellConfig,
    /// Keys without TTLs: the linearizability checker covers them.
    pub plain_keys: Vec<Bytes>,
    /// Keys that also see EX/PX/EXPIRE/TTL.
    pub ttl_keys: Vec<Bytes>,
    pub warmup_ms: u64,
    pub chaos_ms: u64,
    /// Pause between two faults.
    pub fault_gap_ms: (u64, u64),
    pub mix: FaultMix,
    /// Invariant 9: every partition has a serving primary this long after the heal.
    pub resume_bound_ms: u64,
    /// Invariant 9: an operation invoked after the resume bound is answered this fast.
    pub op_bound_ms: u64,
    /// Client workload after the resume bound, before the final reads.
    pub post_heal_ms: u64,
    pub quiet_ms: u64,
    /// A client request a live node never answers within this is a violation.
    pub client_timeout_ms: u64,
    pub node_link: LinkConfig,
    pub degraded_link: LinkConfig,
    pub client_link: LinkConfig,
    pub clock_offset_us_max: i64,
    pub drift_ppm_max: i64,
    /// Crash nodes without regard for the copies a partition keeps (only for proving the
    /// checkers: data is then lost by definition).
    pub crash_any: bool,
    /// Chance (ppm) that a crashed node is back before the failure detector noticed, so only
    /// its new incarnation tells. 0 by default while core bug 1 is open (see
    /// `tests/site_known_bugs.rs`): the primary then re-proposes the restarted, empty backup
    /// as caught up from its previous incarnation's acknowledgements.
    pub quick_restart_ppm: u32,
    /// Let network faults (cuts, clock steps, degraded links) overlap an outage (a node down,
    /// or restarted and not yet registered), and crashes overlap cuts. Off by default: a
    /// crash of one copy of a partition overlapping a (false) `MarkDown` of its other complete
    /// copy can still leave the partition without primary for good, by the map's design,
    /// though that copy holds every acknowledged write (`tests/site_known_bugs.rs`, liveness
    /// gap 3 (b)/(c); about 5% of site-chaos and 1% of site-failover seeds with it on).
    pub overlap_faults: bool,
    /// Without `overlap_faults`: a crash waits until no network fault started or ended for
    /// this long (the failure detectors' and the Raft leader's views have caught up, so no
    /// late false `MarkDown` of the copy the crash relies on is still coming).
    pub calm_ms: u64,
    pub lin_step_budget: u64,
    pub events_max: u64,
    /// The operator's membership changes, in order (empty but for `site-membership`).
    pub flows: Vec<Flow>,
    /// Adding a node: restart the others with it in their configuration before starting it
    /// (else after, as docs/design/site-ha.md lists the steps: see [`operator`] for why not).
    pub join_configs_first: bool,
    /// Spare a drained node on its way out (it holds no copy any more) from every fault. Off,
    /// a crash restarts it with a new incarnation, which forgets the drain (`MarkUp` of a
    /// restarted node makes it `Up`; a false `MarkDown` and `MarkUp` with the same incarnation
    /// keeps it): it gets copies and primaries back while the others' configurations are
    /// dropping it, and partitions it alone holds wait for it for good (reported as a gap of
    /// the map's rules; see `tests/site.rs`).
    pub shield_leaving: bool,
    /// Let chaos crash a joining node before the leader's snapshot reached it. Off by default:
    /// once the leader made it a voter, its Raft messages make the joiner persist a hard state
    /// with no snapshot, and a restart then fails (`FilePersistence::load`: missing snapshot;
    /// `MemPersistence`: an empty snapshot that does not decode) instead of joining again.
    pub crash_unjoined: bool,
    /// A broken operator, to prove the membership checks: it never restarts nodes with a new
    /// configuration (nor waits for the removals that would bring).
    pub skip_rolling_restarts: bool,
    /// The operator's flows must all be done this long after the chaos phase should have
    /// ended (the heal waits for them).
    pub operator_bound_ms: u64,
}

impl Config {
    pub fn for_seed(kind: SiteKind, rng: &mut SimRng) -> Self {
        let keys = |prefix: &str, n: usize| -> Vec<Bytes> {
            (0..n)
                .map(|i| Bytes::from(format!("{prefix}{i}")))
                .collect()
        };
        let nodes = rng.weighted(&[(5, 3u64), (3, 4), (2, 5)]);
        let founders: Vec<NodeId> = (1..=nodes).filter_map(NodeId::new).collect();
        let backups = rng.weighted(&[(7, 1u8), (3, 2)]);
        let partitions = rng.between(4, 8) as u16;
        let timings = ClusterTimings::default();
        let replication = ReplicationLimits::default();
        let partition_limits = Limits {
            // Sometimes short, so backups catch up from snapshots after the log moved on.
            change_log_bytes_max: if rng.chance_ppm(300_000) {
                rng.between(2_000, 8_000) as usize
            } else {
                1 << 20
            },
            ..Limits::default()
        };
        let node_tick_ms = 25;
        // Invariant 9's bound, from the timings: two election rounds (with jitter), the
        // failure timeout a fresh leader observes, one map-proposal retry (a proposal lost in a
        // leader change), one backup-ack timeout.
        let election_ms = 2 * 2 * timings.raft_election_ticks as u64 * timings.raft_tick_ms;
        let resume_bound_ms = election_ms
            + timings.node_failure_timeout_ms
            + replication.map_proposal_retry_ms
            + replication.backup_ack_timeout_ms;
        let timings_failure_ms = timings.node_failure_timeout_ms;
        let shell = ShellConfig {
            nodes: founders,
            join_existing: false,
            partitions,
            backups,
            timings,
            replication,
            partition_limits,
            node_tick_ms,
            forward_retry_ms_max: 5_000,
            forward_attempt_timeout_ms: 1_000,
            forward_backoff_ms: 20,
            planner_repropose_ms: 200,
            draining_leader_hands_off: true,
            fault: None,
        };
        let mix = FaultMix::for_kind(kind);
        let node_link = LinkConfig {
            latency: Latency::Uniform {
                min_us: 200,
                max_us: 2_000,
            },
            loss_ppm: 0,
            duplicate_ppm: 0,
            fifo: true,
        };
        let degraded_link = LinkConfig {
            latency: Latency::Spiky {
                min_us: 200,
                max_us: 5_000,
                spike_ppm: rng.between(10_000, 100_000) as u32,
                spike_max_us: rng.between(30_000, 300_000),
            },
            loss_ppm: rng.between(5_000, 100_000) as u32,
            duplicate_ppm: rng.between(5_000, 50_000) as u32,
            fifo: false,
        };
        let (clock_offset_us_max, drift_ppm_max) = match kind {
            SiteKind::Chaos => (2_000_000, 2_000),
            _ => (1_000_000, 200),
        };
        let mut config = Self {
            kind,
            nodes,
            clients: rng.between(3, 6) as u32,
            shell,
            plain_keys: keys("k", 6),
            ttl_keys: keys("t", 3),
            warmup_ms: 1_500,
            chaos_ms: match kind {
                // Outages last until the node was marked down: give room for several.
                SiteKind::Failover => rng.between(6_000, 9_000),
                SiteKind::Chaos | SiteKind::Membership => rng.between(4_000, 7_000),
                SiteKind::Partition => rng.between(3_000, 6_000),
            },
            fault_gap_ms: (150, 900),
            mix,
            resume_bound_ms,
            op_bound_ms: 1_500,
            post_heal_ms: rng.between(800, 1_500),
            quiet_ms: 5_000,
            client_timeout_ms: 8_000,
            node_link,
            degraded_link,
            client_link: LinkConfig {
                latency: Latency::Uniform {
                    min_us: 100,
                    max_us: 1_000,
                },
                loss_ppm: 0,
                duplicate_ppm: 0,
                fifo: true,
            },
            clock_offset_us_max,
            drift_ppm_max,
            crash_any: false,
            quick_restart_ppm: 200_000,
            overlap_faults: false,
            calm_ms: election_ms + timings_failure_ms,
            lin_step_budget: 3_000_000,
            events_max: 3_000_000,
            flows: Vec::new(),
            join_configs_first: true,
            shield_leaving: true,
            crash_unjoined: false,
            skip_rolling_restarts: false,
            operator_bound_ms: 60_000,
        };
        if kind == SiteKind::Membership {
            // Drawn last, so the other knobs are drawn as for the other scenarios.
            config.flows = operator::draw_flows(rng, nodes);
            config.events_max = 6_000_000;
        }
        config
    }

    /// Node slots the operator's joins need besides the founding nodes.
    fn spare_nodes(&self) -> u64 {
        self.flows.iter().filter(|f| **f == Flow::Join).count() as u64
    }
}

/// Everything a site run measured besides the shared [`RunReport`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SiteStats {
    pub nodes: u64,
    pub partitions: u16,
    pub backups: u8,
    pub crashes: u64,
    pub cuts: u64,
    pub degrades: u64,
    pub clock_steps: u64,
    pub ops_ok: u64,
    /// Operations whose outcome the client never learned (`-TRYAGAIN`, connection lost).
    pub ops_unknown: u64,
    pub try_again: u64,
    pub redirect_retries: u64,
    pub timeout_retries: u64,
    /// Time from the heal until every partition had a serving primary.
    pub resume_ms: Option<u64>,
    /// Slowest answer to an operation invoked after the resume bound.
    pub max_latency_after_bound_ms: u64,
    /// The operator's flows carried out to the end.
    pub flows_done: u64,
    /// Restarts of the operator's rolling configuration changes.
    pub rolling_restarts: u64,
    /// `Drain` requests the operator made.
    pub drain_requests: u64,
    /// `AddNode` / `RemoveNode` the map applied.
    pub nodes_added: u64,
    pub nodes_removed: u64,
    /// Raft voter changes the leaders proposed.
    pub voter_changes_proposed: u64,
    pub checker: CheckerStats,
}

/// A site run's report: the shared report plus the site's own numbers.
#[derive(Clone, Debug)]
pub struct SiteReport {
    pub report: RunReport,
    pub stats: SiteStats,
}

pub fn run(kind: SiteKind, seed: u64, options: &RunOptions) -> SiteReport {
    run_adjusted(kind, seed, options, |_| {})
}

/// Run with the seed's config changed by `adjust` (tests inject faults or resize with it).
pub fn run_adjusted(
    kind: SiteKind,
    seed: u64,
    options: &RunOptions,
    adjust: impl FnOnce(&mut Config),
) -> SiteReport {
    let mut rng = SimRng::from_seed(seed);
    let mut config = Config::for_seed(kind, &mut rng);
    adjust(&mut config);
    let trace = if options.trace_lines > 0 {
        Trace::with_lines(options.trace_lines)
    } else {
        Trace::hash_only()
    };
    let mut world = World::new(rng, config.node_link, trace);
    let mut sim = Sim::new(&config, &mut world);
    let outcome = sim.run(&mut world);
    let (lin, violation) = match outcome {
        Ok(lin) => (lin, None),
        Err(v) => (LinSummary::default(), Some(v)),
    };
    let mut stats = sim.stats.clone();
    stats.checker = sim.checker.stats();
    SiteReport {
        report: RunReport {
            scenario: kind.scenario(),
            seed,
            trace_hash: world.trace().hash(),
            ops: stats.ops_ok + stats.ops_unknown,
            events: world.trace().events(),
            sim_time: world.now(),
            net: world.net().stats(),
            lin,
            coverage: Coverage {
                expirations: 0,
                purges: 0,
                error_replies: sim.error_replies,
            },
            violation,
            trace_tail: world.trace().lines(),
        },
        stats,
    }
}

/// The run's phase, driven by the chaos host's timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Warmup,
    Chaos,
    Healed,
    /// Clients stopped; the reader reads every key.
    FinalReads,
    /// Waiting for `Fault::Finish`.
    Quiet,
    Done,
}

/// Where a node slot is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Life {
    /// Not started yet: a node the operator will add.
    Spare,
    /// A member, or one being added or removed: running, or crashed and coming back.
    Active,
    /// Stopped for good (removed, or dead and dropped from the configurations).
    Retired,
}

/// One node host: its shell while running, what survives while crashed.
struct NodeSlot {
    id: NodeId,
    host: HostId,
    node: Option<SiteNode>,
    durable: Option<Durable>,
    /// Links of this node currently degraded.
    degraded: bool,
    /// Its configuration's peers (itself included), read at each start.
    peers: Vec<NodeId>,
    /// Started with `join_existing`.
    join: bool,
    life: Life,
    /// Clients send to it (not once the operator started taking it out).
    serves_clients: bool,
}

struct Sim {
    config: Config,
    slots: Vec<NodeSlot>,
    host_to_slot: BTreeMap<HostId, usize>,
    id_to_host: BTreeMap<NodeId, HostId>,
    clients: BTreeMap<HostId, Client>,
    chaos_host: HostId,
    /// Directed cuts between node slots, counted (faults overlap).
    cuts: BTreeMap<(usize, usize), u32>,
    /// When a network fault last started or ended.
    calm_since: SimTime,
    /// A drawn fault that had to wait for the site to settle.
    deferred: Option<chaos::Kind>,
    phase: Phase,
    /// When the heal happened (global time).
    healed_at: Option<SimTime>,
    checker: SiteChecker,
    histories: BTreeMap<Bytes, Vec<HistoryOp>>,
    stats: SiteStats,
    error_replies: u64,
    operator: operator::Operator,
}

impl Sim {
    fn new(config: &Config, world: &mut World<Msg>) -> Self {
        let mut slots = Vec::new();
        let mut host_to_slot = BTreeMap::new();
        let founders = config.shell.nodes.len() as u64;
        let ids: Vec<NodeId> = (1..=founders + config.spare_nodes())
            .filter_map(NodeId::new)
            .collect();
        for (index, &id) in ids.iter().enumerate() {
            let clock = {
                let rng = world.rng();
                HostClock::skewed(
                    rng.between_i64(-config.clock_offset_us_max, config.clock_offset_us_max),
                    rng.between_i64(-config.drift_ppm_max, config.drift_ppm_max) as i32,
                )
            };
            let host = world.add_host(format!("node-{}", id.get()), clock);
            host_to_slot.insert(host, index);
            let founder = config.shell.nodes.contains(&id);
            slots.push(NodeSlot {
                id,
                host,
                node: None,
                durable: Some(Durable::default()),
                degraded: false,
                peers: config.shell.nodes.clone(),
                join: false,
                life: if founder { Life::Active } else { Life::Spare },
                serves_clients: founder,
            });
        }
        let mut clients = BTreeMap::new();
        for index in 0..config.clients {
            let clock = {
                let rng = world.rng();
                HostClock::skewed(
                    rng.between_i64(-500_000, 500_000),
                    rng.between_i64(-100, 100) as i32,
                )
            };
            let host = world.add_host(format!("client-{index}"), clock);
            for slot in &slots {
                world
                    .net_mut()
                    .set_link_both(host, slot.host, config.client_link);
            }
            clients.insert(host, Client::new(index));
        }
        let chaos_host = world.add_host("chaos", HostClock::perfect());
        let histories = config
            .plain_keys
            .iter()
            .map(|k| (k.clone(), Vec::new()))
            .collect();
        let id_to_host = slots.iter().map(|s| (s.id, s.host)).collect();
        Self {
            config: config.clone(),
            slots,
            host_to_slot,
            id_to_host,
            clients,
            chaos_host,
            cuts: BTreeMap::new(),
            calm_since: SimTime::ZERO,
            deferred: None,
            phase: Phase::Warmup,
            healed_at: None,
            checker: SiteChecker::new(),
            histories,
            stats: SiteStats {
                nodes: config.nodes,
                partitions: config.shell.partitions,
                backups: config.shell.backups,
                ..SiteStats::default()
            },
            error_replies: 0,
            operator: operator::Operator::new(config.flows.clone()),
        }
    }

    fn run(&mut self, world: &mut World<Msg>) -> Result<LinSummary, Violation> {
        for index in 0..self.slots.len() {
            if self.slots[index].life == Life::Active {
                self.start_node(world, index)?;
            }
        }
        let hosts: Vec<HostId> = self.clients.keys().copied().collect();
        for host in hosts {
            let think = world.rng().between(0, 50_000);
            world.set_timer(host, think, Msg::ClientThink);
        }
        world.set_timer(
            self.chaos_host,
            self.config.warmup_ms * 1000,
            Msg::Chaos(Fault::Next),
        );
        let heal_at = (self.config.warmup_ms + self.config.chaos_ms) * 1000;
        world.set_timer(self.chaos_host, heal_at, Msg::Chaos(Fault::Heal));
        while self.phase != Phase::Done {
            if world.trace().events() > self.config.events_max {
                return Err(Violation::Stalled {
                    detail: format!(
                        "{} events in phase {:?} at {}",
                        self.config.events_max,
                        self.phase,
                        world.now()
                    ),
                });
            }
            let Some(event) = world.next_event() else {
                return Err(Violation::Stalled {
                    detail: format!("no events left in phase {:?}", self.phase),
                });
            };
            self.handle(world, event)?;
        }
        linearizability::check_keys(&self.histories, self.config.lin_step_budget)
    }

    fn handle(&mut self, world: &mut World<Msg>, event: Event<Msg>) -> Result<(), Violation> {
        match event {
            Event::Timer {
                host,
                msg: Msg::Chaos(fault),
            } if host == self.chaos_host => self.chaos(world, fault),
            Event::Timer {
                host,
                msg: Msg::NodeTick,
            } => {
                let Some(&index) = self.host_to_slot.get(&host) else {
                    return Ok(());
                };
                let now_ms = world.local_ms(host);
                if let Some(node) = self.slots[index].node.as_mut() {
                    node.handle_tick(now_ms);
                }
                world.set_timer(host, self.config.shell.node_tick_ms * 1000, Msg::NodeTick);
                self.flush(world, index)
            }
            Event::Timer {
                host,
                msg: Msg::ClientThink,
            } => self.client_think(world, host),
            Event::Timer {
                host,
                msg: Msg::ClientTimeout { req },
            } => self.client_timeout(world, host, req),
            Event::Deliver {
                from,
                to,
                msg: Msg::ClientReply { req, reply },
            } => self.client_reply(world, from, to, req, reply),
            Event::Deliver {
                from,
                to,
                msg: Msg::ClientRequest { req, command },
            } => {
                let Some(&index) = self.host_to_slot.get(&to) else {
                    return Ok(());
                };
                let now_ms = world.local_ms(to);
                if let Some(node) = self.slots[index].node.as_mut() {
                    node.handle_client(from, req, command, now_ms);
                }
                self.flush(world, index)
            }
            Event::Deliver { from, to, msg } => {
                let (Some(&from_index), Some(&index)) =
                    (self.host_to_slot.get(&from), self.host_to_slot.get(&to))
                else {
                    return Ok(());
                };
                let from_id = self.slots[from_index].id;
                self.deliver_to_node(world, from_id, index, msg)
            }
            other => {
                world.note(&("unexpected event", other));
                Ok(())
            }
        }
    }

    /// A node-to-node message; a replication message from an older epoch than the replica
    /// knows is checked to change nothing (invariant 4).
    fn deliver_to_node(
        &mut self,
        world: &mut World<Msg>,
        from: NodeId,
        index: usize,
        msg: Msg,
    ) -> Result<(), Violation> {
        let now_ms = world.local_ms(self.slots[index].host);
        let Some(node) = self.slots[index].node.as_mut() else {
            return Ok(());
        };
        let stale = match &msg {
            Msg::Replication { partition, message } => node
                .replica(*partition)
                .filter(|r| message.epoch() < r.epoch())
                .map(|r| {
                    (
                        *partition,
                        message.epoch(),
                        Fingerprint::of(r),
                        format!("{msg:?}"),
                    )
                }),
            _ => None,
        };
        node.handle_message(from, msg, now_ms);
        if let Some((partition, message_epoch, before, shown)) = stale
            && let Some(replica) = node.replica(partition)
        {
            let after = Fingerprint::of(replica);
            let id = node.id();
            self.checker.stale_message_handled(
                id,
                partition,
                shown,
                message_epoch,
                &before,
                &after,
            )?;
        }
        self.flush(world, index)
    }

    /// Carry a node's outputs, feed its observations to the checker, and check its replicas.
    fn flush(&mut self, world: &mut World<Msg>, index: usize) -> Result<(), Violation> {
        let host = self.slots[index].host;
        let Some(node) = self.slots[index].node.as_mut() else {
            return Ok(());
        };
        let out = node.take_outbox();
        let Some(node) = self.slots[index].node.as_ref() else {
            return Ok(());
        };
        for (peer, msg) in out.to_peers {
            let Some(&to) = self.id_to_host.get(&peer) else {
                continue;
            };
            world.send(host, to, msg);
        }
        for (client, req, reply) in out.to_clients {
            world.send(host, client, Msg::ClientReply { req, reply });
        }
        for observation in out.observations {
            match observation {
                Observation::Released {
                    partition,
                    epoch,
                    exec_seq,
                    changed,
                    id,
                    results,
                } => {
                    if let Some(replica) = node.replica(partition) {
                        self.checker.released(
                            node.id(),
                            node.incarnation(),
                            partition,
                            epoch,
                            exec_seq,
                            changed,
                            id,
                            &results,
                            replica,
                        )?;
                    }
                }
                Observation::Committed {
                    index,
                    command,
                    outcome,
                } => {
                    if self.checker.committed(node.id(), index, &command)? {
                        match (&command, &outcome) {
                            (MapCommand::AddNode { .. }, Ok(_)) => self.stats.nodes_added += 1,
                            (MapCommand::RemoveNode { .. }, Ok(_)) => self.stats.nodes_removed += 1,
                            _ => {}
                        }
                        let outcome = outcome.map(|a| a.map_version).map_err(|e| e.to_string());
                        world.note(&("committed", index, &command, outcome));
                    }
                }
                Observation::MapBroken { detail } => {
                    return Err(SiteViolation::MapBroken { detail }.into());
                }
                Observation::Retried { redirect: true } => self.stats.redirect_retries += 1,
                Observation::Retried { redirect: false } => self.stats.timeout_retries += 1,
                Observation::GaveUp => self.stats.try_again += 1,
                Observation::Membership { step } => {
                    use tern_node::cluster::membership::MembershipStep as Step;
                    if matches!(step, Step::AddVoter(_) | Step::RemoveVoter(_)) {
                        self.stats.voter_changes_proposed += 1;
                    }
                    world.note(&("membership", node.id(), &step));
                }
            }
        }
        self.checker
            .observe_node(node.id(), node.incarnation(), node.replicas())?;
        Ok(())
    }

    fn start_node(&mut self, world: &mut World<Msg>, index: usize) -> Result<(), Violation> {
        let slot = &mut self.slots[index];
        let Some(durable) = slot.durable.take() else {
            return Ok(());
        };
        let host = slot.host;
        let now_ms = world.local_ms(host);
        let seed = world.rng().next_u64();
        let shell = ShellConfig {
            nodes: slot.peers.clone(),
            join_existing: slot.join,
            ..self.config.shell.clone()
        };
        let node = SiteNode::start(slot.id, shell, durable, now_ms, seed)
            .map_err(|detail| SiteViolation::MapBroken { detail })?;
        slot.node = Some(node);
        let phase = world
            .rng()
            .between(1, self.config.shell.node_tick_ms * 1000);
        world.set_timer(host, phase, Msg::NodeTick);
        self.flush(world, index)
    }

    fn slot_of(&self, id: NodeId) -> Option<usize> {
        self.slots.iter().position(|s| s.id == id)
    }

    /// The most advanced map among running nodes.
    fn newest_map(&self) -> Option<&tern_node::cluster::PartitionMap> {
        self.newest_node().map(|n| n.map())
    }

    /// Slots that are members or being added or removed (not spare, not retired).
    fn active(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|&i| self.slots[i].life == Life::Active)
            .collect()
    }

    /// The running node with the most advanced map, if any.
    fn newest_node(&self) -> Option<&SiteNode> {
        self.slots
            .iter()
            .filter_map(|s| s.node.as_ref())
            .max_by_key(|n| n.map().map_version())
    }
}
