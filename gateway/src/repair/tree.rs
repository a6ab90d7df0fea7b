//! The digest tree of one partition over the 48-bit scan-position space.
//!
//! Leaves are `2^leaf_bits` equal buckets of positions; each inner node has `2^fanout_bits`
//! children, so leaves sit at level `leaf_bits / fanout_bits` (the root is level 0). Only
//! non-empty nodes are stored: an empty subtree's digest is [`Digest::EMPTY`], so a tree costs
//! memory in proportion to its entries, not to its shape.
use super::digest::{entry_digest, inner_digest, leaf_digest, view};
use super::replica::Replica;
use crate::wire::{Digest, DigestParams, PositionRange};
use bytes::Bytes;
use std::collections::BTreeMap;
use tern_conflict::Versioned;
use tern_node::core::partition::SCAN_POSITION_END;

/// Bits of a scan position.
pub const POSITION_BITS: u8 = 48;
/// The most leaf bits a tree may have (4 G leaves; deeper trees only cost round trips).
pub const LEAF_BITS_MAX: u8 = 32;

/// The shape both sides of a session agree on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeShape {
    leaf_bits: u8,
    fanout_bits: u8,
}

impl TreeShape {
    /// `None` unless `1 <= fanout_bits <= 8`, `fanout_bits` divides `leaf_bits`, and
    /// `leaf_bits <= LEAF_BITS_MAX`.
    pub fn new(leaf_bits: u8, fanout_bits: u8) -> Option<Self> {
        let valid = (1..=8).contains(&fanout_bits)
            && leaf_bits > 0
            && leaf_bits <= LEAF_BITS_MAX
            && leaf_bits.is_multiple_of(fanout_bits);
        valid.then_some(Self {
            leaf_bits,
            fanout_bits,
        })
    }

    pub fn of(params: &DigestParams) -> Option<Self> {
        Self::new(params.leaf_bits, params.fanout_bits)
    }

    /// The leaves' level.
    pub fn depth(&self) -> u8 {
        self.leaf_bits / self.fanout_bits
    }

    /// Children per inner node.
    pub fn fanout(&self) -> u64 {
        1 << self.fanout_bits
    }

    /// Nodes at `level`.
    pub fn width(&self, level: u8) -> u64 {
        1 << (u32::from(level) * u32::from(self.fanout_bits))
    }

    /// The leaf holding `position`.
    pub fn leaf_of(&self, position: u64) -> u64 {
        position.min(SCAN_POSITION_END - 1) >> (POSITION_BITS - self.leaf_bits)
    }

    /// The positions node `index` at `level` covers.
    pub fn range(&self, level: u8, index: u64) -> PositionRange {
        let shift = u32::from(POSITION_BITS) - u32::from(level) * u32::from(self.fanout_bits);
        PositionRange {
            from: index << shift,
            to: (index + 1) << shift,
        }
    }
}

/// Digests of every non-empty node of one partition, as of one moment.
#[derive(Clone, Debug)]
pub struct DigestTree {
    shape: TreeShape,
    /// `levels[l]`: digests of the non-empty nodes at level `l`, by index.
    levels: Vec<BTreeMap<u64, Digest>>,
    entries: u64,
}

impl DigestTree {
    /// The tree of everything `replica` stores, judged as `params` says. `None` if the shape
    /// in `params` is invalid.
    pub fn build(replica: &dyn Replica, params: &DigestParams) -> Option<Self> {
        let shape = TreeShape::of(params)?;
        let mut hashed: Vec<(u64, Bytes, Digest)> = Vec::new();
        let everything = PositionRange {
            from: 0,
            to: SCAN_POSITION_END,
        };
        replica.visit(everything, &mut |position, key, entry| {
            if let Some(seen) = view(entry, params) {
                hashed.push((
                    shape.leaf_of(position),
                    key.clone(),
                    entry_digest(key, seen),
                ));
            }
            true
        });
        Some(Self::from_hashed(shape, hashed))
    }

    /// The tree of `entries` (any order), judged as `params` says.
    pub fn from_entries<'a>(
        entries: impl IntoIterator<Item = (&'a Bytes, &'a Versioned)>,
        params: &DigestParams,
    ) -> Option<Self> {
        let shape = TreeShape::of(params)?;
        let hashed = entries
            .into_iter()
            .filter_map(|(key, entry)| {
                let seen = view(entry, params)?;
                let position = tern_node::core::partition::scan_position(key);
                Some((
                    shape.leaf_of(position),
                    key.clone(),
                    entry_digest(key, seen),
                ))
            })
            .collect();
        Some(Self::from_hashed(shape, hashed))
    }

    fn from_hashed(shape: TreeShape, mut hashed: Vec<(u64, Bytes, Digest)>) -> Self {
        hashed.sort_unstable_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let entries = hashed.len() as u64;
        let depth = usize::from(shape.depth());
        let mut levels = vec![BTreeMap::new(); depth + 1];
        let mut run: Vec<Digest> = Vec::new();
        let mut i = 0;
        while i < hashed.len() {
            let leaf = hashed[i].0;
            run.clear();
            while i < hashed.len() && hashed[i].0 == leaf {
                run.push(hashed[i].2);
                i += 1;
            }
            levels[depth].insert(leaf, leaf_digest(&run));
        }
        let fanout = shape.fanout();
        for level in (0..depth).rev() {
            let (upper, lower) = levels.split_at_mut(level + 1);
            let parents = &mut upper[level];
            let children = &lower[0];
            let mut slots = vec![Digest::EMPTY; fanout as usize];
            let mut current: Option<u64> = None;
            for (&child, &digest) in children {
                let parent = child / fanout;
                if current.is_some_and(|p| p != parent) {
                    flush(parents, &mut current, &mut slots);
                }
                current = Some(parent);
                slots[(child % fanout) as usize] = digest;
            }
            flush(parents, &mut current, &mut slots);
        }
        Self {
            shape,
            levels,
            entries,
        }
    }

    pub fn shape(&self) -> TreeShape {
        self.shape
    }

    /// Entries the tree covers (absent views excluded).
    pub fn entries(&self) -> u64 {
        self.entries
    }

    pub fn root(&self) -> Digest {
        self.node(0, 0)
    }

    /// The digest of node `index` at `level` (empty if out of the tree).
    pub fn node(&self, level: u8, index: u64) -> Digest {
        self.levels
            .get(usize::from(level))
            .and_then(|nodes| nodes.get(&index))
            .copied()
            .unwrap_or(Digest::EMPTY)
    }

    /// The digests of node `index`'s children (one level down), in order.
    pub fn children(&self, level: u8, index: u64) -> impl Iterator<Item = Digest> + '_ {
        let fanout = self.shape.fanout();
        (0..fanout).map(move |c| self.node(level + 1, index * fanout + c))
    }
}

fn flush(parents: &mut BTreeMap<u64, Digest>, current: &mut Option<u64>, slots: &mut [Digest]) {
    if let Some(parent) = current.take() {
        parents.insert(parent, inner_digest(slots));
        slots.fill(Digest::EMPTY);
    }
}
