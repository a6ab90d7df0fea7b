//! `tern up`: a local site of `tern node` processes on loopback, in the foreground until
//! Ctrl-C or SIGTERM.
//!
//! [`plan`] decides ports, directories and configs (pure); [`site`] runs the processes. A
//! multi-site `tern up` (with the WAN gateway) becomes a loop over [`plan::SiteSpec`]s sharing
//! one certificate directory and one [`PortPlan`] per site.
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
use std::time::Duration;

use anyhow::Context;
use tern_node::admin::NodeStatus;
use tern_node::transport::certs::init_dev_pki;

use crate::admin_client::AdminClient;
use crate::cli::UpArgs;
use crate::node_host;
use crate::shutdown::ShutdownSignals;
use crate::status_cmd::ADMIN_REQUEST_MAX;
use crate::views;
use plan::{PortPlan, SiteSpec, allocate_ports, plan_site, write_site};
use site::LocalSite;

/// The stdout line announcing that every node is ready; tests and scripts wait for it.
pub const READY_PREFIX: &str = "tern up: site ";
/// How often `tern up` checks whether a node exited.
const EXIT_POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Beyond a node's own shutdown drain bound, how long stopping may take before a kill.
const STOP_MARGIN: Duration = Duration::from_secs(10);

/// The site `tern up` launches until `--sites` arrives with the WAN gateway.
const SITE_NAME: &str = "a";
const SITE_ID: u16 = 1;

pub fn run(args: UpArgs) -> anyhow::Result<()> {
    node_host::block_on(up(args))
}

async fn up(args: UpArgs) -> anyhow::Result<()> {
    let mut signals = ShutdownSignals::install()?;
    let mut base = BaseDir::new(args.base_dir.clone())?;
    let spec = SiteSpec {
        name: SITE_NAME.to_owned(),
        site_id: SITE_ID,
        nodes: args.nodes,
        partitions: args.partitions,
        backups: args.backups,
    };
    let port_plan = match args.base_port {
        0 => PortPlan::Free,
        base => PortPlan::Fixed { base },
    };
    let certs_dir = base.path().join("certs");
    init_dev_pki(&certs_dir, std::slice::from_ref(&spec.name), spec.nodes)
        .with_context(|| format!("writing certificates into {}", certs_dir.display()))?;
    let ports = allocate_ports(port_plan, spec.nodes)?;
    let plan = plan_site(&spec, base.path(), &certs_dir, &ports)?;
    write_site(&plan)?;
    let stop_grace = plan
        .nodes
        .iter()
        .filter_map(|n| n.config.cluster.as_ref())
        .map(|c| Duration::from_millis(c.shutdown_drain_ms_max))
        .max()
        .unwrap_or_default()
        + STOP_MARGIN;

    let exe = std::env::current_exe().context("finding the tern binary")?;
    let mut site = LocalSite::launch(&plan, &exe)?;
    say!(
        "tern up: starting {} node(s) of site {} in {}",
        spec.nodes,
        spec.name,
        base.path().display()
    );

    let timeout = Duration::from_secs(args.ready_timeout_secs);
    let ready = tokio::select! {
        ready = site.wait_ready(timeout) => Some(ready),
        signal = signals.recv() => {
            say!("tern up: {signal} before the site was ready; stopping");
            None
        }
    };
    match ready {
        None => {
            stop(site, stop_grace).await;
            return Ok(());
        }
        Some(Err(err)) => {
            stop(site, stop_grace).await;
            return Err(err.context(format!(
                "starting site {} (files kept in {})",
                spec.name,
                base.keep().display()
            )));
        }
        Some(Ok(())) => {}
    }

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

    loop {
        tokio::select! {
            signal = signals.recv() => {
                say!("tern up: {signal}; stopping {} node(s)", spec.nodes);
                break;
            }
            () = tokio::time::sleep(EXIT_POLL_INTERVAL) => {
                for exit in site.poll_exits()? {
                    // Expected in a failover drill (kill -9 a primary); the site keeps running.
                    say!("tern up: node {} (pid {}) exited: {}", exit.identity, exit.pid, exit.status);
                }
            }
        }
    }
    stop(site, stop_grace).await;
    Ok(())
}

async fn stop(site: LocalSite, grace: Duration) {
    let killed = site.stop(grace).await;
    if killed.is_empty() {
        say!("tern up: all nodes stopped");
    } else {
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
