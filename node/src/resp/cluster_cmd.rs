//! Redis Cluster's topology commands (CLUSTER SLOTS, SHARDS, NODES, INFO, MYID, KEYSLOT), so
//! cluster-mode clients learn which node is primary of each slot and send keys straight there.
//!
//! Tern never answers MOVED or ASK: any node serves any key (it forwards to the partition's
//! primary), so the table is a routing hint; a stale one costs a forwarding hop, never a wrong
//! answer. Slots map to partitions as `slot mod partition_count` (`core::keyspace`), so
//! neighbouring slots usually have different primaries and the tables list mostly single slots.
//!
//! Replies are built from a [`Topology`], a plain snapshot of the node's partition map view and
//! its members' RESP addresses, so the formatting is tested without a running node.
use super::admin::wrong_arity;
use super::args::{Args, lossy};
use super::reply;
use crate::admin::{MemberState, NodeStatus, ReplicaRole};
use crate::core::{SLOT_COUNT, slot_of};
use crate::transport::PeerAddr;
use std::collections::BTreeSet;
use std::fmt::Write as _;

/// The site as this node's map sees it, in the terms CLUSTER replies need.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Topology {
    /// This site's id (`NodeConfig::site`): part of every node's cluster id.
    pub site: u16,
    /// The answering node's id.
    pub me: u64,
    /// Every member of the site, by id.
    pub nodes: Vec<TopologyNode>,
    /// Every partition, indexed by partition id.
    pub partitions: Vec<PartitionOwners>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopologyNode {
    pub id: u64,
    /// Where clients connect; `None` when the node's RESP address is not configured here.
    pub endpoint: Option<Endpoint>,
    /// Not marked down in the map (a draining node still serves).
    pub up: bool,
}

/// A RESP address as clients are told it. `host` is an IP or the configured DNS name (like
/// Redis's announced hostname); empty for an unspecified IP (0.0.0.0), which Redis clients read
/// as "the node you asked", and any tern node serves any key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    /// The host is a DNS name, not an IP literal.
    pub is_name: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionOwners {
    pub epoch: u64,
    pub primary: Option<u64>,
    /// In-sync backups (a failover would promote one of them).
    pub backups: Vec<u64>,
}

/// Contiguous slots with the same serving primary and replicas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotRange {
    pub start: u16,
    pub end: u16,
    pub primary: u64,
    pub replicas: Vec<u64>,
}

impl Endpoint {
    /// Parses a configured RESP address (`host:port`); `None` if it is not one.
    pub fn parse(addr: &str) -> Option<Self> {
        let addr = PeerAddr::parse(addr).ok()?;
        let (host, is_name) = match (addr.dns_name(), addr.socket_addr()) {
            (Some(name), _) => (name.to_owned(), true),
            (None, Some(socket)) if socket.ip().is_unspecified() => (String::new(), false),
            (None, Some(socket)) => (socket.ip().to_string(), false),
            (None, None) => return None,
        };
        Some(Self {
            host,
            port: addr.port(),
            is_name,
        })
    }
}

/// A node's 40-hex-character cluster id: the site id, then the node id, zero-padded, so it is
/// stable across restarts and readable (`0001…0003` is node 3 of site 1).
pub fn node_name(site: u16, node: u64) -> String {
    format!("{site:04x}{node:036x}")
}

impl Topology {
    /// The snapshot of a published [`NodeStatus`] (what `/v1/partitions` shows).
    pub fn from_status(site: u16, status: &NodeStatus) -> Self {
        let mut nodes: Vec<TopologyNode> = status
            .members
            .iter()
            .map(|m| TopologyNode {
                id: m.node_id,
                endpoint: Endpoint::parse(&m.resp_addr),
                up: m.state != MemberState::Down,
            })
            .collect();
        nodes.sort_by_key(|n| n.id);
        let partitions = status
            .partitions
            .iter()
            .map(|p| PartitionOwners {
                epoch: p.epoch,
                primary: p.primary,
                backups: p
                    .replicas
                    .iter()
                    .filter(|r| r.role == ReplicaRole::Backup && r.in_sync)
                    .map(|r| r.node_id)
                    .collect(),
            })
            .collect();
        Self {
            site,
            me: status.node_id,
            nodes,
            partitions,
        }
    }

    fn node(&self, id: u64) -> Option<&TopologyNode> {
        self.nodes
            .binary_search_by_key(&id, |n| n.id)
            .ok()
            .and_then(|i| self.nodes.get(i))
    }

    fn endpoint(&self, id: u64) -> Option<&Endpoint> {
        self.node(id)?.endpoint.as_ref()
    }

