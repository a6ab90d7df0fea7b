use super::*;

const LOCAL: SiteId = SiteId(1);
const TARGET: SiteId = SiteId(2);
const OTHER: SiteId = SiteId(3);

pub(crate) mod support {
    use crate::wire::WanRecord;
    use bytes::Bytes;
    use tern_conflict::{HlcTimestamp, SiteId, Value, Version, Versioned};
    use tern_node::core::keyspace::PartitionId;

    /// A small record of `partition` at `seq`, written at `origin`.
    pub(crate) fn record(
        origin: SiteId,
        partition: u16,
        seq: u64,
        value_bytes: usize,
    ) -> WanRecord {
        WanRecord {
            origin,
            partition: PartitionId(partition),
            prev_seq: 0,
            seq,
            key: Bytes::from(format!("k{partition}-{seq}")),
            entry: Versioned {
                value: Value::Bytes(Bytes::from(vec![b'v'; value_bytes])),
                version: Version::first(origin, HlcTimestamp::new(seq, 0)),
                expires_at_ms: None,
            },
            committed_at_ms: seq,
        }
    }
}
use support::record;

/// Partial batches always wait here, so tests see batch boundaries by time (the idle rule has
/// its own test).
fn limits() -> GatewayLimits {
    GatewayLimits {
        batch_records_max: 4,
        batch_wait_ms_max: 5,
        batch_send_when_idle: false,
        ack_timeout_ms: 100,
        ..GatewayLimits::default()
    }
}

fn connected(limits: GatewayLimits) -> Delegator {
    let mut d = Delegator::new(LOCAL, TARGET, limits);
    d.handle_connected(0);
    assert!(matches!(d.poll_transmit(), Some(Message::Hello(_))));
    d
}

/// Drain the outbox: the batches' records as `(partition, prev_seq, seq)`, one vec per batch.
fn sent(d: &mut Delegator) -> Vec<Vec<(u16, u64, u64)>> {
    let mut batches = Vec::new();
    while let Some(message) = d.poll_transmit() {
        if let Message::Batch(batch) = message {
            batches.push(
                batch
                    .records
                    .iter()
                    .map(|r| (r.partition.0, r.prev_seq, r.seq))
                    .collect(),
            );
        }
    }
    batches
}

fn ack(cursors: &[(u16, u64)]) -> Ack {
    Ack {
        source: LOCAL,
        batch_id: None,
        cursors: cursors.iter().map(|&(p, s)| (PartitionId(p), s)).collect(),
    }
}

#[test]
fn a_full_batch_leaves_at_once_and_a_partial_one_after_the_wait() {
    let mut d = connected(limits());
    for seq in 1..=7 {
        assert_eq!(d.handle_record(record(LOCAL, 0, seq, 8), 10), Ok(()));
    }
    assert_eq!(
        sent(&mut d),
        vec![vec![(0, 0, 1), (0, 1, 2), (0, 2, 3), (0, 3, 4)]]
    );
    assert_eq!(
        d.poll_timeout(),
        Some(15),
        "the rest waits for batch_wait_ms_max"
    );
    d.handle_timeout(14);
    assert!(sent(&mut d).is_empty());
    d.handle_timeout(15);
    assert_eq!(sent(&mut d), vec![vec![(0, 4, 5), (0, 5, 6), (0, 6, 7)]]);
}

#[test]
fn on_an_idle_link_a_partial_batch_leaves_at_once_and_then_gathers() {
    let mut d = connected(GatewayLimits {
        batch_send_when_idle: true,
        ..limits()
    });
    d.handle_record(record(LOCAL, 3, 1, 8), 1_000).ok();
    assert_eq!(sent(&mut d), vec![vec![(3, 0, 1)]], "idle link: no wait");
    for seq in 2..=3 {
        d.handle_record(record(LOCAL, 3, seq, 8), 1_001).ok();
    }
    assert!(
        sent(&mut d).is_empty(),
        "a batch in flight: the next records gather"
    );
    assert!(d.handle_ack(ack(&[(3, 1)]), 1_002).is_ok());
    assert_eq!(
        sent(&mut d),
        vec![vec![(3, 1, 2), (3, 2, 3)]],
        "the ack made the link idle: what gathered leaves together"
    );
}

