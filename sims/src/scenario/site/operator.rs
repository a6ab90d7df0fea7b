//! The operator of `site-membership`: membership changes carried out during the chaos phase the
//! way docs/design/site-ha.md ("Membership", "Operator flow") tells an operator to, drawn from
//! the seed. Each [`Flow`] becomes a list of [`Step`]s; the operator looks at the site every
//! [`TICK_MS`] and takes the next step once its precondition holds (faults go on meanwhile):
//!
//! - (a) [`Flow::DrainRemove`]: ask any running node to drain the leaving node (again whenever
//!   the map shows it `Up`: a restart brings a drained node back up), wait until the map lists
//!   it in no partition, restart the others one at a time with a configuration without it,
//!   stop it (before or after the map removed it, drawn);
//! - (b) [`Flow::Join`]: restart the members with the new node in their configuration, start it
//!   with `join_existing`, wait until it is in the map, registered and a Raft voter;
//! - (c) [`Flow::CrashDrop`]: crash a node for good, restart the others without it, wait until
//!   the map removed it.
//!
//! A restart of a rolling configuration change loses the node's memory like a crash, so it
//! waits for what a crash waits for ([`Sim::copies_survive`], a settled site, no network fault
//! for `calm_ms`), but not for a majority of the Raft voters: while a dead node is still a
//! voter, a restart must leave fewer up (the map waits for the restarted node).
//!
//! Why (b) restarts the others *before* starting the new node (`join_configs_first`): a node
//! whose configuration does not list the new one cannot hear it (rule 9 of [`super::node`]).
//! If the new node was added to the map while such a node is still unrolled and the latter
//! then leads, it marks the new node down and, finding it down and not configured, removes it
//! from the map (docs/design/site-ha.md, "Dead nodes", caveat); the node then has a map, so it
//! is never added again. Configuring it everywhere first closes that window.
use super::node::AdminAnswer;
use super::{Fault, Life, Msg, Sim};
use crate::check::Violation;
use crate::rng::SimRng;
use crate::time::SimTime;
use crate::world::World;
use std::collections::{BTreeSet, VecDeque};
use tern_node::cluster::{NodeId, NodeStatus};

/// How often the operator looks at the site.
const TICK_MS: u64 = 100;
/// How long the operator waits before asking for a drain again.
const DRAIN_ASK_EVERY_MS: u64 = 1_000;
/// The site never has fewer members (a Raft quorum that survives one crash) nor more.
const MEMBERS_MIN: u64 = 3;
const MEMBERS_MAX: u64 = 6;

/// One membership change, as an operator does it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// (a) Drain a node, wait until it holds no copy, restart the others without it, stop it.
    DrainRemove,
    /// (b) Add a fresh node: the others' configurations list it, it starts with
    /// `join_existing`.
    Join,
    /// (c) A node crashes for good and is dropped from the others' configurations.
    CrashDrop,
}

/// One to three flows, keeping the members within [`MEMBERS_MIN`]..=[`MEMBERS_MAX`].
pub(super) fn draw_flows(rng: &mut SimRng, founders: u64) -> Vec<Flow> {
    let mut members = founders;
    let mut flows = Vec::new();
    for _ in 0..rng.between(1, 3) {
        let mut table = Vec::new();
        if members < MEMBERS_MAX {
            table.push((40, Flow::Join));
        }
        if members > MEMBERS_MIN {
            table.push((35, Flow::DrainRemove));
            table.push((25, Flow::CrashDrop));
        }
        let flow = rng.weighted(&table);
        members = if flow == Flow::Join {
            members + 1
        } else {
            members - 1
        };
        flows.push(flow);
    }
    flows
}

/// What the operator does next; node indexes are slots.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    /// Drain `node` until the map shows it draining and holding no copy.
    DrainUntilEmpty { node: usize },
    /// Restart `node` with `peers` as its configuration; while `leaving` (being removed) is
    /// drained and holds no copy, if set.
    Reconfigure {
        node: usize,
        peers: Vec<NodeId>,
        leaving: Option<usize>,
    },
    /// Until `node` is back and registered with its new incarnation.
    AwaitRestart { node: usize },
    /// Until the map no longer lists `node`.
    WaitRemoved { node: usize },
    /// Stop `node` for good (it is leaving).
    Stop { node: usize },
    /// Crash `node` for good.
    Kill { node: usize },
    /// Start the new node `node` (`join_existing`) with `peers` as its configuration.
    Start { node: usize, peers: Vec<NodeId> },
    /// Until `node` is in the map, registered, up and a Raft voter.
    WaitJoined { node: usize },
    /// Between two flows.
    Pause { until: SimTime },
}

