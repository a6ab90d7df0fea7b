//! The site-level rules, driven directly: log generations, wipe detection and the Hello hold,
//! apply dispatch, operator requests.
use super::*;
use crate::repair::test_support as ts;
use crate::wire::{HelloAck, Message, PROTOCOL_VERSION};
use bytes::Bytes;
use tern_node::admin::WanTargetSpec;
use tern_node::core::{ChangeRecord, Command, CommandResult, WanChangesPage};

const LOCAL: SiteId = SiteId(1);
const PEER: SiteId = SiteId(2);
const PEER_SITE: &str = "east";
const PARTITIONS: u16 = 2;
const P0: PartitionId = PartitionId(0);
const P1: PartitionId = PartitionId(1);

fn config() -> SiteGatewayConfig {
    SiteGatewayConfig {
        site: "west".into(),
        site_id: LOCAL,
        partition_count: PARTITIONS,
        limits: GatewayLimits::default(),
        resolvers: Arc::new(KeyspaceResolvers::default()),
        tombstone_retention_ms: 1_000,
        apply_records_max: 2,
        apply_bytes_max: 1 << 20,
        repair_interval_ms: 0,
        cursor_persist_ms: 10,
    }
}

fn spec(site: &str, id: u16) -> WanTargetSpec {
    WanTargetSpec {
        site: site.into(),
        site_id: id,
        addr: "127.0.0.1:7000".into(),
    }
}

/// A gateway with one peer whose sink had applied `applied` of partition 0.
fn gateway(applied: u64) -> SiteGateway<MemSiteStorage> {
    let mut storage = MemSiteStorage::default();
    let cursors = BTreeMap::from([(P0, applied)]);
    storage
        .store_cursors(PEER_SITE, &cursors)
        .expect("memory saves");
    let mut gw = SiteGateway::new(config(), storage, BTreeMap::new(), 0);
    gw.handle_admin(AdminCommand::AddTarget(spec(PEER_SITE, PEER.0)), 0)
        .expect("a valid peer");
    gw
}

/// `n` committed records of `partition`, seqs 1..=n.
fn records(partition: PartitionId, n: u64) -> Vec<ChangeRecord> {
    let mut core = ts::core(LOCAL);
    for i in 0..n {
        ts::set(&mut core, ts::key(i), "v", None, 1_000 + i);
    }
    core.changes_since(0)
        .expect("nothing dropped")
        .cloned()
        .map(|mut r| {
            r.partition = partition;
            r
        })
        .collect()
}

fn page(records: Vec<ChangeRecord>, last_seq: u64) -> WanChangesPage {
    WanChangesPage { records, last_seq }
}

fn hello() -> Message {
    Message::Hello(crate::wire::Hello {
        site: PEER,
        target: LOCAL,
        protocol_version: PROTOCOL_VERSION,
    })
}

/// The HelloAcks sent so far on the source side.
fn hello_acks(gw: &mut SiteGateway<MemSiteStorage>) -> Vec<HelloAck> {
    let mut acks = Vec::new();
    while let Some(t) = gw.poll_transmit() {
        for m in t.messages {
            if let (Side::FromSource, Message::HelloAck(ack)) = (t.link.side, m) {
                acks.push(ack);
            }
        }
    }
    acks
}

fn cursor_of(ack: &HelloAck, partition: PartitionId) -> u64 {
    ack.cursors
        .iter()
        .find(|(p, _)| *p == partition)
        .map_or(0, |(_, s)| *s)
}

