//! `tern-sims`: run simulation scenarios from the command line.
//!
//! ```text
//! tern-sims run   --scenario single-node --seed 42 [--trace] [--trace-lines 500]
//! tern-sims sweep --scenario single-node --seeds 0..1000
//! tern-sims sweep --scenario wan-chaos --seeds 0..1000
//! tern-sims run   --scenario site-chaos --seed 7 --trace
//! tern-sims sweep --scenario site-membership --seeds 0..300
//! ```
//!
//! Exits non-zero if any run breaks an invariant.
use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use std::ops::Range;
use std::process::ExitCode;
use tern_sims::{RunOptions, Scenario};

#[derive(Debug, Parser)]
#[command(name = "tern-sims", about = "Deterministic simulation of tern")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run one seed and print its report (and, with --trace, its last events).
    Run {
        #[arg(long)]
        scenario: Scenario,
        #[arg(long)]
        seed: u64,
        /// Print the last events of the run (all of them up to --trace-lines).
        #[arg(long)]
        trace: bool,
        #[arg(long, default_value_t = 400)]
        trace_lines: usize,
    },
    /// Run a range of seeds (A..B, B excluded) and print one line per seed.
    Sweep {
        #[arg(long)]
        scenario: Scenario,
        #[arg(long, value_parser = parse_seed_range)]
        seeds: Range<u64>,
    },
}

fn parse_seed_range(text: &str) -> anyhow::Result<Range<u64>> {
    let (start, end) = text
        .split_once("..")
        .context("expected a seed range like 0..100")?;
    let start: u64 = start.trim().parse().context("parse the range start")?;
    let end: u64 = end.trim().parse().context("parse the range end")?;
    if end <= start {
        bail!("empty seed range {start}..{end}");
    }
    Ok(start..end)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let all_passed = match cli.command {
        Cmd::Run {
            scenario,
            seed,
            trace,
            trace_lines,
        } => {
            let options = RunOptions {
                trace_lines: if trace { trace_lines } else { 0 },
            };
            // WAN scenarios also say what the run exercised (conflicts, resends, repairs...).
            let (report, wan_stats) = match scenario.wan_flavor() {
                Some(flavor) => {
                    let (report, stats) =
                        tern_sims::scenario::wan::run_detailed(flavor, seed, &options, |_| {});
                    (report, Some(stats))
                }
                None => match scenario.site_kind() {
                    // Site scenarios say what the run exercised (crashes, failovers, retries...).
                    Some(kind) => {
                        let run = tern_sims::scenario::site::run(kind, seed, &options);
                        println!("{:?}", run.stats);
                        (run.report, None)
                    }
                    None => (tern_sims::run_with(scenario, seed, &options), None),
                },
            };
            for line in &report.trace_tail {
                println!("  {line}");
            }
            println!("{report}");
            if let Some(stats) = wan_stats {
                println!("{stats:?}");
            }
            if !report.passed() {
                println!("replay: {}", report.replay_command());
            }
            report.passed()
        }
        Cmd::Sweep { scenario, seeds } => {
            let total = seeds.end - seeds.start;
            let mut failed = Vec::new();
            for seed in seeds {
                let report = tern_sims::run(scenario, seed);
                println!("{report}");
                if !report.passed() {
                    println!("replay: {}", report.replay_command());
                    failed.push(seed);
                }
            }
            println!(
                "{scenario}: {} of {total} seeds passed; failed: {failed:?}",
                total - failed.len() as u64
            );
            failed.is_empty()
        }
    };
    if all_passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
