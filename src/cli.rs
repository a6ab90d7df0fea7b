//! Command-line interface (clap derive).
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "tern",
    version,
    about = "WAN-replicated multi-site in-memory data grid speaking RESP"
)]
pub struct Cli {
    /// Log filter in `tracing` EnvFilter syntax (e.g. `info`, `tern_node=debug`); overrides
    /// `RUST_LOG`. Logs go to stderr.
    #[arg(long, global = true, value_name = "FILTER")]
    pub log: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one grid node until SIGTERM or SIGINT.
    Node(NodeArgs),
    /// Start an embedded node and run a narrated, self-checking client session against it.
    Demo(DemoArgs),
}

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// TOML config file (optional). Precedence: defaults < this file < `TERN_*` environment
    /// variables (`__` separates nested keys, e.g. `TERN_LIMITS__VALUE_BYTES_MAX=1024`).
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Print only failures and the summary, not every step.
    #[arg(long, short)]
    pub quiet: bool,
}