#[test]
fn a_restarted_log_ships_under_a_new_generation_saved_first() {
    let mut gw = gateway(0);
    let next = gw.handle_feed_page(P0, 0, &page(records(P0, 3), 3), 1);
    assert_eq!(next, 3, "the delegator took seqs 1..=3");
    assert_eq!(
        gw.delegator(PEER_SITE).and_then(|d| d.resume_after(P0)),
        Some(3)
    );
    // The log went back (the partition lost its memory): generation 1, read from 0 again.
    let next = gw.handle_feed_page(P0, 3, &page(Vec::new(), 0), 2);
    assert_eq!(next, 0);
    assert_eq!(gw.generation(P0), 1);
    assert_eq!(gw.storage().generations().get(&P0), Some(&1), "saved");
    let next = gw.handle_feed_page(P0, 0, &page(records(P0, 2), 2), 3);
    assert_eq!(next, 2, "seqs of the new log, within generation 1");
    assert_eq!(
        gw.delegator(PEER_SITE).and_then(|d| d.resume_after(P0)),
        Some(generations::wan_seq(1, 2))
    );
    // Another peer's feed start is computed within the current generation.
    assert_eq!(gw.feed_start(P0), 2);
}

#[test]
fn a_generation_that_cannot_be_saved_is_not_used() {
    let mut gw = gateway(0);
    gw.handle_feed_page(P0, 0, &page(records(P0, 3), 3), 1);
    let mut storage_fails = gw;
    storage_fails.storage.fail_saves(true);
    let next = storage_fails.handle_feed_page(P0, 3, &page(Vec::new(), 0), 2);
    assert_eq!(next, 3, "the feed asks again from where it was");
    assert_eq!(storage_fails.generation(P0), 0);
}

#[test]
fn hellos_wait_for_every_partition_and_a_wiped_partition_resets_its_cursor() {
    // (P0's first page: log last seq, expected cursor in the HelloAck)
    let cases = [(0, 0), (9, 5)];
    for (p0_last_seq, expected) in cases {
        let mut gw = gateway(5);
        gw.handle_link_up(Side::FromSource, PEER_SITE, 7, 1);
        gw.handle_message(Side::FromSource, PEER_SITE, 7, hello(), 1);
        assert!(
            hello_acks(&mut gw).is_empty(),
            "held: no partition read yet"
        );
        gw.handle_feed_page(P0, 0, &page(Vec::new(), p0_last_seq), 2);
        assert!(hello_acks(&mut gw).is_empty(), "held: P1 not read yet");
        gw.handle_feed_page(P1, 0, &page(Vec::new(), 0), 3);
        let acks = hello_acks(&mut gw);
        assert_eq!(
            acks.len(),
            1,
            "last seq {p0_last_seq}: answered once all are read"
        );
        assert_eq!(cursor_of(&acks[0], P0), expected, "last seq {p0_last_seq}");
    }
}

#[test]
fn held_hellos_are_answered_after_the_hold_and_a_late_wipe_closes_the_link() {
    let mut gw = gateway(5);
    gw.handle_link_up(Side::FromSource, PEER_SITE, 7, 1);
    gw.handle_message(Side::FromSource, PEER_SITE, 7, hello(), 1);
    gw.handle_feed_page(P1, 0, &page(Vec::new(), 0), 2);
    gw.handle_timers(limits::HELLO_HOLD_MS_MAX - 1);
    assert!(hello_acks(&mut gw).is_empty());
    gw.handle_timers(limits::HELLO_HOLD_MS_MAX);
    let acks = hello_acks(&mut gw);
    assert_eq!(
        acks.len(),
        1,
        "a partition without a primary must not stop the WAN"
    );
    assert_eq!(cursor_of(&acks[0], P0), 5);
    // P0 turns out wiped: the source was told 5, so its link is closed to greet again.
    gw.handle_feed_page(P0, 0, &page(Vec::new(), 0), limits::HELLO_HOLD_MS_MAX + 1);
    assert_eq!(
        gw.poll_close_link(),
        Some(LinkRef {
            side: Side::FromSource,
            site: PEER_SITE.into(),
            conn: 7
        })
    );
    let p0_cursor = gw
        .sink(PEER_SITE)
        .and_then(|s| s.applied_cursors().find(|(p, _)| *p == P0));
    assert_eq!(p0_cursor.map_or(0, |(_, seq)| seq), 0, "reset");
    gw.handle_timers(limits::HELLO_HOLD_MS_MAX + 100);
    assert_eq!(
        gw.storage()
            .cursors(PEER_SITE)
            .get(&P0)
            .copied()
            .unwrap_or(0),
        0,
        "reset saved"
    );
}