#[derive(Debug)]
pub(super) struct Operator {
    flows: VecDeque<Flow>,
    steps: VecDeque<Step>,
    current: Option<Flow>,
    /// The members the operator's configurations name once the current flow is done (slots);
    /// `None` until the first flow starts.
    members: Option<Vec<usize>>,
    /// Leaving nodes whose copies moved away: no chaos crash brings them back `Up`.
    protected: BTreeSet<usize>,
    next_drain_ask: SimTime,
    /// When the current step became the first, for [`Self::describe`].
    step_since: SimTime,
}

impl Operator {
    pub(super) fn new(flows: Vec<Flow>) -> Self {
        Self {
            flows: flows.into(),
            steps: VecDeque::new(),
            current: None,
            members: None,
            protected: BTreeSet::new(),
            next_drain_ask: SimTime::ZERO,
            step_since: SimTime::ZERO,
        }
    }

    /// Nothing left to do.
    pub(super) fn done(&self) -> bool {
        self.flows.is_empty() && self.steps.is_empty()
    }

    /// Whether chaos must leave `node` alone.
    pub(super) fn protects(&self, node: usize) -> bool {
        self.protected.contains(&node)
    }

    /// Whether the next step restarts or stops a node, and so waits for a calm network.
    pub(super) fn wants_calm(&self) -> bool {
        matches!(
            self.steps.front(),
            Some(Step::Reconfigure { .. } | Step::Kill { .. })
        )
    }

    /// Where the operator is, for a stall report.
    pub(super) fn describe(&self) -> String {
        format!(
            "flow {:?}, waiting since {} at {:?}; flows left {:?}",
            self.current,
            self.step_since,
            self.steps.front(),
            self.flows
        )
    }
}

impl Sim {
    /// The operator's tick: take every step whose precondition holds, then look again later.
    pub(super) fn operate(&mut self, world: &mut World<Msg>) -> Result<(), Violation> {
        loop {
            let Some(step) = self.operator.steps.front().cloned() else {
                if self.operator.current.take().is_some() {
                    self.stats.flows_done += 1;
                }
                let Some(flow) = self.operator.flows.pop_front() else {
                    return Ok(());
                };
                self.plan_flow(world, flow);
                continue;
            };
            if !self.take_step(world, &step)? {
                break;
            }
            world.note(&("operator", &step));
            self.operator.steps.pop_front();
            self.operator.step_since = world.now();
        }
        world.set_timer(self.chaos_host, TICK_MS * 1000, Msg::Chaos(Fault::Operator));
        Ok(())
    }

    /// Turns `flow` into steps, from the current members.
    fn plan_flow(&mut self, world: &mut World<Msg>, flow: Flow) {
        let members = match self.operator.members.take() {
            Some(members) => members,
            None => self.active(),
        };
        let ids = |slots: &[usize], sim: &Sim| -> Vec<NodeId> {
            slots.iter().map(|&i| sim.slots[i].id).collect()
        };
        let mut steps = Vec::new();
        let after = match flow {
            Flow::DrainRemove | Flow::CrashDrop => {
                let leaving = *world.rng().pick(&members);
                let others: Vec<usize> =
                    members.iter().copied().filter(|&m| m != leaving).collect();
                let peers = ids(&others, self);
                let drained = if flow == Flow::DrainRemove {
                    steps.push(Step::DrainUntilEmpty { node: leaving });
                    Some(leaving)
                } else {
                    steps.push(Step::Kill { node: leaving });
                    None
                };
                for node in shuffled(world.rng(), &others) {
                    steps.push(Step::Reconfigure {
                        node,
                        peers: peers.clone(),
                        leaving: drained,
                    });
                    steps.push(Step::AwaitRestart { node });
                }
                match flow {
                    Flow::DrainRemove if world.rng().chance_ppm(500_000) => {
                        steps.push(Step::WaitRemoved { node: leaving });
                        steps.push(Step::Stop { node: leaving });
                    }
                    Flow::DrainRemove => {
                        steps.push(Step::Stop { node: leaving });
                        steps.push(Step::WaitRemoved { node: leaving });
                    }
                    _ => steps.push(Step::WaitRemoved { node: leaving }),
                }
                others
            }
            Flow::Join => {
                let Some(new) = (0..self.slots.len()).find(|&i| self.slots[i].life == Life::Spare)
                else {
                    // `Config::spare_nodes` made one slot per join.
                    world.note(&"operator: no spare node for a join");
                    self.operator.members = Some(members);
                    return;
                };
                let mut grown = members.clone();
                grown.push(new);
                let peers = ids(&grown, self);
                let start = Step::Start {
                    node: new,
                    peers: peers.clone(),
                };
                if !self.config.join_configs_first {
                    steps.push(start.clone());
                }
                for node in shuffled(world.rng(), &members) {
                    steps.push(Step::Reconfigure {
                        node,
                        peers: peers.clone(),
                        leaving: None,
                    });
                    steps.push(Step::AwaitRestart { node });
                }
                if self.config.join_configs_first {
                    steps.push(start);
                }
                steps.push(Step::WaitJoined { node: new });
                grown
            }
        };
        if self.config.skip_rolling_restarts {
            steps.retain(|s| {
                !matches!(
                    s,
                    Step::Reconfigure { .. } | Step::AwaitRestart { .. } | Step::WaitRemoved { .. }
                )
            });
        }
        let pause_ms = world.rng().between(200, 1_500);
        steps.push(Step::Pause {
            until: world.now().after_micros(pause_ms * 1000),
        });
        world.note(&("operator plans", flow, &steps));
        self.operator.members = Some(after);
        self.operator.current = Some(flow);
        self.operator.steps = steps.into();
        self.operator.step_since = world.now();
    }

