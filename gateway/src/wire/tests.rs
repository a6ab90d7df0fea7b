use super::*;
use bytes::Bytes;
use proptest::prelude::*;
use tern_conflict::{HlcTimestamp, PnCounter, SiteId, Value, Version, VersionVector, Versioned};
use tern_node::core::keyspace::PartitionId;

const MAX: usize = 1 << 20;

// --- generators ---

fn arb_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(|b| Value::Bytes(Bytes::from(b))),
        proptest::collection::vec((0u16..5, -1000i64..1000), 0..4).prop_map(|adds| {
            let mut counter = PnCounter::new();
            for (site, delta) in adds {
                let _ = counter.add(SiteId(site), delta);
            }
            Value::Counter(counter)
        }),
        Just(Value::Tombstone),
    ]
}

fn arb_versioned() -> impl Strategy<Value = Versioned> {
    (
        arb_value(),
        any::<u64>(),
        any::<u32>(),
        any::<u16>(),
        proptest::collection::vec((any::<u16>(), any::<u64>()), 0..4),
        proptest::option::of(any::<u64>()),
    )
        .prop_map(
            |(value, wall_ms, logical, origin, vv, expires_at_ms)| Versioned {
                value,
                version: Version {
                    hlc: HlcTimestamp::new(wall_ms, logical),
                    origin: SiteId(origin),
                    vv: vv
                        .into_iter()
                        .map(|(s, c)| (SiteId(s), c))
                        .collect::<VersionVector>(),
                },
                expires_at_ms,
            },
        )
}

pub(crate) fn arb_record() -> impl Strategy<Value = WanRecord> {
    (
        any::<u16>(),
        any::<u16>(),
        any::<u64>(),
        any::<u64>(),
        proptest::collection::vec(any::<u8>(), 0..32),
        arb_versioned(),
        any::<u64>(),
    )
        .prop_map(
            |(origin, partition, prev_seq, seq, key, entry, committed_at_ms)| WanRecord {
                origin: SiteId(origin),
                partition: PartitionId(partition),
                prev_seq,
                seq,
                key: Bytes::from(key),
                entry,
                committed_at_ms,
            },
        )
}

fn arb_cursors() -> impl Strategy<Value = Vec<(PartitionId, u64)>> {
    proptest::collection::vec((any::<u16>().prop_map(PartitionId), any::<u64>()), 0..8)
}

fn arb_sync_entries() -> impl Strategy<Value = Vec<SyncEntry>> {
    proptest::collection::vec(
        (
            proptest::collection::vec(any::<u8>(), 0..16),
            arb_versioned(),
        )
            .prop_map(|(key, entry)| SyncEntry {
                key: Bytes::from(key),
                entry,
            }),
        0..4,
    )
}

fn arb_params() -> impl Strategy<Value = DigestParams> {
    (any::<u64>(), any::<u64>(), any::<u8>(), any::<u8>()).prop_map(
        |(as_of_ms, tombstone_retention_ms, leaf_bits, fanout_bits)| DigestParams {
            as_of_ms,
            tombstone_retention_ms,
            leaf_bits,
            fanout_bits,
        },
    )
}

fn arb_digest() -> impl Strategy<Value = Digest> {
    any::<[u8; 32]>().prop_map(Digest)
}

