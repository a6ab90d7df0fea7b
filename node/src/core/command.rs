//! What a partition core is asked to do, and what it answers. Single-key operations only: the
//! RESP layer splits multi-key commands (DEL, EXISTS, MGET, MSET) per partition and aggregates.
use bytes::Bytes;

/// Relative expiry given with SET or EXPIRE; the core turns it into an absolute deadline using the
/// `now_ms` it is handed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// EX/PX/EXPIRE/PEXPIRE: milliseconds from now. Zero or negative deletes the key (EXPIRE) or
    /// is rejected (SET, as Redis does).
    InMs(i64),
    /// EXAT/PXAT: an absolute unix time in milliseconds.
    AtMs(i64),
    /// KEEPTTL: keep the key's current expiry.
    Keep,
}

/// SET's NX/XX.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SetCondition {
    #[default]
    Always,
    /// NX: only if the key does not exist.
    IfAbsent,
    /// XX: only if the key exists.
    IfPresent,
}

/// TTL vs PTTL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TtlUnit {
    Seconds,
    Milliseconds,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Get {
        key: Bytes,
    },
    /// SET key value [NX|XX] [GET] [EX|PX|EXAT|PXAT|KEEPTTL]. `expiry: None` clears any TTL.
    Set {
        key: Bytes,
        value: Bytes,
        condition: SetCondition,
        expiry: Option<Expiry>,
        get: bool,
    },
    /// DEL for one key; answers `Int(1)` if a live key was removed, else `Int(0)`.
    Del {
        key: Bytes,
    },
    /// EXISTS for one key; `Int(1)` or `Int(0)`.
    Exists {
        key: Bytes,
    },
    /// INCR/INCRBY/DECR/DECRBY (DECR passes a negative delta).
    IncrBy {
        key: Bytes,
        delta: i64,
    },
    /// EXPIRE/PEXPIRE; `Int(1)` if the timeout was set, `Int(0)` if the key does not exist.
    Expire {
        key: Bytes,
        expiry: Expiry,
    },
    /// TTL/PTTL: -2 if no key, -1 if no expiry, else remaining time rounded like Redis.
    Ttl {
        key: Bytes,
        unit: TtlUnit,
    },
    /// One SCAN step within this partition: examines stored entries whose scan position is
    /// `>= from`, about `count` of them (as in Redis, COUNT bounds the work, so a step may return
    /// few or no keys), and returns the live ones matching `pattern` (a Redis glob). Keys sharing
    /// a position are never split across steps.
    Scan {
        from: u64,
        count: usize,
        pattern: Option<Bytes>,
    },
    /// Number of live keys.
    DbSize,
    /// Remove every key (writes tombstones so the deletes replicate).
    FlushAll,
}

impl Command {
    /// Whether the command can change state (and so emit change records).
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Command::Set { .. }
                | Command::Del { .. }
                | Command::IncrBy { .. }
                | Command::Expire { .. }
                | Command::FlushAll
        )
    }
}

/// A successful answer. Errors are [`CommandError`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// `+OK`
    Ok,
    /// A bulk string, or nil when absent (GET on a missing key, SET NX that did not apply, ...).
    Value(Option<Bytes>),
    Int(i64),
    /// One SCAN step: the keys found and where the next step starts (`None`: partition done).
    ScanPage {
        keys: Vec<Bytes>,
        next: Option<u64>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("WRONGTYPE Operation against a key holding the wrong kind of value")]
    WrongType,
    #[error("ERR value is not an integer or out of range")]
    NotAnInteger,
    #[error("ERR increment or decrement would overflow")]
    Overflow,
    #[error("ERR invalid expire time in '{command}' command")]
    InvalidExpire { command: &'static str },
    #[error("ERR value of {len} bytes exceeds value_bytes_max ({max} bytes)")]
    ValueTooLarge { len: usize, max: usize },
    #[error("ERR key of {len} bytes exceeds key_bytes_max ({max} bytes)")]
    KeyTooLarge { len: usize, max: usize },
}

pub type CommandResult = Result<Response, CommandError>;
