use super::*;
use crate::admin::{MemberStatus, PartitionStatus, ReplicaStatus};
use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::types::OwnedFrame;

const SITE: u16 = 1;

fn id(node: u64) -> String {
    node_name(SITE, node)
}

fn endpoint(addr: &str) -> Option<Endpoint> {
    Some(Endpoint::parse(addr).expect("test address parses"))
}

/// Nodes `(id, up)` on 10.0.0.<id>:6379; partitions `(primary, in-sync backups)` with epoch
/// `10 + partition`.
fn topology(me: u64, nodes: &[(u64, bool)], partitions: &[(Option<u64>, &[u64])]) -> Topology {
    Topology {
        site: SITE,
        me,
        nodes: nodes
            .iter()
            .map(|&(n, up)| TopologyNode {
                id: n,
                endpoint: endpoint(&format!("10.0.0.{n}:6379")),
                up,
            })
            .collect(),
        partitions: partitions
            .iter()
            .enumerate()
            .map(|(i, (primary, backups))| PartitionOwners {
                epoch: 10 + i as u64,
                primary: *primary,
                backups: backups.to_vec(),
            })
            .collect(),
    }
}

/// 3 nodes, 4 partitions: p0 on 1 (backup 2), p1 on 2 (backup 3), p2 on 3 (backup 1), p3 on 1
/// (backup 2). Slots 3 and 4 (p3, p0) share primary and backup, so they merge.
const FOUR: [(Option<u64>, &[u64]); 4] = [
    (Some(1), &[2]),
    (Some(2), &[3]),
    (Some(3), &[1]),
    (Some(1), &[2]),
];
const NO_BACKUPS: &[u64] = &[];
const THREE_UP: [(u64, bool); 3] = [(1, true), (2, true), (3, true)];

fn render(frame: &OwnedFrame) -> String {
    match frame {
        OwnedFrame::SimpleString(s) => format!("+{}", String::from_utf8_lossy(s)),
        OwnedFrame::Error(e) => format!("-{e}"),
        OwnedFrame::Integer(i) => format!(":{i}"),
        OwnedFrame::BulkString(b) => format!("{:?}", String::from_utf8_lossy(b)),
        OwnedFrame::Null => "nil".to_owned(),
        OwnedFrame::Array(items) => format!(
            "[{}]",
            items.iter().map(render).collect::<Vec<_>>().join(", ")
        ),
    }
}

fn decoded(out: &[u8]) -> OwnedFrame {
    let (frame, used) = decode(out).expect("valid RESP").expect("a complete reply");
    assert_eq!(used, out.len(), "exactly one reply");
    frame
}

fn items(frame: OwnedFrame) -> Vec<OwnedFrame> {
    match frame {
        OwnedFrame::Array(items) => items,
        other => panic!("not an array: {}", render(&other)),
    }
}

fn slots_reply(t: &Topology) -> Vec<String> {
    let mut out = Vec::new();
    slots(t, &mut out);
    items(decoded(&out)).iter().map(render).collect()
}

fn slots_entry(start: u16, end: u16, nodes: &[u64]) -> String {
    let nodes: Vec<String> = nodes
        .iter()
        .map(|&n| format!("[\"10.0.0.{n}\", :6379, \"{}\", []]", id(n)))
        .collect();
    format!("[:{start}, :{end}, {}]", nodes.join(", "))
}

fn info_field(t: &Topology, field: &str) -> String {
    let text = info_text(t);
    text.split("\r\n")
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("CLUSTER INFO lacks {field}: {text}"))
        .to_owned()
}

/// A node's CLUSTER NODES line, split in its fixed fields and its slots.
fn nodes_line(t: &Topology, node: u64) -> (String, Vec<String>) {
    let text = nodes_text(t);
    assert!(
        text.ends_with('\n'),
        "every line ends in a newline: {text:?}"
    );
    let line = text
        .lines()
        .find(|l| l.starts_with(&id(node)))
        .unwrap_or_else(|| panic!("no line for node {node}: {text}"));
    let words: Vec<&str> = line.split(' ').collect();
    (
        words[..8].join(" "),
        words[8..].iter().map(|s| s.to_string()).collect(),
    )
}

