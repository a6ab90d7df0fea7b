//! The run's trace: every event folded into a 64-bit FNV-1a hash (implemented here so the value
//! never depends on std's hasher, which is randomly keyed and may change between releases), and,
//! when asked for, the last N events as text for reading a failure.
//!
//! Events are hashed through their `Debug` text: cheap to add for any new message type, and
//! identical between two runs of the same build, which is what the determinism check compares.
use crate::time::SimTime;
use std::collections::VecDeque;
use std::fmt::{self, Debug, Write as _};
use std::hash::{BuildHasherDefault, Hasher};

/// 64-bit FNV-1a.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fnv64(u64);

impl Fnv64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    pub fn new() -> Self {
        Self(Self::OFFSET_BASIS)
    }

    pub fn write_bytes(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(Self::PRIME);
        }
    }

    pub fn value(&self) -> u64 {
        self.0
    }
}

impl Default for Fnv64 {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Write for Fnv64 {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.write_bytes(s.as_bytes());
        Ok(())
    }
}

/// Also a `std::hash::Hasher`, so checkers can key hash sets without std's random keys.
impl Hasher for Fnv64 {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.write_bytes(bytes);
    }
}

/// A `BuildHasher` for `HashMap`/`HashSet` with fixed (not random) keys.
pub type FixedFnvState = BuildHasherDefault<Fnv64>;

#[derive(Debug)]
pub struct Trace {
    hash: Fnv64,
    events: u64,
    /// The most recent events as text, when enabled.
    lines: Option<VecDeque<String>>,
    lines_max: usize,
}

impl Trace {
    /// Hash only (the fast path for sweeps and tests).
    pub fn hash_only() -> Self {
        Self {
            hash: Fnv64::new(),
            events: 0,
            lines: None,
            lines_max: 0,
        }
    }

    /// Hash, and keep the last `lines_max` events as text.
    pub fn with_lines(lines_max: usize) -> Self {
        Self {
            lines: Some(VecDeque::new()),
            lines_max,
            ..Self::hash_only()
        }
    }

    /// Fold one event into the hash (and the text tail, if enabled).
    pub fn record(&mut self, at: SimTime, what: &dyn Debug) {
        self.events += 1;
        self.hash.write_bytes(&at.as_micros().to_le_bytes());
        // Writing into Fnv64 cannot fail.
        let _ = write!(self.hash, "{what:?}");
        self.hash.write_bytes(&[0xff]);
        if let Some(lines) = &mut self.lines {
            if lines.len() == self.lines_max {
                lines.pop_front();
            }
            if self.lines_max > 0 {
                lines.push_back(format!("{at} {what:?}"));
            }
        }
    }

    pub fn hash(&self) -> u64 {
        self.hash.value()
    }

    pub fn events(&self) -> u64 {
        self.events
    }

    /// The retained text tail, oldest first (empty when disabled).
    pub fn lines(&self) -> Vec<String> {
        self.lines.iter().flatten().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_reference_vectors() {
        // From the FNV reference test suite (64-bit FNV-1a).
        for (input, expected) in [
            ("", 0xcbf2_9ce4_8422_2325u64),
            ("a", 0xaf63_dc4c_8601_ec8c),
            ("foobar", 0x8594_4171_f739_67e8),
        ] {
            let mut h = Fnv64::new();
            h.write_bytes(input.as_bytes());
            assert_eq!(h.value(), expected, "{input:?}");
        }
    }

    #[test]
    fn hash_depends_on_content_order_and_time() {
        let hash_of = |events: &[(u64, &str)]| {
            let mut trace = Trace::hash_only();
            for &(at, what) in events {
                trace.record(SimTime::from_micros(at), &what);
            }
            trace.hash()
        };
        let base = hash_of(&[(1, "a"), (2, "b")]);
        assert_eq!(base, hash_of(&[(1, "a"), (2, "b")]));
        assert_ne!(base, hash_of(&[(1, "b"), (2, "a")]));
        assert_ne!(base, hash_of(&[(1, "a"), (3, "b")]));
        assert_ne!(base, hash_of(&[(1, "a"), (2, "b"), (2, "b")]));
        // Field boundaries are marked, so "ab" + "" differs from "a" + "b".
        assert_ne!(
            hash_of(&[(1, "ab"), (1, "")]),
            hash_of(&[(1, "a"), (1, "b")])
        );
    }

    #[test]
    fn text_tail_is_bounded_and_does_not_change_the_hash() {
        let mut plain = Trace::hash_only();
        let mut verbose = Trace::with_lines(3);
        for i in 0..10u64 {
            plain.record(SimTime::from_micros(i), &i);
            verbose.record(SimTime::from_micros(i), &i);
        }
        assert_eq!(plain.hash(), verbose.hash());
        assert_eq!(verbose.events(), 10);
        assert_eq!(
            verbose.lines(),
            ["0.000007s 7", "0.000008s 8", "0.000009s 9"]
        );
        assert!(plain.lines().is_empty());
    }
}