/// The repair kinds (protocol version 2).
fn arb_sync_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (
            any::<u64>(),
            any::<u16>(),
            arb_params(),
            any::<u8>(),
            proptest::collection::vec(any::<u64>(), 0..5),
            proptest::option::of(arb_digest()),
        )
            .prop_map(|(session, p, params, level, nodes, root)| {
                Message::DigestRequest(DigestRequest {
                    session,
                    partition: PartitionId(p),
                    params,
                    level,
                    nodes,
                    root,
                })
            }),
        (
            any::<u64>(),
            any::<u16>(),
            any::<u8>(),
            proptest::collection::vec(any::<u64>(), 0..3),
            proptest::collection::vec(arb_digest(), 0..5),
            any::<bool>(),
        )
            .prop_map(|(session, p, level, nodes, hashes, in_sync)| {
                Message::DigestReply(DigestReply {
                    session,
                    partition: PartitionId(p),
                    level,
                    nodes,
                    hashes,
                    in_sync,
                })
            }),
        (
            any::<u64>(),
            any::<u16>(),
            arb_params(),
            any::<u32>(),
            proptest::collection::vec((any::<u64>(), any::<u64>()), 0..3),
            arb_sync_entries(),
            any::<bool>(),
        )
            .prop_map(|(session, p, params, request, ranges, entries, last)| {
                Message::RangeRequest(RangeRequest {
                    session,
                    partition: PartitionId(p),
                    params,
                    request,
                    ranges: ranges
                        .into_iter()
                        .map(|(from, to)| PositionRange { from, to })
                        .collect(),
                    entries,
                    last,
                })
            }),
        (
            any::<u64>(),
            any::<u16>(),
            any::<u32>(),
            arb_sync_entries(),
            any::<bool>()
        )
            .prop_map(|(session, p, request, entries, done)| {
                Message::RangeEntries(RangeEntries {
                    session,
                    partition: PartitionId(p),
                    request,
                    entries,
                    done,
                })
            }),
    ]
}

fn arb_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        arb_sync_message(),
        (any::<u16>(), any::<u16>(), any::<u16>()).prop_map(|(s, t, v)| Message::Hello(Hello {
            site: SiteId(s),
            target: SiteId(t),
            protocol_version: v,
        })),
        (any::<u16>(), any::<u16>(), arb_cursors()).prop_map(|(s, v, cursors)| {
            Message::HelloAck(HelloAck {
                site: SiteId(s),
                protocol_version: v,
                cursors,
            })
        }),
        (
            any::<u16>(),
            any::<u64>(),
            proptest::collection::vec(arb_record(), 0..6)
        )
            .prop_map(|(s, batch_id, records)| Message::Batch(Batch {
                source: SiteId(s),
                batch_id,
                records,
            })),
        (
            any::<u16>(),
            proptest::option::of(any::<u64>()),
            arb_cursors()
        )
            .prop_map(|(s, batch_id, cursors)| Message::Ack(Ack {
                source: SiteId(s),
                batch_id,
                cursors,
            })),
    ]
}

proptest! {
    #[test]
    fn every_message_round_trips(message in arb_message()) {
        let frame = encode(&message, MAX).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&frame[..4], b"TRNW");
        prop_assert_eq!(frame[6], message.kind() as u8);
        prop_assert_eq!(decode(&frame, MAX), Ok(message));
    }

    #[test]
    fn the_stream_decoder_reassembles_frames_split_anywhere(
        messages in proptest::collection::vec(arb_message(), 1..5),
        cuts in proptest::collection::vec(0usize..4096, 0..12),
    ) {
        let mut stream = Vec::new();
        for message in &messages {
            encode_into(message, MAX, &mut stream).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (stream.len() + 1)).collect();
        cuts.push(stream.len());
        cuts.sort_unstable();
        let mut decoder = FrameDecoder::new(MAX);
        let mut decoded = Vec::new();
        let mut from = 0;
        for cut in cuts {
            decoder.push(&stream[from..cut]);
            from = cut;
            while let Some(message) = decoder.next_message().map_err(|e| TestCaseError::fail(e.to_string()))? {
                decoded.push(message);
            }
        }
        prop_assert_eq!(decoded, messages);
        prop_assert_eq!(decoder.buffered_bytes(), 0);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode(&bytes, MAX);
        let mut decoder = FrameDecoder::new(MAX);
        decoder.push(&bytes);
        while let Ok(Some(_)) = decoder.next_message() {}
    }

    #[test]
    fn corrupted_frames_never_panic(
        message in arb_message(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        keep_header in any::<bool>(),
    ) {
        let mut frame = encode(&message, MAX).map_err(|e| TestCaseError::fail(e.to_string()))?;
        for (index, byte) in flips {
            let at = index.index(frame.len());
            // Half the time keep the header intact so corruption reaches the postcard payload.
            if keep_header && at < HEADER_BYTES { continue; }
            frame[at] = byte;
        }
        let _ = decode(&frame, MAX);
        let mut decoder = FrameDecoder::new(MAX);
        decoder.push(&frame);
        let _ = decoder.next_message();
    }
}

