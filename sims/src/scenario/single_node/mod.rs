//! Scenario `single-node`: one node host holding P partition cores (routed through `Keyspace`),
//! and C clients issuing random string/counter/TTL operations over a small key set, so keys
//! collide. Requests and replies cross the simulated network (per-client FIFO links with random,
//! long-tailed latency, so clients' requests interleave and overtake each other); the node
//! applies a request when it arrives, at its own skewed clock's `now_ms`, and ticks its cores at
//! random intervals. Client think times include long pauses, so simulated time jumps and TTLs
//! really expire.
//!
//! Checked at every node step: the reference model (exact results, visible state of the touched
//! key), the core audit (change log, versions, purges), DBSIZE/SCAN against the model; after
//! every tick, every key and each partition's live count. At the end: per-key linearizability of
//! the client-observed history over the keys that never get a TTL.
mod node;
mod workload;

use super::{Coverage, RunOptions, RunReport};
use crate::check::Violation;
use crate::check::linearizability::{self, HistoryOp, KeyOp, LinSummary};
use crate::net::{HostId, Latency, LinkConfig};
use crate::rng::SimRng;
use crate::time::{HostClock, SimTime};
use crate::trace::Trace;
use crate::world::{Event, World};
use bytes::Bytes;
use node::Node;
use std::collections::BTreeMap;
use tern_node::core::{Command, CommandResult};
use tern_node::limits::Limits;
use workload::{random_op, think_time_us};

/// The scenario's knobs, drawn from the seed by [`Config::for_seed`].
#[derive(Clone, Debug)]
pub struct Config {
    pub partitions: u32,
    pub clients: u32,
    /// Client operations to complete.
    pub ops: u64,
    /// Keys that never get a TTL: the linearizability checker covers them.
    pub plain_keys: Vec<Bytes>,
    /// Keys that also see EX/PX/EXPIRE.
    pub ttl_keys: Vec<Bytes>,
    /// The node ticks its cores every `min..=max` microseconds.
    pub tick_interval_us: (u64, u64),
    pub client_link: LinkConfig,
    pub limits: Limits,
    pub lin_step_budget: u64,
    /// A run taking more events than this has stalled.
    pub events_max: u64,
    pub inject: Option<Injection>,
}

/// Deliberate faults, to prove the checkers catch them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Injection {
    /// The node's answer to request number `request` is replaced by a wrong one before the
    /// checks see it.
    WrongResult { request: u64 },
    /// The first change record appended at or after request `request` is hidden from the audit.
    HiddenRecord { request: u64 },
    /// The first change record appended at or after request `request` reaches the audit with
    /// its seq one too high, as if the log had skipped one.
    SkippedSeq { request: u64 },
    /// The first GET of a plain key answered at or after request `request` reaches its client
    /// with a value nobody wrote (after the node's checks: only linearizability can see it).
    PhantomRead { request: u64 },
}

impl Config {
    pub fn for_seed(rng: &mut SimRng) -> Self {
        let keys = |prefix: &str, n: usize| {
            (0..n)
                .map(|i| Bytes::from(format!("{prefix}{i}")))
                .collect()
        };
        let limits = Limits {
            // Short enough that tombstones are purged within a run.
            tombstone_retention_ms: rng.between(100, 5_000),
            ..Limits::default()
        };
        Self {
            partitions: rng.between(4, 8) as u32,
            clients: rng.between(3, 10) as u32,
            ops: rng.between(2_000, 3_000),
            plain_keys: keys("p", 5),
            ttl_keys: keys("t", 6),
            tick_interval_us: (20_000, 300_000),
            client_link: LinkConfig {
                latency: Latency::Spiky {
                    min_us: 100,
                    max_us: 5_000,
                    spike_ppm: 30_000,
                    spike_max_us: 80_000,
                },
                loss_ppm: 0,
                duplicate_ppm: 0,
                fifo: true,
            },
            limits,
            lin_step_budget: 2_000_000,
            events_max: 1_000_000,
            inject: None,
        }
    }
}

/// A request as a client issues it: one key's command, or a whole-keyspace one the node fans
/// out to every partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientOp {
    Key(Command),
    DbSize,
    /// A complete SCAN: the node walks every partition in steps of `count`.
    Scan {
        count: usize,
        pattern: Option<Bytes>,
    },
    FlushAll,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Msg {
    Request {
        id: u64,
        op: ClientOp,
    },
    Response {
        id: u64,
        result: CommandResult,
    },
    /// Node timer: housekeeping on every core.
    Tick,
    /// Client timer: issue the next operation.
    Think,
}

pub fn run(seed: u64, options: &RunOptions) -> RunReport {
    run_adjusted(seed, options, |_| {})
}

/// Run with the seed's config changed by `adjust` (tests use it to inject faults or resize).
pub fn run_adjusted(
    seed: u64,
    options: &RunOptions,
    adjust: impl FnOnce(&mut Config),
) -> RunReport {
    let mut rng = SimRng::from_seed(seed);
    let mut config = Config::for_seed(&mut rng);
    adjust(&mut config);
    let trace = if options.trace_lines > 0 {
        Trace::with_lines(options.trace_lines)
    } else {
        Trace::hash_only()
    };
    let mut world = World::new(rng, config.client_link, trace);
    let mut sim = Sim::new(&config, &mut world);
    let outcome = sim.run(&config, &mut world);
    let (lin, violation) = match outcome {
        Ok(lin) => (lin, None),
        Err(v) => (LinSummary::default(), Some(v)),
    };
    RunReport {
        scenario: super::Scenario::SingleNode,
        seed,
        trace_hash: world.trace().hash(),
        ops: sim.completed,
        events: world.trace().events(),
        sim_time: world.now(),
        net: world.net().stats(),
        lin,
        coverage: Coverage {
            expirations: sim.node.model.expired(),
            purges: sim.node.auditor.purged(),
            error_replies: sim.error_replies,
        },
        violation,
        trace_tail: world.trace().lines(),
    }
}

