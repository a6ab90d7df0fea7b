//! What a repair digest covers, and how it is hashed.
//!
//! # The hash
//!
//! SHA-256 (through `ring`, already in the tree for TLS): a standard, platform- and
//! process-independent function, fast with hardware support, and collision resistant, so a
//! matching digest means matching data even when clients choose keys and values. (A seeded or
//! non-cryptographic hash would either differ between processes or let crafted data hide a
//! divergence.) Inputs are our own explicit byte encoding, not a serde format, so the digest
//! cannot change with a library upgrade.
//!
//! # What is hashed: the entry's view at `as_of_ms`
//!
//! Expiry turns a value into a tombstone *locally*, without a new version, whenever a replica
//! gets to it, and tombstones are purged after `tombstone_retention_ms`. Two converged sites may
//! therefore hold, for the same write, an unswept expired value at one and a tombstone (or
//! nothing) at the other. Both sides of a session judge every entry at the initiator's
//! `as_of_ms` with the same retention:
//!
//! | stored entry | view |
//! |---|---|
//! | value, no deadline or deadline after `as_of_ms` | the value, its version and deadline |
//! | value expired at `d <= as_of_ms`, `d + retention > as_of_ms` | tombstone with its version |
//! | tombstone purgeable at `p > as_of_ms` | tombstone with its version |
//! | value expired with `d + retention <= as_of_ms`, or tombstone with `p <= as_of_ms` | absent |
//!
//! A tombstone's own deadline (its purge time) is bookkeeping and not hashed. Converged sites
//! with the same retention thus compare equal however far their sweeps got.
use crate::wire::{Digest, DigestParams};
use ring::digest::{Context, SHA256};
use tern_conflict::{Value, Version, Versioned};

/// Domain tags, so a leaf can never be mistaken for an inner node.
const LEAF_TAG: u8 = 0;
const INNER_TAG: u8 = 1;

/// An entry as a digest sees it (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View<'a> {
    Live(&'a Versioned),
    Tombstone(&'a Version),
}

/// `entry` judged at `params.as_of_ms`; `None` if it counts as absent.
pub fn view<'a>(entry: &'a Versioned, params: &DigestParams) -> Option<View<'a>> {
    let as_of = params.as_of_ms;
    match (&entry.value, entry.expires_at_ms) {
        (Value::Tombstone, Some(purge_at)) if purge_at <= as_of => None,
        (Value::Tombstone, _) => Some(View::Tombstone(&entry.version)),
        (_, Some(deadline)) if deadline <= as_of => {
            let purge_at = deadline.saturating_add(params.tombstone_retention_ms);
            (purge_at > as_of).then_some(View::Tombstone(&entry.version))
        }
        _ => Some(View::Live(entry)),
    }
}

/// The digest of one entry's view, key included.
pub fn entry_digest(key: &[u8], view: View<'_>) -> Digest {
    let mut out = Vec::with_capacity(64 + key.len());
    put_bytes(&mut out, key);
    match view {
        View::Live(entry) => {
            match &entry.value {
                Value::Bytes(bytes) => {
                    out.push(0);
                    put_bytes(&mut out, bytes);
                }
                Value::Counter(counter) => {
                    out.push(1);
                    let writers: Vec<_> = counter.writers().collect();
                    put_len(&mut out, writers.len());
                    for (writer, counts) in writers {
                        out.extend_from_slice(&writer.site.0.to_le_bytes());
                        out.extend_from_slice(&writer.lineage.to_le_bytes());
                        out.extend_from_slice(&counts.added.to_le_bytes());
                        out.extend_from_slice(&counts.subtracted.to_le_bytes());
                    }
                }
                // A live view never holds a tombstone; encode it as one anyway.
                Value::Tombstone => out.push(2),
            }
            put_version(&mut out, &entry.version);
            match entry.expires_at_ms {
                None => out.push(0),
                Some(at) => {
                    out.push(1);
                    out.extend_from_slice(&at.to_le_bytes());
                }
            }
        }
        View::Tombstone(version) => {
            out.push(2);
            put_version(&mut out, version);
        }
    }
    sha256(&[&out])
}

/// A leaf: its entries' digests in key order. No entries: [`Digest::EMPTY`].
pub fn leaf_digest(entry_digests_in_key_order: &[Digest]) -> Digest {
    if entry_digests_in_key_order.is_empty() {
        return Digest::EMPTY;
    }
    let mut context = Context::new(&SHA256);
    context.update(&[LEAF_TAG]);
    for digest in entry_digests_in_key_order {
        context.update(&digest.0);
    }
    finish(context)
}

