use super::*;
use crate::delegator::tests_support::record;
use crate::wire::PROTOCOL_VERSION;

const LOCAL: SiteId = SiteId(2);
const SOURCE: SiteId = SiteId(1);

/// Acks coalesce by time and batch count here (the ack-when-applied rule has its own test).
fn limits() -> GatewayLimits {
    GatewayLimits {
        ack_delay_ms_max: 2,
        ack_batches_max: 3,
        ack_when_applied: false,
        ..GatewayLimits::default()
    }
}

fn rec(partition: u16, prev_seq: u64, seq: u64) -> WanRecord {
    let mut r = record(SOURCE, partition, seq, 4);
    r.prev_seq = prev_seq;
    r
}

fn batch(batch_id: u64, records: Vec<WanRecord>) -> Batch {
    Batch {
        source: SOURCE,
        batch_id,
        records,
    }
}

/// Apply everything queued, confirming each record; returns `(partition, seq)` applied.
fn apply_all(sink: &mut Sink, now_ms: u64) -> Vec<(u16, u64)> {
    let mut applied = Vec::new();
    while let Some(r) = sink.poll_apply() {
        sink.handle_applied(r.partition, r.seq, now_ms);
        applied.push((r.partition.0, r.seq));
    }
    applied
}

fn acks(sink: &mut Sink) -> Vec<Vec<(u16, u64)>> {
    let mut out = Vec::new();
    while let Some(message) = sink.poll_transmit() {
        if let Message::Ack(ack) = message {
            out.push(ack.cursors.iter().map(|(p, s)| (p.0, *s)).collect());
        }
    }
    out
}

#[test]
fn records_are_delivered_once_in_order_and_gaps_are_held_back() {
    // (records as (partition, prev_seq, seq), expected deliveries, dups, gaps) after the
    // previous rows, all on one sink.
    type Row = (Vec<(u16, u64, u64)>, Vec<(u16, u64)>, u64, u64);
    let rows: Vec<Row> = vec![
        (vec![(0, 0, 1), (0, 1, 2)], vec![(0, 1), (0, 2)], 0, 0),
        // A duplicate, then a record whose predecessor is missing, then one after it.
        (vec![(0, 1, 2), (0, 3, 4), (0, 4, 5)], vec![], 1, 2),
        // The missing record arrives (resend), then the rest in order.
        (
            vec![(0, 2, 3), (0, 3, 4), (0, 4, 5)],
            vec![(0, 3), (0, 4), (0, 5)],
            1,
            2,
        ),
        // Seq skips explained by prev_seq (records whose origin is this site were filtered).
        (vec![(0, 5, 9), (1, 0, 3)], vec![(0, 9), (1, 3)], 1, 2),
        // A stale prev_seq (below what was delivered) still continues the stream.
        (vec![(0, 7, 10)], vec![(0, 10)], 1, 2),
    ];
    let mut sink = Sink::new(LOCAL, SOURCE, limits());
    for (i, (records, expected, dups, gaps)) in rows.into_iter().enumerate() {
        let records = records
            .into_iter()
            .map(|(p, prev, seq)| rec(p, prev, seq))
            .collect();
        assert_eq!(sink.handle_batch(batch(i as u64, records), 0), Ok(()));
        assert_eq!(apply_all(&mut sink, 0), expected, "row {i}");
        assert_eq!(sink.stats().duplicates_total, dups, "row {i}");
        assert_eq!(sink.stats().gap_records_total, gaps, "row {i}");
    }
}

#[test]
fn acks_cover_only_applied_records_and_are_coalesced() {
    let mut sink = Sink::new(LOCAL, SOURCE, limits());
    sink.handle_batch(batch(1, vec![rec(0, 0, 1), rec(0, 1, 2), rec(5, 0, 1)]), 10)
        .ok();
    assert_eq!(sink.poll_timeout(), Some(12));
    // Delivered but not applied: the ack at the deadline reports nothing applied.
    sink.handle_timeout(12);
    assert_eq!(acks(&mut sink), vec![vec![(0, 0), (5, 0)]]);
    let first = sink.poll_apply().map(|r| (r.partition, r.seq));
    assert_eq!(first, Some((PartitionId(0), 1)));
    sink.handle_applied(PartitionId(0), 1, 13);
    assert!(
        acks(&mut sink).is_empty(),
        "coalesced until the delay passes"
    );
    sink.handle_applied(PartitionId(0), 99, 14);
    sink.handle_timeout(15);
    assert_eq!(
        acks(&mut sink),
        vec![vec![(0, 1)]],
        "never past what the shell took"
    );
    assert_eq!(apply_all(&mut sink, 16), vec![(0, 2), (5, 1)]);
    sink.handle_timeout(18);
    assert_eq!(acks(&mut sink), vec![vec![(0, 2), (5, 1)]]);
    assert_eq!(sink.poll_timeout(), None);
}