struct Sim {
    node: Node,
    clients: BTreeMap<HostId, Client>,
    issued: u64,
    completed: u64,
    error_replies: u64,
    next_request_id: u64,
    /// Client-observed history of the plain keys.
    histories: BTreeMap<Bytes, Vec<HistoryOp>>,
}

struct Client {
    index: u32,
    pending: Option<Pending>,
}

struct Pending {
    id: u64,
    op: ClientOp,
    invoked: SimTime,
}

impl Sim {
    fn new(config: &Config, world: &mut World<Msg>) -> Self {
        let node_clock = {
            let rng = world.rng();
            HostClock::skewed(
                rng.between_i64(-2_000_000, 2_000_000),
                rng.between_i64(-200, 200) as i32,
            )
        };
        let node_host = world.add_host("node", node_clock);
        let node = Node::new(config, node_host, world.rng());
        let mut clients = BTreeMap::new();
        for index in 0..config.clients {
            let rng = world.rng();
            let clock = HostClock::skewed(
                rng.between_i64(-500_000, 500_000),
                rng.between_i64(-100, 100) as i32,
            );
            let host = world.add_host(format!("client-{index}"), clock);
            clients.insert(
                host,
                Client {
                    index,
                    pending: None,
                },
            );
        }
        let histories = config
            .plain_keys
            .iter()
            .map(|k| (k.clone(), Vec::new()))
            .collect();
        Self {
            node,
            clients,
            issued: 0,
            completed: 0,
            error_replies: 0,
            next_request_id: 1,
            histories,
        }
    }

    fn run(&mut self, config: &Config, world: &mut World<Msg>) -> Result<LinSummary, Violation> {
        let (tick_min, tick_max) = config.tick_interval_us;
        let first_tick = world.rng().between(tick_min, tick_max);
        world.set_timer(self.node.host, first_tick, Msg::Tick);
        for &host in self.clients.keys() {
            let think = think_time_us(world.rng());
            world.set_timer(host, think, Msg::Think);
        }
        while self.completed < config.ops {
            if world.trace().events() > config.events_max {
                return Err(Violation::Stalled {
                    detail: format!(
                        "{} events for {} of {} operations",
                        config.events_max, self.completed, config.ops
                    ),
                });
            }
            let Some(event) = world.next_event() else {
                return Err(Violation::Stalled {
                    detail: format!(
                        "no events left after {} of {} operations",
                        self.completed, config.ops
                    ),
                });
            };
            match event {
                Event::Timer {
                    host,
                    msg: Msg::Tick,
                } if host == self.node.host => {
                    let now_ms = world.local_ms(host);
                    self.node.tick(now_ms)?;
                    let next = world.rng().between(tick_min, tick_max);
                    world.set_timer(host, next, Msg::Tick);
                }
                Event::Timer {
                    host,
                    msg: Msg::Think,
                } => self.issue(config, world, host),
                Event::Deliver {
                    from,
                    to,
                    msg: Msg::Request { id, op },
                } if to == self.node.host => {
                    let now_ms = world.local_ms(to);
                    let result = self.node.handle(&op, now_ms)?;
                    world.send(to, from, Msg::Response { id, result });
                }
                Event::Deliver {
                    to,
                    msg: Msg::Response { id, result },
                    ..
                } => {
                    self.complete(world, to, id, result);
                }
                other => world.note(&("unexpected event", other)),
            }
        }
        linearizability::check_keys(&self.histories, config.lin_step_budget)
    }

    fn issue(&mut self, config: &Config, world: &mut World<Msg>, host: HostId) {
        if self.issued >= config.ops {
            return;
        }
        let Some(client) = self.clients.get_mut(&host) else {
            return;
        };
        let client_now_ms = world.local_ms(host);
        let op = random_op(world.rng(), config, client_now_ms);
        let id = self.next_request_id;
        self.next_request_id += 1;
        self.issued += 1;
        client.pending = Some(Pending {
            id,
            op: op.clone(),
            invoked: world.now(),
        });
        world.send(host, self.node.host, Msg::Request { id, op });
    }

    fn complete(&mut self, world: &mut World<Msg>, host: HostId, id: u64, result: CommandResult) {
        let Some(client) = self.clients.get_mut(&host) else {
            return;
        };
        let Some(pending) = client.pending.take_if(|p| p.id == id) else {
            world.note(&("stray response", host, id));
            return;
        };
        self.completed += 1;
        self.error_replies += u64::from(result.is_err());
        let done = |op| HistoryOp {
            client: client.index,
            op,
            invoked: pending.invoked,
            completed: world.now(),
            result: Some(result.clone()),
        };
        match &pending.op {
            ClientOp::Key(command) => {
                if let Some((key, op)) = KeyOp::from_command(command)
                    && let Some(history) = self.histories.get_mut(&key)
                {
                    history.push(done(op));
                }
            }
            ClientOp::FlushAll => {
                for history in self.histories.values_mut() {
                    history.push(done(KeyOp::Clear));
                }
            }
            ClientOp::DbSize | ClientOp::Scan { .. } => {}
        }
        let think = think_time_us(world.rng());
        world.set_timer(host, think, Msg::Think);
    }
}
