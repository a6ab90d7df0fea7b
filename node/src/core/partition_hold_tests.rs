//! The WAN gateway's hold on the change log (`overflow = "block_writes"`): a `WanChanges` read
//! with `hold_ms > 0` makes the primary refuse local writes that would drop records the
//! gateway has not read, until the lease lapses.
use super::*;
use crate::core::command::{Command as C, Response as R};
use crate::core::replica::{
    Answer, AssignmentFacts, ReplicaCore, ReplicaId, ReplicationLimits, Request, RequestId,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use tern_conflict::HlcTimestamp;

const T0: u64 = 1_700_000_000_000;
/// Every test value has this length and every key three bytes, so records are all one size.
const VALUE: &str = "0123456789";
/// The change log holds this many of those records.
const LOG_RECORDS: usize = 4;
const REFUSED: CommandError = CommandError::WanBacklogFull;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// What one `key` → [`VALUE`] record costs in the change log.
fn one_record() -> usize {
    record_bytes(b"k00", &Value::Bytes(b(VALUE)))
}

fn limits() -> Limits {
    Limits {
        change_log_bytes_max: LOG_RECORDS * one_record(),
        ..Limits::default()
    }
}

fn core_with(limits: Limits) -> PartitionCore {
    PartitionCore::new(PartitionConfig {
        partition: PartitionId(1),
        site: SiteId(1),
        limits,
        hash_seed: 7,
    })
}

fn key(n: u64) -> Bytes {
    Bytes::from(format!("k{n:02}"))
}

fn set(key: Bytes, value: &str) -> C {
    C::Set {
        key,
        value: b(value),
        condition: SetCondition::Always,
        expiry: None,
        get: false,
    }
}

fn read(after_seq: u64, hold_ms: u32) -> C {
    C::WanChanges {
        after_seq,
        records_max: 100,
        bytes_max: u32::MAX,
        hold_ms,
    }
}

/// A core whose log holds `written` records (keys k01, k02, …), then a WAN read after
/// `after_seq` asking for `hold_ms`.
fn held_core(limits: Limits, written: u64, after_seq: u64, hold_ms: u32) -> PartitionCore {
    let mut core = core_with(limits);
    for n in 1..=written {
        assert_eq!(core.handle_command(set(key(n), VALUE), T0), Ok(R::Ok));
    }
    let page = core.handle_command(read(after_seq, hold_ms), T0);
    assert!(matches!(page, Ok(R::WanChanges(_))), "{page:?}");
    core
}

/// Everything a refused write must leave alone: stored entries, the log, its last seq.
type State = (Vec<(Bytes, Versioned)>, Vec<ChangeRecord>, u64);

fn state(core: &PartitionCore) -> State {
    let entries = core
        .snapshot_entries()
        .map(|(k, e)| (k.clone(), e.clone()))
        .collect();
    let log = core
        .changes_since(0)
        .or_else(|t| core.changes_since(t.oldest_retained - 1))
        .map(|records| records.cloned().collect())
        .unwrap_or_default();
    (entries, log, core.last_seq())
}

#[test]
fn a_write_is_refused_exactly_when_it_would_drop_a_held_record() {
    struct Case {
        name: &'static str,
        limits: Limits,
        written: u64,
        after_seq: u64,
        hold_ms: u32,
        /// When the next write runs, after the read at T0.
        write_after_ms: u64,
        refused: bool,
    }
    let case = |name, written, after_seq, hold_ms, write_after_ms, refused| Case {
        name,
        limits: limits(),
        written,
        after_seq,
        hold_ms,
        write_after_ms,
        refused,
    };
    let cases = [
        case("log full of unread records", 4, 0, 1000, 0, true),
        case(
            "unread records and the write fill the log",
            4,
            1,
            1000,
            0,
            false,
        ),
        case("room left after unread records", 3, 1, 1000, 0, false),
        case("only read records are dropped", 4, 3, 1000, 0, false),
        case("nothing unread", 4, 4, 1000, 0, false),
        case(
            "cursor past the log (a restarted log)",
            4,
            9,
            1000,
            0,
            false,
        ),
        case("lease still running", 4, 0, 1000, 999, true),
        case("lease lapsed", 4, 0, 1000, 1000, false),
        case("hold_ms = 0 never holds", 4, 0, 0, 0, false),
        Case {
            limits: Limits {
                wan_hold_ms_max: 50,
                ..limits()
            },
            ..case(
                "a long hold is capped by wan_hold_ms_max",
                4,
                0,
                1000,
                50,
                false,
            )
        },
        Case {
            limits: Limits {
                wan_hold_ms_max: 0,
                ..limits()
            },
            ..case("wan_hold_ms_max = 0 disables holds", 4, 0, 1000, 0, false)
        },
    ];
    for c in cases {
        let mut core = held_core(c.limits, c.written, c.after_seq, c.hold_ms);
        let before = state(&core);
        let now = T0 + c.write_after_ms;
        let result = core.handle_command(set(key(50), VALUE), now);
        if c.refused {
            assert_eq!(result, Err(REFUSED), "{}", c.name);
            assert_eq!(
                state(&core),
                before,
                "{}: a refused write changed state",
                c.name
            );
            assert_eq!(core.wan_writes_refused(), 1, "{}", c.name);
        } else {
            assert_eq!(result, Ok(R::Ok), "{}", c.name);
            assert_eq!(core.last_seq(), c.written + 1, "{}", c.name);
            assert_eq!(core.wan_writes_refused(), 0, "{}", c.name);
        }
        if core.wan_hold(now).is_some() {
            // While a hold lasts, every record after its cursor is still there to read.
            assert!(
                core.changes_since(c.after_seq.min(core.last_seq())).is_ok(),
                "{}: a held record was dropped",
                c.name
            );
        }
    }
}

#[test]
fn a_refused_write_changes_nothing_and_reads_still_answer() {
    let expire_at_past = C::Set {
        key: key(1),
        value: b(VALUE),
        condition: SetCondition::Always,
        expiry: Some(Expiry::AtMs(1)),
        get: false,
    };
    // (command, what it answers while the log is held full)
    let cases: Vec<(&str, C, CommandResult)> = vec![
        ("SET of a new key", set(key(9), VALUE), Err(REFUSED)),
        ("SET over a key", set(key(1), "x"), Err(REFUSED)),
        ("DEL", C::Del { key: key(2) }, Err(REFUSED)),
        (
            "INCRBY",
            C::IncrBy {
                key: key(9),
                delta: 1,
            },
            Err(REFUSED),
        ),
        (
            "EXPIRE",
            C::Expire {
                key: key(3),
                expiry: Expiry::InMs(10_000),
            },
            Err(REFUSED),
        ),
        (
            "SET EXAT in the past (a delete)",
            expire_at_past,
            Err(REFUSED),
        ),
        ("FLUSHALL", C::FlushAll, Err(REFUSED)),
        // Writes that change nothing write no record, so nothing is refused.
        (
            "SET NX on a present key",
            C::Set {
                key: key(1),
                value: b("x"),
                condition: SetCondition::IfAbsent,
                expiry: None,
                get: false,
            },
            Ok(R::Value(None)),
        ),
        (
            "DEL of a missing key",
            C::Del { key: key(9) },
            Ok(R::Int(0)),
        ),
        ("GET", C::Get { key: key(1) }, Ok(R::Value(Some(b(VALUE))))),
        ("EXISTS", C::Exists { key: key(4) }, Ok(R::Int(1))),
        ("DBSIZE", C::DbSize, Ok(R::Int(4))),
    ];
    for (name, command, expected) in cases {
        let mut core = held_core(limits(), 4, 0, 1000);
        let before = state(&core);
        assert_eq!(core.handle_command(command, T0 + 1), expected, "{name}");
        assert_eq!(state(&core), before, "{name} changed state");
        let refused = u64::from(expected == Err(REFUSED));
        assert_eq!(core.wan_writes_refused(), refused, "{name}");
    }
}

#[test]
fn a_newer_read_moves_and_renews_the_hold() {
    let mut core = held_core(limits(), 4, 0, 100);
    assert_eq!(core.handle_command(set(key(5), VALUE), T0), Err(REFUSED));

    // Renewed at T0 + 80 at the same cursor: still refused past the first lease's end.
    assert!(core.handle_command(read(0, 100), T0 + 80).is_ok());
    assert_eq!(
        core.wan_hold(T0 + 150),
        Some(WanHold {
            after_seq: 0,
            until_ms: T0 + 180
        })
    );
    assert_eq!(
        core.handle_command(set(key(5), VALUE), T0 + 150),
        Err(REFUSED)
    );

    // The gateway took two records: there is room for exactly two more.
    assert!(core.handle_command(read(2, 100), T0 + 160).is_ok());
    for n in 5..=6 {
        assert_eq!(core.handle_command(set(key(n), VALUE), T0 + 170), Ok(R::Ok));
    }
    assert_eq!(
        core.handle_command(set(key(7), VALUE), T0 + 170),
        Err(REFUSED)
    );
    let held: Vec<u64> = core
        .changes_since(2)
        .map(|records| records.map(|r| r.seq).collect())
        .unwrap_or_default();
    assert_eq!(held, vec![3, 4, 5, 6]);
}

#[test]
fn a_write_larger_than_the_whole_log_waits_for_the_wan_but_not_forever() {
    let huge = "x".repeat(LOG_RECORDS * one_record());
    let mut core = held_core(limits(), 2, 0, 1000);
    assert_eq!(core.handle_command(set(key(9), &huge), T0), Err(REFUSED));
    // Once the gateway has read everything, it goes in (alone in the log).
    assert!(core.handle_command(read(2, 1000), T0 + 1).is_ok());
    assert_eq!(core.handle_command(set(key(9), &huge), T0 + 2), Ok(R::Ok));
    let retained: Vec<u64> = core
        .changes_since(2)
        .map(|records| records.map(|r| r.seq).collect())
        .unwrap_or_default();
    assert_eq!(retained, vec![3]);
}

#[test]
fn flushall_is_sized_as_a_whole_before_any_tombstone() {
    // Three values and their three tombstones do not fit four value records.
    let mut core = held_core(limits(), 3, 0, 1000);
    assert!(3 * record_bytes(b"k01", &Value::Tombstone) > one_record());
    let before = state(&core);
    assert_eq!(core.handle_command(C::FlushAll, T0), Err(REFUSED));
    assert_eq!(state(&core), before, "no partial flush");

    assert!(core.handle_command(read(3, 1000), T0).is_ok());
    assert_eq!(core.handle_command(C::FlushAll, T0), Ok(R::Ok));
    assert_eq!(core.handle_command(C::DbSize, T0), Ok(R::Int(0)));
    assert_eq!(core.last_seq(), 6);
}

#[test]
fn remote_entries_are_not_refused() {
    // Refusing them could deadlock two sites blocked on each other (see `WanHold`).
    let mut core = held_core(limits(), 4, 0, 1000);
    let entry = Versioned {
        value: Value::Bytes(b(VALUE)),
        version: Version::first(SiteId(2), HlcTimestamp::new(T0, 0)),
        expires_at_ms: None,
    };
    let applied = core.handle_command(
        C::WanApply {
            key: key(9),
            entry,
            resolver: None,
        },
        T0,
    );
    assert!(
        matches!(applied, Ok(R::WanApplied { changed: true, .. })),
        "{applied:?}"
    );
    assert_eq!(core.wan_writes_refused(), 0);
}

#[test]
fn a_replicated_record_is_never_refused() {
    // A backup follows its primary's log whatever holds it may remember from an earlier term.
    let mut primary = core_with(Limits::default());
    let mut backup = held_core(limits(), 0, 0, 1000);
    for n in 1..=8 {
        assert_eq!(primary.handle_command(set(key(n), VALUE), T0), Ok(R::Ok));
    }
    let records: Vec<ChangeRecord> = primary
        .changes_since(2)
        .map(|records| records.cloned().collect())
        .unwrap_or_default();
    backup.install_snapshot(Vec::new(), 2);
    for record in &records {
        assert_eq!(backup.apply_replicated(record), Ok(()));
    }
    // Six records through a log of four: a primary's write would have been refused.
    assert_eq!(backup.last_seq(), 8);
}

// --- the hold at the replica level: one primary, one in-sync backup ---

/// Two replicas of one partition: node 1 primary, node 2 its in-sync backup, messages
/// delivered in order until none are left.
struct Pair {
    nodes: BTreeMap<ReplicaId, ReplicaCore>,
    now: u64,
}

impl Pair {
    fn new() -> Self {
        let facts = AssignmentFacts {
            epoch: 1,
            primary: Some(1),
            replicas: BTreeSet::from([1, 2]),
            in_sync: BTreeSet::from([2]),
            handover: None,
        };
        let mut nodes = BTreeMap::new();
        for id in [1, 2] {
            let config = PartitionConfig {
                partition: PartitionId(1),
                site: SiteId(1),
                limits: limits(),
                hash_seed: 7,
            };
            let mut node = ReplicaCore::new(id, config, ReplicationLimits::default());
            node.handle_assignment(&facts, T0);
            nodes.insert(id, node);
        }
        Self { nodes, now: T0 }
    }

    fn node(&mut self, id: ReplicaId) -> &mut ReplicaCore {
        self.nodes.get_mut(&id).expect("nodes 1 and 2 exist")
    }

    /// Runs one request at the primary, delivers every message, returns the released answer.
    fn request(&mut self, counter: u64, commands: Vec<C>) -> Vec<CommandResult> {
        self.now += 1;
        let now = self.now;
        let id = RequestId { origin: 9, counter };
        self.node(1).handle_request(Request { id, commands }, now);
        let mut in_flight = VecDeque::new();
        loop {
            for (&from, node) in &mut self.nodes {
                while let Some((to, message)) = node.poll_transmit() {
                    in_flight.push_back((from, to, message));
                }
            }
            let Some((from, to, message)) = in_flight.pop_front() else {
                break;
            };
            self.node(to).handle_message(from, message, now);
        }
        let mut answers: Vec<Answer> = Vec::new();
        while let Some(answer) = self.node(1).poll_response() {
            answers.push(answer);
        }
        match answers.as_slice() {
            [(answered, results)] if *answered == id => results.clone(),
            other => panic!("expected one answer to {id:?}, got {other:?}"),
        }
    }

    fn state(&mut self, id: ReplicaId) -> State {
        state(self.node(id).partition())
    }
}

#[test]
fn a_refused_write_is_answered_with_the_error_and_never_replicated() {
    let mut pair = Pair::new();
    for n in 1..=4 {
        assert_eq!(pair.request(n, vec![set(key(n), VALUE)]), vec![Ok(R::Ok)]);
    }
    assert_eq!(pair.state(1), pair.state(2), "backup in step");
    let page = pair.request(10, vec![read(0, 1000)]);
    assert!(
        matches!(page.as_slice(), [Ok(R::WanChanges(_))]),
        "{page:?}"
    );

    // A pipelined batch: the write that does not fit is refused, the read beside it answers.
    let before = pair.state(2);
    let answer = pair.request(11, vec![set(key(5), VALUE), C::Get { key: key(5) }]);
    assert_eq!(answer, vec![Err(REFUSED), Ok(R::Value(None))]);
    assert_eq!(
        REFUSED.to_string(),
        "TRYAGAIN WAN backlog to a remote site is full (overflow = block_writes); write refused"
    );
    assert_eq!(pair.state(2), before, "nothing reached the backup");
    assert_eq!(pair.state(1), before, "nothing changed at the primary");

    // A retry of the same request id gets the same answer (remembered, not run again), even
    // once the write would fit.
    let page = pair.request(12, vec![read(4, 1000)]);
    assert!(
        matches!(page.as_slice(), [Ok(R::WanChanges(_))]),
        "{page:?}"
    );
    let retry = pair.request(11, vec![set(key(5), VALUE), C::Get { key: key(5) }]);
    assert_eq!(retry, answer);
    assert_eq!(pair.state(1), before);

    // The gateway read everything: the client's retry (a new request) goes through everywhere.
    assert_eq!(pair.request(13, vec![set(key(5), VALUE)]), vec![Ok(R::Ok)]);
    assert_eq!(pair.node(2).last_seq(), 5);
    assert_eq!(pair.state(1), pair.state(2));
}