    /// Takes `step` if its precondition holds; whether it did.
    fn take_step(&mut self, world: &mut World<Msg>, step: &Step) -> Result<bool, Violation> {
        match step {
            Step::DrainUntilEmpty { node } => self.drain_until_empty(world, *node),
            Step::Reconfigure {
                node,
                peers,
                leaving,
            } => {
                if let Some(leaving) = *leaving
                    && !self.drained_and_empty(leaving)
                    && !self.removed(leaving)
                {
                    // Back up (a restart forgets the drain; a false `MarkDown` and `MarkUp`
                    // with the same incarnation keeps it):
                    // drain it again before going on.
                    if self
                        .newest_map()
                        .and_then(|m| m.node(self.slots[leaving].id))
                        .is_some_and(|i| i.status == NodeStatus::Up)
                    {
                        world.note(&("operator: drained node back up", self.slots[leaving].id));
                        self.operator
                            .steps
                            .push_front(Step::DrainUntilEmpty { node: leaving });
                    }
                    return Ok(false);
                }
                if self.slots[*node].node.is_none() || !self.may_crash(world, *node) {
                    return Ok(false);
                }
                self.slots[*node].peers = peers.clone();
                self.crash(world, *node);
                self.stats.rolling_restarts += 1;
                let down_ms = if world.rng().chance_ppm(500_000) {
                    world.rng().between(50, 350)
                } else {
                    world.rng().between(1_600, 3_500)
                };
                let restart = Msg::Chaos(Fault::Restart { node: *node });
                world.set_timer(self.chaos_host, down_ms * 1000, restart);
                Ok(true)
            }
            Step::AwaitRestart { node } => Ok(self.registered(*node)),
            Step::WaitRemoved { node } => Ok(self.removed(*node)),
            Step::Stop { node } => {
                if self.slots[*node].node.is_some() {
                    if !self.copies_survive(*node) {
                        return Ok(false);
                    }
                    self.crash(world, *node);
                }
                self.retire(*node);
                Ok(true)
            }
            Step::Kill { node } => {
                if self.slots[*node].node.is_none()
                    || !self.may_crash(world, *node)
                    || !self.crash_allowed(*node)
                {
                    return Ok(false);
                }
                self.crash(world, *node);
                self.retire(*node);
                Ok(true)
            }
            Step::Start { node, peers } => {
                let slot = &mut self.slots[*node];
                slot.peers = peers.clone();
                slot.join = true;
                slot.life = Life::Active;
                self.start_node(world, *node)?;
                Ok(true)
            }
            Step::WaitJoined { node } => {
                let id = self.slots[*node].id;
                let voter = self
                    .newest_node()
                    .is_some_and(|n| n.raft().voters().contains(&id));
                let up = self
                    .newest_map()
                    .and_then(|m| m.node(id))
                    .is_some_and(|i| i.status == NodeStatus::Up);
                let joined = voter && up && self.registered(*node);
                if joined {
                    self.slots[*node].serves_clients = true;
                }
                Ok(joined)
            }
            Step::Pause { until } => Ok(world.now() >= *until),
        }
    }

