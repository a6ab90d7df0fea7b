//! What `tern up` launches: ports, directories and each node's [`NodeConfig`], decided before
//! any process starts. Configs are built as `NodeConfig` values and serialised with serde, so the
//! generated files cannot drift from what `tern node` reads.
//!
//! Layout under the base directory (one `<site>/` per site, so a multi-site `tern up` only adds
//! sites to the loop):
//! ```text
//! certs/                      ca.pem, ca.key, n1.a.pem, n1.a.key, …   (tern certs init)
//! <site>/n<i>/tern.toml       the node's config
//! <site>/n<i>/data/           its cluster data_dir (Raft state, incarnation)
//! <site>/n<i>/node.log        its stdout and stderr
//! ```
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use tern_node::config::{ClusterConfig, ClusterPeer, NodeConfig};

/// Offsets from `--base-port` of each listener kind: node i (1-based) listens on
/// `base + offset + i - 1`.
pub const RESP_PORT_OFFSET: u16 = 0;
pub const QUIC_PORT_OFFSET: u16 = 100;
pub const ADMIN_PORT_OFFSET: u16 = 200;

/// How ports are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortPlan {
    /// Predictable ports from a base, so `tern status` finds node 1 without flags.
    Fixed { base: u16 },
    /// Ports the OS reports free right now (tests, several sites side by side). Another
    /// process could take one before the node binds it; the node then fails to start and
    /// `tern up` reports it.
    Free,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodePorts {
    pub resp: u16,
    pub quic: u16,
    pub admin: u16,
}

