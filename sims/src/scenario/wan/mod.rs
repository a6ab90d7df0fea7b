//! Multi-site WAN scenarios: `wan-partition`, `wan-crash` and `wan-chaos`.
//!
//! N sites (3 by default, sometimes 2 or 4), each one host holding P partition cores and its
//! clients, plus one gateway host (so the gateway can crash alone) running the real
//! [`tern_gateway::site::SiteGateway`] core (delegators, sinks, log generations, wipe
//! detection, Merkle repair) as the host drives it (`gateway.rs`). Each site has its own
//! skewed, drifting clock. Frames go through the real wire encoder, are cut into
//! chunks like a stream and cross a WAN with up to 300 ms latency, loss, duplication and
//! reordering (see [`transport`]). Clients at every site write concurrently on a small shared
//! key set: SET/DEL/GET on `s:*` keys (last-writer-wins) and INCRBY on `c:*` keys (counter
//! merge), so real conflicts happen.
//!
//! | scenario | faults during the chaos phase |
//! |---|---|
//! | `wan-partition` | full and one-way WAN partitions, isolated sites, heals; mild loss |
//! | `wan-crash` | gateway crashes and restarts: backlog disks lose unsynced data (torn tails), appends and fsyncs fail, small backlogs overflow (drop and repair), change logs too short to refeed from (repair); whole sites lose their memory (logs restart at seq 1, the data comes back by repair); mild loss and partitions |
//! | `wan-chaos` | all of the above, heavy loss/duplication/reordering, large clock skew and clock steps |
//!
//! Then faults stop (links heal and turn loss-free, crashed gateways restart, clients stop)
//! and the run must converge within a bound derived from the latencies and limits.
//!
//! Checked as the run goes ([`crate::check::convergence`]): no phantom values, no duplicate
//! sink applies, per-key versions never going back at any site. At the end: every site holds
//! identical state, no acknowledged write lost (version vectors; counter sums), every repair
//! mark cleared, and all of it within the resume bound.
mod gateway;
pub mod msg;
pub mod site;
mod storage;
pub mod transport;

use super::{Coverage, RunOptions, RunReport, Scenario};
use crate::check::Violation;
use crate::check::convergence::{WanChecker, WanViolation};
use crate::check::linearizability::LinSummary;
use crate::net::{HostId, Latency, LinkConfig};
use crate::rng::SimRng;
use crate::time::{HostClock, SimTime};
use crate::trace::Trace;
use crate::world::{Event, World};
use bytes::Bytes;
use gateway::{Ctx, Gateway, site_name};
use msg::{FaultAction, LinkId, Msg};
use rand::RngCore;
use site::{ClientOp, RESOLVER_TABLE, Resolvers, Site, registry_for};
use std::collections::BTreeMap;
use std::sync::Arc;
use storage::SavedState;
use tern_conflict::{KeyspaceResolvers, SiteId, Versioned};
use tern_gateway::GatewayLimits;
use tern_gateway::backlog::{BacklogConfig, FsyncMode, MemFaults, MemStorage, OverflowPolicy};
use tern_gateway::site::limits::{REPAIR_RETRY_BACKOFF_MS_MAX, REPAIR_RETRY_BACKOFF_MS_MIN};
use tern_node::limits::Limits;
use transport::TransportConfig;

/// A deferred wipe is tried again, and a wiped site's restoration checked, this often.
const WIPE_RETRY_US: u64 = 20_000;

/// Which fault mix a run gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    Partition,
    Crash,
    Chaos,
}

impl Flavor {
    pub fn scenario(self) -> Scenario {
        match self {
            Flavor::Partition => Scenario::WanPartition,
            Flavor::Crash => Scenario::WanCrash,
            Flavor::Chaos => Scenario::WanChaos,
        }
    }
}

/// Deliberate faults, to prove the checkers catch them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Injection {
    /// The `nth` sink apply of the run is applied twice.
    DuplicateApply { nth: u64 },
    /// From the `from_nth` sink apply of the run on, site 0's sinks confirm records without
    /// applying them. (Dropping a single record is often invisible: a later write of the key
    /// supersedes it, or another site relays the same entry.)
    ConfirmWithoutApply { from_nth: u64 },
    /// The `nth` string record a sink receives carries a value nobody wrote.
    PhantomValue { nth: u64 },
    /// `lww` is replaced by a resolver that keeps whatever arrived first.
    OrderDependentResolver,
}

