//! Key → partition mapping. Stable and documented, because every node and every site must agree
//! on it and a change would move every key:
//!
//! `slot = CRC16-XMODEM(tag) mod 16384`, exactly as Redis Cluster (so `{user1}:a` and `{user1}:b`
//! share a slot: `tag` is the text between the first `{` and the next `}` when non-empty, else the
//! whole key), then `partition = slot mod partition_count`.
use serde::{Deserialize, Serialize};
use std::fmt;

pub const SLOT_COUNT: u16 = 16384;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PartitionId(pub u16);

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyspaceError {
    #[error("partition count must be between 1 and {SLOT_COUNT}, got {0}")]
    BadPartitionCount(u32),
}

/// A keyspace's fixed partitioning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keyspace {
    partition_count: u16,
}

impl Keyspace {
    pub fn new(partition_count: u32) -> Result<Self, KeyspaceError> {
        match u16::try_from(partition_count) {
            Ok(n) if n >= 1 && n <= SLOT_COUNT => Ok(Self { partition_count: n }),
            _ => Err(KeyspaceError::BadPartitionCount(partition_count)),
        }
    }

    pub fn partition_count(&self) -> u16 {
        self.partition_count
    }

    pub fn partitions(&self) -> impl Iterator<Item = PartitionId> + use<> {
        (0..self.partition_count).map(PartitionId)
    }

    pub fn partition_of(&self, key: &[u8]) -> PartitionId {
        PartitionId(slot_of(key) % self.partition_count)
    }
}

/// Redis Cluster's hash slot of `key`.
pub fn slot_of(key: &[u8]) -> u16 {
    crc16_xmodem(hash_tag(key)) % SLOT_COUNT
}

fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        if let Some(len) = key[open + 1..].iter().position(|&b| b == b'}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// CRC-16/XMODEM (poly 0x1021, init 0), table-driven: it runs once per command on the request
/// path, where the bitwise form showed up in profiles.
fn crc16_xmodem(data: &[u8]) -> u16 {
    data.iter().fold(0u16, |crc, &byte| {
        (crc << 8) ^ CRC16_TABLE[usize::from((crc >> 8) as u8 ^ byte)]
    })
}

const CRC16_TABLE: [u16; 256] = crc16_table();

const fn crc16_table() -> [u16; 256] {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_matches_the_redis_cluster_reference_vector() {
        assert_eq!(crc16_xmodem(b"123456789"), 0x31C3);
    }

    #[test]
    fn slots_match_redis_cluster() {
        // Values documented for Redis Cluster's CLUSTER KEYSLOT.
        for (key, slot) in [
            ("foo", 12182),
            ("bar", 5061),
            ("somekey", 11058),
            ("foo{hash_tag}", 2515),
        ] {
            assert_eq!(slot_of(key.as_bytes()), slot, "slot of {key}");
        }
    }

    #[test]
    fn hash_tags_pick_the_first_non_empty_braced_section() {
        for (key, tag) in [
            ("{user1000}.following", "user1000"),
            ("foo{bar}{zap}", "bar"),
            ("foo{}{bar}", "foo{}{bar}"),
            ("foo{{bar}}zap", "{bar"),
            ("no-tag", "no-tag"),
            ("{", "{"),
        ] {
            assert_eq!(
                slot_of(key.as_bytes()),
                slot_of(tag.as_bytes()),
                "tag of {key}"
            );
        }
    }

    #[test]
    fn partition_count_is_validated() {
        assert!(Keyspace::new(0).is_err());
        assert!(Keyspace::new(16385).is_err());
        assert_eq!(Keyspace::new(16384).map(|k| k.partition_count()), Ok(16384));
    }
}
