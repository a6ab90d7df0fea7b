//! What `tern up` launches: ports, directories and each node's [`NodeConfig`], decided before
//! any process starts. Configs are built as `NodeConfig` values and serialised with serde, so the
//! generated files cannot drift from what `tern node` reads.
//!
//! Layout under the base directory (one `<site>/` per site, so a multi-site `tern up` only adds
//! sites to the loop):
//! ```text
//! certs/                      ca.pem, ca.key, a.pem, n1.a.pem, …   (tern certs init)
//! <site>/n<i>/tern.toml       the node's config
//! <site>/n<i>/data/           its cluster data_dir (Raft state, incarnation)
//! <site>/n1/wan/              the WAN gateway's backlogs and cursors (several sites only)
//! <site>/n<i>/node.log        its stdout and stderr
//! ```
//!
//! With several sites, site s (0-based) takes the ports of a one-site plan shifted by
//! `s * SITE_PORT_STRIDE`, and node 1 of each site runs the site's WAN gateway, peered with
//! every other site's (full mesh, one CA for all).
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use tern_node::config::{
    ClusterConfig, ClusterPeer, NodeConfig, WanConfig, WanPeer, WanResolverRule,
};

/// Offsets from `--base-port` of each listener kind: node i (1-based) listens on
/// `base + offset + i - 1`.
pub const RESP_PORT_OFFSET: u16 = 0;
pub const QUIC_PORT_OFFSET: u16 = 100;
pub const ADMIN_PORT_OFFSET: u16 = 200;
/// The site's WAN gateway (UDP) listens on `base + WAN_PORT_OFFSET` of its site.
pub const WAN_PORT_OFFSET: u16 = 300;
/// Site s (0-based) uses the ports of site 0 plus `s * SITE_PORT_STRIDE`.
pub const SITE_PORT_STRIDE: u16 = 1000;
/// Most sites `tern up` names (`a`..`z`).
pub const SITES_MAX: u32 = 26;

/// The resolver rules of every gateway `tern up` configures: `c:` keys are counters whose
/// concurrent increments merge; everything else is last-writer-wins (the default).
pub const UP_RESOLVERS: &[(&str, &str)] = &[("c:", "counter-merge")];

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

/// The ports of one site: its nodes' and its gateway's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SitePorts {
    pub nodes: Vec<NodePorts>,
    /// UDP port of the site's WAN gateway (used only with several sites).
    pub wan: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SitePlan {
    pub site: String,
    pub site_id: u16,
    pub nodes: Vec<NodePlan>,
    /// Where the site's WAN gateway listens (run by `nodes[0]`); none for a lone site.
    pub gateway: Option<SocketAddr>,
}

