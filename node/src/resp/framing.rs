//! Splits a connection's byte stream into request frames, enforcing `frame_bytes_max` and
//! `args_per_command_max` before buffering what they forbid.
//!
//! Clients send requests as RESP arrays of bulk strings (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`) or,
//! typed by hand, as inline lines (`GET k\r\n`). The parser is incremental: a frame that arrives
//! in many reads is not re-parsed from its start each time (so a large frame costs linear
//! time), and it does not recurse (so nesting cannot exhaust the stack). `redis-protocol`'s
//! general decoder does both, which is why requests are framed here; replies are simple enough
//! to encode directly (see `reply`).
use std::ops::Range;

/// Why a connection's input is not RESP we accept; the connection is answered and closed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("invalid multibulk length")]
    InvalidMultibulkLength,
    #[error("invalid bulk length")]
    InvalidBulkLength,
    #[error("expected '$', got '{}'", char::from(*.0))]
    ExpectedBulk(u8),
    #[error("bulk string not terminated by CRLF")]
    MissingCrlf,
    #[error("command has {count} arguments, more than args_per_command_max ({max})")]
    TooManyArgs { count: u64, max: usize },
    #[error("request frame of {len} bytes or more exceeds frame_bytes_max ({max})")]
    FrameTooLarge { len: u64, max: usize },
}

/// Longest `*<n>` / `$<n>` header line accepted: a sign, 20 digits and CRLF fit.
const HEADER_LINE_MAX: usize = 24;

#[derive(Clone, Copy, Debug)]
enum State {
    /// Between frames.
    Idle,
    /// Inside `*<n>`: `remaining` bulk strings still to come, the next header at `pos`.
    Array { remaining: usize, pos: usize },
    /// Inside a bulk string whose data starts at `start`.
    Bulk {
        remaining: usize,
        start: usize,
        len: usize,
    },
    /// An inline request; no `\n` in the first `scanned` bytes.
    Inline { scanned: usize },
}

#[derive(Debug)]
pub struct RequestParser {
    frame_bytes_max: usize,
    args_max: usize,
    state: State,
    /// Arguments of the frame being parsed, as ranges from the frame's first byte.
    args: Vec<Range<usize>>,
}

impl RequestParser {
    pub fn new(frame_bytes_max: usize, args_max: usize) -> Self {
        Self {
            frame_bytes_max,
            args_max,
            state: State::Idle,
            args: Vec::new(),
        }
    }

    /// Parses the frame at the start of `buf`. `Ok(Some(len))`: a whole frame of `len` bytes,
    /// whose arguments [`args`](Self::args) gives (none for an empty request, which callers
    /// skip). `Ok(None)`: more bytes are needed; call again with the same frame start and
    /// more data. After an error the connection must be closed.
    pub fn parse(&mut self, buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
        loop {
            match self.state {
                State::Idle => {
                    let Some(&first) = buf.first() else {
                        return Ok(None);
                    };
                    self.args.clear();
                    if first != b'*' {
                        self.state = State::Inline { scanned: 0 };
                        continue;
                    }
                    let Some((count, next)) =
                        read_header(buf, 1, ProtocolError::InvalidMultibulkLength)?
                    else {
                        return Ok(None);
                    };
                    if count <= 0 {
                        // `*0` and `*-1` are empty requests; Redis ignores them too.
                        return Ok(Some(next));
                    }
                    let count = count as u64;
                    if count > self.args_max as u64 {
                        return Err(ProtocolError::TooManyArgs {
                            count,
                            max: self.args_max,
                        });
                    }
                    // Each argument takes at least 4 bytes (`$0\r\n\r\n` is 6).
                    self.check_frame_len(next as u64 + count * 6)?;
                    self.args.reserve(count as usize);
                    self.state = State::Array {
                        remaining: count as usize,
                        pos: next,
                    };
                }
                State::Array { remaining: 0, pos } => {
                    self.state = State::Idle;
                    return Ok(Some(pos));
                }
                State::Array { remaining, pos } => {
                    let Some(&marker) = buf.get(pos) else {
                        return Ok(None);
                    };
                    if marker != b'$' {
                        return Err(ProtocolError::ExpectedBulk(marker));
                    }
                    let Some((len, start)) =
                        read_header(buf, pos + 1, ProtocolError::InvalidBulkLength)?
                    else {
                        return Ok(None);
                    };
                    let len = usize::try_from(len).map_err(|_| ProtocolError::InvalidBulkLength)?;
                    // The rest of the arguments need at least 6 bytes each.
                    self.check_frame_len(
                        start as u64 + len as u64 + 2 + (remaining as u64 - 1) * 6,
                    )?;
                    self.state = State::Bulk {
                        remaining,
                        start,
                        len,
                    };
                }
                State::Bulk {
                    remaining,
                    start,
                    len,
                } => {
                    let end = start + len;
                    if buf.len() < end + 2 {
                        return Ok(None);
                    }
                    if &buf[end..end + 2] != b"\r\n" {
                        return Err(ProtocolError::MissingCrlf);
                    }
                    self.args.push(start..end);
                    self.state = State::Array {
                        remaining: remaining - 1,
                        pos: end + 2,
                    };
                }
                State::Inline { scanned } => {
                    let Some(newline) = buf[scanned..].iter().position(|&b| b == b'\n') else {
                        self.check_frame_len(buf.len() as u64)?;
                        self.state = State::Inline { scanned: buf.len() };
                        return Ok(None);
                    };
                    let end = scanned + newline;
                    self.check_frame_len(end as u64 + 1)?;
                    self.split_inline(&buf[..end])?;
                    self.state = State::Idle;
                    return Ok(Some(end + 1));
                }
            }
        }
    }