#[test]
fn a_lone_record_leaves_within_the_wait() {
    let mut d = connected(limits());
    d.handle_record(record(LOCAL, 3, 1, 8), 1_000).ok();
    assert!(sent(&mut d).is_empty());
    let due = d.poll_timeout().unwrap_or(u64::MAX);
    assert!(due <= 1_005, "due at {due}");
    d.handle_timeout(due);
    assert_eq!(sent(&mut d), vec![vec![(3, 0, 1)]]);
}

#[test]
fn batches_close_by_bytes() {
    let one = postcard::experimental::serialized_size(&record(LOCAL, 0, 1, 100)).unwrap_or(0);
    let mut d = connected(GatewayLimits {
        batch_records_max: 100,
        batch_bytes_max: 2 * one + 2,
        ..limits()
    });
    for seq in 1..=5 {
        d.handle_record(record(LOCAL, 0, seq, 100), 0).ok();
    }
    // Two records fill the byte budget; the fifth waits for the timer.
    let sizes: Vec<usize> = sent(&mut d).iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![2, 2]);
    d.handle_timeout(5);
    assert_eq!(
        sent(&mut d).iter().map(Vec::len).collect::<Vec<_>>(),
        vec![1]
    );
}

#[test]
fn the_inflight_window_blocks_and_acks_reopen_it() {
    let mut d = connected(GatewayLimits {
        batch_records_max: 1,
        inflight_batches_max: 2,
        ..limits()
    });
    for seq in 1..=5 {
        d.handle_record(record(LOCAL, 0, seq, 8), 0).ok();
    }
    assert_eq!(sent(&mut d).len(), 2);
    assert!(d.is_blocked());
    assert_eq!(d.backlog_records(), 5);
    assert_eq!(d.inflight_batches(), 2);
    assert_eq!(
        d.poll_timeout(),
        Some(100),
        "only the ack timeout is pending"
    );

    d.handle_ack(ack(&[(0, 1)]), 3).ok();
    assert_eq!(sent(&mut d), vec![vec![(0, 2, 3)]]);
    assert!(d.is_blocked());
    assert_eq!(d.backlog_records(), 4);
    assert_eq!(d.stats().ack_lag_ms_last, Some(3));

    d.handle_ack(ack(&[(0, 9)]), 4).ok();
    assert_eq!(
        d.stats().ack_cursors_invalid_total,
        1,
        "9 was never handed in"
    );
    assert_eq!(d.backlog_records(), 4, "an impossible cursor frees nothing");
    d.handle_ack(ack(&[(0, 3)]), 4).ok();
    assert_eq!(sent(&mut d), vec![vec![(0, 3, 4)], vec![(0, 4, 5)]]);
    d.handle_ack(ack(&[(0, 5)]), 5).ok();
    assert!(!d.is_blocked());
    assert_eq!(
        (d.backlog_records(), d.backlog_bytes(), d.inflight_bytes()),
        (0, 0, 0)
    );
}

#[test]
fn the_inflight_byte_window_blocks_too() {
    let mut d = connected(GatewayLimits {
        batch_records_max: 1,
        inflight_bytes_max: 1,
        ..limits()
    });
    for seq in 1..=3 {
        d.handle_record(record(LOCAL, 0, seq, 8), 0).ok();
    }
    assert_eq!(sent(&mut d).len(), 1);
    assert!(d.is_blocked());
}

