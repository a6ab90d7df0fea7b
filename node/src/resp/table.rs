//! The commands this node understands: names, Redis arity and key positions (used for
//! arity errors and for COMMAND / COMMAND INFO, which clients use to discover keys).

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Auth,
    Client,
    Cluster,
    Command,
    Config,
    DbSize,
    Decr,
    DecrBy,
    Del,
    Echo,
    Exists,
    Expire,
    FlushAll,
    FlushDb,
    Get,
    Hello,
    Incr,
    IncrBy,
    Info,
    MGet,
    MSet,
    Memory,
    PExpire,
    Ping,
    PTtl,
    Quit,
    ReadOnly,
    ReadWrite,
    Scan,
    Select,
    Set,
    Ttl,
    Type,
}

/// Redis's description of a command. `arity` counts the name: `n` means exactly `n`
/// arguments, `-n` at least `n`.
#[derive(Debug)]
pub struct Spec {
    pub name: &'static str,
    pub arity: i64,
    pub flags: &'static [&'static str],
    pub first_key: i64,
    pub last_key: i64,
    pub key_step: i64,
}

const fn spec(
    name: &'static str,
    arity: i64,
    flags: &'static [&'static str],
    keys: (i64, i64, i64),
) -> Spec {
    Spec {
        name,
        arity,
        flags,
        first_key: keys.0,
        last_key: keys.1,
        key_step: keys.2,
    }
}

const NO_KEYS: (i64, i64, i64) = (0, 0, 0);
const ONE_KEY: (i64, i64, i64) = (1, 1, 1);
const ALL_KEYS: (i64, i64, i64) = (1, -1, 1);
const READ_FAST: &[&str] = &["readonly", "fast"];
const WRITE: &[&str] = &["write"];
const WRITE_FAST: &[&str] = &["write", "fast"];
const WRITE_DENYOOM: &[&str] = &["write", "denyoom"];
const WRITE_DENYOOM_FAST: &[&str] = &["write", "denyoom", "fast"];
const CONNECTION: &[&str] = &["noscript", "loading", "stale", "fast"];
const NO_AUTH: &[&str] = &[
    "noscript",
    "loading",
    "stale",
    "fast",
    "no_auth",
    "allow_busy",
];

impl Kind {
    pub const ALL: [Kind; 33] = [
        Kind::Auth,
        Kind::Client,
        Kind::Cluster,
        Kind::Command,
        Kind::Config,
        Kind::DbSize,
        Kind::Decr,
        Kind::DecrBy,
        Kind::Del,
        Kind::Echo,
        Kind::Exists,
        Kind::Expire,
        Kind::FlushAll,
        Kind::FlushDb,
        Kind::Get,
        Kind::Hello,
        Kind::Incr,
        Kind::IncrBy,
        Kind::Info,
        Kind::MGet,
        Kind::MSet,
        Kind::Memory,
        Kind::PExpire,
        Kind::Ping,
        Kind::PTtl,
        Kind::Quit,
        Kind::ReadOnly,
        Kind::ReadWrite,
        Kind::Scan,
        Kind::Select,
        Kind::Set,
        Kind::Ttl,
        Kind::Type,
    ];

    /// Case-insensitive lookup by name.
    pub fn from_name(name: &[u8]) -> Option<Kind> {
        let mut lower = [0u8; 16];
        let lower = lower.get_mut(..name.len())?;
        for (dst, src) in lower.iter_mut().zip(name) {
            *dst = src.to_ascii_lowercase();
        }
        Some(match &*lower {
            b"auth" => Kind::Auth,
            b"client" => Kind::Client,
            b"cluster" => Kind::Cluster,
            b"command" => Kind::Command,
            b"config" => Kind::Config,
            b"dbsize" => Kind::DbSize,
            b"decr" => Kind::Decr,
            b"decrby" => Kind::DecrBy,
            b"del" => Kind::Del,
            b"echo" => Kind::Echo,
            b"exists" => Kind::Exists,
            b"expire" => Kind::Expire,
            b"flushall" => Kind::FlushAll,
            b"flushdb" => Kind::FlushDb,
            b"get" => Kind::Get,
            b"hello" => Kind::Hello,
            b"incr" => Kind::Incr,
            b"incrby" => Kind::IncrBy,
            b"info" => Kind::Info,
            b"mget" => Kind::MGet,
            b"mset" => Kind::MSet,
            b"memory" => Kind::Memory,
            b"pexpire" => Kind::PExpire,
            b"ping" => Kind::Ping,
            b"pttl" => Kind::PTtl,
            b"quit" => Kind::Quit,
            b"readonly" => Kind::ReadOnly,
            b"readwrite" => Kind::ReadWrite,
            b"scan" => Kind::Scan,
            b"select" => Kind::Select,
            b"set" => Kind::Set,
            b"ttl" => Kind::Ttl,
            b"type" => Kind::Type,
            _ => return None,
        })
    }