/// An inner node: all its children's digests in order. All empty: [`Digest::EMPTY`].
pub fn inner_digest(children: &[Digest]) -> Digest {
    if children.iter().all(|d| *d == Digest::EMPTY) {
        return Digest::EMPTY;
    }
    let mut context = Context::new(&SHA256);
    context.update(&[INNER_TAG]);
    for digest in children {
        context.update(&digest.0);
    }
    finish(context)
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(&(len as u64).to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_len(out, bytes.len());
    out.extend_from_slice(bytes);
}

fn put_version(out: &mut Vec<u8>, version: &Version) {
    out.extend_from_slice(&version.hlc.wall_ms.to_le_bytes());
    out.extend_from_slice(&version.hlc.logical.to_le_bytes());
    out.extend_from_slice(&version.origin.0.to_le_bytes());
    let pairs: Vec<_> = version.vv.iter().collect();
    put_len(out, pairs.len());
    for (writer, count) in pairs {
        out.extend_from_slice(&writer.site.0.to_le_bytes());
        out.extend_from_slice(&writer.lineage.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
    }
}

fn sha256(parts: &[&[u8]]) -> Digest {
    let mut context = Context::new(&SHA256);
    for part in parts {
        context.update(part);
    }
    finish(context)
}

fn finish(context: Context) -> Digest {
    let mut out = [0u8; 32];
    out.copy_from_slice(context.finish().as_ref());
    Digest(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tern_conflict::{HlcTimestamp, SiteId};

    const PARAMS: DigestParams = DigestParams {
        as_of_ms: 1_000,
        tombstone_retention_ms: 100,
        leaf_bits: 8,
        fanout_bits: 4,
    };

    fn entry(value: Value, expires_at_ms: Option<u64>) -> Versioned {
        Versioned {
            value,
            // Spelled out (not `Version::first`): the golden digest pins the encoding, not how
            // a write numbers its version vector.
            version: Version {
                hlc: HlcTimestamp::new(10, 0),
                origin: SiteId(1),
                vv: [(SiteId(1), 1)].into_iter().collect(),
            },
            expires_at_ms,
        }
    }

    fn digest_of(e: &Versioned) -> Option<Digest> {
        view(e, &PARAMS).map(|v| entry_digest(b"k", v))
    }

    #[test]
    fn views_follow_the_table() {
        let value = || Value::Bytes(Bytes::from_static(b"v"));
        let tombstone_view = Some(entry_digest(
            b"k",
            View::Tombstone(&entry(Value::Tombstone, None).version),
        ));
        // (stored entry, expected digest)
        let cases = vec![
            (entry(value(), None), digest_of(&entry(value(), None))),
            (
                entry(value(), Some(1_001)),
                digest_of(&entry(value(), Some(1_001))),
            ),
            (entry(value(), Some(1_000)), tombstone_view),
            (entry(value(), Some(901)), tombstone_view),
            (entry(value(), Some(900)), None),
            (entry(Value::Tombstone, Some(1_001)), tombstone_view),
            (entry(Value::Tombstone, Some(5_000)), tombstone_view),
            (entry(Value::Tombstone, Some(1_000)), None),
        ];
        for (i, (stored, expected)) in cases.into_iter().enumerate() {
            assert_eq!(digest_of(&stored), expected, "case {i}");
        }
        assert_ne!(
            digest_of(&entry(value(), None)),
            digest_of(&entry(value(), Some(2_000))),
            "a live value's deadline is part of it"
        );
    }

    /// Pinned bytes: the digest must be the same on every platform and build.
    #[test]
    fn digests_are_stable() {
        let live = entry(Value::Bytes(Bytes::from_static(b"v")), None);
        let d = entry_digest(b"k", View::Live(&live));
        let hex: String = d.0.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, GOLDEN_ENTRY_DIGEST);
        assert_eq!(leaf_digest(&[]), Digest::EMPTY);
        assert_eq!(inner_digest(&[Digest::EMPTY; 16]), Digest::EMPTY);
        assert_ne!(leaf_digest(&[d]), inner_digest(&[d]), "domain separated");
    }

    // Computed independently: sha256 of the encoding spelled out in `entry_digest`.
    const GOLDEN_ENTRY_DIGEST: &str =
        "8c47ba5622af6768a7dba3db2e06f856f166859aea0eec408ef276b84227b016";
}