#[test]
fn operator_requests_are_checked() {
    let mut gw = gateway(0);
    // (command, expected error text, if any)
    let cases: Vec<(AdminCommand, Option<&str>)> = vec![
        (
            AdminCommand::AddTarget(spec("west", 9)),
            Some("is this site"),
        ),
        (
            AdminCommand::AddTarget(spec(PEER_SITE, 9)),
            Some("already a target"),
        ),
        (
            AdminCommand::AddTarget(spec("north", PEER.0)),
            Some("already in use"),
        ),
        (
            AdminCommand::AddTarget(spec("north", LOCAL.0)),
            Some("already in use"),
        ),
        (
            AdminCommand::AddTarget(WanTargetSpec {
                addr: "not an address".into(),
                ..spec("north", 3)
            }),
            Some("addr"),
        ),
        (AdminCommand::Repair("south".into()), Some("unknown site")),
        (
            AdminCommand::RemoveTarget("south".into()),
            Some("unknown site"),
        ),
        (AdminCommand::Repair(PEER_SITE.into()), None),
        (AdminCommand::AddTarget(spec("north", 3)), None),
        (AdminCommand::RemoveTarget("north".into()), None),
    ];
    for (command, expected) in cases {
        let result = gw.handle_admin(command.clone(), 1);
        match expected {
            None => assert_eq!(result, Ok(()), "{command:?}"),
            Some(text) => {
                let error = result.expect_err("refused").to_string();
                assert!(error.contains(text), "{command:?}: {error}");
            }
        }
    }
    let repairing: Vec<_> = gw.status().targets[0].repairing_partitions.clone();
    assert_eq!(
        repairing,
        vec![0, 1],
        "an operator's repair marks every partition"
    );
    assert!(gw.poll_feed_rewind(), "an added target rewinds the feeds");
    assert!(!gw.poll_feed_rewind(), "once");
}

#[test]
fn one_apply_in_flight_per_source_and_partition() {
    let mut gw = gateway(0);
    gw.handle_feed_page(P0, 0, &page(Vec::new(), 0), 1);
    gw.handle_feed_page(P1, 0, &page(Vec::new(), 0), 1);
    gw.handle_link_up(Side::FromSource, PEER_SITE, 7, 1);
    gw.handle_message(Side::FromSource, PEER_SITE, 7, hello(), 1);
    // A source's delegator ships five records of P0 and one of P1.
    let mut source = crate::Delegator::new(PEER, LOCAL, GatewayLimits::default());
    source.handle_connected(1);
    let acks = hello_acks(&mut gw);
    source
        .handle_hello_ack(acks[0].clone(), 1)
        .expect("a valid HelloAck");
    let wan = |r: &ChangeRecord| crate::wire::WanRecord {
        origin: PEER,
        partition: r.partition,
        prev_seq: 0,
        seq: r.seq,
        key: r.key.clone(),
        entry: r.entry.clone(),
        committed_at_ms: 0,
    };
    let shipped: Vec<_> = records(P0, 5)
        .iter()
        .chain(&records(P1, 1))
        .map(wan)
        .collect();
    let intake = source.handle_records(shipped, 1).expect("in memory");
    assert_eq!(intake.overflow, None);
    source.handle_timeout(1_000);
    while let Some(message) = source.poll_transmit() {
        gw.handle_message(Side::FromSource, PEER_SITE, 7, message, 2);
    }
    let mut requests = Vec::new();
    while let Some(r) = gw.poll_apply() {
        requests.push(r);
    }
    let shape: Vec<(PartitionId, usize)> = requests
        .iter()
        .map(|r| (r.partition, r.records.len()))
        .collect();
    assert_eq!(
        shape,
        vec![(P0, 2), (P1, 1)],
        "apply_records_max 2, one per partition"
    );
    let ok = |n: usize| -> Vec<CommandResult> {
        (0..n)
            .map(|_| {
                Ok(tern_node::core::Response::WanApplied {
                    changed: true,
                    conflict: false,
                    clock_rejected: false,
                })
            })
            .collect()
    };
    gw.handle_applied(PEER_SITE, P0, &requests[0].records, &ok(2), 3);
    let next = gw.poll_apply().expect("the next chunk of P0");
    assert_eq!((next.partition, next.records.len()), (P0, 2));
    assert_eq!(gw.poll_apply(), None, "still one in flight");
    assert_eq!(gw.status().sources[0].applied_total, 2);
}

