//! A site of real `tern node` processes on 127.0.`net`.1..=n, for failover tests: configs built
//! as `NodeConfig` values (like `tern up`), dev certificates, one data directory per node that
//! outlives restarts, and per-node control — `kill -9`, SIGTERM, restart with the same config.
//!
//! Cleanup: every child is killed and reaped on drop; the temporary directory (configs, data,
//! logs) goes with the `ProcSite`, unless the test is panicking, when it is kept and its path
//! printed so the node logs can be read.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tern_node::admin::MemberState;
use tern_node::admin::http::PartitionsView;
use tern_node::cluster::{NodeId, PartitionMap, PeerSpec};
use tern_node::config::{ClusterConfig, ClusterPeer, NodeConfig};
use tern_node::core::Keyspace;
use tern_node::transport::certs::init_dev_pki;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The `tern` binary cargo built for this test.
const TERN: &str = env!("CARGO_BIN_EXE_tern");

pub const SITE: &str = "a";
/// One admin HTTP request may take this long.
const ADMIN_REQUEST_MAX: Duration = Duration::from_secs(3);
/// Pause between polls of the admin API.
const POLL_INTERVAL: Duration = Duration::from_millis(25);
/// A node's graceful stop may drain for this long (the default is 10 s; a test wants less).
pub const SHUTDOWN_DRAIN_MS_MAX: u64 = 5_000;

/// One node: its config on disk and, while it runs, its process.
#[derive(Debug)]
pub struct NodeSlot {
    pub config: NodeConfig,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    pub admin: SocketAddr,
    child: Option<Child>,
}

/// What [`ProcSite::start_site`] builds.
pub struct SiteSetup<'a> {
    /// Nodes listen on 127.0.`net`.1..=nodes.
    pub net: u8,
    pub site: &'a str,
    pub site_id: u16,
    pub nodes: u8,
    pub partitions: u32,
    /// A PKI directory holding this site's node certificates (else one is made).
    pub pki: Option<&'a std::path::Path>,
    pub configure: &'a mut dyn FnMut(usize, &std::path::Path, &mut NodeConfig),
}

#[derive(Debug)]
pub struct ProcSite {
    dir: Option<tempfile::TempDir>,
    pub nodes: Vec<NodeSlot>,
    pub partitions: u32,
}

pub fn ip(net: u8, host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, net, host))
}

/// A port free on `ip` right now (another process could take it before the node binds it;
/// the node then fails to start and [`ProcSite::wait_ready`] says so).
pub fn free_port(ip: IpAddr, udp: bool) -> u16 {
    if udp {
        let socket = std::net::UdpSocket::bind((ip, 0)).expect("probe a UDP port");
        socket.local_addr().expect("probed address").port()
    } else {
        let socket = std::net::TcpListener::bind((ip, 0)).expect("probe a TCP port");
        socket.local_addr().expect("probed address").port()
    }
}

impl ProcSite {
    /// Writes configs and certificates for `n` nodes and starts them all (not yet ready).
    pub fn start(net: u8, n: u8, partitions: u32) -> Self {
        Self::start_site(SiteSetup {
            net,
            site: SITE,
            site_id: 1,
            nodes: n,
            partitions,
            pki: None,
            configure: &mut |_, _, _| {},
        })
    }

