//! A multi-node site inside one test process: each node is a real `tern_node` server (its own
//! threads, real QUIC with mutual TLS on its own 127.0.x.y address, real actors), with certs
//! from `init_dev_pki` and Raft state in a temporary directory that outlives node restarts.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tern_node::admin::{AdminRequest, NodeStatus};
use tern_node::cluster::{NodeId, PartitionMap, PeerSpec};
use tern_node::config::{ClusterConfig, ClusterPeer, NodeConfig};
use tern_node::core::Keyspace;
use tern_node::server::{self, NodeHandle};
use tern_node::transport::certs::init_dev_pki;

pub const SITE: &str = "a";

/// Site tests share 2 cores with everything else: run them one at a time.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub struct Site {
    /// Certificates and every node's data directory; removed when the site is dropped.
    pub dir: TempDir,
    pub configs: Vec<NodeConfig>,
    pub nodes: Vec<Option<NodeHandle>>,
    pub partitions: u32,
    /// Every node the site may have (spares included), as `[[cluster.peers]]` entries.
    pub all_peers: Vec<ClusterPeer>,
}

fn ip(net: u8, host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, net, host))
}

/// A port free on `ip` right now, for UDP (QUIC) or TCP (RESP).
fn free_port(ip: IpAddr, udp: bool) -> u16 {
    if udp {
        let socket = std::net::UdpSocket::bind((ip, 0)).expect("probe a UDP port");
        socket.local_addr().expect("probed address").port()
    } else {
        let socket = std::net::TcpListener::bind((ip, 0)).expect("probe a TCP port");
        socket.local_addr().expect("probed address").port()
    }
}

impl Site {
    /// Configures `n` nodes on 127.0.`net`.1..=n (`net` keeps concurrently running sites
    /// apart) and starts them all.
    pub async fn start(net: u8, n: u8, partitions: u32) -> Self {
        Self::start_with_spares(net, n, 0, partitions).await
    }

    /// As [`Self::start`], with `spares` more nodes configured (certs, addresses, data
    /// directories) but neither started nor listed as peers: see [`Self::set_members`] and
    /// [`Self::join`].
    pub async fn start_with_spares(net: u8, n: u8, spares: u8, partitions: u32) -> Self {
        let running = n;
        let n = n + spares;
        let dir = tempfile::tempdir().expect("temp dir");
        let pki = dir.path().join("pki");
        init_dev_pki(&pki, &[SITE.to_owned()], u32::from(n)).expect("dev PKI");
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
        let configs = peers
            .iter()
            .zip(&addrs)
            .map(|(peer, (quic, resp))| {
                let mut cluster = ClusterConfig::new(
                    peer.id,
                    SITE,
                    &peer.name,
                    *quic,
                    pki.clone(),
                    dir.path().join(&peer.name),
                    peers.clone(),
                );
                cluster.shutdown_drain_ms_max = 5_000;
                NodeConfig {
                    listen: *resp,
                    partitions,
                    workers: 1,
                    tick_ms: 10,
                    cluster: Some(cluster),
                    ..NodeConfig::default()
                }
            })
            .collect();
        let mut site = Self {
            dir,
            configs,
            nodes: (0..n).map(|_| None).collect(),
            partitions,
            all_peers: peers,
        };
        site.set_members(&(0..usize::from(running)).collect::<Vec<_>>());
        for i in 0..usize::from(running) {
            let node = site.boot(i).await;
            site.nodes[i] = Some(node);
        }
        site
    }

    /// Every node's configured peers become `members` (indexes); a running node reads them
    /// at its next (re)start.
    pub fn set_members(&mut self, members: &[usize]) {
        let peers: Vec<ClusterPeer> = members.iter().map(|&i| self.all_peers[i].clone()).collect();
        for config in &mut self.configs {
            if let Some(cluster) = config.cluster.as_mut() {
                cluster.peers = peers.clone();
            }
        }
    }

    /// Starts node `i` for the first time as a node joining the running site (the `join`
    /// marker in its empty data directory).
    pub async fn join(&mut self, i: usize) {
        assert!(self.nodes[i].is_none(), "node {} is stopped", i + 1);
        let dir = self.data_dir(i);
        std::fs::create_dir_all(&dir).expect("create the data directory");
        std::fs::write(dir.join(server::JOIN_MARKER), b"").expect("write the join marker");
        let node = self.boot(i).await;
        self.nodes[i] = Some(node);
    }

