//! Text views of a node's [`NodeStatus`] for `tern status` and `tern space list-instances`.
//! Pure functions from a snapshot to text, so formatting is tested without a node.
use std::collections::BTreeMap;
use std::fmt::Write as _;

use tern_node::admin::{MemberState, MemberStatus, NodeStatus, ReplicaRole};

/// Left-aligned columns separated by two spaces; the last column is not padded.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self {
            rows: vec![header.iter().map(|h| (*h).to_owned()).collect()],
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self, indent: &str) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::from(indent);
            for (c, cell) in row.iter().enumerate() {
                if c + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let pad = widths[c].saturating_sub(cell.chars().count());
                    line.push_str(cell);
                    line.push_str(&" ".repeat(pad + 2));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

fn member_name(members: &[MemberStatus], node_id: u64) -> String {
    members
        .iter()
        .find(|m| m.node_id == node_id)
        .map_or_else(|| format!("node {node_id}"), |m| m.name.clone())
}

fn state_name(state: MemberState) -> &'static str {
    match state {
        MemberState::Up => "up",
        MemberState::Down => "down",
        MemberState::Draining => "draining",
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// `tern status`: who this node is, whether it is ready, the map, members with their load.
pub fn render_status(status: &NodeStatus) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "node {} ({}), site {}, RESP {}, incarnation {}",
        status.node_id, status.name, status.site, status.resp_addr, status.incarnation
    );
    let _ = writeln!(out, "ready: {}", yes_no(status.ready));
    let leader = match status.map_leader {
        Some(id) => format!("node {id} ({})", member_name(&status.members, id)),
        None => "unknown".to_owned(),
    };
    let _ = writeln!(
        out,
        "partition map: version {}, leader {leader}",
        status.map_version
    );
    let _ = writeln!(
        out,
        "failovers taken over by this node: {}",
        status.failovers_total
    );

    // Primaries and backups per node, as this node's map places them.
    let mut primaries: BTreeMap<u64, usize> = BTreeMap::new();
    let mut backups: BTreeMap<u64, usize> = BTreeMap::new();
    for partition in &status.partitions {
        for replica in &partition.replicas {
            let count = match replica.role {
                ReplicaRole::Primary => primaries.entry(replica.node_id).or_default(),
                ReplicaRole::Backup => backups.entry(replica.node_id).or_default(),
            };
            *count += 1;
        }
    }
    let _ = writeln!(out, "\nmembers:");
    let mut table = Table::new(&[
        "NODE",
        "NAME",
        "STATE",
        "RESP",
        "ZONE",
        "PRIMARIES",
        "BACKUPS",
    ]);
    for m in &status.members {
        table.row(vec![
            m.node_id.to_string(),
            m.name.clone(),
            state_name(m.state).to_owned(),
            m.resp_addr.clone(),
            m.zone.clone().unwrap_or_else(|| "-".to_owned()),
            primaries.get(&m.node_id).copied().unwrap_or(0).to_string(),
            backups.get(&m.node_id).copied().unwrap_or(0).to_string(),
        ]);
    }
    out.push_str(&table.render("  "));

    let total = status.partitions.len();
    let without_primary = status
        .partitions
        .iter()
        .filter(|p| p.primary.is_none())
        .count();
    let handovers = status
        .partitions
        .iter()
        .filter(|p| p.handover_to.is_some())
        .count();
    let out_of_sync = status
        .partitions
        .iter()
        .flat_map(|p| &p.replicas)
        .filter(|r| r.role == ReplicaRole::Backup && !r.in_sync)
        .count();
    let _ = writeln!(
        out,
        "\npartitions: {total} ({without_primary} without a primary), {handovers} handover(s) in \
         progress, {out_of_sync} backup(s) not in sync"
    );
    out
}