    /// As [`Self::start`], for any site: its own name and id, an existing PKI directory (so
    /// several sites share one CA), and a hook that adjusts each node's config (e.g. `[wan]`)
    /// before it is written: `configure(node index, node directory, config)`.
    pub fn start_site(setup: SiteSetup<'_>) -> Self {
        let SiteSetup {
            net,
            site,
            site_id,
            nodes: n,
            partitions,
            pki,
            configure,
        } = setup;
        let dir = tempfile::tempdir().expect("temp dir");
        let pki = match pki {
            Some(pki) => pki.to_owned(),
            None => {
                let pki = dir.path().join("certs");
                init_dev_pki(&pki, &[site.to_owned()], u32::from(n)).expect("dev PKI");
                pki
            }
        };
        // (QUIC, RESP) of each node.
        let addrs: Vec<(SocketAddr, SocketAddr)> = (1..=n)
            .map(|i| {
                (
                    SocketAddr::new(ip(net, i), free_port(ip(net, i), true)),
                    SocketAddr::new(ip(net, i), free_port(ip(net, i), false)),
                )
            })
            .collect();
        let peers: Vec<ClusterPeer> = (1..=n)
            .zip(&addrs)
            .map(|(i, (quic, resp))| ClusterPeer {
                id: u64::from(i),
                name: format!("n{i}"),
                quic_addr: (*quic).into(),
                resp_addr: (*resp).into(),
                zone: None,
            })
            .collect();
        let nodes = peers
            .iter()
            .zip(&addrs)
            .enumerate()
            .map(|(index, (peer, &(quic, resp)))| {
                let node_dir = dir.path().join(&peer.name);
                let mut cluster = ClusterConfig::new(
                    peer.id,
                    site,
                    &peer.name,
                    quic,
                    pki.clone(),
                    node_dir.join("data"),
                    peers.clone(),
                );
                cluster.shutdown_drain_ms_max = SHUTDOWN_DRAIN_MS_MAX;
                let admin = SocketAddr::new(resp.ip(), free_port(resp.ip(), false));
                let mut config = NodeConfig {
                    listen: resp,
                    partitions,
                    site: site_id,
                    admin_listen: Some(admin),
                    cluster: Some(cluster),
                    ..NodeConfig::default()
                };
                configure(index, &node_dir, &mut config);
                std::fs::create_dir_all(node_dir.join("data")).expect("node data dir");
                let config_path = node_dir.join("tern.toml");
                let toml = toml::to_string(&config).expect("config serialises as TOML");
                std::fs::write(&config_path, toml).expect("writing a node config");
                NodeSlot {
                    config,
                    config_path,
                    log_path: node_dir.join("node.log"),
                    admin,
                    child: None,
                }
            })
            .collect();
        let mut site = Self {
            dir: Some(dir),
            nodes,
            partitions,
        };
        for i in 0..site.nodes.len() {
            site.spawn(i);
        }
        site
    }