    async fn boot(&self, i: usize) -> NodeHandle {
        server::start(self.configs[i].clone())
            .await
            .unwrap_or_else(|e| panic!("node {} starts: {e}", i + 1))
    }

    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("n{}", i + 1))
    }

    pub fn addr(&self, i: usize) -> SocketAddr {
        self.configs[i].listen
    }

    pub fn node(&self, i: usize) -> &NodeHandle {
        self.nodes[i].as_ref().expect("node is running")
    }

    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_some())
            .collect()
    }

    pub fn statuses(&self) -> Vec<NodeStatus> {
        self.running()
            .into_iter()
            .map(|i| self.node(i).status())
            .collect()
    }

    /// A crash, as the other nodes see it: the node goes silent, without draining.
    pub async fn crash(&mut self, i: usize) {
        if let Some(node) = self.nodes[i].take() {
            node.stop_now().await;
        }
    }

    /// Graceful stop: drain, then stop.
    pub async fn shutdown(&mut self, i: usize) {
        if let Some(node) = self.nodes[i].take() {
            node.shutdown().await;
        }
    }

    /// Starts node `i` again from its data directory (a new incarnation).
    pub async fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].is_none(), "node {} is stopped", i + 1);
        let node = self.boot(i).await;
        self.nodes[i] = Some(node);
    }

    pub async fn drain(&self, via: usize, node_id: u64) {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.node(via)
            .admin_requests()
            .send(AdminRequest::Drain { node_id, reply })
            .await
            .expect("admin channel open");
        answer
            .await
            .expect("drain answered")
            .expect("drain accepted");
    }

    /// Waits until `ok` holds for the running nodes' statuses, or panics with the last ones.
    pub async fn wait_for(
        &self,
        what: &str,
        within: Duration,
        ok: impl Fn(&[NodeStatus]) -> bool,
    ) -> Duration {
        let started = Instant::now();
        loop {
            let statuses = self.statuses();
            if ok(&statuses) {
                return started.elapsed();
            }
            if started.elapsed() > within {
                panic!("{what}: not reached within {within:?}; statuses: {statuses:#?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every running node is ready and they agree on the map; every partition has an in-sync
    /// backup and its preferred primary (nodes that were slow to start may have been marked
    /// down and failed back in between).
    pub async fn wait_settled(&self, within: Duration) -> Duration {
        let preferred = self.preferred_primaries();
        self.wait_for("site settled", within, |statuses| {
            settled(statuses)
                && statuses[0]
                    .partitions
                    .iter()
                    .all(|p| preferred.get(&p.partition) == Some(&p.primary))
        })
        .await
    }

    /// Each partition's preferred primary: placement is deterministic, so the test computes
    /// the same bootstrap map the nodes do.
    pub fn preferred_primaries(&self) -> BTreeMap<u16, Option<u64>> {
        let cluster = self.configs[0].cluster.as_ref().expect("site config");
        let peers = cluster.peers.iter().map(|p| PeerSpec {
            id: NodeId::new(p.id).expect("non-zero"),
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

    /// Which node is primary of each partition, per the first running node.
    pub fn primaries(&self) -> BTreeMap<u16, Option<u64>> {
        let status = self.node(self.running()[0]).status();
        status
            .partitions
            .iter()
            .map(|p| (p.partition, p.primary))
            .collect()
    }

    pub fn keyspace(&self) -> Keyspace {
        Keyspace::new(self.partitions).expect("valid partition count")
    }

    /// A key of `partition`.
    pub fn key_in(&self, partition: u16, tag: &str) -> String {
        let keyspace = self.keyspace();
        (0..)
            .map(|i| format!("{tag}-{i}"))
            .find(|k| keyspace.partition_of(k.as_bytes()).0 == partition)
            .expect("some key lands in every partition")
    }

    pub async fn stop_all(mut self) {
        for i in 0..self.nodes.len() {
            if let Some(node) = self.nodes[i].take() {
                node.stop_now().await;
            }
        }
    }
}

pub fn settled(statuses: &[NodeStatus]) -> bool {
    let Some(first) = statuses.first() else {
        return false;
    };
    statuses.iter().all(|s| {
        s.ready
            && s.map_version == first.map_version
            && s.partitions.iter().all(|p| {
                p.primary.is_some()
                    && p.handover_to.is_none()
                    && p.replicas
                        .iter()
                        .any(|r| r.in_sync && Some(r.node_id) != p.primary)
            })
    })
}

/// Every site test runs under this bound, so a hang fails instead of blocking CI.
pub async fn bounded<F: Future>(limit: Duration, body: F) -> F::Output {
    tokio::time::timeout(limit, body)
        .await
        .expect("site test exceeded its time bound")
}