    fn name(&self, id: u64) -> String {
        node_name(self.site, id)
    }

    /// Who serves a partition's slots: its primary (if it has one and clients can reach it)
    /// and its reachable, up, in-sync backups.
    fn serving(&self, owners: &PartitionOwners) -> Option<(u64, Vec<u64>)> {
        let primary = owners.primary?;
        self.endpoint(primary)?;
        let replicas = owners
            .backups
            .iter()
            .copied()
            .filter(|&b| b != primary)
            .filter(|&b| self.node(b).is_some_and(|n| n.up && n.endpoint.is_some()))
            .collect();
        Some((primary, replicas))
    }

    /// Every served slot in ranges, ascending; slots of partitions without a (reachable)
    /// primary are left out, so clients see them uncovered.
    pub fn slot_ranges(&self) -> Vec<SlotRange> {
        let count = self.partitions.len();
        if count == 0 {
            return Vec::new();
        }
        let serving: Vec<Option<(u64, Vec<u64>)>> =
            self.partitions.iter().map(|p| self.serving(p)).collect();
        let mut ranges: Vec<SlotRange> = Vec::new();
        for slot in 0..SLOT_COUNT {
            let Some(Some((primary, replicas))) = serving.get(usize::from(slot) % count) else {
                continue;
            };
            match ranges.last_mut() {
                Some(last)
                    if last.end + 1 == slot
                        && last.primary == *primary
                        && last.replicas == *replicas =>
                {
                    last.end = slot
                }
                _ => ranges.push(SlotRange {
                    start: slot,
                    end: slot,
                    primary: *primary,
                    replicas: replicas.clone(),
                }),
            }
        }
        ranges
    }

    /// The highest epoch of the partitions `id` is primary of (Redis's config epoch).
    fn config_epoch(&self, id: u64) -> u64 {
        self.partitions
            .iter()
            .filter(|p| p.primary == Some(id))
            .map(|p| p.epoch)
            .max()
            .unwrap_or(0)
    }

    fn current_epoch(&self) -> u64 {
        self.partitions.iter().map(|p| p.epoch).max().unwrap_or(0)
    }
}

/// `node`'s slots as merged `(start, end)` ranges.
fn ranges_of(ranges: &[SlotRange], node: u64) -> Vec<(u16, u16)> {
    let mut merged: Vec<(u16, u16)> = Vec::new();
    for range in ranges.iter().filter(|r| r.primary == node) {
        match merged.last_mut() {
            Some(last) if last.1 + 1 == range.start => last.1 = range.end,
            _ => merged.push((range.start, range.end)),
        }
    }
    merged
}

/// A node's role in Redis terms. Tern nodes are primary of some partitions and backup of
/// others; a node primary of any slot is a master, one primary of none but backing up served
/// slots is a replica of the first such slot's primary, and a node with neither is a master
/// without slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Master,
    Replica { of: u64 },
}

fn role(ranges: &[SlotRange], node: u64) -> Role {
    if ranges.iter().any(|r| r.primary == node) {
        return Role::Master;
    }
    ranges
        .iter()
        .find(|r| r.replicas.contains(&node))
        .map_or(Role::Master, |r| Role::Replica { of: r.primary })
}

/// CLUSTER <subcommand>. `topology` is only built for the subcommands that need it.
pub fn cluster(args: &Args<'_>, topology: impl FnOnce() -> Topology, out: &mut Vec<u8>) {
    let sub = args.get(1).to_ascii_lowercase();
    let (name, arity_ok) = match sub.as_slice() {
        b"keyslot" | b"countkeysinslot" => (sub.as_slice(), args.len() == 3),
        b"getkeysinslot" => (sub.as_slice(), args.len() == 4),
        b"slots" | b"shards" | b"nodes" | b"info" | b"myid" | b"help" => {
            (sub.as_slice(), args.len() == 2)
        }
        _ if RECONFIGURATION.contains(&sub.as_slice()) => {
            return reply::error(
                out,
                &format!(
                    "ERR CLUSTER {} is not supported: tern's members come from its \
                     configuration and slot owners from its partition map",
                    lossy(args.get(1)).to_ascii_uppercase()
                ),
            );
        }
        _ => {
            return reply::error(
                out,
                &format!(
                    "ERR unknown subcommand '{}'. Try CLUSTER HELP.",
                    lossy(args.get(1))
                ),
            );
        }
    };
    if !arity_ok {
        return reply::error(out, &wrong_arity(&format!("cluster|{}", lossy(name))));
    }
    match name {
        b"keyslot" => reply::int(out, i64::from(slot_of(args.get(2)))),
        b"countkeysinslot" | b"getkeysinslot" => reply::error(
            out,
            &format!(
                "ERR CLUSTER {} is not supported: tern indexes keys by partition, not by slot \
                 (use SCAN)",
                lossy(name).to_ascii_uppercase()
            ),
        ),
        b"help" => {
            reply::array(out, HELP.len());
            HELP.iter().for_each(|line| reply::simple(out, line));
        }
        b"myid" => {
            let topology = topology();
            reply::bulk(out, topology.name(topology.me).as_bytes());
        }
        b"slots" => slots(&topology(), out),
        b"shards" => shards(&topology(), out),
        b"nodes" => reply::bulk(out, nodes_text(&topology()).as_bytes()),
        _ => reply::bulk(out, info_text(&topology()).as_bytes()),
    }
}