    pub fn spec(self) -> &'static Spec {
        match self {
            Kind::Auth => &const { spec("auth", -2, NO_AUTH, NO_KEYS) },
            Kind::Client => {
                &const { spec("client", -2, &["noscript", "loading", "stale"], NO_KEYS) }
            }
            // Redis lists CLUSTER as a container command whose flags live on its subcommands.
            Kind::Cluster => &const { spec("cluster", -2, &[], NO_KEYS) },
            Kind::Command => &const { spec("command", -1, &["loading", "stale"], NO_KEYS) },
            Kind::Config => {
                &const {
                    spec(
                        "config",
                        -2,
                        &["admin", "noscript", "loading", "stale"],
                        NO_KEYS,
                    )
                }
            }
            Kind::DbSize => &const { spec("dbsize", 1, READ_FAST, NO_KEYS) },
            Kind::Decr => &const { spec("decr", 2, WRITE_DENYOOM_FAST, ONE_KEY) },
            Kind::DecrBy => &const { spec("decrby", 3, WRITE_DENYOOM_FAST, ONE_KEY) },
            Kind::Del => &const { spec("del", -2, WRITE, ALL_KEYS) },
            Kind::Echo => &const { spec("echo", 2, &["fast"], NO_KEYS) },
            Kind::Exists => &const { spec("exists", -2, READ_FAST, ALL_KEYS) },
            Kind::Expire => &const { spec("expire", -3, WRITE_FAST, ONE_KEY) },
            Kind::FlushAll => &const { spec("flushall", -1, WRITE, NO_KEYS) },
            Kind::FlushDb => &const { spec("flushdb", -1, WRITE, NO_KEYS) },
            Kind::Get => &const { spec("get", 2, READ_FAST, ONE_KEY) },
            Kind::Hello => &const { spec("hello", -1, NO_AUTH, NO_KEYS) },
            Kind::Incr => &const { spec("incr", 2, WRITE_DENYOOM_FAST, ONE_KEY) },
            Kind::IncrBy => &const { spec("incrby", 3, WRITE_DENYOOM_FAST, ONE_KEY) },
            Kind::Info => &const { spec("info", -1, &["loading", "stale"], NO_KEYS) },
            Kind::MGet => &const { spec("mget", -2, READ_FAST, ALL_KEYS) },
            Kind::MSet => &const { spec("mset", -3, WRITE_DENYOOM, (1, -1, 2)) },
            Kind::PExpire => &const { spec("pexpire", -3, WRITE_FAST, ONE_KEY) },
            Kind::Ping => &const { spec("ping", -1, &["fast"], NO_KEYS) },
            Kind::PTtl => &const { spec("pttl", 2, READ_FAST, ONE_KEY) },
            Kind::Quit => &const { spec("quit", -1, NO_AUTH, NO_KEYS) },
            Kind::ReadOnly => &const { spec("readonly", 1, CONNECTION, NO_KEYS) },
            Kind::ReadWrite => &const { spec("readwrite", 1, CONNECTION, NO_KEYS) },
            Kind::Scan => &const { spec("scan", -2, &["readonly"], NO_KEYS) },
            Kind::Select => &const { spec("select", 2, CONNECTION, NO_KEYS) },
            Kind::Set => &const { spec("set", -3, WRITE_DENYOOM, ONE_KEY) },
            Kind::Ttl => &const { spec("ttl", 2, READ_FAST, ONE_KEY) },
            Kind::Type => &const { spec("type", 2, READ_FAST, ONE_KEY) },
            // A container command like CLUSTER; MEMORY USAGE's key is its third argument.
            Kind::Memory => &const { spec("memory", -2, &[], NO_KEYS) },
        }
    }

    /// Whether `argc` arguments (name included) fit the command's arity.
    pub fn arity_ok(self, argc: usize) -> bool {
        let arity = self.spec().arity;
        let argc = argc as i64;
        if arity >= 0 {
            argc == arity
        } else {
            argc >= -arity
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_found_by_its_name_in_any_case() {
        for kind in Kind::ALL {
            let name = kind.spec().name;
            assert_eq!(Kind::from_name(name.as_bytes()), Some(kind));
            assert_eq!(
                Kind::from_name(name.to_ascii_uppercase().as_bytes()),
                Some(kind)
            );
        }
        assert_eq!(Kind::from_name(b"nosuchcommand"), None);
        assert_eq!(Kind::from_name(b""), None);
    }

    #[test]
    fn arity_follows_redis_rules() {
        let cases = [
            (Kind::Get, 2, true),
            (Kind::Get, 3, false),
            (Kind::Set, 2, false),
            (Kind::Set, 5, true),
            (Kind::Ping, 1, true),
            (Kind::DbSize, 2, false),
            (Kind::Cluster, 1, false),
            (Kind::Cluster, 2, true),
            (Kind::ReadOnly, 1, true),
            (Kind::ReadWrite, 2, false),
        ];
        for (kind, argc, ok) in cases {
            assert_eq!(kind.arity_ok(argc), ok, "{kind:?} {argc}");
        }
    }
}
