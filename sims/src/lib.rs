//! tern-sims: deterministic simulation of tern (level (a): the sans-IO cores driven directly).
//!
//! One thread, one seeded RNG ([`rng::SimRng`], ChaCha8), one event queue ordered by
//! (time, sequence number), simulated hosts each with a skewed, drifting clock, and a simulated
//! network with latency, loss, duplication, reordering and partitions. No wall clock, no
//! threads, no global randomness: a scenario is a pure function of its seed, and every event is
//! folded into a trace hash that proves it.
//!
//! | module | job |
//! |---|---|
//! | [`time`] | global simulated time; per-host clocks with offset and drift |
//! | [`rng`] | the run's one random stream |
//! | [`event`] | the event queue |
//! | [`net`] | the network model and its fault knobs |
//! | [`world`] | hosts + network + queue + trace: the loop's substrate |
//! | [`trace`] | FNV-1a trace hash and the optional text tail |
//! | [`check`] | oracles: reference model, linearizability, core audit, WAN convergence, site invariants ([`check::site`]) |
//! | [`scenario`] | the scenarios and [`RunReport`]: `single-node`, `wan-partition`, `wan-crash`, `wan-chaos` (multi-site WAN replication through the real gateway cores, see [`scenario::wan`]), `site-failover`, `site-partition`, `site-chaos` (one site of 3–5 nodes: the map's Raft group, failure detector, planner, membership steps and replica cores behind the shell rules of [`scenario::site::node`], see [`scenario::site`]), `site-membership` (the same, plus an operator who drains and removes, adds and drops dead nodes by rolling configuration restarts) |
//!
//! # Replaying a failure
//!
//! A failing seed prints one line such as
//!
//! ```text
//! replay: cargo run -p tern-sims --release -- run --scenario single-node --seed 12345 --trace
//! ```
//!
//! Run it: the same seed replays the same run event for event (same trace hash), and `--trace`
//! prints the last events before the violation. Add `dbg!`/prints freely while debugging; they
//! do not change the run. Sweep a range with
//! `cargo run -p tern-sims --release -- sweep --scenario single-node --seeds 0..1000`.
//!
//! # Adding a scenario
//!
//! 1. Write `src/scenario/<name>.rs` with `pub fn run(seed: u64, options: &RunOptions) ->
//!    RunReport`. Draw every knob from `SimRng::from_seed(seed)` first, then hand the RNG to
//!    [`world::World::new`]; draw everything later from `world.rng()`.
//! 2. Define the scenario's message type (timers are messages too), add hosts with
//!    `world.add_host(name, HostClock::skewed(..))`, configure links on `world.net_mut()`.
//! 3. Drive `while let Some(event) = world.next_event() { .. }`, calling the cores with
//!    `world.local_ms(host)` as their `now_ms`, and `world.send` / `world.set_timer` to react.
//!    Faults (cuts, crashes, clock steps) are just more timers the scenario schedules.
//! 4. Check as you go with [`check`] (return the first [`check::Violation`]); stop on it.
//! 5. Add a variant to [`scenario::Scenario`] (name, `ALL`, dispatch in `run_with`), and a seed
//!    loop in `tests/` like `tests/single_node.rs`.
//!
//! Never iterate a `std` `HashMap`/`HashSet` with random keys where order matters (use
//! `BTreeMap`, or [`trace::FixedFnvState`]), and never read the wall clock.
pub mod check;
pub mod event;
pub mod net;
pub mod rng;
pub mod scenario;
pub mod time;
pub mod trace;
pub mod world;

pub use scenario::{RunOptions, RunReport, Scenario, run, run_with};