/// The scenario's knobs, drawn from the seed by [`Config::for_seed`].
#[derive(Clone, Debug)]
pub struct Config {
    pub flavor: Flavor,
    pub sites: usize,
    pub partitions: u32,
    pub clients_per_site: u32,
    pub string_keys: u64,
    pub counter_keys: u64,
    /// A client waits `min..=max` µs between operations.
    pub think_us: (u64, u64),
    /// Length of the chaos phase (clients write, faults happen).
    pub chaos_us: u64,
    pub limits: Limits,
    pub gateway_limits: GatewayLimits,
    /// Every delegator's durable backlog.
    pub backlog: BacklogConfig,
    /// Faults of the simulated disks under the backlogs.
    pub disk_faults: MemFaults,
    pub transport: TransportConfig,
    /// Per ordered pair of sites, the WAN link during the chaos phase.
    pub wan_links: BTreeMap<(usize, usize), LinkConfig>,
    /// The largest one-way WAN delay any link can produce.
    pub latency_max_us: u64,
    /// Per site: clock offset (µs) and drift (ppm).
    pub clocks: Vec<(i64, i32)>,
    /// The fault schedule: (global µs, action), ending with `EndChaos`.
    pub faults: Vec<(u64, FaultAction)>,
    /// The feed's page size (`WanChanges`).
    pub feed_records_max: u32,
    pub feed_bytes_max: u32,
    /// Bounds of one apply or repair push request.
    pub apply_records_max: u32,
    pub apply_bytes_max: u32,
    /// A repair snapshot load's page size (`WanDump`).
    pub dump_entries_max: u32,
    pub dump_bytes_max: u32,
    /// Changed sink cursors are saved at most this often.
    pub cursor_persist_ms: u64,
    /// A wiped site's clients wait until it got back what the others held (off, the default:
    /// they write at once, to keys not yet restored too; see `WipeSite`).
    pub wipe_holds_clients: bool,
    pub events_max: u64,
    pub inject: Option<Injection>,
}

impl Config {
    pub fn for_seed(flavor: Flavor, rng: &mut SimRng) -> Self {
        let sites = match flavor {
            Flavor::Chaos => rng.weighted(&[(2, 2usize), (6, 3), (2, 4)]),
            _ => rng.weighted(&[(1, 2usize), (8, 3), (1, 4)]),
        };
        let latency_max_us = rng.between(20_000, 300_000);
        let (loss_ppm, duplicate_ppm) = match flavor {
            Flavor::Chaos => (rng.between(0, 80_000) as u32, rng.between(0, 50_000) as u32),
            _ => (rng.between(0, 10_000) as u32, rng.between(0, 10_000) as u32),
        };
        let mut wan_links = BTreeMap::new();
        for from in 0..sites {
            for to in 0..sites {
                if from != to {
                    let max_us = rng.between(latency_max_us / 4, latency_max_us * 2 / 3);
                    let link = LinkConfig {
                        latency: Latency::Spiky {
                            min_us: rng.between(1_000, max_us / 2),
                            max_us,
                            spike_ppm: rng.between(0, 100_000) as u32,
                            spike_max_us: latency_max_us,
                        },
                        loss_ppm,
                        duplicate_ppm,
                        fifo: false,
                    };
                    wan_links.insert((from, to), link);
                }
            }
        }
        let (offset_max, drift_max) = match flavor {
            Flavor::Chaos => (3_000_000, 2_000),
            _ => (50_000, 100),
        };
        let clocks = (0..sites)
            .map(|_| {
                (
                    rng.between_i64(-offset_max, offset_max),
                    rng.between_i64(-drift_max, drift_max) as i32,
                )
            })
            .collect();
        let crash_flavor = flavor != Flavor::Partition;
        let limits = Limits {
            // Long enough that no tombstone is purged within a run: purges are local decisions
            // and would make otherwise converged sites differ.
            tombstone_retention_ms: 24 * 60 * 60 * 1000,
            // Sometimes too short for a restarted gateway to rebuild from: forces repairs.
            change_log_bytes_max: if crash_flavor && rng.chance_ppm(400_000) {
                rng.between(2_000, 12_000) as usize
            } else {
                Limits::default().change_log_bytes_max
            },
            ..Limits::default()
        };
        let rtt_us = 2 * latency_max_us;
        // Small digest trees (few keys per run): 1 to 4 round trips down.
        let (repair_leaf_bits, repair_fanout_bits) =
            *rng.pick(&[(4u8, 2u8), (6, 2), (6, 3), (8, 4), (8, 2)]);
        let gateway_limits = GatewayLimits {
            batch_records_max: rng.between(4, 64) as usize,
            inflight_batches_max: rng.between(1, 8) as usize,
            // A safety net above the worst round trip (the transport itself is reliable).
            ack_timeout_ms: rtt_us / 1000 + rng.between(200, 2_000),
            repair_leaf_bits,
            repair_fanout_bits,
            repair_message_bytes_max: rng.between(256, 16_384) as usize,
            repair_requests_inflight_max: rng.between(1, 4) as usize,
            // Above the worst round trip plus a dead connection's detection.
            repair_reply_timeout_ms: 5 * (rtt_us + 50_000) / 1000 + rng.between(200, 2_000),
            repair_responder_idle_ms_max: 20 * (rtt_us + 50_000) / 1000,
            // Slow enough that pacing shows on some seeds (a dump is a few KB).
            bootstrap_bytes_per_sec_max: rng.between(4_000, 1_000_000),
            ..GatewayLimits::default()
        };
        let rto_us = rtt_us + 50_000;
        let transport = TransportConfig {
            chunk_bytes_max: *rng.pick(&[64, 512, 1_400, 16_000]),
            rto_us,
            dead_after_us: 4 * rto_us,
            connect_retry_us: rto_us,
            keepalive_us: 2 * rto_us,
            frame_bytes_max: gateway_limits.frame_bytes_max,
        };
        let segment_bytes_max = rng.between(2_000, 64_000);
        let backlog = BacklogConfig {
            segment_bytes_max,
            // Our records are ~100 bytes; a small record cap lets the byte cap be small too.
            record_bytes_max: 4_096,
            // Sometimes small enough that a long partition overflows it (drop and repair).
            backlog_bytes_max: if rng.chance_ppm(250_000) {
                segment_bytes_max.max(rng.between(8_000, 40_000))
            } else {
                64 * 1024 * 1024
            },
            fsync_mode: rng.weighted(&[
                (2, FsyncMode::Always),
                (5, FsyncMode::Interval),
                (1, FsyncMode::Never),
            ]),
            fsync_interval_ms: rng.between(1, 200),
            cursor_sync_interval_ms: rng.between(1, 1_000),
            overflow_policy: OverflowPolicy::DropAndRepair,
        };
        let disk_faults = MemFaults {
            torn_writes: rng.chance_ppm(700_000),
            sync_failures_per_million: match flavor {
                Flavor::Partition => 0,
                _ => rng.between(0, 5_000) as u32,
            },
            append_failures_per_million: match flavor {
                Flavor::Partition => 0,
                _ => rng.between(0, 5_000) as u32,
            },
        };
        let chaos_us = rng.between(1_500_000, 4_000_000);
        let faults = fault_schedule(flavor, sites, chaos_us, rng);
        Self {
            flavor,
            sites,
            partitions: rng.between(2, 5) as u32,
            clients_per_site: rng.between(1, 2) as u32,
            string_keys: rng.between(2, 4),
            counter_keys: rng.between(1, 2),
            think_us: (5_000, rng.between(40_000, 150_000)),
            chaos_us,
            limits,
            gateway_limits,
            backlog,
            disk_faults,
            transport,
            wan_links,
            latency_max_us,
            clocks,
            faults,
            feed_records_max: rng.between(1, 64) as u32,
            feed_bytes_max: rng.between(200, 64_000) as u32,
            apply_records_max: rng.between(1, 32) as u32,
            apply_bytes_max: rng.between(200, 64_000) as u32,
            dump_entries_max: rng.between(1, 16) as u32,
            dump_bytes_max: rng.between(100, 16_000) as u32,
            cursor_persist_ms: rng.between(1, 500),
            wipe_holds_clients: false,
            events_max: 2_000_000,
            inject: None,
        }
    }