/// Subcommands that change a Redis cluster's layout: tern's layout is not set by clients.
const RECONFIGURATION: &[&[u8]] = &[
    b"addslots",
    b"addslotsrange",
    b"bumpepoch",
    b"delslots",
    b"delslotsrange",
    b"failover",
    b"flushslots",
    b"forget",
    b"meet",
    b"replicate",
    b"reset",
    b"saveconfig",
    b"set-config-epoch",
    b"setslot",
];

const HELP: &[&str] = &[
    "CLUSTER <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "INFO",
    "    Return information about the cluster.",
    "KEYSLOT <key>",
    "    Return the hash slot for <key>.",
    "MYID",
    "    Return the node id.",
    "NODES",
    "    Return cluster configuration seen by node. Output format:",
    "    <id> <ip:port@cport> <flags> <master> <pings> <pongs> <epoch> <link> <slot> ...",
    "SHARDS",
    "    Return information about slot range mappings and the nodes associated with them.",
    "SLOTS",
    "    Return information about slots range mappings. Each range is made of:",
    "    start, end, master and replicas IP addresses, ports and ids",
    "HELP",
    "    Print this help.",
];

/// A node as CLUSTER SLOTS lists it: `[host, port, id, metadata]` (Redis 7).
fn slots_node(topology: &Topology, id: u64, out: &mut Vec<u8>) {
    let Some(endpoint) = topology.endpoint(id) else {
        // `serving` only lists nodes with an endpoint.
        return reply::nil_array(out);
    };
    reply::array(out, 4);
    reply::bulk(out, endpoint.host.as_bytes());
    reply::int(out, i64::from(endpoint.port));
    reply::bulk(out, topology.name(id).as_bytes());
    if endpoint.is_name {
        reply::array(out, 2);
        reply::bulk(out, b"hostname");
        reply::bulk(out, endpoint.host.as_bytes());
    } else {
        reply::array(out, 0);
    }
}

/// CLUSTER SLOTS: `[start, end, primary, replicas...]` per range.
pub fn slots(topology: &Topology, out: &mut Vec<u8>) {
    let ranges = topology.slot_ranges();
    reply::array(out, ranges.len());
    for range in &ranges {
        reply::array(out, 3 + range.replicas.len());
        reply::int(out, i64::from(range.start));
        reply::int(out, i64::from(range.end));
        slots_node(topology, range.primary, out);
        for &replica in &range.replicas {
            slots_node(topology, replica, out);
        }
    }
}

/// CLUSTER SHARDS: one shard per primary serving slots, with the backups of those slots.
pub fn shards(topology: &Topology, out: &mut Vec<u8>) {
    let ranges = topology.slot_ranges();
    let primaries: BTreeSet<u64> = ranges.iter().map(|r| r.primary).collect();
    reply::array(out, primaries.len());
    for primary in primaries {
        let own = ranges_of(&ranges, primary);
        let replicas: BTreeSet<u64> = ranges
            .iter()
            .filter(|r| r.primary == primary)
            .flat_map(|r| r.replicas.iter().copied())
            .collect();
        reply::array(out, 4);
        reply::bulk(out, b"slots");
        reply::array(out, own.len() * 2);
        for (start, end) in own {
            reply::int(out, i64::from(start));
            reply::int(out, i64::from(end));
        }
        reply::bulk(out, b"nodes");
        reply::array(out, 1 + replicas.len());
        shard_node(topology, primary, "master", out);
        for replica in replicas {
            shard_node(topology, replica, "replica", out);
        }
    }
}

