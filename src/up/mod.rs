//! `tern up`: local sites of `tern node` processes on loopback, in the foreground until
//! Ctrl-C or SIGTERM.
//!
//! [`plan`] decides ports, directories and configs (pure); [`site`] runs the processes. With
//! `--sites N` above 1, every site gets its own ports and node 1 of each runs the site's WAN
//! gateway, peered with every other site's; all share one certificate directory (one CA).
/// `println!` that ignores a closed stdout: `tern up` must still stop its nodes when whoever read
/// its output (a pipe, a test harness) has gone away; `println!` would panic instead.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `print!` that ignores a closed stdout (see [`say!`]).
macro_rules! say_raw {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}

pub mod plan;
pub mod site;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use tern_node::admin::NodeStatus;
use tern_node::transport::certs::init_dev_pki;

use crate::admin_client::AdminClient;
use crate::cli::UpArgs;
use crate::node_host;
use crate::shutdown::ShutdownSignals;
use crate::status_cmd::ADMIN_REQUEST_MAX;
use crate::views;
use plan::{PortPlan, SitePlan, SiteSpec, allocate_site_ports, plan_sites, site_names, write_site};
use site::LocalSite;

/// The stdout line announcing that every node is ready; tests and scripts wait for it.
pub const READY_PREFIX: &str = "tern up: site ";
/// The same line when several sites run (`tern up: sites a, b ready; …`).
pub const READY_SITES_PREFIX: &str = "tern up: sites ";
/// How often `tern up` checks whether a node exited.
const EXIT_POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Beyond a node's own shutdown drain bound, how long stopping may take before a kill.
const STOP_MARGIN: Duration = Duration::from_secs(10);

pub fn run(args: UpArgs) -> anyhow::Result<()> {
    node_host::block_on(up(args))
}

async fn up(args: UpArgs) -> anyhow::Result<()> {
    let mut signals = ShutdownSignals::install()?;
    let mut base = BaseDir::new(args.base_dir.clone())?;
    let names = site_names(args.sites)?;
    let specs: Vec<SiteSpec> = names
        .iter()
        .zip(1u16..)
        .map(|(name, site_id)| SiteSpec {
            name: name.clone(),
            site_id,
            nodes: args.nodes,
            partitions: args.partitions,
            backups: args.backups,
        })
        .collect();
    let port_plan = match args.base_port {
        0 => PortPlan::Free,
        base => PortPlan::Fixed { base },
    };
    let certs_dir = base.path().join("certs");
    init_dev_pki(&certs_dir, &names, args.nodes)
        .with_context(|| format!("writing certificates into {}", certs_dir.display()))?;
    let ports = allocate_site_ports(port_plan, args.sites, args.nodes)?;
    let plans = plan_sites(&specs, base.path(), &certs_dir, &ports)?;
    for plan in &plans {
        write_site(plan)?;
    }
    let stop_grace = plans
        .iter()
        .flat_map(|p| &p.nodes)
        .filter_map(|n| n.config.cluster.as_ref())
        .map(|c| Duration::from_millis(c.shutdown_drain_ms_max))
        .max()
        .unwrap_or_default()
        + STOP_MARGIN;

    let exe = std::env::current_exe().context("finding the tern binary")?;
    let mut sites = Vec::with_capacity(plans.len());
    for plan in &plans {
        // A failure drops the sites already launched, which kills their nodes.
        sites.push(LocalSite::launch(plan, &exe)?);
    }
    if let [only] = names.as_slice() {
        say!(
            "tern up: starting {} node(s) of site {only} in {}",
            args.nodes,
            base.path().display()
        );
    } else {
        say!(
            "tern up: starting {} node(s) in each of sites {} in {}",
            args.nodes,
            names.join(", "),
            base.path().display()
        );
    }

    let timeout = Duration::from_secs(args.ready_timeout_secs);
    let ready = tokio::select! {
        ready = wait_all_ready(&mut sites, timeout) => Some(ready),
        signal = signals.recv() => {
            say!("tern up: {signal} before the sites were ready; stopping");
            None
        }
    };
    match ready {
        None => {
            stop(sites, stop_grace).await;
            return Ok(());
        }
        Some(Err((site, err))) => {
            stop(sites, stop_grace).await;
            return Err(err.context(format!(
                "starting site {site} (files kept in {})",
                base.keep().display()
            )));
        }
        Some(Ok(())) => {}
    }

    if let [site] = sites.as_slice() {
        announce_one(site).await;
    } else {
        announce_many(&sites, &plans);
    }

    loop {
        tokio::select! {
            signal = signals.recv() => {
                let nodes: usize = sites.iter().map(LocalSite::len).sum();
                say!("tern up: {signal}; stopping {nodes} node(s)");
                break;
            }
            () = tokio::time::sleep(EXIT_POLL_INTERVAL) => {
                for site in &mut sites {
                    for exit in site.poll_exits()? {
                        // Expected in a failover drill (kill -9 a primary); the site keeps
                        // running.
                        say!(
                            "tern up: node {} (pid {}) exited: {}",
                            exit.identity, exit.pid, exit.status
                        );
                    }
                }
            }
        }
    }
    stop(sites, stop_grace).await;
    Ok(())
}

