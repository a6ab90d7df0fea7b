//! What a partition core is asked to do, and what it answers. Single-key operations only: the
//! RESP layer splits multi-key commands (DEL, EXISTS, MGET, MSET) per partition and aggregates.
use super::change_log::ChangeRecord;
use bytes::Bytes;
use tern_conflict::Versioned;

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
    /// Number of live keys with a TTL (INFO keyspace's `expires`).
    ExpiringKeys,
    /// Remove every key (writes tombstones so the deletes replicate).
    FlushAll,
    /// Apply an entry another site committed (the WAN gateway's sink): reconcile it with the
    /// stored entry using `resolver` (a registry name), or without one this node's resolver for
    /// `key`; a change is committed like a local write, so backups replicate the resolved entry
    /// and need no resolver. Never sent by RESP.
    ///
    /// The gateway names the resolver from its own `[wan]` table: the partition's primary may
    /// be another node of the site, one without a `[wan]` section.
    WanApply {
        key: Bytes,
        entry: Versioned,
        resolver: Option<String>,
    },
    /// Read committed change records after `after_seq` (the WAN gateway's delegator). Never sent
    /// by RESP.
    ///
    /// `hold_ms > 0` (overflow policy `block_writes`) also asks the primary to keep every record
    /// after `after_seq` for that long (capped by `wan_hold_ms_max`): a local write that would
    /// make the change log drop one is refused with [`CommandError::WanBacklogFull`] instead.
    /// The latest read sets the hold; it is a lease, so a gateway that stops reading releases
    /// it. `hold_ms = 0` leaves any hold alone.
    WanChanges {
        after_seq: u64,
        records_max: u32,
        bytes_max: u32,
        hold_ms: u32,
    },
    /// Read every stored entry (tombstones and unswept expired values included) from scan
    /// position `from_position` on, in scan order, for the WAN gateway's repair. A page holds
    /// at least one entry, at most `entries_max` and about `bytes_max`, and never splits
    /// entries sharing a position (like SCAN). Never sent by RESP.
    WanDump {
        from_position: u64,
        entries_max: u32,
        bytes_max: u32,
    },
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
                | Command::WanApply { .. }
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
    /// What a [`Command::WanApply`] did.
    WanApplied {
        /// The stored entry changed (and a change record was committed).
        changed: bool,
        /// The versions were concurrent and the resolver decided between them.
        conflict: bool,
        /// The remote HLC was beyond `hlc_offset_ms_max` ahead: not absorbed into the clock,
        /// but the entry was still applied (convergence rests on version vectors).
        clock_rejected: bool,
    },
    WanChanges(WanChangesPage),
    WanDump(WanDumpPage),
}

/// One page of a partition's stored entries, the answer to [`Command::WanDump`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WanDumpPage {
    /// `(scan position, key, entry)` in scan order (position, then key).
    pub entries: Vec<(u64, Bytes, Versioned)>,
    /// Where the next page starts; `None`: the partition is done.
    pub next: Option<u64>,
}

/// One page of a partition's change log, the answer to [`Command::WanChanges`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WanChangesPage {
    /// Committed records after `after_seq`, in seq order, at most records_max and about bytes_max
    /// (at least one record if any exists). If the log no longer reaches back to after_seq+1,
    /// starts at the oldest retained record (the caller sees the gap and marks repair).
    pub records: Vec<ChangeRecord>,
    /// The partition's last seq when the page was read.
    pub last_seq: u64,
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
    /// The WAN gateway holds the change log (`overflow = "block_writes"`, its backlog to a
    /// remote site is full) and this write would drop records it has not read. Nothing was
    /// applied; the client retries.
    #[error(
        "TRYAGAIN WAN backlog to a remote site is full (overflow = block_writes); write refused"
    )]
    WanBacklogFull,
    /// The node holding the partition's primary has reached `data_bytes_max` (its partitions'
    /// data, counted by [`crate::core::stored_bytes`]). Nothing was applied; reads, deletes and
    /// EXPIRE still work, like Redis's `noeviction` policy.
    #[error("OOM command not allowed when used memory > 'maxmemory' (data_bytes_max reached)")]
    OutOfMemory,
    /// A [`Command::WanApply`] named a resolver this node's registry does not hold (the nodes
    /// of a site run different builds).
    #[error("ERR unknown conflict resolver {name:?}")]
    UnknownResolver { name: String },
}

pub type CommandResult = Result<Response, CommandError>;