    /// The arguments of the frame last returned by [`parse`](Self::parse), as ranges into
    /// the buffer it was given.
    pub fn args(&self) -> &[Range<usize>] {
        &self.args
    }

    /// Bytes the frame in progress still needs at least, so the caller can reserve buffer
    /// space for a large bulk string in one step.
    pub fn bytes_wanted(&self, buffered: usize) -> usize {
        match self.state {
            State::Bulk { start, len, .. } => (start + len + 2).saturating_sub(buffered),
            _ => 0,
        }
    }

    fn check_frame_len(&self, len: u64) -> Result<(), ProtocolError> {
        if len > self.frame_bytes_max as u64 {
            return Err(ProtocolError::FrameTooLarge {
                len,
                max: self.frame_bytes_max,
            });
        }
        Ok(())
    }

    /// Inline arguments are separated by spaces and tabs; a trailing `\r` is dropped. Quoting
    /// is not supported (inline requests are for typing PING or GET by hand).
    fn split_inline(&mut self, line: &[u8]) -> Result<(), ProtocolError> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut pos = 0;
        while pos < line.len() {
            if line[pos] == b' ' || line[pos] == b'\t' {
                pos += 1;
                continue;
            }
            let start = pos;
            while pos < line.len() && line[pos] != b' ' && line[pos] != b'\t' {
                pos += 1;
            }
            if self.args.len() == self.args_max {
                return Err(ProtocolError::TooManyArgs {
                    count: self.args.len() as u64 + 1,
                    max: self.args_max,
                });
            }
            self.args.push(start..pos);
        }
        Ok(())
    }
}

/// Reads the decimal integer of a `*<n>\r\n` or `$<n>\r\n` header whose digits start at
/// `from`. Returns the value and the position after the CRLF, or `None` if incomplete.
fn read_header(
    buf: &[u8],
    from: usize,
    invalid: ProtocolError,
) -> Result<Option<(i64, usize)>, ProtocolError> {
    let rest = buf.get(from..).unwrap_or(&[]);
    let window = &rest[..rest.len().min(HEADER_LINE_MAX)];
    let Some(cr) = window.iter().position(|&b| b == b'\r') else {
        return if window.len() == HEADER_LINE_MAX {
            Err(invalid)
        } else {
            Ok(None)
        };
    };
    match rest.get(cr + 1) {
        None => Ok(None),
        Some(b'\n') => {
            let value = parse_i64(&window[..cr]).ok_or(invalid)?;
            Ok(Some((value, from + cr + 2)))
        }
        Some(_) => Err(invalid),
    }
}

