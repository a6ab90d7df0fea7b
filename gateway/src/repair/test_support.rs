//! Shared by the repair and bootstrap tests: partition cores at two sites, seeded divergent
//! histories, and a repair session run through the real encoder.
use super::{CoreReplica, RepairResponder, RepairSession, RepairStatus};
use crate::limits::GatewayLimits;
use crate::wire::{DigestParams, Message, decode, encode};
use bytes::Bytes;
use tern_conflict::{LastWriterWins, SiteId, Versioned};
use tern_node::core::keyspace::PartitionId;
use tern_node::core::partition::{PartitionConfig, PartitionCore};
use tern_node::core::{Command, Expiry, SetCondition};
use tern_node::limits::Limits;

pub const A: SiteId = SiteId(1);
pub const B: SiteId = SiteId(2);
pub const PARTITION: PartitionId = PartitionId(5);
/// Short, so histories include purged tombstones.
pub const RETENTION_MS: u64 = 400;

pub fn core(site: SiteId) -> PartitionCore {
    PartitionCore::new(PartitionConfig {
        partition: PARTITION,
        site,
        limits: Limits {
            tombstone_retention_ms: RETENTION_MS,
            // Time in these tests is simulated; sites' clocks agree.
            hlc_offset_ms_max: u64::MAX / 4,
            ..Limits::default()
        },
        hash_seed: 7,
    })
}

/// splitmix64, so histories replay exactly.
#[derive(Debug)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

pub fn key(n: u64) -> Bytes {
    Bytes::from(format!("key:{n}"))
}

pub fn set(core: &mut PartitionCore, key: Bytes, value: &str, ttl_ms: Option<i64>, now_ms: u64) {
    let command = Command::Set {
        key,
        value: Bytes::from(value.to_string()),
        condition: SetCondition::Always,
        expiry: ttl_ms.map(Expiry::InMs),
        get: false,
    };
    core.handle_command(command, now_ms).expect("set in test");
}

pub fn del(core: &mut PartitionCore, key: Bytes, now_ms: u64) {
    core.handle_command(Command::Del { key }, now_ms)
        .expect("del in test");
}

/// Copy every entry of `from` into `to` (as replication would have).
pub fn copy_all(from: &PartitionCore, to: &mut PartitionCore, now_ms: u64) {
    let entries: Vec<(Bytes, Versioned)> = from
        .snapshot_entries()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (key, entry) in entries {
        to.apply_remote(key, entry, &LastWriterWins, now_ms);
    }
}

pub fn copy_key(from: &PartitionCore, to: &mut PartitionCore, key: &Bytes, now_ms: u64) {
    if let Some(entry) = from.entry(key).cloned() {
        to.apply_remote(key.clone(), entry, &LastWriterWins, now_ms);
    }
}

/// A random operation at one site on keys `0..keys` (plus a few only it knows).
pub fn random_op(rng: &mut Rng, core: &mut PartitionCore, keys: u64, now_ms: u64, tag: &str) {
    let k = key(rng.below(keys + keys / 10 + 1));
    match rng.below(10) {
        0..=4 => set(core, k, &format!("{tag}{now_ms}"), None, now_ms),
        5 => set(core, k, &format!("{tag}{now_ms}"), Some(30), now_ms),
        6 => set(core, k, &format!("{tag}{now_ms}"), Some(2_000), now_ms),
        _ => del(core, k, now_ms),
    }
}

/// Sweep and purge everything due at `now_ms`.
pub fn settle(core: &mut PartitionCore, now_ms: u64) {
    for _ in 0..64 {
        core.handle_tick(now_ms);
    }
}

pub fn entries(core: &PartitionCore) -> Vec<(Bytes, Versioned)> {
    core.snapshot_entries()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// What one repair session cost, counted on the wire.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cost {
    pub messages: u64,
    pub bytes: u64,
}

/// Pass a message through the real encoder and decoder.
pub fn through_wire(message: Message, limits: &GatewayLimits, cost: &mut Cost) -> Message {
    let frame = encode(&message, limits.frame_bytes_max).expect("frames fit");
    cost.messages += 1;
    cost.bytes += frame.len() as u64;
    decode(&frame, limits.frame_bytes_max).expect("frames decode")
}

/// Repair `initiator` (site A) with `responder` (site B) in one session at `as_of_ms`.
pub fn repair(
    initiator: &mut PartitionCore,
    responder: &mut PartitionCore,
    as_of_ms: u64,
    limits: &GatewayLimits,
) -> (RepairSession, RepairResponder, Cost) {
    let params = DigestParams::new(as_of_ms, RETENTION_MS, limits);
    let mut session = RepairSession::start(
        1,
        B,
        &CoreReplica::new(initiator, &LastWriterWins),
        params,
        limits,
        as_of_ms,
    )
    .expect("start repair");
    let mut answering = RepairResponder::new(limits);
    let mut cost = Cost::default();
    for _ in 0..100_000 {
        let Some(request) = session.poll_transmit() else {
            break;
        };
        let request = through_wire(request, limits, &mut cost);
        let answers = answering
            .handle_message(
                A,
                request,
                &mut CoreReplica::new(responder, &LastWriterWins),
                as_of_ms,
            )
            .expect("responder answers");
        for answer in answers {
            let answer = through_wire(answer, limits, &mut cost);
            session
                .handle_message(
                    answer,
                    &mut CoreReplica::new(initiator, &LastWriterWins),
                    as_of_ms,
                )
                .expect("initiator takes the answer");
        }
    }
    assert_eq!(session.status(), &RepairStatus::Done);
    (session, answering, cost)
}

/// Keys whose entries differ between two snapshots, with both sides (for failure messages).
pub fn differences(
    a: &[(Bytes, Versioned)],
    b: &[(Bytes, Versioned)],
) -> Vec<(Bytes, Option<Versioned>, Option<Versioned>)> {
    let a: std::collections::BTreeMap<_, _> = a.iter().cloned().collect();
    let b: std::collections::BTreeMap<_, _> = b.iter().cloned().collect();
    let keys: std::collections::BTreeSet<_> = a.keys().chain(b.keys()).cloned().collect();
    keys.into_iter()
        .filter(|k| a.get(k) != b.get(k))
        .map(|k| (k.clone(), a.get(&k).cloned(), b.get(&k).cloned()))
        .collect()
}