/// Backlogs on one fault-injecting memory disk, the other saves in memory: a store that fails
/// and is reopened (recovering what the disk holds).
struct DiskStorage {
    disk: crate::backlog::MemStorage,
    saves: MemSiteStorage,
}

impl SiteStorage for DiskStorage {
    type Store = crate::BacklogStore<crate::backlog::MemStorage>;

    fn open_delegator(
        &mut self,
        _site: &str,
        local: SiteId,
        target: SiteId,
        limits: GatewayLimits,
    ) -> Result<Delegator<Self::Store>, String> {
        let config = crate::backlog::BacklogConfig::default();
        Delegator::open(local, target, limits, self.disk.clone(), config)
            .map(|(delegator, _)| delegator)
            .map_err(|e| e.to_string())
    }

    fn sync_backlog(&mut self, _site: &str, store: &mut Self::Store) -> Result<(), String> {
        store.sync().map_err(|e| e.to_string())
    }

    fn remove_backlog(&mut self, _site: &str) {}

    fn load_cursors(&mut self, site: &str) -> BTreeMap<PartitionId, u64> {
        self.saves.load_cursors(site)
    }

    fn store_cursors(
        &mut self,
        site: &str,
        cursors: &BTreeMap<PartitionId, u64>,
    ) -> Result<(), String> {
        self.saves.store_cursors(site, cursors)
    }

    fn store_generations(
        &mut self,
        generations: &BTreeMap<PartitionId, u64>,
    ) -> Result<(), String> {
        self.saves.store_generations(generations)
    }
}

#[test]
fn a_delegator_rebuilt_on_its_reopened_store_has_the_feeds_read_again() {
    let storage = DiskStorage {
        disk: crate::backlog::MemStorage::new(7),
        saves: MemSiteStorage::default(),
    };
    let mut gw = SiteGateway::new(config(), storage, BTreeMap::new(), 0);
    gw.handle_admin(AdminCommand::AddTarget(spec(PEER_SITE, PEER.0)), 0)
        .expect("a valid peer");
    assert!(gw.poll_feed_rewind(), "a new target rewinds the feeds");
    let resume =
        |gw: &SiteGateway<DiskStorage>| gw.delegator(PEER_SITE).and_then(|d| d.resume_after(P0));
    // Seqs 1..=2 were written here; 3..=4 are the peer's own, relayed back: filtered, so
    // nothing of them is stored.
    let mut log = records(P0, 5);
    for record in &mut log[2..4] {
        record.entry.version.origin = PEER;
    }
    let fifth = log.pop().expect("five records");
    assert_eq!(gw.handle_feed_page(P0, 0, &page(log, 4), 1), 4);
    assert_eq!(resume(&gw), Some(4));
    assert!(!gw.poll_feed_rewind());
    // The next append fails: the store must be reopened, which the next timer does.
    gw.storage().disk.fail_next_append();
    gw.handle_feed_page(P0, 4, &page(vec![fifth], 5), 2);
    assert!(
        gw.delegator(PEER_SITE)
            .is_some_and(|d| d.failure().is_some())
    );
    gw.handle_timers(3);
    assert!(
        gw.delegator(PEER_SITE)
            .is_some_and(|d| d.failure().is_none())
    );
    assert_eq!(resume(&gw), Some(2), "the store holds seqs 1..=2");
    // Without a rewind an idle partition's feed would stay at 4 (or 5) forever.
    assert!(gw.poll_feed_rewind(), "the feeds read again from the start");
    assert_eq!(gw.feed_start(P0), 2);
}

