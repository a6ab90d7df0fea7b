//! A request's arguments: views into the frame that carried them.
use std::borrow::Cow;
use std::ops::Range;

#[derive(Clone, Copy, Debug)]
pub struct Args<'a> {
    frame: &'a [u8],
    ranges: &'a [Range<usize>],
}

impl<'a> Args<'a> {
    pub fn new(frame: &'a [u8], ranges: &'a [Range<usize>]) -> Self {
        Self { frame, ranges }
    }

    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Argument `index` (0 is the command name); empty if absent.
    pub fn get(&self, index: usize) -> &'a [u8] {
        self.ranges
            .get(index)
            .and_then(|r| self.frame.get(r.clone()))
            .unwrap_or(&[])
    }

    /// Arguments from `start` on.
    pub fn from(&self, start: usize) -> impl ExactSizeIterator<Item = &'a [u8]> + 'a {
        let (frame, ranges) = (self.frame, self.ranges);
        ranges
            .get(start..)
            .unwrap_or(&[])
            .iter()
            .map(move |r| frame.get(r.clone()).unwrap_or(&[]))
    }

    /// Whether argument `index` equals `word`, ignoring ASCII case.
    pub fn is(&self, index: usize, word: &str) -> bool {
        self.get(index).eq_ignore_ascii_case(word.as_bytes())
    }
}

/// Argument text for error messages (arguments are binary; Redis prints them raw).
pub fn lossy(arg: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(arg)
}