#[test]
fn node_ids_are_40_hex_characters_stable_per_site_and_node() {
    let cases = [
        (1, 1, "0001000000000000000000000000000000000001"),
        (1, 3, "0001000000000000000000000000000000000003"),
        (0xbeef, 0x1234, "beef000000000000000000000000000000001234"),
        (
            u16::MAX,
            u64::MAX,
            "ffff00000000000000000000ffffffffffffffff",
        ),
    ];
    for (site, node, want) in cases {
        let name = node_name(site, node);
        assert_eq!(name, want);
        assert_eq!(name.len(), 40);
    }
}

#[test]
fn endpoints_keep_names_and_blank_unspecified_ips() {
    // (configured address, host, port, is_name)
    let cases = [
        ("127.0.0.1:7000", Some(("127.0.0.1", 7000, false))),
        ("[::1]:7001", Some(("::1", 7001, false))),
        (
            "tern-1.tern.svc:6379",
            Some(("tern-1.tern.svc", 6379, true)),
        ),
        ("0.0.0.0:6379", Some(("", 6379, false))),
        ("", None),
        ("no-port", None),
    ];
    for (addr, want) in cases {
        let got = Endpoint::parse(addr);
        let got = got.as_ref().map(|e| (e.host.as_str(), e.port, e.is_name));
        assert_eq!(got, want, "{addr:?}");
    }
}

#[test]
fn one_node_owns_every_slot() {
    let t = topology(1, &[(1, true)], &[(Some(1), NO_BACKUPS); 4]);
    assert_eq!(slots_reply(&t), [slots_entry(0, 16383, &[1])]);
    let (fields, slot_words) = nodes_line(&t, 1);
    assert_eq!(
        fields,
        format!("{} 10.0.0.1:6379@0 myself,master - 0 0 13 connected", id(1))
    );
    assert_eq!(slot_words, ["0-16383"]);
    for (field, want) in [
        ("cluster_enabled", "1"),
        ("cluster_state", "ok"),
        ("cluster_slots_assigned", "16384"),
        ("cluster_slots_ok", "16384"),
        ("cluster_slots_fail", "0"),
        ("cluster_known_nodes", "1"),
        ("cluster_size", "1"),
        ("cluster_current_epoch", "13"),
        ("cluster_my_epoch", "13"),
    ] {
        assert_eq!(info_field(&t, field), want, "{field}");
    }
}