/// The site names `tern up --sites n` uses: `a`, `b`, `c`, …
pub fn site_names(sites: u32) -> anyhow::Result<Vec<String>> {
    if sites == 0 || sites > SITES_MAX {
        bail!("--sites must be between 1 and {SITES_MAX}, got {sites}");
    }
    Ok((b'a'..)
        .take(sites as usize)
        .map(|c| char::from(c).to_string())
        .collect())
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Ports for `nodes` nodes of one site.
pub fn allocate_ports(plan: PortPlan, nodes: u32) -> anyhow::Result<Vec<NodePorts>> {
    let mut sites = allocate_site_ports(plan, 1, nodes)?;
    Ok(sites.pop().map(|s| s.nodes).unwrap_or_default())
}

/// Ports for `sites` sites of `nodes` nodes each, all distinct.
pub fn allocate_site_ports(
    plan: PortPlan,
    sites: u32,
    nodes: u32,
) -> anyhow::Result<Vec<SitePorts>> {
    match plan {
        PortPlan::Fixed { base } => (0..sites)
            .map(|s| {
                let port = |offset: u16, i: u32, what: &str| -> anyhow::Result<u16> {
                    (u32::from(base) + s * u32::from(SITE_PORT_STRIDE))
                        .checked_add(u32::from(offset) + i)
                        .and_then(|p| u16::try_from(p).ok())
                        .with_context(|| format!("--base-port {base} leaves no room for {what}"))
                };
                let nodes = (0..nodes)
                    .map(|i| {
                        let what = format!("node {} of site {}", i + 1, s + 1);
                        Ok(NodePorts {
                            resp: port(RESP_PORT_OFFSET, i, &what)?,
                            quic: port(QUIC_PORT_OFFSET, i, &what)?,
                            admin: port(ADMIN_PORT_OFFSET, i, &what)?,
                        })
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let wan = port(
                    WAN_PORT_OFFSET,
                    0,
                    &format!("the gateway of site {}", s + 1),
                )?;
                Ok(SitePorts { nodes, wan })
            })
            .collect(),
        PortPlan::Free => {
            // Hold every probe socket until all are chosen, so no port is handed out twice.
            let mut held_tcp = Vec::new();
            let mut held_udp = Vec::new();
            let mut tcp = || -> anyhow::Result<u16> {
                let l = TcpListener::bind(loopback(0)).context("finding a free TCP port")?;
                let port = l.local_addr()?.port();
                held_tcp.push(l);
                Ok(port)
            };
            let mut udp = || -> anyhow::Result<u16> {
                let u = UdpSocket::bind(loopback(0)).context("finding a free UDP port")?;
                let port = u.local_addr()?.port();
                held_udp.push(u);
                Ok(port)
            };
            let mut out = Vec::new();
            for _ in 0..sites {
                let mut ports = Vec::new();
                for _ in 0..nodes {
                    let resp = tcp()?;
                    let admin = tcp()?;
                    let quic = udp()?;
                    ports.push(NodePorts { resp, quic, admin });
                }
                let wan = udp()?;
                out.push(SitePorts { nodes: ports, wan });
            }
            Ok(out)
        }
    }
}

/// The plans of every site in `specs`, sharing the certificates in `certs_dir`. With more
/// than one site, node 1 of each runs its site's gateway with every other site as a peer.
pub fn plan_sites(
    specs: &[SiteSpec],
    base_dir: &Path,
    certs_dir: &Path,
    ports: &[SitePorts],
) -> anyhow::Result<Vec<SitePlan>> {
    if ports.len() != specs.len() {
        bail!("{} port sets for {} sites", ports.len(), specs.len());
    }
    let gateways: Vec<WanPeer> = specs
        .iter()
        .zip(ports)
        .map(|(spec, p)| WanPeer {
            site: spec.name.clone(),
            site_id: spec.site_id,
            addr: loopback(p.wan).into(),
        })
        .collect();
    specs
        .iter()
        .zip(ports)
        .map(|(spec, p)| {
            let mut plan = plan_site(spec, base_dir, certs_dir, &p.nodes)?;
            if specs.len() < 2 {
                return Ok(plan);
            }
            let gateway = plan
                .nodes
                .first_mut()
                .with_context(|| format!("site {} has no node to run its gateway", spec.name))?;
            let mut wan = WanConfig::new(
                &spec.name,
                loopback(p.wan),
                certs_dir.to_owned(),
                gateway.dir.join("wan"),
            );
            wan.peers = gateways
                .iter()
                .filter(|g| g.site != spec.name)
                .cloned()
                .collect();
            wan.resolvers = UP_RESOLVERS
                .iter()
                .map(|(prefix, resolver)| WanResolverRule {
                    prefix: (*prefix).to_owned(),
                    resolver: (*resolver).to_owned(),
                })
                .collect();
            gateway.config.wan = Some(wan);
            gateway
                .config
                .validate()
                .with_context(|| format!("the generated config of {}", gateway.identity))?;
            plan.gateway = Some(loopback(p.wan));
            Ok(plan)
        })
        .collect()
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
            quic_addr: loopback(p.quic).into(),
            resp_addr: loopback(p.resp).into(),
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
                loopback(p.quic),
                certs_dir.to_owned(),
                dir.join("data"),
                peers.clone(),
            );
            cluster.backups = spec.backups;
            let config = NodeConfig {
                listen: loopback(p.resp),
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
                resp_addr: loopback(p.resp),
                admin_addr: loopback(p.admin),
                config,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(SitePlan {
        site: spec.name.clone(),
        site_id: spec.site_id,
        nodes,
        gateway: None,
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
        let wan_dir = node.config.wan.as_ref().map(|w| w.data_dir.clone());
        for dir in std::iter::once(data_dir).chain(wan_dir) {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
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

    fn specs(sites: u32, nodes: u32) -> Vec<SiteSpec> {
        site_names(sites)
            .expect("site names")
            .into_iter()
            .zip(1u16..)
            .map(|(name, site_id)| SiteSpec {
                name,
                site_id,
                ..spec(nodes)
            })
            .collect()
    }

    #[test]
    fn sites_are_named_a_b_c() {
        assert_eq!(site_names(1).expect("1"), ["a"]);
        assert_eq!(site_names(3).expect("3"), ["a", "b", "c"]);
        assert_eq!(
            site_names(26).expect("26").last().map(String::as_str),
            Some("z")
        );
        for bad in [0, 27] {
            assert!(site_names(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fixed_site_ports_shift_by_the_stride() {
        let sites = allocate_site_ports(PortPlan::Fixed { base: 7001 }, 3, 2).expect("ports");
        assert_eq!(
            sites[0].nodes,
            allocate_ports(PortPlan::Fixed { base: 7001 }, 2).expect("one site"),
            "site a keeps the ports of a one-site `tern up`"
        );
        for (s, site) in sites.iter().enumerate() {
            let shift = 1000 * s as u16;
            assert_eq!(site.wan, 7301 + shift);
            assert_eq!(
                site.nodes[1],
                NodePorts {
                    resp: 7002 + shift,
                    quic: 7102 + shift,
                    admin: 7202 + shift
                }
            );
        }
        let err = allocate_site_ports(PortPlan::Fixed { base: 63_500 }, 3, 2)
            .expect_err("site c overflows");
        assert!(err.to_string().contains("of site 3"), "{err}");
    }

    #[test]
    fn site_ports_are_distinct_across_sites() {
        for plan in [PortPlan::Fixed { base: 7001 }, PortPlan::Free] {
            let sites = allocate_site_ports(plan, 3, 3).expect("ports");
            let mut tcp: Vec<u16> = sites
                .iter()
                .flat_map(|s| s.nodes.iter().flat_map(|p| [p.resp, p.admin]))
                .collect();
            let mut udp: Vec<u16> = sites
                .iter()
                .flat_map(|s| s.nodes.iter().map(|p| p.quic).chain([s.wan]))
                .collect();
            for (kind, ports, want) in [("tcp", &mut tcp, 18), ("udp", &mut udp, 12)] {
                ports.sort_unstable();
                ports.dedup();
                assert_eq!(ports.len(), want, "{plan:?} {kind}");
            }
        }
    }

    #[test]
    fn one_site_has_no_gateway() {
        let ports = allocate_site_ports(PortPlan::Fixed { base: 7001 }, 1, 3).expect("ports");
        let base = Path::new("/base");
        let certs = base.join("certs");
        let plans = plan_sites(&specs(1, 3), base, &certs, &ports).expect("plan");
        let alone = plan_site(&spec(3), base, &certs, &ports[0].nodes).expect("plan");
        assert_eq!(plans, vec![alone]);
        assert_eq!(plans[0].gateway, None);
        assert!(plans[0].nodes.iter().all(|n| n.config.wan.is_none()));
    }

    #[test]
    fn every_site_gateway_peers_with_every_other_site() {
        let ports = allocate_site_ports(PortPlan::Fixed { base: 7001 }, 3, 2).expect("ports");
        let base = Path::new("/base");
        let plans = plan_sites(&specs(3, 2), base, &base.join("certs"), &ports).expect("plan");
        assert_eq!(plans.len(), 3);
        for (s, plan) in plans.iter().enumerate() {
            assert_eq!(plan.site_id, s as u16 + 1);
            let wan = plan.nodes[0]
                .config
                .wan
                .as_ref()
                .expect("node 1 runs the gateway");
            assert_eq!(Some(wan.listen), plan.gateway);
            assert_eq!(wan.site, plan.site);
            assert_eq!(plan.nodes[0].config.site, plan.site_id);
            assert_eq!(wan.tls_dir, Path::new("/base/certs"));
            assert_eq!(
                wan.data_dir,
                PathBuf::from(format!("/base/{}/n1/wan", plan.site))
            );
            assert_eq!(wan.default_resolver, "lww");
            assert_eq!(
                wan.resolvers,
                vec![WanResolverRule {
                    prefix: "c:".into(),
                    resolver: "counter-merge".into()
                }]
            );
            assert!(plan.nodes[1..].iter().all(|n| n.config.wan.is_none()));
            // Symmetric: every other site is a peer, as that site describes itself.
            let mut peers: Vec<&str> = wan.peers.iter().map(|p| p.site.as_str()).collect();
            peers.sort_unstable();
            let others: Vec<&str> = plans
                .iter()
                .filter(|o| o.site != plan.site)
                .map(|o| o.site.as_str())
                .collect();
            assert_eq!(peers, others, "site {}", plan.site);
            for peer in &wan.peers {
                let other = plans
                    .iter()
                    .find(|o| o.site == peer.site)
                    .expect("peer plan");
                assert_eq!(peer.site_id, other.site_id);
                assert_eq!(Some(peer.addr.clone()), other.gateway.map(Into::into));
                let back = other.nodes[0].config.wan.as_ref().expect("gateway");
                assert!(
                    back.peers.iter().any(|p| p.site == plan.site
                        && p.site_id == plan.site_id
                        && Some(p.addr.clone()) == plan.gateway.map(Into::into)),
                    "{} does not list {}",
                    other.site,
                    plan.site
                );
            }
        }
    }

    #[test]
    fn written_multi_site_configs_are_valid_and_load_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports = allocate_site_ports(PortPlan::Free, 2, 2).expect("ports");
        let plans =
            plan_sites(&specs(2, 2), dir.path(), &dir.path().join("certs"), &ports).expect("plan");
        for plan in &plans {
            write_site(plan).expect("writing configs");
            for node in &plan.nodes {
                assert_eq!(node.config.validate(), Ok(()), "{}", node.identity);
                if let Some(wan) = &node.config.wan {
                    assert!(wan.data_dir.is_dir(), "gateway data dir created");
                }
                let loaded = crate::config_load::load_from(
                    Some(&node.config_path),
                    Env::prefixed("TERN_UP_UNIT_TEST_NOTHING_"),
                )
                .expect("the generated config is valid");
                assert_eq!(loaded, node.config, "{}", node.config_path.display());
            }
        }
    }
}
