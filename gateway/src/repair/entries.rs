//! Reading a replica's entries into bounded messages (repair ranges, bootstrap chunks).
use super::replica::Replica;
use crate::wire::{PositionRange, SyncEntry};
use bytes::Bytes;
use tern_conflict::Versioned;

/// Bytes a message adds around its entries (frame header, ids, ranges), rounded up.
pub(crate) const MESSAGE_OVERHEAD_BYTES: usize = 64;

/// Encoded size of one entry in a message.
pub(crate) fn entry_bytes(key: &Bytes, entry: &Versioned) -> usize {
    // `SyncEntry` encodes as its fields in order, like this tuple. Sizing into a counter
    // cannot fail for these types; a failure would read as huge.
    postcard::experimental::serialized_size(&(key, entry)).unwrap_or(usize::MAX)
}

/// Entries read from the start of a list of ranges, in one pass over the replica.
#[derive(Debug, Default)]
pub(crate) struct MultiChunk {
    pub entries: Vec<SyncEntry>,
    pub bytes: usize,
    /// The parts of the ranges covered, in order: a prefix of them, the last one possibly cut
    /// short at the position of the first entry left out.
    pub covered: Vec<PositionRange>,
}

/// The entries of several ascending, disjoint ranges in scan order, from their start, while
/// they fit in `bytes_max`, with one walk of the replica (whose range lookups may cost a scan
/// from the start). Entries sharing a position are never split (a range boundary could not
/// fall between them).
pub(crate) fn read_ranges(
    replica: &dyn Replica,
    ranges: &[PositionRange],
    bytes_max: usize,
    force_first: bool,
) -> MultiChunk {
    let mut out = MultiChunk::default();
    let (Some(first), Some(last)) = (ranges.first(), ranges.last()) else {
        return out;
    };
    let span = PositionRange {
        from: first.from,
        to: last.to,
    };
    let mut index = 0;
    let mut cut = None;
    let mut last_position = None;
    replica.visit(span, &mut |position, key, entry| {
        while ranges.get(index).is_some_and(|r| position >= r.to) {
            index += 1;
        }
        let Some(range) = ranges.get(index) else {
            return false;
        };
        if position < range.from {
            return true;
        }
        let size = entry_bytes(key, entry);
        let same_position = last_position == Some(position);
        let first = force_first && last_position.is_none();
        if !same_position && !first && out.bytes.saturating_add(size) > bytes_max {
            cut = Some((index, position));
            return false;
        }
        out.bytes = out.bytes.saturating_add(size);
        out.entries.push(SyncEntry {
            key: key.clone(),
            entry: entry.clone(),
        });
        last_position = Some(position);
        true
    });
    match cut {
        None => out.covered = ranges.to_vec(),
        Some((index, position)) => {
            out.covered = ranges[..index].to_vec();
            if position > ranges[index].from {
                out.covered.push(PositionRange {
                    from: ranges[index].from,
                    to: position,
                });
            }
        }
    }
    out
}

/// Split `entries` into groups of at most `bytes_max` encoded bytes (each group at least one
/// entry).
pub(crate) fn split_by_bytes(entries: Vec<SyncEntry>, bytes_max: usize) -> Vec<Vec<SyncEntry>> {
    let mut groups = vec![Vec::new()];
    let mut bytes = 0usize;
    for entry in entries {
        let size = entry_bytes(&entry.key, &entry.entry);
        let current = groups
            .last_mut()
            .filter(|g| g.is_empty() || bytes + size <= bytes_max);
        match current {
            Some(group) => {
                bytes += size;
                group.push(entry);
            }
            None => {
                bytes = size;
                groups.push(vec![entry]);
            }
        }
    }
    groups
}