    /// Ask a running node to drain `node` (now and then), until the map shows it draining and
    /// holding no copy.
    fn drain_until_empty(
        &mut self,
        world: &mut World<Msg>,
        node: usize,
    ) -> Result<bool, Violation> {
        let id = self.slots[node].id;
        let Some(map) = self.newest_map() else {
            return Ok(false);
        };
        match map.node(id).map(|i| i.status) {
            Some(NodeStatus::Draining) => {
                if self.drained_and_empty(node) {
                    // From here on it only leaves: clients go elsewhere, chaos spares it.
                    self.slots[node].serves_clients = false;
                    self.operator.protected.insert(node);
                    return Ok(true);
                }
                Ok(false)
            }
            Some(NodeStatus::Up) if world.now() >= self.operator.next_drain_ask => {
                let running: Vec<usize> = self
                    .active()
                    .into_iter()
                    .filter(|&i| self.slots[i].node.is_some())
                    .collect();
                if running.is_empty() {
                    return Ok(false);
                }
                let via = *world.rng().pick(&running);
                let host = self.slots[via].host;
                let now_ms = world.local_ms(host);
                if let Some(site_node) = self.slots[via].node.as_mut() {
                    let answer: AdminAnswer = site_node.handle_admin(id, true, now_ms);
                    world.note(&("operator drains", id, "via", self.slots[via].id, answer));
                    self.stats.drain_requests += 1;
                }
                self.operator.next_drain_ask = world.now().after_micros(DRAIN_ASK_EVERY_MS * 1000);
                self.flush(world, via)?;
                Ok(false)
            }
            _ => Ok(false),
        }
    }

    /// The newest map's nodes and partitions, and who leads Raft, for a stall report.
    pub(super) fn site_summary(&self) -> String {
        let Some(newest) = self.newest_node() else {
            return "no node runs".to_string();
        };
        let map = newest.map();
        let mut out = format!(
            "newest map v{} (on {}, voters {:?}, leader {:?}): nodes",
            map.map_version(),
            newest.id(),
            newest.raft().voters(),
            newest.raft().leader()
        );
        for (id, info) in map.nodes() {
            out.push_str(&format!(" {id}:{:?}#{}", info.status, info.incarnation));
        }
        for (p, a) in map.partitions().iter().enumerate() {
            out.push_str(&format!(
                "; p{p} e{} primary {:?} replicas {:?} in sync {:?}",
                a.epoch, a.primary, a.replicas, a.in_sync
            ));
            if let Some(orphaned) = a.orphaned_by {
                out.push_str(&format!(" orphaned by {orphaned:?}"));
            }
        }
        let running: Vec<String> = self
            .slots
            .iter()
            .map(|s| match &s.node {
                Some(n) => format!("{}#{}:{:?}", s.id, n.incarnation(), s.life),
                None => format!("{}:down:{:?}", s.id, s.life),
            })
            .collect();
        out.push_str(&format!("; slots {running:?}"));
        out
    }

    /// What a crash waits for besides a Raft majority: every partition keeps a trusted copy
    /// without `node`, every member is up and registered, and (unless faults may overlap) no
    /// network fault for `calm_ms`.
    fn may_crash(&self, world: &World<Msg>, node: usize) -> bool {
        let calm_for_ms = world.now().micros_since(self.calm_since) / 1000;
        let calm = self.config.overlap_faults
            || (self.cuts.is_empty() && calm_for_ms >= self.config.calm_ms);
        calm && self.settled() && (self.config.crash_any || self.copies_survive(node))
    }

    /// `node` runs, and the newest map marks it draining and lists it in no partition.
    fn drained_and_empty(&self, node: usize) -> bool {
        let id = self.slots[node].id;
        let Some(map) = self.newest_map() else {
            return false;
        };
        self.slots[node].node.is_some()
            && map
                .node(id)
                .is_some_and(|i| i.status == NodeStatus::Draining)
            && map.partitions().iter().all(|a| {
                a.primary != Some(id) && a.handover != Some(id) && !a.replicas.contains(&id)
            })
    }

    /// The newest map no longer lists `node`.
    fn removed(&self, node: usize) -> bool {
        let id = self.slots[node].id;
        self.newest_map().is_some_and(|m| m.node(id).is_none())
    }

    /// `node` runs and the newest map registered its incarnation, not marked down.
    fn registered(&self, node: usize) -> bool {
        let slot = &self.slots[node];
        let (Some(running), Some(map)) = (slot.node.as_ref(), self.newest_map()) else {
            return false;
        };
        map.node(slot.id)
            .is_some_and(|i| !i.status.is_down() && i.incarnation == running.incarnation())
    }

    fn retire(&mut self, node: usize) {
        let slot = &mut self.slots[node];
        slot.life = Life::Retired;
        slot.node = None;
        slot.durable = None;
        slot.serves_clients = false;
        self.operator.protected.remove(&node);
    }
}

fn shuffled(rng: &mut SimRng, items: &[usize]) -> Vec<usize> {
    let mut out = items.to_vec();
    for i in 0..out.len() {
        let j = i + rng.index(out.len() - i);
        out.swap(i, j);
    }
    out
}