/// One site to launch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteSpec {
    /// Site name (a DNS label; node identities are `n<i>.<name>`).
    pub name: String,
    /// Site id stamped on versions (`NodeConfig::site`).
    pub site_id: u16,
    pub nodes: u32,
    pub partitions: u32,
    pub backups: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePlan {
    pub id: u64,
    /// `n1`, `n2`, …
    pub name: String,
    /// Transport identity, `n1.a`.
    pub identity: String,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    pub resp_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub config: NodeConfig,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SitePlan {
    pub site: String,
    pub nodes: Vec<NodePlan>,
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Ports for `nodes` nodes.
pub fn allocate_ports(plan: PortPlan, nodes: u32) -> anyhow::Result<Vec<NodePorts>> {
    match plan {
        PortPlan::Fixed { base } => (0..nodes)
            .map(|i| {
                let port = |offset: u16| -> anyhow::Result<u16> {
                    u32::from(base)
                        .checked_add(u32::from(offset) + i)
                        .and_then(|p| u16::try_from(p).ok())
                        .with_context(|| {
                            format!("--base-port {base} leaves no room for node {}", i + 1)
                        })
                };
                Ok(NodePorts {
                    resp: port(RESP_PORT_OFFSET)?,
                    quic: port(QUIC_PORT_OFFSET)?,
                    admin: port(ADMIN_PORT_OFFSET)?,
                })
            })
            .collect(),
        PortPlan::Free => {
            // Hold every probe socket until all are chosen, so no port is handed out twice.
            let mut held_tcp = Vec::new();
            let mut held_udp = Vec::new();
            let mut ports = Vec::new();
            for _ in 0..nodes {
                let mut tcp = || -> anyhow::Result<u16> {
                    let l = TcpListener::bind(loopback(0)).context("finding a free TCP port")?;
                    let port = l.local_addr()?.port();
                    held_tcp.push(l);
                    Ok(port)
                };
                let resp = tcp()?;
                let admin = tcp()?;
                let udp = UdpSocket::bind(loopback(0)).context("finding a free UDP port")?;
                let quic = udp.local_addr()?.port();
                held_udp.push(udp);
                ports.push(NodePorts { resp, quic, admin });
            }
            Ok(ports)
        }
    }
}

/// The plan of one site under `base_dir`, with certificates in `certs_dir`.
pub fn plan_site(
    spec: &SiteSpec,
    base_dir: &Path,
    certs_dir: &Path,
    ports: &[NodePorts],
) -> anyhow::Result<SitePlan> {
    if ports.len() != spec.nodes as usize {
        bail!("{} port sets for {} nodes", ports.len(), spec.nodes);
    }
    let peers: Vec<ClusterPeer> = ports
        .iter()
        .zip(1u64..)
        .map(|(p, id)| ClusterPeer {
            id,
            name: format!("n{id}"),
            quic_addr: loopback(p.quic),
            resp_addr: loopback(p.resp),
            zone: None,
        })
        .collect();
    let site_dir = base_dir.join(&spec.name);
    let nodes = peers
        .iter()
        .zip(ports)
        .map(|(peer, p)| {
            let dir = site_dir.join(&peer.name);
            let mut cluster = ClusterConfig::new(
                peer.id,
                &spec.name,
                &peer.name,
                peer.quic_addr,
                certs_dir.to_owned(),
                dir.join("data"),
                peers.clone(),
            );
            cluster.backups = spec.backups;
            let config = NodeConfig {
                listen: peer.resp_addr,
                partitions: spec.partitions,
                site: spec.site_id,
                admin_listen: Some(loopback(p.admin)),
                cluster: Some(cluster),
                ..NodeConfig::default()
            };
            config
                .validate()
                .with_context(|| format!("the generated config of node {}", peer.name))?;
            Ok(NodePlan {
                id: peer.id,
                name: peer.name.clone(),
                identity: format!("{}.{}", peer.name, spec.name),
                config_path: dir.join("tern.toml"),
                log_path: dir.join("node.log"),
                dir,
                resp_addr: peer.resp_addr,
                admin_addr: loopback(p.admin),
                config,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(SitePlan {
        site: spec.name.clone(),
        nodes,
    })
}

/// The TOML `tern node --config` reads back as exactly `config`.
pub fn config_toml(config: &NodeConfig) -> anyhow::Result<String> {
    let body = toml::to_string(config).context("serialising the node config as TOML")?;
    Ok(format!(
        "# Generated by `tern up`; rewritten on every run. Keys: tern.example.toml.\n{body}"
    ))
}

/// Creates each node's directories and writes its config file.
pub fn write_site(plan: &SitePlan) -> anyhow::Result<()> {
    for node in &plan.nodes {
        let data_dir = node
            .config
            .cluster
            .as_ref()
            .map_or_else(|| node.dir.join("data"), |c| c.data_dir.clone());
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        std::fs::write(&node.config_path, config_toml(&node.config)?)
            .with_context(|| format!("writing {}", node.config_path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::providers::Env;

    fn spec(nodes: u32) -> SiteSpec {
        SiteSpec {
            name: "a".into(),
            site_id: 1,
            nodes,
            partitions: 8,
            backups: 1,
        }
    }

    #[test]
    fn fixed_ports_follow_the_offsets() {
        let ports = allocate_ports(PortPlan::Fixed { base: 7001 }, 3).expect("ports");
        assert_eq!(
            ports,
            vec![
                NodePorts {
                    resp: 7001,
                    quic: 7101,
                    admin: 7201
                },
                NodePorts {
                    resp: 7002,
                    quic: 7102,
                    admin: 7202
                },
                NodePorts {
                    resp: 7003,
                    quic: 7103,
                    admin: 7203
                },
            ]
        );
        assert_eq!(
            crate::cli::DEFAULT_ADMIN,
            format!("127.0.0.1:{}", ports[0].admin),
            "`tern status` defaults to node 1 of a default `tern up`"
        );
        let err = allocate_ports(PortPlan::Fixed { base: 65_400 }, 3).expect_err("overflow");
        assert!(err.to_string().contains("no room"), "{err}");
    }

    #[test]
    fn free_ports_are_distinct() {
        let ports = allocate_ports(PortPlan::Free, 3).expect("ports");
        let mut tcp: Vec<u16> = ports.iter().flat_map(|p| [p.resp, p.admin]).collect();
        tcp.sort_unstable();
        tcp.dedup();
        assert_eq!(tcp.len(), 6);
        let mut udp: Vec<u16> = ports.iter().map(|p| p.quic).collect();
        udp.dedup();
        assert_eq!(udp.len(), 3);
    }

    #[test]
    fn every_node_lists_every_peer_and_owns_its_directories() {
        let ports = allocate_ports(PortPlan::Fixed { base: 7001 }, 3).expect("ports");
        let base = Path::new("/base");
        let plan = plan_site(&spec(3), base, &base.join("certs"), &ports).expect("plan");
        assert_eq!(plan.nodes.len(), 3);
        for (i, node) in plan.nodes.iter().enumerate() {
            let n = i + 1;
            let cluster = node.config.cluster.as_ref().expect("cluster section");
            assert_eq!(cluster.node_id, n as u64);
            assert_eq!(cluster.name, format!("n{n}"));
            assert_eq!(node.identity, format!("n{n}.a"));
            assert_eq!(cluster.peers.len(), 3);
            assert_eq!(
                cluster.peers,
                plan.nodes[0].config.cluster.as_ref().expect("c").peers
            );
            assert_eq!(cluster.tls_dir, Path::new("/base/certs"));
            assert_eq!(
                cluster.data_dir,
                PathBuf::from(format!("/base/a/n{n}/data"))
            );
            assert_eq!(cluster.listen_quic, loopback(7100 + n as u16));
            assert_eq!(node.config.listen, loopback(7000 + n as u16));
            assert_eq!(node.config.admin_listen, Some(loopback(7200 + n as u16)));
            assert_eq!(node.config.partitions, 8);
        }
    }

    #[test]
    fn a_plan_with_too_many_backups_is_refused_with_the_field() {
        let ports = allocate_ports(PortPlan::Fixed { base: 7001 }, 2).expect("ports");
        let mut s = spec(2);
        s.backups = 2;
        let err = plan_site(&s, Path::new("/b"), Path::new("/b/certs"), &ports)
            .expect_err("2 backups need 3 nodes");
        assert!(format!("{err:#}").contains("backups"), "{err:#}");
    }

    #[test]
    fn written_configs_load_back_as_the_same_config() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports = allocate_ports(PortPlan::Fixed { base: 7001 }, 3).expect("ports");
        let plan =
            plan_site(&spec(3), dir.path(), &dir.path().join("certs"), &ports).expect("plan");
        write_site(&plan).expect("writing configs");
        for node in &plan.nodes {
            let cluster = node.config.cluster.as_ref().expect("cluster");
            assert!(cluster.data_dir.is_dir(), "data dir created");
            // Through the very loader `tern node` uses, with an environment nobody sets.
            let loaded = crate::config_load::load_from(
                Some(&node.config_path),
                Env::prefixed("TERN_UP_UNIT_TEST_NOTHING_"),
            )
            .expect("the generated config is valid");
            assert_eq!(loaded, node.config, "{}", node.config_path.display());
        }
    }
}
