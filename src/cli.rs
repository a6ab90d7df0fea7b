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
    /// Development certificates for the QUIC transport.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Summarise a node's view of its site: readiness, partition map, members.
    Status(AdminArgs),
    /// Inspect the space (the partitioned keyspace).
    #[command(subcommand)]
    Space(SpaceCommand),
    /// Launch a local site of `tern node` processes on loopback and keep it running until
    /// Ctrl-C or SIGTERM.
    Up(UpArgs),
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Write a development CA and one certificate per site and per node (reuses the CA in OUT
    /// when there is one). Not for production.
    Init(CertsInitArgs),
}

#[derive(Debug, Args)]
pub struct CertsInitArgs {
    /// Site names, comma-separated (DNS labels), e.g. `a,b,c`.
    #[arg(long, value_delimiter = ',', required = true, value_name = "SITES")]
    pub sites: Vec<String>,
    /// Node certificates per site (`n1..nN`); 0 writes site certificates only.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub nodes: u32,
    /// Directory to write into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// A node's admin HTTP address (its `admin_listen`). The default is node 1 of a default
    /// `tern up`.
    #[arg(long, env = "TERN_ADMIN", default_value = DEFAULT_ADMIN, value_name = "HOST:PORT")]
    pub admin: String,
}

/// Node 1's admin address in a `tern up` with the default `--base-port`.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:7201";

#[derive(Debug, Subcommand)]
pub enum SpaceCommand {
    /// One line per partition instance: PRIMARY/BACKUP, host, epoch, in-sync, lag.
    ListInstances(AdminArgs),
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Nodes in the site.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=9))]
    pub nodes: u32,
    /// Partitions of the keyspace.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub partitions: u32,
    /// Backups per partition (fewer than `--nodes`).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub backups: u8,
    /// Where certificates, configs, data and logs go; kept afterwards. Default: a temporary
    /// directory removed on exit.
    #[arg(long, value_name = "DIR")]
    pub base_dir: Option<PathBuf>,
    /// Node i listens for RESP on PORT+i-1, QUIC on PORT+100+i-1, admin HTTP on PORT+200+i-1.
    /// 0 picks free ports instead.
    #[arg(long, default_value_t = 7001, value_name = "PORT")]
    pub base_port: u16,
    /// How long to wait for every node to report ready.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub ready_timeout_secs: u64,
}

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// TOML config file (optional). Precedence: defaults < this file < `TERN_*` environment
    /// variables (`__` separates nested keys, e.g. `TERN_LIMITS__VALUE_BYTES_MAX=1024`).
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Stop gracefully when stdin reaches end of file: `tern up` holds its children's stdin,
    /// so they stop even if it is killed with SIGKILL (no orphaned nodes).
    #[arg(long, hide = true)]
    pub stop_on_stdin_eof: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Print only failures and the summary, not every step.
    #[arg(long, short)]
    pub quiet: bool,
}