    pub fn site_ids(&self) -> Vec<SiteId> {
        (0..self.sites)
            .map(|i| SiteId(u16::try_from(i + 1).unwrap_or(u16::MAX)))
            .collect()
    }

    /// Invariant 9: how long after the heal everything must have converged, given what was
    /// pending then. Per hop (direct delivery, then the relay of applied records): notice a
    /// dead connection, reconnect, handshake, then ship the backlog a window per round trip.
    /// Plus repair (below) and the largest backwards clock step (batch timers run on site
    /// clocks).
    pub fn resume_bound_us(&self, pending_records: u64) -> u64 {
        let t = &self.transport;
        let g = &self.gateway_limits;
        let rtt_us = 2 * self.latency_max_us;
        let window = (g.inflight_batches_max * g.batch_records_max).max(1) as u64;
        let rounds = pending_records.div_ceil(window) + 3;
        let round_us = rtt_us + (g.batch_wait_ms_max + g.ack_delay_ms_max) * 1000 + t.rto_us;
        let hop_us =
            t.dead_after_us + t.keepalive_us + t.connect_retry_us + 2 * rtt_us + rounds * round_us;
        let repair_us = self.repair_bound_us(hop_us);
        let clock_steps_us = self
            .faults
            .iter()
            .map(|(_, a)| match a {
                FaultAction::ClockStep(_, d) if *d < 0 => d.unsigned_abs(),
                _ => 0,
            })
            .max()
            .unwrap_or(0);
        2 * hop_us + repair_us + clock_steps_us + 1_000_000
    }