#[test]
fn with_ack_when_applied_an_ack_leaves_as_soon_as_everything_received_is_applied() {
    let mut sink = Sink::new(
        LOCAL,
        SOURCE,
        GatewayLimits {
            ack_when_applied: true,
            ..limits()
        },
    );
    sink.handle_batch(batch(1, vec![rec(0, 0, 1), rec(0, 1, 2)]), 10)
        .ok();
    assert!(acks(&mut sink).is_empty(), "nothing applied yet");
    let first = sink.poll_apply().map(|r| r.seq);
    assert_eq!(first, Some(1));
    sink.handle_applied(PartitionId(0), 1, 10);
    assert!(acks(&mut sink).is_empty(), "seq 2 is still to apply");
    assert_eq!(apply_all(&mut sink, 10), vec![(0, 2)]);
    assert_eq!(
        acks(&mut sink),
        vec![vec![(0, 2)]],
        "all applied: no ack delay"
    );
}

#[test]
fn an_ack_leaves_at_once_after_enough_applied_batches() {
    let mut sink = Sink::new(LOCAL, SOURCE, limits());
    for (id, seq) in [(1, 1), (2, 2), (3, 3)] {
        sink.handle_batch(batch(id, vec![rec(0, seq - 1, seq)]), 0)
            .ok();
    }
    assert!(acks(&mut sink).is_empty(), "nothing applied yet");
    apply_all(&mut sink, 0);
    assert_eq!(acks(&mut sink), vec![vec![(0, 3)]]);
}

#[test]
fn duplicates_are_acknowledged_again_so_a_lost_ack_is_repaired() {
    let mut sink = Sink::new(LOCAL, SOURCE, limits());
    sink.handle_batch(batch(1, vec![rec(0, 0, 1)]), 0).ok();
    apply_all(&mut sink, 0);
    sink.handle_timeout(2);
    assert_eq!(acks(&mut sink), vec![vec![(0, 1)]]);
    // That ack is lost; the source resends.
    sink.handle_batch(batch(2, vec![rec(0, 0, 1)]), 10).ok();
    assert!(sink.poll_apply().is_none());
    sink.handle_timeout(12);
    assert_eq!(acks(&mut sink), vec![vec![(0, 1)]]);
}

#[test]
fn a_failed_apply_lets_the_resend_through() {
    let mut sink = Sink::new(LOCAL, SOURCE, limits());
    sink.handle_batch(batch(1, vec![rec(0, 0, 1), rec(0, 1, 2), rec(1, 0, 1)]), 0)
        .ok();
    let first = sink.poll_apply().map(|r| r.seq);
    assert_eq!(first, Some(1));
    sink.handle_applied(PartitionId(0), 1, 0);
    // Applying 0/2 fails: it is dropped from the queue, partition 1 is untouched.
    sink.handle_apply_failed(PartitionId(0), 0);
    assert_eq!(apply_all(&mut sink, 0), vec![(1, 1)]);
    sink.handle_batch(batch(2, vec![rec(0, 0, 1), rec(0, 1, 2)]), 1)
        .ok();
    assert_eq!(apply_all(&mut sink, 1), vec![(0, 2)]);
    assert_eq!(sink.stats().apply_failures_total, 1);
}

#[test]
fn hello_is_checked_and_answered_with_every_applied_cursor() {
    let mut sink = Sink::with_cursors(
        LOCAL,
        SOURCE,
        limits(),
        [(PartitionId(3), 7), (PartitionId(4), 0)],
    );
    let hello = |site, target, protocol_version| Hello {
        site,
        target,
        protocol_version,
    };
    let refused: Vec<(Hello, HandshakeError)> = vec![
        (
            hello(SiteId(9), LOCAL, PROTOCOL_VERSION),
            HandshakeError::WrongPeer {
                expected: SOURCE,
                got: SiteId(9),
            },
        ),
        (
            hello(SOURCE, SiteId(9), PROTOCOL_VERSION),
            HandshakeError::WrongTarget {
                expected: LOCAL,
                got: SiteId(9),
            },
        ),
        (
            hello(SOURCE, LOCAL, 0),
            HandshakeError::UnsupportedProtocol { offered: 0 },
        ),
    ];
    for (hello, error) in refused {
        assert_eq!(sink.handle_hello(hello, 0), Err(error));
    }
    assert!(sink.poll_transmit().is_none());
    assert_eq!(
        sink.handle_hello(hello(SOURCE, LOCAL, PROTOCOL_VERSION + 1), 0),
        Ok(())
    );
    assert_eq!(
        sink.poll_transmit(),
        Some(Message::HelloAck(HelloAck {
            site: LOCAL,
            protocol_version: PROTOCOL_VERSION,
            cursors: vec![(PartitionId(3), 7)],
        }))
    );
    // The restored cursor deduplicates resends.
    sink.handle_batch(batch(1, vec![rec(3, 6, 7), rec(3, 7, 8)]), 0)
        .ok();
    assert_eq!(apply_all(&mut sink, 0), vec![(3, 8)]);
}

#[test]
fn batches_from_another_source_are_refused() {
    let mut sink = Sink::new(LOCAL, SOURCE, limits());
    let mut wrong = batch(1, vec![rec(0, 0, 1)]);
    wrong.source = SiteId(7);
    assert_eq!(
        sink.handle_batch(wrong, 0),
        Err(SinkError::WrongSource {
            expected: SOURCE,
            got: SiteId(7)
        })
    );
    assert!(sink.poll_apply().is_none());
}