fn hello() -> Message {
    Message::Hello(Hello {
        site: SiteId(1),
        target: SiteId(2),
        protocol_version: PROTOCOL_VERSION,
    })
}

fn with_header(magic: &[u8; 4], version: u16, kind: u8, len: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = magic.to_vec();
    out.extend_from_slice(&version.to_le_bytes());
    out.push(kind);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

#[test]
fn malformed_frames_are_rejected_with_the_reason() {
    let good = encode(&hello(), MAX).unwrap_or_default();
    let payload = good[HEADER_BYTES..].to_vec();
    let len = payload.len() as u32;
    let mut trailing = good.clone();
    trailing.extend_from_slice(b"xy");
    let mut long_payload = payload.clone();
    long_payload.push(0);
    let cases: Vec<(&str, Vec<u8>, WireError)> = vec![
        (
            "bad magic",
            with_header(b"HTTP", 1, 1, len, &payload),
            WireError::BadMagic { found: *b"HTTP" },
        ),
        (
            "bad magic, short input",
            b"TRX".to_vec(),
            WireError::BadMagic {
                found: [b'T', b'R', b'X', 0],
            },
        ),
        (
            "unknown format version",
            with_header(b"TRNW", 2, 1, len, &payload),
            WireError::UnsupportedVersion { found: 2 },
        ),
        (
            "unknown kind",
            with_header(b"TRNW", 1, 42, len, &payload),
            WireError::UnknownKind(42),
        ),
        (
            "kind zero",
            with_header(b"TRNW", 1, 0, len, &payload),
            WireError::UnknownKind(0),
        ),
        (
            "oversized length",
            with_header(b"TRNW", 1, 3, u32::MAX, &[]),
            WireError::FrameTooLarge {
                len: u64::from(u32::MAX) + HEADER_BYTES as u64,
                max: MAX,
            },
        ),
        (
            "trailing garbage after the frame",
            trailing,
            WireError::TrailingBytes { count: 2 },
        ),
        (
            "trailing bytes inside the payload",
            with_header(b"TRNW", 1, 1, len + 1, &long_payload),
            WireError::PayloadTrailingBytes {
                kind: MessageKind::Hello,
                count: 1,
            },
        ),
        (
            "truncated payload",
            good[..good.len() - 1].to_vec(),
            WireError::Truncated {
                needed: good.len() as u64,
                available: good.len() - 1,
            },
        ),
        (
            "truncated header",
            good[..5].to_vec(),
            WireError::Truncated {
                needed: HEADER_BYTES as u64,
                available: 5,
            },
        ),
        (
            "payload of another kind",
            with_header(b"TRNW", 1, 3, 1, &[0x01]),
            WireError::Payload {
                kind: MessageKind::Batch,
                source: postcard::Error::DeserializeUnexpectedEnd,
            },
        ),
    ];
    for (name, bytes, expected) in cases {
        assert_eq!(decode(&bytes, MAX), Err(expected), "{name}");
    }
}

#[test]
fn the_stream_decoder_fails_fast_and_stays_failed() {
    // Bad magic is reported from the first bytes, without waiting for a whole header.
    let mut decoder = FrameDecoder::new(MAX);
    decoder.push(b"GET ");
    let error = WireError::BadMagic { found: *b"GET " };
    assert_eq!(decoder.next_message(), Err(error.clone()));
    decoder.push(&encode(&hello(), MAX).unwrap_or_default());
    assert_eq!(
        decoder.next_message(),
        Err(error),
        "framing is lost for good"
    );

    // An oversized length is refused as soon as the header is in, before any payload.
    let mut decoder = FrameDecoder::new(1024);
    decoder.push(&with_header(b"TRNW", 1, 3, 5_000, &[]));
    assert_eq!(
        decoder.next_message(),
        Err(WireError::FrameTooLarge {
            len: 5_000 + HEADER_BYTES as u64,
            max: 1024
        })
    );
    assert_eq!(decoder.buffered_bytes(), 0);

    // A partial header that is fine so far just waits.
    let mut decoder = FrameDecoder::new(MAX);
    decoder.push(b"TRNW\x01\x00\x03");
    assert_eq!(decoder.next_message(), Ok(None));
}

#[test]
fn encoding_refuses_frames_over_the_limit_and_leaves_the_buffer_alone() {
    let batch = Message::Batch(Batch {
        source: SiteId(1),
        batch_id: 1,
        records: vec![],
    });
    let mut out = b"prefix".to_vec();
    let result = encode_into(&batch, HEADER_BYTES + 2, &mut out);
    assert_eq!(
        result,
        Err(EncodeError::FrameTooLarge {
            kind: MessageKind::Batch,
            len: HEADER_BYTES + 3,
            max: HEADER_BYTES + 2
        })
    );
    assert_eq!(out, b"prefix");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

/// A one-record batch, field by field.
#[rustfmt::skip]
const GOLDEN_BATCH: &str = concat!(
    "54524e57", "0100", "03", "2c000000",   // magic, format 1, Batch, 44 bytes of payload
    "01", "09", "01",                       // source 1, batch 9, 1 record
    "01", "07", "29", "2a", "036b6579",     // origin, partition, prev_seq 41, seq 42, key
    "00", "0376616c",                       // Value::Bytes "val"
    "80d095ffbc31", "03", "01",             // hlc wall_ms, logical, origin
    "02", "010002", "030001",               // vv {site 1/0: 2, site 3/0: 1}
    "01e0a499ffbc31", "80d095ffbc31",       // expires_at_ms Some(..), committed_at_ms
);

/// The wire format pinned byte for byte: if this fails, the format changed. That needs a new
/// message kind or a version bump (`PROTOCOL_VERSION` when what records hold changes), not just
/// a new golden string.
#[test]
fn golden_frames() {
    let mut vv = VersionVector::new();
    vv.increment(SiteId(1));
    vv.increment(SiteId(1));
    vv.increment(SiteId(3));
    let record = WanRecord {
        origin: SiteId(1),
        partition: PartitionId(7),
        prev_seq: 41,
        seq: 42,
        key: Bytes::from_static(b"key"),
        entry: Versioned {
            value: Value::Bytes(Bytes::from_static(b"val")),
            version: Version {
                hlc: HlcTimestamp::new(1_700_000_000_000, 3),
                origin: SiteId(1),
                vv,
            },
            expires_at_ms: Some(1_700_000_060_000),
        },
        committed_at_ms: 1_700_000_000_000,
    };
    let mut cases: Vec<(Message, &str)> = vec![
        (
            // Protocol version 1 spelled out: these bytes pin the format, not the constant.
            Message::Hello(Hello {
                site: SiteId(1),
                target: SiteId(2),
                protocol_version: 1,
            }),
            "54524e5701000103000000010201",
        ),
        (
            Message::HelloAck(HelloAck {
                site: SiteId(2),
                protocol_version: 1,
                cursors: vec![(PartitionId(7), 42), (PartitionId(300), 1)],
            }),
            "54524e5701000208000000020102072aac0201",
        ),
        (
            Message::Batch(Batch {
                source: SiteId(1),
                batch_id: 9,
                records: vec![record],
            }),
            GOLDEN_BATCH,
        ),
        (
            Message::Ack(Ack {
                source: SiteId(1),
                batch_id: Some(9),
                cursors: vec![(PartitionId(7), 42)],
            }),
            "54524e570100040600000001010901072a",
        ),
        (
            Message::Ack(Ack {
                source: SiteId(1),
                batch_id: None,
                cursors: vec![],
            }),
            "54524e5701000403000000010000",
        ),
    ];
    cases.extend(golden_sync_frames());
    let actual: Vec<String> = cases
        .iter()
        .map(|(message, _)| hex(&encode(message, MAX).unwrap_or_default()))
        .collect();
    let expected: Vec<&str> = cases.iter().map(|(_, golden)| *golden).collect();
    assert_eq!(actual, expected);
    for (message, golden) in cases {
        assert_eq!(
            decode(&hex_bytes(golden), MAX),
            Ok(message),
            "golden decodes"
        );
    }
}

const PARAMS: DigestParams = DigestParams {
    as_of_ms: 1_000,
    tombstone_retention_ms: 300,
    leaf_bits: 16,
    fanout_bits: 4,
};

fn golden_entry() -> SyncEntry {
    SyncEntry {
        key: Bytes::from_static(b"k"),
        entry: Versioned {
            value: Value::Tombstone,
            // Spelled out (not `Version::first`): the bytes pin the format, not how a write
            // numbers its version vector.
            version: Version {
                hlc: HlcTimestamp::new(5, 0),
                origin: SiteId(2),
                vv: [(SiteId(2), 1)].into_iter().collect(),
            },
            expires_at_ms: Some(7),
        },
    }
}

/// Kinds 5–8 (protocol version 2), field by field.
#[rustfmt::skip]
fn golden_sync_frames() -> Vec<(Message, &'static str)> {
    let digest = Digest([0xab; 32]);
    let digest_hex = "ab".repeat(32);
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    vec![
        (
            Message::DigestRequest(DigestRequest {
                session: 3,
                partition: PartitionId(7),
                params: PARAMS,
                level: 0,
                nodes: vec![0],
                root: Some(digest),
            }),
            leak(format!(
                "{}{}",
                concat!(
                    "54524e57", "0100", "05", "2c000000",  // DigestRequest, 44 bytes
                    "03", "07",                           // session 3, partition 7
                    "e807", "ac02", "10", "04",           // as_of 1000, retention 300, 16, 4
                    "00", "0100",                         // level 0, nodes [0]
                    "01",                                 // root: Some(..)
                ),
                digest_hex
            )),
        ),
        (
            Message::DigestReply(DigestReply {
                session: 3,
                partition: PartitionId(7),
                level: 0,
                nodes: vec![],
                hashes: vec![],
                in_sync: true,
            }),
            concat!(
                "54524e57", "0100", "06", "06000000",
                "03", "07", "00", "00", "00", "01",      // level 0, no nodes, no hashes, in sync
            ),
        ),
        (
            Message::RangeRequest(RangeRequest {
                session: 3,
                partition: PartitionId(7),
                params: PARAMS,
                request: 1,
                ranges: vec![PositionRange { from: 0, to: 16 }],
                entries: vec![golden_entry()],
                last: true,
            }),
            concat!(
                "54524e57", "0100", "07", "1a000000",
                "03", "07", "e807", "ac02", "10", "04",
                "01", "01", "0010",                      // request 1, ranges [0..16]
                "01", "016b",                            // 1 entry, key "k"
                "02", "0500", "02", "01020001", "0107",  // tombstone, hlc (5,0), origin 2, vv {2/0:1}, expires 7
                "01",                                    // last
            ),
        ),
        (
            Message::RangeEntries(RangeEntries {
                session: 3,
                partition: PartitionId(7),
                request: 1,
                entries: vec![],
                done: true,
            }),
            "54524e57010008050000000307010001",
        ),
    ]
}

#[test]
fn kinds_introduced_in_version_2_are_the_sync_kinds() {
    let v1: Vec<MessageKind> = MessageKind::ALL
        .into_iter()
        .filter(|k| k.introduced_in() == 1)
        .collect();
    assert_eq!(
        v1,
        vec![
            MessageKind::Hello,
            MessageKind::HelloAck,
            MessageKind::Batch,
            MessageKind::Ack
        ]
    );
    assert!(
        MessageKind::ALL
            .into_iter()
            .all(|k| k.introduced_in() <= PROTOCOL_VERSION)
    );
    for retired_or_reserved in 9..=15 {
        assert_eq!(
            MessageKind::from_byte(retired_or_reserved),
            None,
            "9-11 are retired (never sent by any release), 12-15 reserved"
        );
    }
}

#[test]
fn frames_of_the_retired_snapshot_kinds_are_refused_as_unknown() {
    // What a kind-9 `SnapshotRequest` looked like: decoding names the kind, never guesses.
    let retired = hex_bytes("54524e5701000905000000090201ac02");
    assert_eq!(decode(&retired, MAX), Err(WireError::UnknownKind(9)));
}