    /// How long the repairs pending at the heal may take, twice over (a repair in each
    /// direction, and repairs marked by what the first ones shipped). A partition's session:
    /// the link up (`hop_us`), one round trip per digest tree level plus the range exchange,
    /// each request maybe held by the pacer for a message at `bootstrap_bytes_per_sec_max`;
    /// sessions run 4 at a time per target. A partition whose sessions failed during the
    /// chaos phase waits out its backoff first: it doubles per failure from
    /// `REPAIR_RETRY_BACKOFF_MS_MIN`, so it never exceeds the time failures had (the chaos
    /// phase plus this bound) plus the first backoff — and never the cap.
    fn repair_bound_us(&self, hop_us: u64) -> u64 {
        let g = &self.gateway_limits;
        let rtt_us = 2 * self.latency_max_us + self.transport.rto_us;
        let levels = u64::from(g.repair_leaf_bits / g.repair_fanout_bits.max(1));
        let pace_us = (g.repair_message_bytes_max as u64).saturating_mul(1_000_000)
            / g.bootstrap_bytes_per_sec_max.max(1);
        let session_us = (levels + 3) * (rtt_us + pace_us);
        let waves = u64::from(self.partitions).div_ceil(4);
        let one_pass_us = hop_us + waves * session_us;
        let backoff_us = (self.chaos_us + 2 * one_pass_us + REPAIR_RETRY_BACKOFF_MS_MIN * 1000)
            .min(REPAIR_RETRY_BACKOFF_MS_MAX * 1000);
        2 * (backoff_us + one_pass_us)
    }
}

/// A chaos phase's faults for `flavor`, in time order, ending with `EndChaos`.
fn fault_schedule(
    flavor: Flavor,
    sites: usize,
    chaos_us: u64,
    rng: &mut SimRng,
) -> Vec<(u64, FaultAction)> {
    #[derive(Clone, Copy)]
    enum Kind {
        Cut,
        OneWay,
        Isolate,
        Heal,
        Crash,
        Step,
        Wipe,
    }
    let table: &[(u32, Kind)] = match flavor {
        Flavor::Partition => &[
            (3, Kind::Cut),
            (3, Kind::OneWay),
            (2, Kind::Isolate),
            (3, Kind::Heal),
        ],
        Flavor::Crash => &[
            (6, Kind::Crash),
            (1, Kind::Cut),
            (1, Kind::Heal),
            (2, Kind::Wipe),
        ],
        Flavor::Chaos => &[
            (2, Kind::Cut),
            (2, Kind::OneWay),
            (1, Kind::Isolate),
            (2, Kind::Heal),
            (3, Kind::Crash),
            (2, Kind::Step),
            (1, Kind::Wipe),
        ],
    };
    let pair = |rng: &mut SimRng| {
        let a = rng.index(sites);
        let b = (a + 1 + rng.index(sites - 1)) % sites;
        (a, b)
    };
    let mut faults = Vec::new();
    let mut t = rng.between(50_000, 600_000);
    while t + 200_000 < chaos_us {
        match rng.weighted(table) {
            Kind::Cut => {
                let (a, b) = pair(rng);
                faults.push((t, FaultAction::Cut(a, b)));
            }
            Kind::OneWay => {
                let (from, to) = pair(rng);
                faults.push((t, FaultAction::CutOneWay { from, to }));
            }
            Kind::Isolate => faults.push((t, FaultAction::Isolate(rng.index(sites)))),
            Kind::Heal => faults.push((t, FaultAction::HealLinks)),
            Kind::Crash => {
                let site = rng.index(sites);
                faults.push((t, FaultAction::CrashGateway(site)));
                let back = t + rng.between(20_000, 1_500_000);
                if back < chaos_us {
                    faults.push((back, FaultAction::RestartGateway(site)));
                }
            }
            Kind::Wipe => faults.push((t, FaultAction::WipeSite(rng.index(sites)))),
            Kind::Step => {
                let site = rng.index(sites);
                faults.push((
                    t,
                    FaultAction::ClockStep(site, rng.between_i64(-1_000_000, 1_000_000)),
                ));
            }
        }
        t += rng.between(100_000, 1_000_000);
    }
    faults.push((chaos_us, FaultAction::EndChaos));
    faults.sort_by_key(|&(at, _)| at);
    faults
}