/// Waits for every node of every site within one deadline; on failure, names the site.
async fn wait_all_ready(
    sites: &mut [LocalSite],
    timeout: Duration,
) -> Result<(), (String, anyhow::Error)> {
    let deadline = Instant::now() + timeout;
    for site in sites {
        let left = deadline.saturating_duration_since(Instant::now());
        site.wait_ready(left)
            .await
            .map_err(|err| (site.site().to_owned(), err))?;
    }
    Ok(())
}

/// One site, exactly as before `--sites`: the nodes, the partition instances, the ready line.
async fn announce_one(site: &LocalSite) {
    say_raw!("\n{}", site.table());
    if let Some(admin) = site.admin_addrs().first() {
        match AdminClient::new(admin.clone(), ADMIN_REQUEST_MAX)
            .get_json::<NodeStatus>("/v1/status")
            .await
        {
            Ok(status) => say_raw!("\n{}", views::render_instances(&status)),
            Err(err) => say!("\n(could not list instances: {err:#})"),
        }
    }
    say!(
        "\n{READY_PREFIX}{} ready; `tern status --admin {}` for details; Ctrl-C or SIGTERM stops it",
        site.site(),
        site.admin_addrs().first().map_or("?", String::as_str)
    );
}

/// Several sites: per site its nodes (RESP and admin addresses) and its gateway.
fn announce_many(sites: &[LocalSite], plans: &[SitePlan]) {
    for (site, plan) in sites.iter().zip(plans) {
        say!("\nsite {} (id {}):", plan.site, plan.site_id);
        say_raw!("{}", site.table());
        if let (Some(gateway), Some(node)) = (plan.gateway, plan.nodes.first()) {
            say!(
                "WAN gateway: on {} (UDP {gateway}); `tern gateway status --admin {}`",
                node.identity,
                node.admin_addr
            );
        }
    }
    let first_admin = plans
        .first()
        .and_then(|p| p.nodes.first())
        .map_or_else(|| "?".to_owned(), |n| n.admin_addr.to_string());
    say!(
        "\n{READY_SITES_PREFIX}{} ready; `tern gateway status --admin {first_admin}` for site {}'s \
         gateway; Ctrl-C or SIGTERM stops them",
        plans
            .iter()
            .map(|p| p.site.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        plans.first().map_or("?", |p| p.site.as_str())
    );
}

/// Stops every site at once (each node gets SIGTERM, then a kill after `grace`).
async fn stop(sites: Vec<LocalSite>, grace: Duration) {
    let mut stopping = tokio::task::JoinSet::new();
    for site in sites {
        stopping.spawn(site.stop(grace));
    }
    let mut killed = Vec::new();
    while let Some(result) = stopping.join_next().await {
        match result {
            Ok(names) => killed.extend(names),
            Err(err) => tracing::warn!(%err, "stopping a site"),
        }
    }
    if killed.is_empty() {
        say!("tern up: all nodes stopped");
    } else {
        killed.sort();
        say!(
            "tern up: killed {} after {grace:?} without a graceful stop",
            killed.join(", ")
        );
    }
}

/// The base directory: the user's (kept), or a temporary one removed when `tern up` ends
/// unless [`keep`](Self::keep) was called (to leave logs after a failure).
#[derive(Debug)]
struct BaseDir {
    path: PathBuf,
    remove_on_drop: bool,
}

impl BaseDir {
    fn new(user: Option<PathBuf>) -> anyhow::Result<Self> {
        let (path, remove_on_drop) = match user {
            Some(path) => (path, false),
            None => (
                std::env::temp_dir().join(format!("tern-up-{}", std::process::id())),
                true,
            ),
        };
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self {
            path,
            remove_on_drop,
        })
    }

    fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps the directory (logs, configs) after `tern up` ends; returns its path.
    fn keep(&mut self) -> &Path {
        self.remove_on_drop = false;
        &self.path
    }
}

impl Drop for BaseDir {
    fn drop(&mut self) {
        if self.remove_on_drop && !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