/// Integers in headers and arguments follow Redis's `string2ll`: no `+`, no leading zeros, no
/// `-0` (the core's parser, so the RESP layer and the core agree).
pub use crate::core::parse_strict_i64 as parse_i64;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(
        input: &[u8],
        frame_max: usize,
        args_max: usize,
    ) -> Result<Vec<Vec<Vec<u8>>>, ProtocolError> {
        let mut parser = RequestParser::new(frame_max, args_max);
        let mut frames = Vec::new();
        let mut at = 0;
        while let Some(len) = parser.parse(&input[at..])? {
            let frame = &input[at..at + len];
            frames.push(
                parser
                    .args()
                    .iter()
                    .map(|r| frame[r.clone()].to_vec())
                    .collect(),
            );
            at += len;
        }
        Ok(frames)
    }

    /// A request's arguments, owned.
    type Request = Vec<Vec<u8>>;

    fn args(list: &[&str]) -> Request {
        list.iter().map(|a| a.as_bytes().to_vec()).collect()
    }

    #[test]
    fn parses_arrays_and_inline_requests() {
        let cases: &[(&[u8], Vec<Request>)] = &[
            (b"*1\r\n$4\r\nPING\r\n", vec![args(&["PING"])]),
            (b"*2\r\n$3\r\nGET\r\n$0\r\n\r\n", vec![args(&["GET", ""])]),
            (b"PING\r\n", vec![args(&["PING"])]),
            (b"  SET  a\tb \n", vec![args(&["SET", "a", "b"])]),
            (b"*0\r\n\r\n", vec![vec![], vec![]]),
            (
                b"*1\r\n$1\r\na\r\n*1\r\n$1\r\nb\r\n",
                vec![args(&["a"]), args(&["b"])],
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                &parse_all(input, 1024, 16).expect("valid"),
                expected,
                "{input:?}"
            );
        }
    }

    #[test]
    fn rejects_malformed_and_oversized_frames() {
        let cases: &[(&[u8], ProtocolError)] = &[
            (b"*x\r\n", ProtocolError::InvalidMultibulkLength),
            (b"*1\r\n+PING\r\n", ProtocolError::ExpectedBulk(b'+')),
            (b"*1\r\n$-5\r\n", ProtocolError::InvalidBulkLength),
            (b"*1\r\n$2\r\nabc\r\n", ProtocolError::MissingCrlf),
            (
                b"*1\r\n$99999999999999999999999\r\n",
                ProtocolError::InvalidBulkLength,
            ),
            (
                b"*17\r\n",
                ProtocolError::TooManyArgs { count: 17, max: 16 },
            ),
            (
                b"*1\r\n$2000\r\n",
                ProtocolError::FrameTooLarge {
                    len: 2013,
                    max: 1024,
                },
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                parse_all(input, 1024, 16).as_ref(),
                Err(expected),
                "{input:?}"
            );
        }
        let long_line = vec![b'a'; 1025];
        assert!(matches!(
            parse_all(&long_line, 1024, 16),
            Err(ProtocolError::FrameTooLarge { .. })
        ));
        assert!(matches!(
            parse_all(&[b'*'; 30], 1024, 16),
            Err(ProtocolError::InvalidMultibulkLength)
        ));
    }

    #[test]
    fn a_frame_split_at_every_byte_parses_the_same() {
        let input = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n";
        for split in 0..input.len() {
            let mut parser = RequestParser::new(1024, 16);
            assert_eq!(parser.parse(&input[..split]), Ok(None), "split at {split}");
            assert_eq!(
                parser.parse(input),
                Ok(Some(input.len())),
                "split at {split}"
            );
            let got: Vec<&[u8]> = parser.args().iter().map(|r| &input[r.clone()]).collect();
            assert_eq!(got, [&b"SET"[..], b"key", b"value"]);
        }
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn encode(args: &[Vec<u8>]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    proptest! {
        /// Any byte soup ends in frames, an error or a request for more bytes: never a panic
        /// or a loop, and never a frame longer than the input.
        #[test]
        fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut parser = RequestParser::new(128, 8);
            let mut at = 0;
            while let Ok(Some(len)) = parser.parse(&input[at..]) {
                prop_assert!(len > 0 && at + len <= input.len());
                at += len;
            }
        }

        /// Encoded requests come back as the same arguments however the bytes are split.
        #[test]
        fn encoded_requests_round_trip_across_splits(
            args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..6),
            split in any::<prop::sample::Index>(),
        ) {
            let input = encode(&args);
            let split = split.index(input.len());
            let mut parser = RequestParser::new(4096, 8);
            if split < input.len() {
                prop_assert_eq!(parser.parse(&input[..split]), Ok(None));
            }
            prop_assert_eq!(parser.parse(&input), Ok(Some(input.len())));
            let got: Vec<Vec<u8>> = parser.args().iter().map(|r| input[r.clone()].to_vec()).collect();
            prop_assert_eq!(got, args);
        }
    }
}