#[test]
fn records_from_the_target_are_never_sent_back_and_seq_skips_are_explained() {
    let mut d = connected(limits());
    for (origin, seq) in [
        (LOCAL, 1),
        (TARGET, 2),
        (OTHER, 3),
        (TARGET, 4),
        (TARGET, 5),
    ] {
        assert_eq!(d.handle_record(record(origin, 0, seq, 8), 0), Ok(()));
    }
    d.handle_record(record(LOCAL, 0, 6, 8), 0).ok();
    d.handle_timeout(5);
    let batches = sent(&mut d);
    assert_eq!(batches, vec![vec![(0, 0, 1), (0, 1, 3), (0, 3, 6)]]);
    assert_eq!(d.stats().records_filtered_total, 3);
}

#[test]
fn reconnect_resends_everything_unacked_in_order() {
    let mut d = connected(limits());
    for seq in 1..=4 {
        d.handle_record(record(LOCAL, 0, seq, 8), 0).ok();
        d.handle_record(record(LOCAL, 1, seq, 8), 0).ok();
    }
    assert_eq!(sent(&mut d).len(), 2);
    d.handle_ack(ack(&[(0, 2), (1, 3)]), 1).ok();
    d.handle_disconnected(2);
    d.handle_record(record(LOCAL, 0, 5, 8), 3).ok();
    assert!(d.poll_transmit().is_none());
    assert_eq!(d.poll_timeout(), None);

    d.handle_connected(10);
    assert!(matches!(d.poll_transmit(), Some(Message::Hello(_))));
    let batches: Vec<(u16, u64, u64)> = sent(&mut d).concat();
    assert_eq!(batches, vec![(0, 2, 3), (0, 3, 4), (1, 3, 4), (0, 4, 5)]);
    assert_eq!(d.stats().resends_total, 1);
}

#[test]
fn an_ack_timeout_resends_everything_unacked() {
    let mut d = connected(limits());
    for seq in 1..=4 {
        d.handle_record(record(LOCAL, 0, seq, 8), 0).ok();
    }
    assert_eq!(sent(&mut d).len(), 1);
    d.handle_ack(ack(&[(0, 1)]), 50).ok();
    assert_eq!(d.poll_timeout(), Some(100));
    d.handle_timeout(99);
    assert!(sent(&mut d).is_empty());
    d.handle_timeout(100);
    assert_eq!(sent(&mut d), vec![vec![(0, 1, 2), (0, 2, 3), (0, 3, 4)]]);
    assert_eq!(d.stats().ack_timeouts_total, 1);
}

#[test]
fn hello_ack_frees_what_the_target_has_and_rebases_what_it_lost() {
    let mut d = connected(limits());
    for seq in 1..=6 {
        d.handle_record(record(LOCAL, 0, seq, 8), 0).ok();
        d.handle_record(record(LOCAL, 1, seq, 8), 0).ok();
    }
    sent(&mut d);
    d.handle_ack(ack(&[(0, 4), (1, 2)]), 1).ok();
    d.handle_disconnected(2);
    d.handle_connected(3);
    sent(&mut d);
    // The target applied partition 1 up to 5 (ack lost), but lost partition 0 below 4.
    let answer = HelloAck {
        site: TARGET,
        protocol_version: PROTOCOL_VERSION,
        cursors: vec![(PartitionId(0), 1), (PartitionId(1), 5)],
    };
    assert_eq!(d.handle_hello_ack(answer, 4), Ok(()));
    assert_eq!(d.repair_needed().collect::<Vec<_>>(), vec![PartitionId(0)]);
    d.handle_timeout(5);
    let resent: Vec<(u16, u64, u64)> = sent(&mut d).concat();
    assert_eq!(resent, vec![(0, 1, 5), (0, 5, 6), (1, 5, 6)]);
    // Once the rebased record is acknowledged the stream is back to normal.
    d.handle_ack(ack(&[(0, 6), (1, 6)]), 5).ok();
    d.handle_record(record(LOCAL, 0, 7, 8), 6).ok();
    d.handle_timeout(11);
    assert_eq!(sent(&mut d), vec![vec![(0, 6, 7)]]);
    d.clear_repair(PartitionId(0));
    assert_eq!(d.repair_needed().count(), 0);
}