/// Each case: the topology, what CLUSTER SLOTS starts with, its length, and per node its
/// CLUSTER NODES fields, first slots and slot count; then CLUSTER INFO fields.
struct Case {
    name: &'static str,
    topology: Topology,
    slots_head: Vec<String>,
    slots_len: usize,
    nodes: Vec<(u64, String, Vec<&'static str>, usize)>,
    info: Vec<(&'static str, &'static str)>,
}

fn cases() -> Vec<Case> {
    let mut no_primary = FOUR;
    no_primary[1] = (None, NO_BACKUPS);
    let three_down = [(1, true), (2, true), (3, false)];
    vec![
        Case {
            name: "3 nodes, 4 partitions",
            topology: topology(2, &THREE_UP, &FOUR),
            slots_head: vec![
                slots_entry(0, 0, &[1, 2]),
                slots_entry(1, 1, &[2, 3]),
                slots_entry(2, 2, &[3, 1]),
                slots_entry(3, 4, &[1, 2]),
                slots_entry(5, 5, &[2, 3]),
            ],
            // Slot 0, then per 4 slots: one p1, one p2, one merged p3+p0 range.
            slots_len: 1 + 3 * 4096,
            nodes: vec![
                (
                    1,
                    format!("{} 10.0.0.1:6379@0 master - 0 0 13 connected", id(1)),
                    vec!["0", "3-4", "7-8"],
                    1 + 4096,
                ),
                (
                    2,
                    format!("{} 10.0.0.2:6379@0 myself,master - 0 0 11 connected", id(2)),
                    vec!["1", "5", "9"],
                    4096,
                ),
                (
                    3,
                    format!("{} 10.0.0.3:6379@0 master - 0 0 12 connected", id(3)),
                    vec!["2", "6", "10"],
                    4096,
                ),
            ],
            info: vec![
                ("cluster_state", "ok"),
                ("cluster_slots_assigned", "16384"),
                ("cluster_slots_ok", "16384"),
                ("cluster_known_nodes", "3"),
                ("cluster_size", "3"),
                ("cluster_current_epoch", "13"),
                ("cluster_my_epoch", "11"),
            ],
        },
        Case {
            name: "a partition without primary",
            topology: topology(1, &THREE_UP, &no_primary),
            // p1's slots (1, 5, 9…) are uncovered.
            slots_head: vec![
                slots_entry(0, 0, &[1, 2]),
                slots_entry(2, 2, &[3, 1]),
                slots_entry(3, 4, &[1, 2]),
                slots_entry(6, 6, &[3, 1]),
            ],
            slots_len: 1 + 2 * 4096,
            nodes: vec![
                (
                    1,
                    format!("{} 10.0.0.1:6379@0 myself,master - 0 0 13 connected", id(1)),
                    vec!["0", "3-4", "7-8"],
                    1 + 4096,
                ),
                // Primary of nothing, backup of node 1's slots: a replica of node 1.
                (
                    2,
                    format!("{} 10.0.0.2:6379@0 slave {} 0 0 0 connected", id(2), id(1)),
                    vec![],
                    0,
                ),
                (
                    3,
                    format!("{} 10.0.0.3:6379@0 master - 0 0 12 connected", id(3)),
                    vec!["2", "6", "10"],
                    4096,
                ),
            ],
            info: vec![
                ("cluster_state", "fail"),
                ("cluster_slots_assigned", "12288"),
                ("cluster_slots_ok", "12288"),
                ("cluster_slots_fail", "0"),
                ("cluster_size", "2"),
            ],
        },
        Case {
            name: "a node down, still primary in the map",
            topology: topology(1, &three_down, &FOUR),
            // Node 3 keeps its slots until a failover; it is no longer listed as a replica.
            slots_head: vec![
                slots_entry(0, 0, &[1, 2]),
                slots_entry(1, 1, &[2]),
                slots_entry(2, 2, &[3, 1]),
                slots_entry(3, 4, &[1, 2]),
            ],
            slots_len: 1 + 3 * 4096,
            nodes: vec![(
                3,
                format!(
                    "{} 10.0.0.3:6379@0 master,fail - 0 0 12 disconnected",
                    id(3)
                ),
                vec!["2", "6", "10"],
                4096,
            )],
            info: vec![
                ("cluster_state", "fail"),
                ("cluster_slots_assigned", "16384"),
                ("cluster_slots_ok", "12288"),
                ("cluster_slots_fail", "4096"),
                ("cluster_size", "3"),
            ],
        },
    ]
}

#[test]
fn slots_nodes_and_info_follow_the_map() {
    for case in cases() {
        let t = &case.topology;
        let slots = slots_reply(t);
        assert_eq!(slots.len(), case.slots_len, "{}: SLOTS length", case.name);
        assert_eq!(
            slots[..case.slots_head.len()],
            case.slots_head[..],
            "{}: SLOTS",
            case.name
        );
        for (node, fields, head, count) in &case.nodes {
            let (got_fields, got_slots) = nodes_line(t, *node);
            assert_eq!(&got_fields, fields, "{}: node {node}", case.name);
            assert_eq!(got_slots.len(), *count, "{}: node {node} slots", case.name);
            assert_eq!(
                got_slots[..head.len()],
                head[..],
                "{}: node {node}",
                case.name
            );
        }
        for (field, want) in &case.info {
            assert_eq!(info_field(t, field), *want, "{}: {field}", case.name);
        }
    }
}

#[test]
fn every_slot_is_listed_once_with_its_partitions_primary() {
    let t = topology(1, &THREE_UP, &FOUR);
    let mut owner = vec![None; usize::from(SLOT_COUNT)];
    for range in t.slot_ranges() {
        for slot in range.start..=range.end {
            assert!(owner[usize::from(slot)].is_none(), "slot {slot} twice");
            owner[usize::from(slot)] = Some(range.primary);
        }
    }
    for (slot, owner) in owner.iter().enumerate() {
        assert_eq!(*owner, FOUR[slot % 4].0, "slot {slot}");
    }
}

/// (shard index, first slot bounds, number of bounds, nodes as (id, role, health)).
type ShardCase = (
    usize,
    &'static str,
    usize,
    Vec<(u64, &'static str, &'static str)>,
);

#[test]
fn shards_group_slots_by_primary_with_their_backups() {
    let t = topology(1, &[(1, true), (2, true), (3, false)], &FOUR);
    let mut out = Vec::new();
    shards(&t, &mut out);
    let shards: Vec<Vec<OwnedFrame>> = items(decoded(&out)).into_iter().map(items).collect();
    assert_eq!(shards.len(), 3);
    let cases: [ShardCase; 3] = [
        (
            0,
            "[:0, :0, :3, :4, :7, :8",
            2 * (1 + 4096),
            vec![(1, "master", "online"), (2, "replica", "online")],
        ),
        (
            1,
            "[:1, :1, :5, :5",
            2 * 4096,
            vec![(2, "master", "online")],
        ),
        (
            2,
            "[:2, :2, :6, :6",
            2 * 4096,
            vec![(3, "master", "failed"), (1, "replica", "online")],
        ),
    ];
    for (i, head, bounds, nodes) in cases {
        let shard = &shards[i];
        assert_eq!(render(&shard[0]), "\"slots\"");
        assert!(
            render(&shard[1]).starts_with(head),
            "shard {i}: {}",
            render(&shard[1])
        );
        assert_eq!(items(shard[1].clone()).len(), bounds, "shard {i}");
        assert_eq!(render(&shard[2]), "\"nodes\"");
        let got: Vec<String> = items(shard[3].clone()).iter().map(render).collect();
        let want: Vec<String> = nodes
            .iter()
            .map(|&(n, role, health)| {
                format!(
                    "[\"id\", \"{}\", \"port\", :6379, \"ip\", \"10.0.0.{n}\", \"endpoint\", \
                     \"10.0.0.{n}\", \"role\", \"{role}\", \"replication-offset\", :0, \
                     \"health\", \"{health}\"]",
                    id(n)
                )
            })
            .collect();
        assert_eq!(got, want, "shard {i}");
    }
}

#[test]
fn dns_names_are_announced_as_hostnames() {
    let mut t = topology(1, &[(1, true)], &[(Some(1), NO_BACKUPS)]);
    t.nodes[0].endpoint = endpoint("tern-0.tern.svc:6379");
    assert_eq!(
        slots_reply(&t),
        [format!(
            "[:0, :16383, [\"tern-0.tern.svc\", :6379, \"{}\", [\"hostname\", \"tern-0.tern.svc\"]]]",
            id(1)
        )]
    );
    assert!(nodes_text(&t).contains(" tern-0.tern.svc:6379@0 myself,master "));
}

#[test]
fn a_primary_without_a_known_address_leaves_its_slots_uncovered() {
    let mut t = topology(1, &THREE_UP, &FOUR);
    t.nodes[2].endpoint = None;
    assert!(
        t.slot_ranges()
            .iter()
            .all(|r| r.primary != 3 && !r.replicas.contains(&3))
    );
    let (fields, _) = nodes_line(&t, 3);
    assert_eq!(
        fields,
        format!("{} :0@0 master,noaddr - 0 0 12 connected", id(3))
    );
    assert_eq!(info_field(&t, "cluster_state"), "fail");
}

#[test]
fn an_empty_view_answers_no_slots_and_fail() {
    let t = Topology::default();
    assert!(slots_reply(&t).is_empty());
    assert_eq!(nodes_text(&t), "");
    assert_eq!(info_field(&t, "cluster_state"), "fail");
}

#[test]
fn topology_comes_from_the_published_status() {
    let replica = |node_id, role, in_sync| ReplicaStatus {
        node_id,
        role,
        in_sync,
        last_seq: None,
        lag_records: None,
    };
    let member = |node_id: u64, resp_addr: &str, state| MemberStatus {
        node_id,
        name: format!("n{node_id}.a"),
        resp_addr: resp_addr.to_owned(),
        zone: None,
        state,
        incarnation: 1,
    };
    let status = NodeStatus {
        node_id: 2,
        partitions: vec![PartitionStatus {
            partition: 0,
            epoch: 7,
            primary: Some(1),
            replicas: vec![
                replica(1, ReplicaRole::Primary, true),
                replica(2, ReplicaRole::Backup, true),
                replica(3, ReplicaRole::Backup, false),
            ],
            handover_to: None,
        }],
        // Members come in any order; the snapshot sorts them.
        members: vec![
            member(3, "10.0.0.3:7000", MemberState::Down),
            member(1, "10.0.0.1:7000", MemberState::Up),
            member(2, "10.0.0.2:7000", MemberState::Draining),
        ],
        ..NodeStatus::default()
    };
    let t = Topology::from_status(5, &status);
    assert_eq!((t.site, t.me), (5, 2));
    let nodes: Vec<(u64, bool)> = t.nodes.iter().map(|n| (n.id, n.up)).collect();
    assert_eq!(nodes, [(1, true), (2, true), (3, false)]);
    assert_eq!(
        t.partitions,
        [PartitionOwners {
            epoch: 7,
            primary: Some(1),
            backups: vec![2],
        }]
    );
}

fn run(words: &[&str], t: &Topology) -> String {
    let frame = words.join(" ");
    let mut ranges = Vec::new();
    let mut start = 0;
    for word in words {
        ranges.push(start..start + word.len());
        start += word.len() + 1;
    }
    let args = Args::new(frame.as_bytes(), &ranges);
    let mut out = Vec::new();
    cluster(&args, || t.clone(), &mut out);
    render(&decoded(&out))
}

#[test]
fn subcommands_answer_or_refuse_clearly() {
    let t = topology(2, &THREE_UP, &FOUR);
    let cases: &[(&[&str], &str)] = &[
        // Values from Redis's CLUSTER KEYSLOT documentation and hash tag rules.
        (&["CLUSTER", "KEYSLOT", "somekey"], ":11058"),
        (&["cluster", "keyslot", "foo{hash_tag}"], ":2515"),
        (
            &["CLUSTER", "KEYSLOT"],
            "-ERR wrong number of arguments for 'cluster|keyslot' command",
        ),
        (
            &["CLUSTER", "MYID"],
            "\"0001000000000000000000000000000000000002\"",
        ),
        (
            &["CLUSTER", "MYID", "x"],
            "-ERR wrong number of arguments for 'cluster|myid' command",
        ),
        (
            &["CLUSTER", "COUNTKEYSINSLOT", "1"],
            "-ERR CLUSTER COUNTKEYSINSLOT is not supported: tern indexes keys by partition, not \
             by slot (use SCAN)",
        ),
        (
            &["CLUSTER", "meet", "10.0.0.9", "6379"],
            "-ERR CLUSTER MEET is not supported: tern's members come from its configuration and \
             slot owners from its partition map",
        ),
        (
            &["CLUSTER", "FOO"],
            "-ERR unknown subcommand 'FOO'. Try CLUSTER HELP.",
        ),
    ];
    for (words, want) in cases {
        assert_eq!(run(words, &t), *want, "{words:?}");
    }
    assert!(run(&["CLUSTER", "INFO"], &t).starts_with("\"cluster_enabled:1\\r\\ncluster_state:ok"));
    assert!(run(&["CLUSTER", "NODES"], &t).contains("myself,master"));
    assert!(run(&["CLUSTER", "HELP"], &t).starts_with("[+CLUSTER <subcommand>"));
}

#[test]
fn keyslot_needs_no_topology() {
    let frame = b"CLUSTER KEYSLOT a";
    let ranges = [0..7, 8..15, 16..17];
    let args = Args::new(frame, &ranges);
    let mut out = Vec::new();
    cluster(
        &args,
        || panic!("KEYSLOT must not build the topology"),
        &mut out,
    );
    assert_eq!(render(&decoded(&out)), format!(":{}", slot_of(b"a")));
}
