//! The node processes of a local site: launch, wait until ready, notice exits, stop.
//!
//! No orphans, three ways: each child is killed if its handle is dropped (`kill_on_drop`);
//! each child runs `tern node --stop-on-stdin-eof` with its stdin a pipe this process holds, so
//! if `tern up` dies — even by SIGKILL — the kernel closes the pipe and the node stops
//! gracefully; and [`LocalSite::stop`] sends SIGTERM, waits, then kills stragglers. Children run
//! in their own process group, so a Ctrl-C at the terminal reaches only `tern up`, which then
//! stops them once (a second signal would make a node skip its graceful shutdown).
use std::fmt::Write as _;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

use super::plan::{NodePlan, SitePlan};
use crate::admin_client::AdminClient;
use crate::views::Table;

/// One `/readyz` probe may take this long.
const PROBE_MAX: Duration = Duration::from_secs(2);
/// Pause between readiness rounds.
const PROBE_INTERVAL: Duration = Duration::from_millis(200);
/// Lines of a node's log shown when it fails to start.
const LOG_TAIL_LINES: usize = 20;

#[derive(Debug)]
struct NodeProcess {
    plan: NodePlan,
    child: Child,
    pid: u32,
    /// Set once the exit has been observed (and reported).
    exited: Option<ExitStatus>,
}

#[derive(Debug)]
pub struct LocalSite {
    site: String,
    nodes: Vec<NodeProcess>,
}

/// A node that exited while the site was running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeExit {
    pub identity: String,
    pub pid: u32,
    pub status: ExitStatus,
}

impl LocalSite {
    /// Starts every node of `plan` with the `tern` binary at `exe`. On a failure the nodes
    /// already started are killed (their handles drop).
    pub fn launch(plan: &SitePlan, exe: &Path) -> anyhow::Result<Self> {
        let mut nodes = Vec::with_capacity(plan.nodes.len());
        for node in &plan.nodes {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&node.log_path)
                .with_context(|| format!("opening {}", node.log_path.display()))?;
            let log_err = log
                .try_clone()
                .with_context(|| format!("duplicating {}", node.log_path.display()))?;
            let mut command = Command::new(exe);
            command
                .arg("node")
                .arg("--config")
                .arg(&node.config_path)
                .arg("--stop-on-stdin-eof")
                .current_dir(&node.dir)
                .stdin(Stdio::piped())
                .stdout(log)
                .stderr(log_err)
                .process_group(0)
                .kill_on_drop(true);
            // The user's TERN_* settings would override every node alike (TERN_LISTEN would
            // make them collide); the generated files are the whole configuration.
            for (key, _) in std::env::vars_os() {
                if key
                    .to_string_lossy()
                    .starts_with(crate::config_load::ENV_PREFIX)
                {
                    command.env_remove(key);
                }
            }
            let child = command
                .spawn()
                .with_context(|| format!("starting node {}", node.identity))?;
            let pid = child.id().context("a just-spawned child has a pid")?;
            nodes.push(NodeProcess {
                plan: node.clone(),
                child,
                pid,
                exited: None,
            });
        }
        Ok(Self {
            site: plan.site.clone(),
            nodes,
        })
    }

    pub fn site(&self) -> &str {
        &self.site
    }

    /// Number of nodes launched.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Waits until every node answers `/readyz` with 200, at most `timeout`. Fails at once if a
    /// node exits, showing the end of its log.
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut ready = vec![false; self.nodes.len()];
        let mut last_answer = vec![String::from("no answer yet"); self.nodes.len()];
        loop {
            for (i, node) in self.nodes.iter_mut().enumerate() {
                if let Some(status) = node.child.try_wait().context("polling a node")? {
                    node.exited = Some(status);
                    bail!(
                        "node {} exited during startup ({status}); end of {}:\n{}",
                        node.plan.identity,
                        node.plan.log_path.display(),
                        log_tail(&node.plan.log_path)
                    );
                }
                if ready[i] {
                    continue;
                }
                let client = AdminClient::new(node.plan.admin_addr.to_string(), PROBE_MAX);
                match client.request(hyper::Method::GET, "/readyz").await {
                    Ok(reply) if reply.status.is_success() => ready[i] = true,
                    Ok(reply) => {
                        last_answer[i] = crate::admin_client::describe_failure(&reply);
                    }
                    Err(err) => last_answer[i] = format!("{err:#}"),
                }
            }
            if ready.iter().all(|r| *r) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let mut waiting = String::new();
                for (i, node) in self.nodes.iter().enumerate() {
                    if !ready[i] {
                        let _ = write!(
                            waiting,
                            "\n  {}: {} (log {})",
                            node.plan.identity,
                            last_answer[i],
                            node.plan.log_path.display()
                        );
                    }
                }
                bail!("nodes not ready within {timeout:?}:{waiting}");
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }

    /// NODE, RESP, ADMIN, PID, one row per node.
    pub fn table(&self) -> String {
        let mut table = Table::new(&["NODE", "RESP", "ADMIN", "PID"]);
        for node in &self.nodes {
            table.row(vec![
                node.plan.identity.clone(),
                node.plan.resp_addr.to_string(),
                node.plan.admin_addr.to_string(),
                node.pid.to_string(),
            ]);
        }
        table.render("")
    }

    /// Admin addresses, node 1 first.
    pub fn admin_addrs(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| n.plan.admin_addr.to_string())
            .collect()
    }

    /// Nodes that exited since the last call.
    pub fn poll_exits(&mut self) -> anyhow::Result<Vec<NodeExit>> {
        let mut exits = Vec::new();
        for node in &mut self.nodes {
            if node.exited.is_some() {
                continue;
            }
            if let Some(status) = node.child.try_wait().context("polling a node")? {
                node.exited = Some(status);
                exits.push(NodeExit {
                    identity: node.plan.identity.clone(),
                    pid: node.pid,
                    status,
                });
            }
        }
        Ok(exits)
    }

    /// SIGTERM to every running node, then waits up to `grace` for all of them; whoever is
    /// still running after that is killed. Returns the nodes that had to be killed.
    pub async fn stop(mut self, grace: Duration) -> Vec<String> {
        for node in &self.nodes {
            if node.exited.is_none() {
                terminate(node.pid);
            }
        }
        let deadline = tokio::time::Instant::now() + grace;
        let mut killed = Vec::new();
        for node in &mut self.nodes {
            if node.exited.is_some() {
                continue;
            }
            match tokio::time::timeout_at(deadline, node.child.wait()).await {
                Ok(Ok(status)) => node.exited = Some(status),
                Ok(Err(err)) => {
                    tracing::warn!(node = %node.plan.identity, %err, "waiting for a node");
                }
                Err(_) => {
                    killed.push(node.plan.identity.clone());
                    let _ = node.child.start_kill();
                    let _ = node.child.wait().await;
                }
            }
        }
        killed
    }
}

/// SIGTERM, the node's graceful stop. A node that already exited (ESRCH) is fine.
fn terminate(pid: u32) {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    if let Err(err) = rustix::process::kill_process(pid, rustix::process::Signal::TERM) {
        tracing::debug!(%err, "SIGTERM to a node");
    }
}

/// The last lines of a log file, for error messages.
fn log_tail(path: &Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(LOG_TAIL_LINES);
            lines[start..].join("\n")
        }
        Err(err) => format!("(cannot read it: {err})"),
    }
}