#[test]
fn a_log_restart_is_seen_by_a_feed_reading_from_the_start() {
    let mut gw = gateway(0);
    assert_eq!(gw.handle_feed_page(P0, 0, &page(records(P0, 3), 3), 1), 3);
    // The partition lost its memory and took two writes; the feed was rewound to 0 (a new
    // target, a rebuilt delegator), so it cannot tell: the page looks like an ordinary one.
    let next = gw.handle_feed_page(P0, 0, &page(records(P0, 2), 2), 2);
    assert_eq!(
        (next, gw.generation(P0)),
        (0, 1),
        "a new generation, read again"
    );
    assert_eq!(gw.handle_feed_page(P0, 0, &page(records(P0, 2), 2), 3), 2);
    assert_eq!(
        gw.delegator(PEER_SITE).and_then(|d| d.resume_after(P0)),
        Some(generations::wan_seq(1, 2)),
        "the new writes ship (under the old generation they were taken for seqs 1..=2 again)"
    );
    // An ordinary page behind nothing shipped changes nothing.
    assert_eq!(gw.handle_feed_page(P1, 0, &page(records(P1, 1), 1), 4), 1);
    assert_eq!(gw.generation(P1), 0);
}

#[test]
fn a_stream_begun_mid_log_on_a_live_link_makes_the_delegator_greet_again() {
    let mut gw = gateway(0);
    gw.handle_link_up(Side::ToTarget, PEER_SITE, 7, 0);
    // (partition, records fed from 0, generation bumped first, link closed)
    let cases = [(P1, 3, false, false), (P0, 2, true, true)];
    for (partition, n, new_generation, closed) in cases {
        if new_generation {
            // The partition lost its memory before any record of it was shipped here.
            gw.handle_feed_page(partition, 5, &page(Vec::new(), 0), 1);
            assert_eq!(gw.generation(partition), 1);
        }
        assert_eq!(
            gw.handle_feed_page(partition, 0, &page(records(partition, n), n), 2),
            n
        );
        let close = gw.poll_close_link();
        let expected = closed.then(|| LinkRef {
            side: Side::ToTarget,
            site: PEER_SITE.into(),
            conn: 7,
        });
        assert_eq!(close, expected, "{partition}");
    }
    assert!(
        !gw.status().targets[0].connected,
        "the closed link is down for the core"
    );
}

/// The core names each key's resolver from the site's table in the `WanApply` it asks the
/// host to send: the partition's primary may be a node without that table.
#[test]
fn wan_apply_commands_name_the_resolver_of_the_sites_table() {
    let registry = tern_conflict::ResolverRegistry::with_builtins();
    let table = KeyspaceResolvers::new(&registry, [("c:", "counter-merge")], "lww")
        .expect("built-in names");
    let gw = SiteGateway::new(
        SiteGatewayConfig {
            resolvers: Arc::new(table),
            ..config()
        },
        MemSiteStorage::default(),
        BTreeMap::new(),
        0,
    );
    let entry = tern_conflict::Versioned {
        value: tern_conflict::Value::Bytes(Bytes::from("v")),
        version: tern_conflict::Version::first(PEER, tern_conflict::HlcTimestamp::new(1, 0)),
        expires_at_ms: None,
    };
    for (key, expected) in [("c:n", "counter-merge"), ("s:1", "lww")] {
        let key = Bytes::from(key);
        match gw.wan_apply_command(&key, &entry) {
            Command::WanApply { resolver, .. } => {
                assert_eq!(resolver.as_deref(), Some(expected), "{key:?}");
            }
            other => panic!("{other:?}"),
        }
    }
}
