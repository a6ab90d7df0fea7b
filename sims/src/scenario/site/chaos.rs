//! The fault schedule: the chaos host's timers draw faults from the scenario's [`FaultMix`]
//! during the chaos phase, undo each after its duration, then heal everything and walk the run
//! through its last phases.
use super::{Life, Msg, Phase, Sim};
use crate::check::Violation;
use crate::world::World;
use tern_node::cluster::NodeStatus;

/// What the chaos host does next (node indexes are slots: 0..nodes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Draw and inject the next fault, schedule the one after.
    Next,
    /// Kill a node: its volatile state is gone; it restarts after the outage.
    Crash {
        node: usize,
        down_ms: u64,
    },
    Restart {
        node: usize,
    },
    /// Cut these directed links between nodes, for `ms`.
    Cut {
        links: Vec<(usize, usize)>,
        ms: u64,
    },
    Uncut {
        links: Vec<(usize, usize)>,
    },
    /// Every link of `node` loses, duplicates, reorders and delays messages, for `ms`.
    Degrade {
        node: usize,
        ms: u64,
    },
    Restore {
        node: usize,
    },
    /// Step a node's clock (an NTP step; negative goes back).
    ClockStep {
        node: usize,
        delta_us: i64,
    },
    /// The operator's next look at the site (`site-membership`).
    Operator,
    /// End of chaos: every link restored, every node up (once the operator is done).
    Heal,
    /// After the heal: see whether every partition is served yet (measures resume time).
    Probe,
    /// The resume bound after the heal has passed: every partition must be served.
    CheckResume,
    /// Clients stop; one of them reads every key.
    StopClients,
    /// The quiet period is over: check convergence and end the run.
    Finish,
}

/// Relative weights of the faults a scenario draws.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultMix {
    pub crash: u32,
    pub isolate: u32,
    pub split: u32,
    pub one_way: u32,
    pub degrade: u32,
    pub clock_step: u32,
}