    /// Starts node `i` from its config file (and its existing data directory, if any).
    pub fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        assert!(node.child.is_none(), "node {} already running", i + 1);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log_path)
            .expect("opening the node log");
        let log_err = log.try_clone().expect("duplicating the log handle");
        let child = Command::new(TERN)
            .arg("node")
            .arg("--config")
            .arg(&node.config_path)
            .env_clear()
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .expect("spawning tern node");
        node.child = Some(child);
    }

    pub fn resp_addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].config.listen
    }

    pub fn resp_addrs(&self) -> Vec<SocketAddr> {
        (0..self.nodes.len()).map(|i| self.resp_addr(i)).collect()
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].child.as_ref().map(Child::id)
    }

    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].child.is_some())
            .collect()
    }

    /// `kill -9`: no drain, no goodbye; reaped at once.
    pub fn kill9(&mut self, i: usize) {
        let mut child = self.nodes[i].child.take().expect("node is running");
        child.kill().expect("SIGKILL to a node");
        child.wait().expect("reaping a killed node");
    }

    /// SIGTERM (the node drains, then exits), then waits for the exit at most `within`.
    pub async fn terminate(&mut self, i: usize, within: Duration) -> ExitStatus {
        let mut child = self.nodes[i].child.take().expect("node is running");
        let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).expect("pid fits"))
            .expect("non-zero pid");
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("polling a node") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "node {} did not exit within {within:?} of SIGTERM; log:\n{}",
                    i + 1,
                    self.log_tail(i)
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    pub fn log_tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(&self.nodes[i].log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Fails the test if a node that should be running has exited.
    fn assert_alive(&mut self) {
        for i in 0..self.nodes.len() {
            if let Some(child) = self.nodes[i].child.as_mut()
                && let Some(status) = child.try_wait().expect("polling a node")
            {
                self.nodes[i].child = None;
                panic!(
                    "node {} exited ({status}); log:\n{}",
                    i + 1,
                    self.log_tail(i)
                );
            }
        }
    }

    /// GET `path` on node `i`'s admin port: (status code, body).
    pub async fn admin_get(&self, i: usize, path: &str) -> Option<(u16, String)> {
        let addr = self.nodes[i].admin;
        let request = async {
            let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
            let head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            stream.write_all(head.as_bytes()).await.ok()?;
            let mut raw = Vec::new();
            stream.read_to_end(&mut raw).await.ok()?;
            let text = String::from_utf8(raw).ok()?;
            let (head, body) = text.split_once("\r\n\r\n")?;
            let code = head.split_whitespace().nth(1)?.parse().ok()?;
            Some((code, body.to_owned()))
        };
        tokio::time::timeout(ADMIN_REQUEST_MAX, request)
            .await
            .ok()
            .flatten()
    }

    /// `/v1/partitions` of node `i`, if it answers.
    pub async fn partitions_view(&self, i: usize) -> Option<PartitionsView> {
        let (code, body) = self.admin_get(i, "/v1/partitions").await?;
        if code != 200 {
            return None;
        }
        serde_json::from_str(&body).ok()
    }

    /// The views of every running node (`None` for one that does not answer).
    pub async fn views(&self) -> Vec<Option<PartitionsView>> {
        let mut views = Vec::new();
        for i in self.running() {
            views.push(self.partitions_view(i).await);
        }
        views
    }

    /// Waits until `/readyz` of node `i` answers 200.
    pub async fn wait_ready(&mut self, i: usize, within: Duration) -> Duration {
        let started = Instant::now();
        loop {
            self.assert_alive();
            if let Some((200, _)) = self.admin_get(i, "/readyz").await {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < within,
                "node {} not ready within {within:?}; log:\n{}",
                i + 1,
                self.log_tail(i)
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits until `ok` holds for the views of every running node (all answering).
    pub async fn wait_for(
        &mut self,
        what: &str,
        within: Duration,
        ok: impl Fn(&[PartitionsView]) -> bool,
    ) -> Duration {
        let started = Instant::now();
        loop {
            self.assert_alive();
            let views = self.views().await;
            let answered: Vec<PartitionsView> = views.iter().flatten().cloned().collect();
            if answered.len() == views.len() && ok(&answered) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < within,
                "{what}: not reached within {within:?}; views: {views:#?}"
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Every running node agrees on the map; every partition has its preferred primary, an
    /// in-sync backup and no handover in progress.
    pub async fn wait_settled(&mut self, what: &str, within: Duration) -> Duration {
        let preferred = self.preferred_primaries();
        self.wait_for(what, within, |views| {
            settled(views)
                && views[0]
                    .partitions
                    .iter()
                    .all(|p| preferred.get(&p.partition) == Some(&p.primary))
        })
        .await
    }

    /// Each partition's preferred primary: placement is deterministic, so the test computes
    /// the bootstrap map the nodes compute.
    pub fn preferred_primaries(&self) -> BTreeMap<u16, Option<u64>> {
        let cluster = self.nodes[0]
            .config
            .cluster
            .as_ref()
            .expect("cluster config");
        let peers = cluster.peers.iter().map(|p| PeerSpec {
            id: NodeId::new(p.id).expect("non-zero id"),
            addr: p.quic_addr.to_string(),
            zone: p.zone.clone(),
        });
        let map = PartitionMap::bootstrap(
            u16::try_from(self.partitions).expect("partition count fits u16"),
            cluster.backups,
            peers,
        );
        map.partitions()
            .iter()
            .enumerate()
            .map(|(i, a)| {
                (
                    u16::try_from(i).expect("partition id fits u16"),
                    a.preferred.first().map(|n| n.get()),
                )
            })
            .collect()
    }

    /// Node `i`'s incarnation as the map records it (per the first running node that answers).
    pub async fn incarnation(&self, i: usize) -> Option<u64> {
        let id = u64::try_from(i + 1).expect("small index");
        for j in self.running() {
            if let Some(view) = self.partitions_view(j).await {
                return view
                    .members
                    .iter()
                    .find(|m| m.node_id == id)
                    .map(|m| m.incarnation);
            }
        }
        None
    }

    /// Waits until every running node's map records node `i` with an incarnation above
    /// `before`: the site noticed the restart (until then the map may still trust the old one).
    pub async fn wait_rejoined(&mut self, i: usize, before: u64, within: Duration) -> Duration {
        let id = u64::try_from(i + 1).expect("small index");
        self.wait_for("restart noticed", within, |views| {
            views.iter().all(|v| {
                v.members
                    .iter()
                    .any(|m| m.node_id == id && m.incarnation > before)
            })
        })
        .await
    }

    /// A key of `partition`.
    pub fn key_in(&self, partition: u16, tag: &str) -> String {
        let keyspace = Keyspace::new(self.partitions).expect("valid partition count");
        (0..)
            .map(|i| format!("{tag}-{i}"))
            .find(|k| keyspace.partition_of(k.as_bytes()).0 == partition)
            .expect("some key lands in every partition")
    }
}

/// Agreement on the map, every member up, a primary and an in-sync backup everywhere, no
/// handover running.
pub fn settled(views: &[PartitionsView]) -> bool {
    let Some(first) = views.first() else {
        return false;
    };
    views.iter().all(|v| {
        v.map_version == first.map_version
            && v.members.iter().all(|m| m.state == MemberState::Up)
            && v.partitions.len() == first.partitions.len()
            && v.partitions.iter().all(|p| {
                p.primary.is_some()
                    && p.handover_to.is_none()
                    && p.replicas
                        .iter()
                        .any(|r| r.in_sync && Some(r.node_id) != p.primary)
            })
    })
}

impl Drop for ProcSite {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking()
            && let Some(dir) = self.dir.take()
        {
            let kept = dir.keep();
            eprintln!("site files (configs, node logs) kept in {}", kept.display());
        }
    }
}