/// What a run exercised, so a quiet run is visible (and tests can demand coverage).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WanStats {
    pub client_ops: u64,
    pub acked_writes: u64,
    pub sink_applies: u64,
    pub conflicts: u64,
    /// Remote HLCs too far ahead (clock skew beyond `hlc_offset_ms_max`).
    pub clock_rejections: u64,
    pub connects: u64,
    pub disconnects: u64,
    pub chunk_retransmits: u64,
    pub resends: u64,
    pub records_shipped: u64,
    pub records_filtered: u64,
    pub sink_duplicates: u64,
    pub sink_gap_records: u64,
    pub gateway_crashes: u64,
    pub feeds_truncated: u64,
    pub feed_gaps: u64,
    /// Backlogs opened (first boot, restarts, rebuilds after a store failure).
    pub backlog_opens: u64,
    /// Findings of backlog recovery (torn tails cut, damaged segments).
    pub recovery_events: u64,
    /// Injected disk faults that failed an append, sync or open.
    pub store_failures: u64,
    pub delegator_rebuilds: u64,
    /// Unsynced backlog bytes lost in gateway crashes.
    pub disk_bytes_lost: u64,
    /// Backlogs that passed their byte cap and dropped their records for repair.
    pub overflow_drops: u64,
    pub target_marks_cleared: u64,
    /// Records sent with `prev_seq` rebased over a hole the target will never get.
    pub holes: u64,
    pub repairs_marked: u64,
    /// Repair sessions completed (in sync or repaired).
    pub repairs_done: u64,
    /// Repair snapshot loads, entries pushed into partitions, repair messages sent.
    pub repair_loads: u64,
    pub repair_entries_pushed: u64,
    pub repair_messages: u64,
    /// Connections the gateway core asked to close (a late wipe).
    pub links_closed: u64,
    /// Change logs the feed found restarted (new log generations).
    pub log_restarts: u64,
    /// Sites that lost their memory; wipes deferred because the site had unacknowledged
    /// records; wiped sites that got their data back before the heal.
    pub site_wipes: u64,
    pub wipes_deferred: u64,
    pub sites_restored: u64,
    pub string_records_received: u64,
    /// Time from the heal to convergence, and the bound it had to meet.
    pub converged_after_ms: Option<u64>,
    pub bound_ms: u64,
}

pub fn run(flavor: Flavor, seed: u64, options: &RunOptions) -> RunReport {
    run_detailed(flavor, seed, options, |_| {}).0
}

/// Run with the seed's config changed by `adjust`; also returns what the run exercised.
pub fn run_detailed(
    flavor: Flavor,
    seed: u64,
    options: &RunOptions,
    adjust: impl FnOnce(&mut Config),
) -> (RunReport, WanStats) {
    let mut rng = SimRng::from_seed(seed);
    let mut config = Config::for_seed(flavor, &mut rng);
    adjust(&mut config);
    let trace = if options.trace_lines > 0 {
        Trace::with_lines(options.trace_lines)
    } else {
        Trace::hash_only()
    };
    let mut world = World::new(rng, LinkConfig::reliable(1_000), trace);
    let mut sim = Sim::new(&config, &mut world);
    let violation = sim.run(&config, &mut world).err();
    let mut stats = sim.finish();
    stats.client_ops = sim.ops;
    let report = RunReport {
        scenario: flavor.scenario(),
        seed,
        trace_hash: world.trace().hash(),
        ops: sim.ops,
        events: world.trace().events(),
        sim_time: world.now(),
        net: world.net().stats(),
        lin: LinSummary::default(),
        coverage: Coverage::default(),
        violation,
        trace_tail: world.trace().lines(),
    };
    (report, stats)
}

struct Sim {
    sites: Vec<Site>,
    gateways: Vec<Option<Gateway>>,
    gateway_hosts: Vec<HostId>,
    director: HostId,
    checker: WanChecker,
    conn_ids: BTreeMap<LinkId, u64>,
    resolvers: Arc<KeyspaceResolvers>,
    /// Per site, what its gateway saved durably (cursors, generations): handed to the next
    /// incarnation after a crash.
    saved: Vec<SavedState>,
    /// Wiped sites whose clients hold their writes, with what the other sites held at the
    /// wipe: per key, their entries (the site is restored once it holds all of them).
    restoring: BTreeMap<usize, BTreeMap<Bytes, Vec<Versioned>>>,
    stats: WanStats,
    ops: u64,
    chaos_over: bool,
    /// When faults stopped, and the bound (µs) convergence must meet from then.
    heal: Option<(SimTime, u64)>,
    /// Per (source, target), the disk under the source's backlog for the target: it outlives
    /// gateway crashes.
    disks: BTreeMap<(usize, usize), MemStorage>,
}

impl Sim {
    fn new(config: &Config, world: &mut World<Msg>) -> Self {
        let registry = registry_for(config.inject);
        // The table names built-ins only.
        let resolvers =
            Resolvers::from_registry(&registry, RESOLVER_TABLE).expect("built-in resolvers");
        let site_ids = config.site_ids();
        let mut sites = Vec::new();
        let mut gateway_hosts = Vec::new();
        for (index, &id) in site_ids.iter().enumerate() {
            let (offset, drift) = config.clocks[index];
            let host = world.add_host(format!("site-{index}"), HostClock::skewed(offset, drift));
            let gw = world.add_host(format!("gw-{index}"), HostClock::skewed(offset, drift));
            gateway_hosts.push(gw);
            let rng = world.rng();
            sites.push(Site::new(
                index,
                id,
                host,
                config.partitions,
                &config.limits,
                resolvers.clone(),
                rng,
            ));
        }
        let director = world.add_host("director", HostClock::perfect());
        let mut disks = BTreeMap::new();
        for source in 0..site_ids.len() {
            for target in 0..site_ids.len() {
                if source != target {
                    let seed = world.rng().next_u64();
                    disks.insert(
                        (source, target),
                        MemStorage::with_faults(seed, config.disk_faults),
                    );
                }
            }
        }
        for (&(from, to), &link) in &config.wan_links {
            world
                .net_mut()
                .set_link(gateway_hosts[from], gateway_hosts[to], link);
        }
        Self {
            sites,
            gateways: (0..site_ids.len()).map(|_| None).collect(),
            gateway_hosts,
            director,
            saved: vec![SavedState::default(); site_ids.len()],
            checker: WanChecker::new(site_ids),
            conn_ids: BTreeMap::new(),
            resolvers: Arc::clone(resolvers.keyspace()),
            restoring: BTreeMap::new(),
            stats: WanStats::default(),
            ops: 0,
            chaos_over: false,
            heal: None,
            disks,
        }
    }