impl FaultMix {
    pub fn for_kind(kind: super::SiteKind) -> Self {
        use super::SiteKind;
        match kind {
            SiteKind::Failover => Self {
                crash: 80,
                isolate: 0,
                split: 0,
                one_way: 0,
                degrade: 10,
                clock_step: 10,
            },
            SiteKind::Partition => Self {
                crash: 0,
                isolate: 30,
                split: 20,
                one_way: 25,
                degrade: 25,
                clock_step: 0,
            },
            SiteKind::Chaos | SiteKind::Membership => Self {
                crash: 30,
                isolate: 15,
                split: 10,
                one_way: 15,
                degrade: 15,
                clock_step: 15,
            },
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Crash,
    Isolate,
    Split,
    OneWay,
    Degrade,
    ClockStep,
}

impl Sim {
    pub(super) fn chaos(&mut self, world: &mut World<Msg>, fault: Fault) -> Result<(), Violation> {
        let host = self.chaos_host;
        match fault {
            Fault::Next => {
                if self.phase == super::Phase::Warmup {
                    self.phase = Phase::Chaos;
                    if !self.operator.done() {
                        let start_ms = world.rng().between(0, 1_000);
                        world.set_timer(host, start_ms * 1000, Msg::Chaos(Fault::Operator));
                    }
                }
                if self.phase != Phase::Chaos {
                    return Ok(());
                }
                self.inject(world)?;
                let (min, max) = self.config.fault_gap_ms;
                let gap = world.rng().between(min, max);
                world.set_timer(host, gap * 1000, Msg::Chaos(Fault::Next));
            }
            Fault::Crash { node, down_ms } => {
                self.crash(world, node);
                world.set_timer(host, down_ms * 1000, Msg::Chaos(Fault::Restart { node }));
            }
            Fault::Restart { node } => {
                // A node stopped for good meanwhile stays down.
                if self.slots[node].node.is_none() && self.slots[node].life == Life::Active {
                    world.restart(self.slots[node].host);
                    self.start_node(world, node)?;
                }
            }
            Fault::Cut { links, ms } => {
                self.calm_since = world.now();
                for &(a, b) in &links {
                    *self.cuts.entry((a, b)).or_default() += 1;
                    self.sync_link(world, a, b);
                }
                self.stats.cuts += 1;
                world.set_timer(host, ms * 1000, Msg::Chaos(Fault::Uncut { links }));
            }
            Fault::Uncut { links } => {
                self.calm_since = world.now();
                for (a, b) in links {
                    if let Some(count) = self.cuts.get_mut(&(a, b)) {
                        *count = count.saturating_sub(1);
                        if *count == 0 {
                            self.cuts.remove(&(a, b));
                        }
                    }
                    self.sync_link(world, a, b);
                }
            }
            Fault::Degrade { node, ms } => {
                self.calm_since = world.now();
                self.set_degraded(world, node, true);
                self.stats.degrades += 1;
                world.set_timer(host, ms * 1000, Msg::Chaos(Fault::Restore { node }));
            }
            Fault::Restore { node } => {
                self.calm_since = world.now();
                self.set_degraded(world, node, false);
            }
            Fault::ClockStep { node, delta_us } => {
                self.calm_since = world.now();
                let host = self.slots[node].host;
                world.clock_mut(host).step(delta_us);
                self.stats.clock_steps += 1;
            }
            Fault::Operator => self.operate(world)?,
            Fault::Heal if !self.operator.done() => {
                // The operator finishes first (within its bound), faults going on meanwhile.
                let planned = (self.config.warmup_ms + self.config.chaos_ms) * 1000;
                let late_us = world
                    .now()
                    .micros_since(crate::time::SimTime::ZERO)
                    .saturating_sub(planned);
                if late_us > self.config.operator_bound_ms * 1000 {
                    return Err(Violation::Stalled {
                        detail: format!(
                            "the operator is not done {} ms after the chaos phase: {}; {}",
                            late_us / 1000,
                            self.operator.describe(),
                            self.site_summary()
                        ),
                    });
                }
                world.set_timer(host, 250_000, Msg::Chaos(Fault::Heal));
            }
            Fault::Heal => self.heal(world)?,
            Fault::Probe => self.probe(world),
            Fault::CheckResume => self.check_resume(world)?,
            Fault::StopClients => self.stop_clients(world)?,
            Fault::Finish => {
                self.finish(world)?;
                self.phase = Phase::Done;
            }
        }
        Ok(())
    }

    /// Draw one fault and inject it (a draw that is not allowed right now is skipped).
    fn inject(&mut self, world: &mut World<Msg>) -> Result<(), Violation> {
        let mix = self.config.mix;
        let table = [
            (mix.crash, Kind::Crash),
            (mix.isolate, Kind::Isolate),
            (mix.split, Kind::Split),
            (mix.one_way, Kind::OneWay),
            (mix.degrade, Kind::Degrade),
            (mix.clock_step, Kind::ClockStep),
        ];
        if table.iter().all(|(w, _)| *w == 0) {
            return Ok(());
        }
        // Faults hit members (and nodes being added or removed), never spare or retired slots,
        // nor (see `shield_leaving`) a drained node on its way out.
        let shield = self.config.shield_leaving;
        let active: Vec<usize> = self
            .active()
            .into_iter()
            .filter(|&i| !(shield && self.operator.protects(i)))
            .collect();
        let n = active.len();
        if n < 2 {
            return Ok(());
        }
        // A fault that had to wait goes first, so waiting does not starve it.
        let kind = match self.deferred.take() {
            Some(kind) => kind,
            None => world.rng().weighted(&table),
        };
        if !self.config.overlap_faults && self.operator.wants_calm() {
            // The operator's restart waits for a calm network, as a crash does: no new fault
            // starves it.
            world.note(&"fault skipped: the operator waits for calm");
            return Ok(());
        }
        if !self.config.overlap_faults {
            // Crashes wait for the network to be whole; other faults wait for every node to
            // be up and registered.
            let calm_for = world.now().micros_since(self.calm_since) / 1000;
            let allowed = match kind {
                Kind::Crash => {
                    self.cuts.is_empty() && calm_for >= self.config.calm_ms && self.settled()
                }
                _ => self.settled(),
            };
            if !allowed {
                world.note(&"fault deferred: it would overlap another");
                self.deferred = Some(kind);
                return Ok(());
            }
        }
        let fault = match kind {
            Kind::Crash => {
                let crash_unjoined = self.config.crash_unjoined;
                let up: Vec<usize> = active
                    .iter()
                    .copied()
                    .filter(|&i| {
                        self.slots[i].node.as_ref().is_some_and(|node| {
                            // A joiner that has no snapshot yet cannot restart (see
                            // `crash_unjoined`).
                            crash_unjoined
                                || !self.slots[i].join
                                || node.raft().snapshot_index() > 0
                        })
                    })
                    .collect();
                if up.is_empty() {
                    return Ok(());
                }
                let node = *world.rng().pick(&up);
                if !self.crash_allowed(node) {
                    world.note(&("crash not allowed", node));
                    return Ok(());
                }
                let quick = self.config.quick_restart_ppm;
                let down_ms = if world.rng().chance_ppm(quick) {
                    // Back before anyone notices: only the incarnation tells.
                    world.rng().between(50, 350)
                } else {
                    // Long enough to be marked down first (the planner needs a leader, and a
                    // fresh leader observes a full failure timeout).
                    world.rng().between(1_600, 3_500)
                };
                Fault::Crash { node, down_ms }
            }
            Kind::Isolate => {
                let node = active[world.rng().index(n)];
                let mut links = Vec::new();
                for other in active.iter().copied().filter(|&o| o != node) {
                    links.push((node, other));
                    links.push((other, node));
                }
                Fault::Cut {
                    links,
                    ms: world.rng().between(300, 2_500),
                }
            }
            Kind::Split => {
                let size = world.rng().between(1, (n / 2) as u64) as usize;
                let mut side: Vec<usize> = active.clone();
                for i in 0..n {
                    let j = i + world.rng().index(n - i);
                    side.swap(i, j);
                }
                let (left, right) = side.split_at(size);
                let mut links = Vec::new();
                for &a in left {
                    for &b in right {
                        links.push((a, b));
                        links.push((b, a));
                    }
                }
                Fault::Cut {
                    links,
                    ms: world.rng().between(300, 2_500),
                }
            }
            Kind::OneWay => {
                let from = world.rng().index(n);
                let to = (from + 1 + world.rng().index(n - 1)) % n;
                let mut links = vec![(active[from], active[to])];
                if world.rng().chance_ppm(300_000) {
                    // Everything from one node is lost, while it still hears everyone.
                    links = (0..n)
                        .filter(|&o| o != from)
                        .map(|o| (active[from], active[o]))
                        .collect();
                }
                Fault::Cut {
                    links,
                    ms: world.rng().between(300, 2_500),
                }
            }
            Kind::Degrade => Fault::Degrade {
                node: active[world.rng().index(n)],
                ms: world.rng().between(300, 2_000),
            },
            Kind::ClockStep => Fault::ClockStep {
                node: active[world.rng().index(n)],
                delta_us: world.rng().between_i64(-500_000, 1_500_000),
            },
        };
        world.note(&("fault", &fault));
        self.chaos(world, fault)
    }

    /// A crash must leave every partition a live copy the map trusts ([`Self::copies_survive`]),
    /// and a majority of the Raft voters up.
    pub(super) fn crash_allowed(&self, victim: usize) -> bool {
        let Some(newest) = self.newest_node() else {
            return false;
        };
        let voters = newest.raft().voters();
        let up_after = voters
            .iter()
            .filter(|&&v| {
                self.slot_of(v)
                    .is_some_and(|i| i != victim && self.slots[i].node.is_some())
            })
            .count();
        if up_after < voters.len() / 2 + 1 {
            return false;
        }
        self.config.crash_any || self.copies_survive(victim)
    }

    /// Every partition keeps, without `victim`, a live copy the map trusts: the primary or an
    /// in-sync backup, running with the incarnation the map registered (or, for a partition
    /// left without primary, the node it waits for).
    pub(super) fn copies_survive(&self, victim: usize) -> bool {
        let Some(map) = self.newest_map() else {
            return false;
        };
        let trusted = |id: tern_node::cluster::NodeId, incarnation: Option<u64>| {
            let Some(index) = self.slot_of(id) else {
                return false;
            };
            let Some(node) = self.slots[index].node.as_ref() else {
                return false;
            };
            let info = map.node(id);
            index != victim
                && info.is_some_and(|i| {
                    !i.status.is_down()
                        && i.incarnation == node.incarnation()
                        && incarnation.is_none_or(|inc| inc == i.incarnation)
                })
        };
        map.partitions().iter().all(|a| {
            let copies = a.primary.iter().chain(a.in_sync.iter());
            let mut alive = copies.clone().any(|&id| trusted(id, None));
            if a.primary.is_none()
                && let Some((owner, incarnation)) = a.orphaned_by
            {
                let index = self.slot_of(owner);
                alive |= index.is_some_and(|i| {
                    i != victim
                        && self.slots[i]
                            .node
                            .as_ref()
                            .is_some_and(|node| node.incarnation() == incarnation)
                });
            }
            alive
        })
    }

    /// Every member up, registered with its current incarnation, and not marked down.
    pub(super) fn settled(&self) -> bool {
        let Some(map) = self.newest_map() else {
            return false;
        };
        // A node being added counts once the map lists it; a drained one leaving, no more.
        let mut members = self.active().into_iter().filter_map(|i| {
            let slot = &self.slots[i];
            let joining = slot.join && map.node(slot.id).is_none();
            (!joining && !self.operator.protects(i)).then_some(slot)
        });
        // A node that died for good is an outage until the map marked it down.
        let undetected_death = self.slots.iter().any(|s| {
            s.life == Life::Retired && map.node(s.id).is_some_and(|i| i.status == NodeStatus::Up)
        });
        !undetected_death
            && members.all(|slot| {
                slot.node.as_ref().is_some_and(|node| {
                    map.node(slot.id).is_some_and(|info| {
                        !info.status.is_down() && info.incarnation == node.incarnation()
                    })
                })
            })
    }

    pub(super) fn crash(&mut self, world: &mut World<Msg>, index: usize) {
        let Some(node) = self.slots[index].node.take() else {
            return;
        };
        self.slots[index].durable = Some(node.crash());
        world.crash(self.slots[index].host);
        self.stats.crashes += 1;
        self.connection_lost(world, index);
    }

    /// Make the network's cut state of `a → b` and `b → a` match the counters.
    fn sync_link(&mut self, world: &mut World<Msg>, a: usize, b: usize) {
        let (ha, hb) = (self.slots[a].host, self.slots[b].host);
        let net = world.net_mut();
        net.heal(ha, hb);
        if self.cuts.contains_key(&(a, b)) {
            net.cut_one_way(ha, hb);
        }
        if self.cuts.contains_key(&(b, a)) {
            net.cut_one_way(hb, ha);
        }
    }

    fn set_degraded(&mut self, world: &mut World<Msg>, node: usize, degraded: bool) {
        self.slots[node].degraded = degraded;
        for other in 0..self.slots.len() {
            if other == node {
                continue;
            }
            let either = degraded || self.slots[other].degraded;
            let config = if either {
                self.config.degraded_link
            } else {
                self.config.node_link
            };
            let (a, b) = (self.slots[node].host, self.slots[other].host);
            world.net_mut().set_link_both(a, b, config);
        }
    }

    /// End of chaos: links restored, clocks left as they are, every node up.
    fn heal(&mut self, world: &mut World<Msg>) -> Result<(), Violation> {
        self.phase = Phase::Healed;
        self.healed_at = Some(world.now());
        world.note(&"heal");
        self.cuts.clear();
        world.net_mut().heal_all();
        for node in 0..self.slots.len() {
            self.set_degraded(world, node, false);
        }
        for node in self.active() {
            if self.slots[node].node.is_none() {
                world.restart(self.slots[node].host);
                self.start_node(world, node)?;
            }
        }
        let host = self.chaos_host;
        world.set_timer(host, 0, Msg::Chaos(Fault::Probe));
        let bound = self.config.resume_bound_ms;
        world.set_timer(host, bound * 1000, Msg::Chaos(Fault::CheckResume));
        world.set_timer(
            host,
            (bound + self.config.post_heal_ms) * 1000,
            Msg::Chaos(Fault::StopClients),
        );
        Ok(())
    }
}
