//! WAN entries applied at a primary reach its backups as ordinary change records.
use super::harness::*;
use crate::core::command::{Command, Response as R};
use std::collections::BTreeMap;
use std::sync::Arc;
use tern_conflict::{
    HlcTimestamp, KeyspaceResolvers, PnCounter, ResolverRegistry, SiteId, Value, Version, Versioned,
};

const OTHER: SiteId = SiteId(9);

fn counter_entry(n: i64, wall_ms: u64) -> Versioned {
    let mut counter = PnCounter::new();
    counter.add(OTHER, n).expect("small");
    Versioned {
        value: Value::Counter(counter),
        version: Version::first(OTHER, HlcTimestamp::new(wall_ms, 0)),
        expires_at_ms: None,
    }
}

fn wan_apply(key: &str, entry: Versioned) -> Command {
    Command::WanApply {
        key: b(key),
        entry,
        resolver: None,
    }
}

#[test]
fn a_wan_apply_at_the_primary_reaches_the_backup_without_its_resolver() {
    // Only the primary knows that `c:` keys merge as counters; the backup has the default
    // (last-writer-wins), so a backup that re-resolved would end with a different value.
    let registry = ResolverRegistry::with_builtins();
    let table = KeyspaceResolvers::new(&registry, [("c:", "counter-merge")], "lww");
    let resolvers = BTreeMap::from([(1, Arc::new(table.expect("built-ins")))]);
    let mut net = Net::with_resolvers(2, resolvers);

    net.request(1, rid(1), vec![incr("c:n")]);
    net.settle();
    assert_eq!(net.answers(rid(1)), vec![vec![int(1)]]);

    // Concurrent with the local increment (it has not seen it): merged to 1 + 4.
    let remote = counter_entry(4, T0 - 10);
    net.request(1, rid(2), vec![wan_apply("c:n", remote.clone())]);
    assert!(
        net.answers(rid(2)).is_empty(),
        "held until the backup acked"
    );
    net.settle();
    let merged = Ok(R::WanApplied {
        changed: true,
        conflict: true,
        clock_rejected: false,
    });
    assert_eq!(net.answers(rid(2)), vec![vec![merged.clone()]]);
    assert_eq!(
        net.state(1),
        net.state(2),
        "backup holds the primary's entry"
    );
    assert_eq!(net.node(2).last_seq(), 2);
    let stored = net.state(2);
    assert!(
        matches!(&stored[0].1.value, Value::Counter(c) if c.value() == Some(5)),
        "{stored:?}"
    );

    // A retry of the same request id gets the original answer and changes nothing.
    net.request(1, rid(2), vec![wan_apply("c:n", remote.clone())]);
    net.settle();
    assert_eq!(
        net.answers(rid(2)),
        vec![vec![merged.clone()], vec![merged]]
    );
    assert_eq!(net.node(1).last_seq(), 2);

    // The same entry under a new id: applied again, it is a no-op.
    net.request(1, rid(3), vec![wan_apply("c:n", remote)]);
    net.settle();
    let unchanged = Ok(R::WanApplied {
        changed: false,
        conflict: false,
        clock_rejected: false,
    });
    assert_eq!(net.answers(rid(3)), vec![vec![unchanged]]);
    assert_eq!((net.node(1).last_seq(), net.node(2).last_seq()), (2, 2));

    // A WAN read is served like any read, after a barrier.
    let read = Command::WanChanges {
        after_seq: 1,
        records_max: 10,
        bytes_max: u32::MAX,
        hold_ms: 0,
    };
    net.request(1, rid(4), vec![read]);
    net.settle();
    let answers = net.answers(rid(4));
    let [results] = answers.as_slice() else {
        panic!("one answer: {answers:?}");
    };
    let Some(Ok(R::WanChanges(page))) = results.first() else {
        panic!("not a page: {results:?}");
    };
    assert_eq!(page.last_seq, 2);
    assert_eq!(page.records.len(), 1);
    assert_eq!((page.records[0].seq, &page.records[0].key), (2, &b("c:n")));
    assert_eq!(page.records[0].entry, net.state(2)[0].1);
}