    fn run(&mut self, config: &Config, world: &mut World<Msg>) -> Result<(), Violation> {
        for index in 0..self.sites.len() {
            self.start_gateway(index, config, world)?;
            let host = self.sites[index].host;
            for client in 0..config.clients_per_site {
                let think = world.rng().between(config.think_us.0, config.think_us.1);
                world.set_timer(host, think, Msg::Think { client });
            }
        }
        for &(at, action) in &config.faults {
            world.set_timer(self.director, at, Msg::Fault(action));
        }
        loop {
            if world.trace().events() > config.events_max {
                return Err(Violation::Stalled {
                    detail: format!("{} events without converging", config.events_max),
                });
            }
            let Some(event) = world.next_event() else {
                return Err(Violation::Stalled {
                    detail: format!(
                        "no events left, not converged: {}",
                        self.not_drained().unwrap_or_default()
                    ),
                });
            };
            self.handle(event, config, world)?;
            if let Some((healed_at, bound_us)) = self.heal {
                match self.not_drained() {
                    None => {
                        let states: Vec<_> = self.sites.iter().map(Site::state).collect();
                        self.checker.check_converged(&states)?;
                        let took_us = world.now().micros_since(healed_at);
                        self.stats.converged_after_ms = Some(took_us / 1000);
                        return Ok(());
                    }
                    Some(detail) if world.now().micros_since(healed_at) > bound_us => {
                        return Err(WanViolation::NotConvergedInTime {
                            bound_ms: bound_us / 1000,
                            detail,
                        }
                        .into());
                    }
                    Some(_) => {}
                }
            }
        }
    }

    fn handle(
        &mut self,
        event: Event<Msg>,
        config: &Config,
        world: &mut World<Msg>,
    ) -> Result<(), Violation> {
        match event {
            Event::Timer {
                host,
                msg: Msg::Fault(action),
            } if host == self.director => self.fault(action, config, world),
            Event::Timer {
                host,
                msg: Msg::RestoreCheck,
            } if host == self.director => {
                self.check_restored(world);
                Ok(())
            }
            Event::Timer {
                host,
                msg: Msg::Think { client },
            } => {
                let Some(index) = self.sites.iter().position(|s| s.host == host) else {
                    return Ok(());
                };
                if self.chaos_over {
                    return Ok(());
                }
                if !self.sites[index].paused {
                    self.client_op(index, config, world)?;
                }
                let think = world.rng().between(config.think_us.0, config.think_us.1);
                world.set_timer(host, think, Msg::Think { client });
                Ok(())
            }
            Event::Timer { host, msg } => {
                let Some(index) = self.gateway_hosts.iter().position(|&h| h == host) else {
                    return Ok(());
                };
                self.with_gateway(index, config, world, |gateway, ctx| match msg {
                    Msg::Feed => gateway.handle_feed(ctx),
                    Msg::Wake => gateway.handle_wake(ctx),
                    _ => Ok(()),
                })
            }
            Event::Deliver { to, msg, .. } => {
                let Some(index) = self.gateway_hosts.iter().position(|&h| h == to) else {
                    return Ok(());
                };
                self.with_gateway(index, config, world, |gateway, ctx| {
                    gateway.handle_message(msg, ctx)
                })
            }
        }
    }

    fn client_op(
        &mut self,
        index: usize,
        config: &Config,
        world: &mut World<Msg>,
    ) -> Result<(), Violation> {
        let site = &mut self.sites[index];
        let op = ClientOp::random(
            world.rng(),
            config.string_keys,
            config.counter_keys,
            index,
            site.values_written,
        );
        let now_ms = world.local_ms(site.host);
        site.client_op(&op, now_ms, &mut self.checker)?;
        self.ops += 1;
        if !matches!(op, ClientOp::Get { .. }) {
            self.with_gateway(index, config, world, |gateway, ctx| {
                gateway.poke(ctx);
                Ok(())
            })?;
        }
        Ok(())
    }

