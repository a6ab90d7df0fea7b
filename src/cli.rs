//! Command-line interface (clap derive).
use std::net::SocketAddr;
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
    /// Launch local sites of `tern node` processes on loopback (with WAN gateways between
    /// them when `--sites` is above 1) and keep them running until Ctrl-C or SIGTERM.
    Up(UpArgs),
    /// Inspect and steer the site's WAN gateway, through the admin address of the node whose
    /// config has the `[wan]` section.
    #[command(subcommand)]
    Gateway(GatewayCommand),
}

#[derive(Debug, Subcommand)]
pub enum GatewayCommand {
    /// Per target site: connection, backlog, shipped records, repairs; per source site:
    /// applied records, duplicates, conflicts, lag.
    Status(AdminArgs),
    /// Start shipping to (and accepting connections from) another site's gateway.
    AddTarget(GatewayAddTargetArgs),
    /// Stop shipping to a site and refuse its connections; its backlog is deleted.
    RemoveTarget(GatewaySiteArgs),
    /// Run anti-entropy against a site now, over every partition.
    Repair(GatewaySiteArgs),
}

#[derive(Debug, Args)]
pub struct GatewayAddTargetArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// The site's name (its gateway's certificate names `<site>.tern`).
    #[arg(long, value_name = "NAME")]
    pub site: String,
    /// The site's id (its nodes' `site`), unique across sites.
    #[arg(long, value_name = "N")]
    pub site_id: u16,
    /// Where the site's gateway listens (UDP).
    #[arg(long, value_name = "IP:PORT")]
    pub addr: SocketAddr,
}

#[derive(Debug, Args)]
pub struct GatewaySiteArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// The peer site's name.
    #[arg(long, value_name = "NAME")]
    pub site: String,
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
    /// Recovery of last resort: make a node primary of a partition that lost its primary and
    /// every in-sync copy. Writes only the lost primary held are gone for good.
    ForcePrimary(ForcePrimaryArgs),
}

#[derive(Debug, Args)]
pub struct ForcePrimaryArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// The partition without primary (`tern space list-instances` shows which).
    #[arg(
        long,
        value_name = "P",
        required_unless_present = "all_without_primary"
    )]
    pub partition: Option<u16>,
    /// Every partition the node at `--admin` sees without primary (e.g. after the whole site
    /// restarted: no copy kept its data), each on its first replica that is up unless `--node`
    /// names one.
    #[arg(long, conflicts_with = "partition")]
    pub all_without_primary: bool,
    /// The node id to make its primary (up and registered); required with `--partition`.
    #[arg(
        long,
        value_name = "N",
        required_unless_present = "all_without_primary"
    )]
    pub node: Option<u64>,
    /// Required: acknowledges that writes acknowledged by the lost primary but held by no other
    /// node are lost.
    #[arg(long, required = true)]
    pub yes_i_accept_data_loss: bool,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Sites, named a, b, c, … with site ids 1, 2, 3, …; with more than one, node 1 of each
    /// site runs the site's WAN gateway, peered with every other site's.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=9))]
    pub sites: u32,
    /// Nodes per site.
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
    /// TOML config file (optional; repeat to merge several, e.g. a shared `tern.toml` and the
    /// gateway node's `wan.toml`). Precedence: defaults < each file in order (later wins) <
    /// `TERN_*` environment variables (`__` separates nested keys, e.g.
    /// `TERN_LIMITS__VALUE_BYTES_MAX=1024`).
    #[arg(long, short, value_name = "FILE")]
    pub config: Vec<PathBuf>,
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