fn shard_node(topology: &Topology, id: u64, role: &str, out: &mut Vec<u8>) {
    let endpoint = topology.endpoint(id);
    let host = endpoint.map_or("", |e| e.host.as_str());
    let hostname = endpoint.filter(|e| e.is_name).map(|e| e.host.as_str());
    let up = topology.node(id).is_some_and(|n| n.up);
    reply::array(out, if hostname.is_some() { 16 } else { 14 });
    reply::bulk(out, b"id");
    reply::bulk(out, topology.name(id).as_bytes());
    reply::bulk(out, b"port");
    reply::int(out, i64::from(endpoint.map_or(0, |e| e.port)));
    reply::bulk(out, b"ip");
    reply::bulk(out, host.as_bytes());
    reply::bulk(out, b"endpoint");
    reply::bulk(out, host.as_bytes());
    if let Some(hostname) = hostname {
        reply::bulk(out, b"hostname");
        reply::bulk(out, hostname.as_bytes());
    }
    reply::bulk(out, b"role");
    reply::bulk(out, role.as_bytes());
    reply::bulk(out, b"replication-offset");
    reply::int(out, 0);
    reply::bulk(out, b"health");
    reply::bulk(out, if up { &b"online"[..] } else { b"failed" });
}

/// CLUSTER NODES: one line per member,
/// `<id> <host:port@cport> <flags> <master-id|-> <ping-sent> <pong-recv> <config-epoch>
/// <link-state> <slot-or-range>...`. There is no cluster bus: the bus port is 0.
pub fn nodes_text(topology: &Topology) -> String {
    let ranges = topology.slot_ranges();
    let mut text = String::new();
    for node in &topology.nodes {
        let role = role(&ranges, node.id);
        let mut flags: Vec<&str> = Vec::new();
        if node.id == topology.me {
            flags.push("myself");
        }
        flags.push(match role {
            Role::Master => "master",
            Role::Replica { .. } => "slave",
        });
        if !node.up {
            flags.push("fail");
        }
        let addr = match &node.endpoint {
            Some(e) => format!("{}:{}@0", e.host, e.port),
            None => {
                flags.push("noaddr");
                ":0@0".to_owned()
            }
        };
        let master = match role {
            Role::Master => "-".to_owned(),
            Role::Replica { of } => topology.name(of),
        };
        let link = if node.up || node.id == topology.me {
            "connected"
        } else {
            "disconnected"
        };
        let _ = write!(
            text,
            "{} {addr} {} {master} 0 0 {} {link}",
            topology.name(node.id),
            flags.join(","),
            topology.config_epoch(node.id),
        );
        if role == Role::Master {
            for (start, end) in ranges_of(&ranges, node.id) {
                if start == end {
                    let _ = write!(text, " {start}");
                } else {
                    let _ = write!(text, " {start}-{end}");
                }
            }
        }
        text.push('\n');
    }
    text
}

/// CLUSTER INFO. The state is `ok` only when every slot has a primary that is up and
/// reachable.
pub fn info_text(topology: &Topology) -> String {
    let ranges = topology.slot_ranges();
    let slots = |range: &SlotRange| usize::from(range.end - range.start) + 1;
    let assigned: usize = ranges.iter().map(slots).sum();
    let ok: usize = ranges
        .iter()
        .filter(|r| topology.node(r.primary).is_some_and(|n| n.up))
        .map(slots)
        .sum();
    let size = ranges
        .iter()
        .map(|r| r.primary)
        .collect::<BTreeSet<_>>()
        .len();
    let state = if ok == usize::from(SLOT_COUNT) {
        "ok"
    } else {
        "fail"
    };
    let fields: [(&str, String); 13] = [
        ("cluster_enabled", "1".to_owned()),
        ("cluster_state", state.to_owned()),
        ("cluster_slots_assigned", assigned.to_string()),
        ("cluster_slots_ok", ok.to_string()),
        ("cluster_slots_pfail", "0".to_owned()),
        ("cluster_slots_fail", (assigned - ok).to_string()),
        ("cluster_known_nodes", topology.nodes.len().to_string()),
        ("cluster_size", size.to_string()),
        (
            "cluster_current_epoch",
            topology.current_epoch().to_string(),
        ),
        (
            "cluster_my_epoch",
            topology.config_epoch(topology.me).to_string(),
        ),
        ("cluster_stats_messages_sent", "0".to_owned()),
        ("cluster_stats_messages_received", "0".to_owned()),
        ("total_cluster_links_buffer_limit_exceeded", "0".to_owned()),
    ];
    let mut text = String::new();
    for (field, value) in fields {
        let _ = write!(text, "{field}:{value}\r\n");
    }
    text
}

#[cfg(test)]
#[path = "cluster_cmd_tests.rs"]
mod tests;