    /// Call `f` on site `index`'s gateway, if it is running.
    fn with_gateway(
        &mut self,
        index: usize,
        config: &Config,
        world: &mut World<Msg>,
        f: impl FnOnce(&mut Gateway, &mut Ctx<'_>) -> Result<(), Violation>,
    ) -> Result<(), Violation> {
        let Some(gateway) = self.gateways[index].as_mut() else {
            return Ok(());
        };
        let mut ctx = Ctx {
            world,
            site: &mut self.sites[index],
            checker: &mut self.checker,
            config,
            gateway_hosts: &self.gateway_hosts,
            conn_ids: &mut self.conn_ids,
            stats: &mut self.stats,
            disks: &self.disks,
            resolvers: &self.resolvers,
        };
        f(gateway, &mut ctx)
    }

    fn start_gateway(
        &mut self,
        index: usize,
        config: &Config,
        world: &mut World<Msg>,
    ) -> Result<(), Violation> {
        let mut ctx = Ctx {
            world,
            site: &mut self.sites[index],
            checker: &mut self.checker,
            config,
            gateway_hosts: &self.gateway_hosts,
            conn_ids: &mut self.conn_ids,
            stats: &mut self.stats,
            disks: &self.disks,
            resolvers: &self.resolvers,
        };
        let saved = self.saved[index].clone();
        self.gateways[index] = Some(Gateway::start(&mut ctx, saved)?);
        Ok(())
    }

    fn fault(
        &mut self,
        action: FaultAction,
        config: &Config,
        world: &mut World<Msg>,
    ) -> Result<(), Violation> {
        let hosts = self.gateway_hosts.clone();
        let gw = |i: usize| hosts[i];
        match action {
            FaultAction::Cut(a, b) => world.net_mut().cut_both(gw(a), gw(b)),
            FaultAction::CutOneWay { from, to } => world.net_mut().cut_one_way(gw(from), gw(to)),
            FaultAction::Isolate(site) => {
                world.net_mut().isolate(gw(site), hosts.iter().copied());
            }
            FaultAction::HealLinks => world.net_mut().heal_all(),
            FaultAction::CrashGateway(site) => self.crash_gateway(site, world),
            FaultAction::RestartGateway(site) => self.restart_gateway(site, config, world)?,
            FaultAction::ClockStep(site, delta_us) => {
                let host = self.sites[site].host;
                world.clock_mut(host).step(delta_us);
                world.clock_mut(gw(site)).step(delta_us);
            }
            FaultAction::WipeSite(site) => self.wipe_site(site, config, world)?,
            FaultAction::EndChaos => {
                self.chaos_over = true;
                world.net_mut().heal_all();
                for (&(from, to), link) in &config.wan_links {
                    let calm = LinkConfig {
                        loss_ppm: 0,
                        duplicate_ppm: 0,
                        ..*link
                    };
                    world.net_mut().set_link(gw(from), gw(to), calm);
                }
                for site in 0..self.sites.len() {
                    self.restart_gateway(site, config, world)?;
                }
                let pending: u64 = self
                    .gateways
                    .iter()
                    .zip(&self.sites)
                    .filter_map(|(g, s)| g.as_ref().map(|g| g.pending_records(s)))
                    .sum();
                let bound_us = config.resume_bound_us(pending);
                self.stats.bound_ms = bound_us / 1000;
                self.heal = Some((world.now(), bound_us));
            }
        }
        Ok(())
    }

    /// The gateway's process dies: volatile state gone, its backlog disks lose what was not
    /// synced (a seeded part of it survives torn, with `torn_writes`). Its sinks' saved
    /// cursors may lag what they applied: the records above are applied again after the
    /// restart (idempotently), which is no duplicate apply.
    fn crash_gateway(&mut self, site: usize, world: &mut World<Msg>) {
        if let Some(gateway) = self.gateways[site].take() {
            gateway.collect_stats(&mut self.stats);
            self.saved[site] = gateway.saved().clone();
            self.forget_unsaved_applies(site);
            drop(gateway);
            for ((source, _), disk) in &self.disks {
                if *source == site {
                    self.stats.disk_bytes_lost += disk.crash();
                }
            }
            world.crash(self.gateway_hosts[site]);
            self.stats.gateway_crashes += 1;
        }
    }

    fn restart_gateway(
        &mut self,
        site: usize,
        config: &Config,
        world: &mut World<Msg>,
    ) -> Result<(), Violation> {
        if self.gateways[site].is_none() {
            world.restart(self.gateway_hosts[site]);
            self.start_gateway(site, config, world)?;
        }
        Ok(())
    }

    fn forget_unsaved_applies(&mut self, site: usize) {
        let cursors = &self.saved[site].cursors;
        self.checker.forget_applies(site, |source, partition, seq| {
            let saved = cursors
                .get(&site_name(source))
                .and_then(|c| c.get(&partition))
                .copied()
                .unwrap_or(0);
            seq <= saved
        });
    }

    /// Site `site` loses its memory (see [`FaultAction::WipeSite`]): its gateway stops
    /// cleanly, every partition is emptied, the gateway starts again on its disks. Deferred
    /// while some write of the site has not reached every other site.
    fn wipe_site(
        &mut self,
        site: usize,
        config: &Config,
        world: &mut World<Msg>,
    ) -> Result<(), Violation> {
        if self.restoring.contains_key(&site) {
            return Ok(());
        }
        if self.chaos_over {
            // Not wiped after all (the clients stop at the end of chaos anyway).
            self.sites[site].paused = false;
            return Ok(());
        }
        // The site stops taking writes first (as for maintenance), so that it can drain.
        self.sites[site].paused = true;
        // Nor while another site is being restored: this site's copies may be the only ones
        // left of what that site had taken before its wipe.
        if self.gateways[site].is_none()
            || !self.restoring.is_empty()
            || !self.replicated_everywhere(site)
        {
            self.stats.wipes_deferred += 1;
            world.set_timer(
                self.director,
                WIPE_RETRY_US,
                Msg::Fault(FaultAction::WipeSite(site)),
            );
            return Ok(());
        }
        if let Some(mut gateway) = self.gateways[site].take() {
            gateway.stop();
            gateway.collect_stats(&mut self.stats);
            self.saved[site] = gateway.saved().clone();
        }
        world.crash(self.gateway_hosts[site]);
        // What the others hold now is what the site must get back before its clients write
        // again (see `FaultAction::WipeSite`).
        let mut expected: BTreeMap<Bytes, Vec<Versioned>> = BTreeMap::new();
        for other in self.sites.iter().filter(|s| s.index != site) {
            for (key, entry) in other.state() {
                expected.entry(key).or_default().push(entry);
            }
        }
        self.restoring.insert(site, expected);
        self.sites[site].paused = config.wipe_holds_clients;
        self.sites[site].wipe(world.rng());
        self.checker.on_site_wiped(site);
        self.stats.site_wipes += 1;
        world.set_timer(self.director, WIPE_RETRY_US, Msg::RestoreCheck);
        self.restart_gateway(site, config, world)
    }

    /// Whether every other site has seen every write `site` made: per key, their version
    /// vectors count at least as many of each of its writers' writes. (Records it relays for
    /// others may still wait in its backlogs: their origins ship them too.)
    fn replicated_everywhere(&self, site: usize) -> bool {
        let me = &self.sites[site];
        me.state().iter().all(|(key, entry)| {
            let mine: Vec<_> = entry
                .version
                .vv
                .iter()
                .filter(|(writer, _)| writer.site == me.id)
                .collect();
            self.sites.iter().filter(|s| s.index != site).all(|other| {
                let partition = other.partition_of(key);
                other.core(partition).entry(key).is_some_and(|e| {
                    mine.iter()
                        .all(|&(writer, count)| e.version.vv.get(writer) >= count)
                })
            })
        })
    }

    /// Wiped sites that hold again everything the others held at the wipe resume their
    /// clients.
    fn check_restored(&mut self, world: &mut World<Msg>) {
        let restored: Vec<usize> = self
            .restoring
            .iter()
            .filter(|(site, expected)| {
                let site = &self.sites[**site];
                expected.iter().all(|(key, entries)| {
                    let partition = site.partition_of(key);
                    site.core(partition).entry(key).is_some_and(|mine| {
                        entries.iter().all(|e| {
                            matches!(
                                mine.version.causality(&e.version),
                                tern_conflict::Causality::After | tern_conflict::Causality::Equal
                            )
                        })
                    })
                })
            })
            .map(|(site, _)| *site)
            .collect();
        for site in restored {
            self.restoring.remove(&site);
            self.sites[site].paused = false;
            self.stats.sites_restored += 1;
        }
        if !self.restoring.is_empty() {
            world.set_timer(self.director, WIPE_RETRY_US, Msg::RestoreCheck);
        }
    }

    /// Why the run is not quiescent yet, if it is not.
    fn not_drained(&self) -> Option<String> {
        for (gateway, site) in self.gateways.iter().zip(&self.sites) {
            match gateway {
                None => return Some(format!("gateway of site {} is down", site.index)),
                Some(g) => {
                    if let Some(detail) = g.drained(site) {
                        return Some(detail);
                    }
                }
            }
        }
        None
    }

    /// The run's totals, running gateways' counters included.
    fn finish(&mut self) -> WanStats {
        let mut stats = std::mem::take(&mut self.stats);
        for gateway in self.gateways.iter().flatten() {
            gateway.collect_stats(&mut stats);
        }
        stats.acked_writes = self.checker.acked_writes() as u64;
        stats.conflicts = self.sites.iter().map(|s| s.conflicts).sum();
        stats.clock_rejections = self.sites.iter().map(|s| s.clock_rejections).sum();
        stats
    }
}