/// `tern space list-instances`: one line per partition instance, as the map places them.
pub fn render_instances(status: &NodeStatus) -> String {
    let mut table = Table::new(&["PARTITION", "MODE", "HOST", "EPOCH", "IN-SYNC", "LAG"]);
    let host = |node_id: u64| -> String {
        match status.members.iter().find(|m| m.node_id == node_id) {
            Some(m) => format!("{} ({})", m.name, m.resp_addr),
            None => format!("node {node_id}"),
        }
    };
    for partition in &status.partitions {
        if partition.replicas.is_empty() {
            table.row(vec![
                partition.partition.to_string(),
                "-".to_owned(),
                "(no replica)".to_owned(),
                partition.epoch.to_string(),
                "-".to_owned(),
                "-".to_owned(),
            ]);
            continue;
        }
        // Primary first, then backups in the map's order.
        let mut replicas: Vec<_> = partition.replicas.iter().collect();
        replicas.sort_by_key(|r| r.role != ReplicaRole::Primary);
        for replica in replicas {
            let (mode, in_sync, lag) = match replica.role {
                ReplicaRole::Primary => ("PRIMARY", "-".to_owned(), "-".to_owned()),
                ReplicaRole::Backup => (
                    "BACKUP",
                    yes_no(replica.in_sync).to_owned(),
                    replica
                        .lag_records
                        .map_or_else(|| "?".to_owned(), |l| l.to_string()),
                ),
            };
            let mut mode = mode.to_owned();
            if partition.handover_to == Some(replica.node_id) {
                mode.push_str(" (handover target)");
            }
            table.row(vec![
                partition.partition.to_string(),
                mode,
                host(replica.node_id),
                partition.epoch.to_string(),
                in_sync,
                lag,
            ]);
        }
    }
    let mut out = table.render("");
    let unavailable: Vec<String> = status
        .partitions
        .iter()
        .filter(|p| p.primary.is_none())
        .map(|p| p.partition.to_string())
        .collect();
    if !unavailable.is_empty() {
        let _ = writeln!(
            out,
            "no primary (unavailable): partitions {}",
            unavailable.join(", ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_node::admin::{PartitionStatus, ReplicaStatus};

    fn member(node_id: u64, state: MemberState, zone: Option<&str>) -> MemberStatus {
        MemberStatus {
            node_id,
            name: format!("n{node_id}.a"),
            resp_addr: format!("127.0.0.1:700{node_id}"),
            zone: zone.map(str::to_owned),
            state,
            incarnation: 1,
        }
    }

    fn replica(node_id: u64, role: ReplicaRole, in_sync: bool, lag: Option<u64>) -> ReplicaStatus {
        ReplicaStatus {
            node_id,
            role,
            in_sync,
            last_seq: None,
            lag_records: lag,
        }
    }

    fn site() -> NodeStatus {
        use ReplicaRole::{Backup, Primary};
        NodeStatus {
            node_id: 1,
            name: "n1.a".into(),
            site: "a".into(),
            resp_addr: "127.0.0.1:7001".into(),
            incarnation: 2,
            ready: true,
            map_leader: Some(2),
            map_version: 17,
            partitions: vec![
                PartitionStatus {
                    partition: 0,
                    epoch: 3,
                    primary: Some(1),
                    // Listed backup-first on purpose: the view puts the primary first.
                    replicas: vec![
                        replica(2, Backup, true, Some(0)),
                        replica(1, Primary, false, None),
                    ],
                    handover_to: None,
                },
                PartitionStatus {
                    partition: 1,
                    epoch: 12,
                    primary: Some(2),
                    replicas: vec![
                        replica(2, Primary, false, None),
                        replica(3, Backup, false, None),
                    ],
                    handover_to: Some(3),
                },
                PartitionStatus {
                    partition: 2,
                    epoch: 1,
                    primary: None,
                    replicas: vec![replica(9, Backup, false, Some(4))],
                    handover_to: None,
                },
            ],
            members: vec![
                member(1, MemberState::Up, Some("z1")),
                member(2, MemberState::Draining, None),
                member(3, MemberState::Down, None),
            ],
            failovers_total: 1,
            wan_writes_refused_total: 0,
            ..Default::default()
        }
    }

    #[test]
    fn list_instances_shows_every_instance_primary_first() {
        let want = "\
PARTITION  MODE                      HOST                   EPOCH  IN-SYNC  LAG
0          PRIMARY                   n1.a (127.0.0.1:7001)  3      -        -
0          BACKUP                    n2.a (127.0.0.1:7002)  3      yes      0
1          PRIMARY                   n2.a (127.0.0.1:7002)  12     -        -
1          BACKUP (handover target)  n3.a (127.0.0.1:7003)  12     no       ?
2          BACKUP                    node 9                 1      no       4
no primary (unavailable): partitions 2
";
        assert_eq!(render_instances(&site()), want);
    }

    #[test]
    fn list_instances_of_an_empty_map_is_just_the_header() {
        assert_eq!(
            render_instances(&NodeStatus::default()),
            "PARTITION  MODE  HOST  EPOCH  IN-SYNC  LAG\n"
        );
    }

    #[test]
    fn status_summarises_node_map_and_members() {
        let want = "\
node 1 (n1.a), site a, RESP 127.0.0.1:7001, incarnation 2
ready: yes
partition map: version 17, leader node 2 (n2.a)
failovers taken over by this node: 1

members:
  NODE  NAME  STATE     RESP            ZONE  PRIMARIES  BACKUPS
  1     n1.a  up        127.0.0.1:7001  z1    1          0
  2     n2.a  draining  127.0.0.1:7002  -     1          1
  3     n3.a  down      127.0.0.1:7003  -     0          1

partitions: 3 (1 without a primary), 1 handover(s) in progress, 2 backup(s) not in sync
";
        assert_eq!(render_status(&site()), want);
    }

    #[test]
    fn status_lines_for_unknown_leader_and_not_ready() {
        // (mutation, line that must appear)
        type Case = (fn(&mut NodeStatus), &'static str);
        let cases: &[Case] = &[
            (
                |s| s.map_leader = None,
                "partition map: version 17, leader unknown\n",
            ),
            (|s| s.ready = false, "ready: no\n"),
            (|s| s.map_leader = Some(7), "leader node 7 (node 7)\n"),
        ];
        for (mutate, line) in cases {
            let mut status = site();
            mutate(&mut status);
            let text = render_status(&status);
            assert!(text.contains(line), "{text:?} lacks {line:?}");
        }
    }

    #[test]
    fn table_pads_all_but_the_last_column() {
        let mut table = Table::new(&["A", "BB", "C"]);
        table.row(vec!["xxx".into(), "y".into(), "zzzz".into()]);
        table.row(vec!["1".into(), "2".into(), String::new()]);
        assert_eq!(table.render(">"), ">A    BB  C\n>xxx  y   zzzz\n>1    2\n");
    }
}