/// A stream that begins after the `HelloAck` (this gateway restarted and lost what it had of
/// the partition, the target's sink restarted with an older cursor) assumed the target holds
/// what precedes its first record. Checked against the answer's cursors, it chains onto what
/// the target holds and marks repair; assumed, its records were held back as gaps forever
/// (wan-chaos seed 1131).
#[test]
fn a_stream_that_starts_after_the_hello_ack_is_checked_against_its_cursors() {
    let mut d = connected(limits());
    let answer = HelloAck {
        site: TARGET,
        protocol_version: PROTOCOL_VERSION,
        cursors: vec![(PartitionId(1), 30)],
    };
    assert_eq!(d.handle_hello_ack(answer, 1), Ok(()));
    // Partition 0: the target reported nothing (0); partition 1: it holds up to 30.
    for seq in 27..=28 {
        d.handle_record(record(LOCAL, 0, seq, 8), 2).ok();
    }
    d.handle_record(record(LOCAL, 1, 31, 8), 2).ok();
    d.handle_timeout(10);
    let sent_records: Vec<(u16, u64, u64)> = sent(&mut d).concat();
    assert_eq!(sent_records, vec![(0, 0, 27), (0, 27, 28), (1, 30, 31)]);
    assert_eq!(d.repair_needed().collect::<Vec<_>>(), vec![PartitionId(0)]);
}

#[test]
fn bad_input_is_reported_and_never_stops_the_stream() {
    let mut d = connected(GatewayLimits {
        frame_bytes_max: 1_000,
        batch_bytes_max: 500,
        ..limits()
    });
    assert_eq!(d.handle_record(record(LOCAL, 0, 1, 8), 0), Ok(()));
    assert_eq!(
        d.handle_record(record(LOCAL, 0, 1, 8), 0),
        Err(RecordError::Stale {
            partition: PartitionId(0),
            seq: 1,
            last_seen: 1
        })
    );
    assert_eq!(
        d.handle_record(record(LOCAL, 0, 4, 8), 0),
        Err(RecordError::Gap {
            partition: PartitionId(0),
            expected: 2,
            got: 4
        })
    );
    assert!(matches!(
        d.handle_record(record(LOCAL, 1, 1, 2_000), 0),
        Err(RecordError::TooLarge { seq: 1, .. })
    ));
    assert_eq!(d.handle_record(record(LOCAL, 1, 2, 8), 0), Ok(()));
    d.handle_timeout(5);
    assert_eq!(sent(&mut d), vec![vec![(0, 0, 1), (0, 1, 4), (1, 0, 2)]]);
    assert_eq!(
        d.repair_needed().collect::<Vec<_>>(),
        vec![PartitionId(0), PartitionId(1)]
    );
    let stats = d.stats();
    assert_eq!(
        (
            stats.stale_records_total,
            stats.gaps_total,
            stats.oversized_records_total
        ),
        (1, 1, 1)
    );
}

#[test]
fn acks_and_answers_from_the_wrong_site_are_refused() {
    let mut d = connected(limits());
    let mut wrong = ack(&[]);
    wrong.source = OTHER;
    assert_eq!(
        d.handle_ack(wrong, 0),
        Err(AckError::WrongSource {
            expected: LOCAL,
            got: OTHER
        })
    );
    let answer = HelloAck {
        site: OTHER,
        protocol_version: PROTOCOL_VERSION,
        cursors: vec![],
    };
    assert!(matches!(
        d.handle_hello_ack(answer, 0),
        Err(HandshakeError::WrongPeer { .. })
    ));
    let answer = HelloAck {
        site: TARGET,
        protocol_version: 0,
        cursors: vec![],
    };
    assert!(matches!(
        d.handle_hello_ack(answer, 0),
        Err(HandshakeError::UnsupportedProtocol { offered: 0 })
    ));
}
