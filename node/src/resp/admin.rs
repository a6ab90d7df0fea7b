//! Replies of the connection and server commands that need no partition (or, for INFO, only
//! the key count): HELLO, CLIENT, COMMAND, CONFIG, INFO. CLUSTER is in `cluster_cmd`.
use super::args::{Args, lossy};
use super::framing::parse_i64;
use super::reply;
use super::session::{NodeContext, Session};
use super::table::Kind;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

/// The Redis version whose behaviour this node's RESP interface follows. Clients read it
/// (HELLO, INFO `redis_version`) to decide which commands and options they may use.
pub const REDIS_COMPAT_VERSION: &str = "7.2.0";

pub const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
pub const NOAUTH: &str = "NOAUTH Authentication required.";

pub fn wrong_arity(name: &str) -> String {
    format!("ERR wrong number of arguments for '{name}' command")
}

fn unknown_subcommand(out: &mut Vec<u8>, args: &Args<'_>, command: &str) {
    reply::error(
        out,
        &format!(
            "ERR unknown subcommand '{}'. Try {command} HELP.",
            lossy(args.get(1))
        ),
    );
}

pub fn hello(args: &Args<'_>, session: &mut Session, node: &NodeContext, out: &mut Vec<u8>) {
    let mut next = 1;
    if args.len() >= 2 {
        match parse_i64(args.get(1)) {
            None => {
                return reply::error(
                    out,
                    "ERR Protocol version is not an integer or out of range",
                );
            }
            Some(3) => {
                return reply::error(out, "NOPROTO sorry, this protocol version is not supported");
            }
            Some(2) => next = 2,
            Some(_) => return reply::error(out, "NOPROTO unsupported protocol version"),
        }
    }
    let (mut auth, mut setname) = (None, None);
    while next < args.len() {
        let more = args.len() - 1 - next;
        if args.is(next, "auth") && more >= 2 {
            auth = Some((args.get(next + 1), args.get(next + 2)));
            next += 3;
        } else if args.is(next, "setname") && more >= 1 {
            setname = Some(args.get(next + 1));
            next += 2;
        } else {
            let option = lossy(args.get(next));
            return reply::error(out, &format!("ERR Syntax error in HELLO option '{option}'"));
        }
    }
    if let Some((user, password)) = auth {
        if !node.password_matches(user, password) {
            return reply::error(out, WRONGPASS);
        }
        session.authenticated = true;
    }
    if !session.authenticated {
        return reply::error(
            out,
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the \
             HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and \
             select the RESP protocol version at the same time",
        );
    }
    if let Some(name) = setname
        && let Err(message) = set_client_name(session, name)
    {
        return reply::error(out, message);
    }
    // RESP2 has no maps: Redis answers HELLO 2 with a flat key/value array.
    reply::array(out, 14);
    for (key, value) in [("server", "redis"), ("version", REDIS_COMPAT_VERSION)] {
        reply::bulk(out, key.as_bytes());
        reply::bulk(out, value.as_bytes());
    }
    reply::bulk(out, b"proto");
    reply::int(out, 2);
    reply::bulk(out, b"id");
    reply::int(out, i64::try_from(session.id).unwrap_or(i64::MAX));
    for (key, value) in [("mode", "standalone"), ("role", "master")] {
        reply::bulk(out, key.as_bytes());
        reply::bulk(out, value.as_bytes());
    }
    reply::bulk(out, b"modules");
    reply::array(out, 0);
}

/// AUTH password | AUTH username password.
pub fn auth(args: &Args<'_>, session: &mut Session, node: &NodeContext, out: &mut Vec<u8>) {
    let (user, password) = match args.len() {
        2 if node.requirepass.is_none() => {
            return reply::error(
                out,
                "ERR AUTH <password> called without any password configured for the default \
                 user. Are you sure your configuration is correct?",
            );
        }
        2 => (&b"default"[..], args.get(1)),
        3 => (args.get(1), args.get(2)),
        _ => return reply::error(out, "ERR syntax error"),
    };
    if node.password_matches(user, password) {
        session.authenticated = true;
        reply::ok(out);
    } else {
        reply::error(out, WRONGPASS);
    }
}

fn set_client_name(session: &mut Session, name: &[u8]) -> Result<(), &'static str> {
    if name.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
        return Err("ERR Client names cannot contain spaces, newlines or special characters.");
    }
    session.name = (!name.is_empty()).then(|| name.to_vec());
    Ok(())
}

pub fn client(args: &Args<'_>, session: &mut Session, out: &mut Vec<u8>) {
    let (name, arity_ok) = match args.get(1).to_ascii_lowercase().as_slice() {
        b"setname" => ("client|setname", args.len() == 3),
        b"getname" => ("client|getname", args.len() == 2),
        b"id" => ("client|id", args.len() == 2),
        b"setinfo" => ("client|setinfo", args.len() == 4),
        _ => return unknown_subcommand(out, args, "CLIENT"),
    };
    if !arity_ok {
        return reply::error(out, &wrong_arity(name));
    }
    match name {
        "client|setname" => match set_client_name(session, args.get(2)) {
            Ok(()) => reply::ok(out),
            Err(message) => reply::error(out, message),
        },
        "client|getname" => match &session.name {
            Some(name) => reply::bulk(out, name),
            None => reply::nil(out),
        },
        "client|id" => reply::int(out, i64::try_from(session.id).unwrap_or(i64::MAX)),
        // Library name and version are only informational; accepted and not kept.
        _ if args.is(2, "lib-name") || args.is(2, "lib-ver") => reply::ok(out),
        _ => reply::error(
            out,
            &format!("ERR Unrecognized option '{}'", lossy(args.get(2))),
        ),
    }
}

/// COMMAND [COUNT | DOCS [name...] | INFO [name...] | LIST]: what redis-cli and client
/// libraries query. DOCS answers an empty array (no documentation is served).
pub fn command(args: &Args<'_>, out: &mut Vec<u8>) {
    if args.len() == 1 {
        reply::array(out, Kind::ALL.len());
        Kind::ALL
            .into_iter()
            .for_each(|kind| command_entry(out, kind));
        return;
    }
    match args.get(1).to_ascii_lowercase().as_slice() {
        b"count" if args.len() == 2 => reply::int(out, Kind::ALL.len() as i64),
        b"count" => reply::error(out, &wrong_arity("command|count")),
        b"docs" => reply::array(out, 0),
        b"list" => {
            reply::array(out, Kind::ALL.len());
            Kind::ALL
                .into_iter()
                .for_each(|kind| reply::bulk(out, kind.spec().name.as_bytes()));
        }
        b"info" if args.len() == 2 => {
            reply::array(out, Kind::ALL.len());
            Kind::ALL
                .into_iter()
                .for_each(|kind| command_entry(out, kind));
        }
        b"info" => {
            reply::array(out, args.len() - 2);
            for name in args.from(2) {
                match Kind::from_name(name) {
                    Some(kind) => command_entry(out, kind),
                    None => reply::nil_array(out),
                }
            }
        }
        _ => unknown_subcommand(out, args, "COMMAND"),
    }
}

/// Redis 7's COMMAND INFO entry: name, arity, flags, first key, last key, key step, ACL
/// categories, tips, key specs, subcommands (the last four empty).
fn command_entry(out: &mut Vec<u8>, kind: Kind) {
    let spec = kind.spec();
    reply::array(out, 10);
    reply::bulk(out, spec.name.as_bytes());
    reply::int(out, spec.arity);
    reply::array(out, spec.flags.len());
    spec.flags.iter().for_each(|flag| reply::simple(out, flag));
    reply::int(out, spec.first_key);
    reply::int(out, spec.last_key);
    reply::int(out, spec.key_step);
    for _ in 0..4 {
        reply::array(out, 0);
    }
}

/// CONFIG GET answers the few parameters tools ask about (redis-benchmark reads `save` and
/// `appendonly`); nothing is settable at run time.
pub fn config(args: &Args<'_>, node: &NodeContext, out: &mut Vec<u8>) {
    if args.is(1, "resetstat") && args.len() == 2 {
        return reply::ok(out);
    }
    if !args.is(1, "get") {
        return unknown_subcommand(out, args, "CONFIG");
    }
    if args.len() < 3 {
        return reply::error(out, &wrong_arity("config|get"));
    }
    let maxclients = node.limits.connections_max.to_string();
    let known: [(&str, &str); 7] = [
        ("appendonly", "no"),
        ("databases", "1"),
        ("maxclients", &maxclients),
        ("maxmemory", "0"),
        ("maxmemory-policy", "noeviction"),
        ("save", ""),
        ("timeout", "0"),
    ];
    let matched: Vec<(&str, &str)> = known
        .into_iter()
        .filter(|(name, _)| {
            args.from(2)
                .any(|p| p == b"*" || p.eq_ignore_ascii_case(name.as_bytes()))
        })
        .collect();
    reply::array(out, matched.len() * 2);
    for (name, value) in matched {
        reply::bulk(out, name.as_bytes());
        reply::bulk(out, value.as_bytes());
    }
}

pub const INFO_SERVER: u8 = 1;
pub const INFO_CLIENTS: u8 = 2;
pub const INFO_MEMORY: u8 = 4;
pub const INFO_REPLICATION: u8 = 8;
pub const INFO_KEYSPACE: u8 = 16;
pub const INFO_CLUSTER: u8 = 32;
const INFO_ALL: u8 =
    INFO_SERVER | INFO_CLIENTS | INFO_MEMORY | INFO_REPLICATION | INFO_CLUSTER | INFO_KEYSPACE;

/// Redis's `*_human` spelling of a byte count: `512B`, `1.50K`, `2.00M`, `3.25G`.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1 << 40, "T"),
        (1 << 30, "G"),
        (1 << 20, "M"),
        (1 << 10, "K"),
    ];
    for (size, unit) in UNITS {
        if bytes >= size {
            // Precision loss above 2^53 bytes is irrelevant for two decimals.
            #[allow(clippy::cast_precision_loss)]
            let scaled = bytes as f64 / size as f64;
            return format!("{scaled:.2}{unit}");
        }
    }
    format!("{bytes}B")
}

/// INFO's sections as a bitmask; unknown names select nothing, like Redis.
pub fn info_sections(args: &Args<'_>) -> u8 {
    if args.len() == 1 {
        return INFO_ALL;
    }
    args.from(1).fold(0, |mask, name| {
        mask | match name.to_ascii_lowercase().as_slice() {
            b"server" => INFO_SERVER,
            b"clients" => INFO_CLIENTS,
            b"memory" => INFO_MEMORY,
            b"replication" => INFO_REPLICATION,
            b"keyspace" => INFO_KEYSPACE,
            b"cluster" => INFO_CLUSTER,
            b"all" | b"default" | b"everything" => INFO_ALL,
            _ => 0,
        }
    })
}

/// INFO's text: `# Section` headers and `field:value` lines joined by CRLF. `keys` is the
/// site's live key count and `expires` how many of them have a TTL, needed only for the
/// keyspace section.
pub fn info(out: &mut Vec<u8>, node: &NodeContext, sections: u8, keys: i64, expires: i64) {
    let mut text = String::new();
    let mut section = |bit: u8, title: &str, lines: &[(&str, String)]| {
        if sections & bit == 0 {
            return;
        }
        if !text.is_empty() {
            text.push_str("\r\n");
        }
        let _ = write!(text, "# {title}\r\n");
        for (field, value) in lines {
            let _ = write!(text, "{field}:{value}\r\n");
        }
    };
    let uptime = node.started.elapsed().as_secs();
    section(
        INFO_SERVER,
        "Server",
        &[
            ("redis_version", REDIS_COMPAT_VERSION.to_owned()),
            ("tern_version", env!("CARGO_PKG_VERSION").to_owned()),
            ("redis_mode", "standalone".to_owned()),
            ("arch_bits", (usize::BITS).to_string()),
            ("process_id", std::process::id().to_string()),
            ("tcp_port", node.port.to_string()),
            ("uptime_in_seconds", uptime.to_string()),
            ("uptime_in_days", (uptime / 86_400).to_string()),
            ("tern_site", node.site.to_string()),
            (
                "tern_partitions",
                node.router.keyspace().partition_count().to_string(),
            ),
            ("tern_workers", node.workers.to_string()),
        ],
    );
    section(
        INFO_CLIENTS,
        "Clients",
        &[
            (
                "connected_clients",
                node.connections.load(Ordering::Relaxed).to_string(),
            ),
            ("maxclients", node.limits.connections_max.to_string()),
        ],
    );
    // used_memory is what counts against maxmemory, as in Redis; here that is the data the
    // node's partition copies hold (`data_bytes_max`), as last published (about once a tick).
    let (used, max) = if sections & INFO_MEMORY != 0 {
        let status = node.status.get();
        (status.data_bytes, status.data_bytes_max)
    } else {
        (0, 0)
    };
    let rss = crate::host_memory::resident_bytes().unwrap_or(0);
    section(
        INFO_MEMORY,
        "Memory",
        &[
            ("used_memory", used.to_string()),
            ("used_memory_human", human_bytes(used)),
            ("used_memory_rss", rss.to_string()),
            ("used_memory_rss_human", human_bytes(rss)),
            ("used_memory_dataset", used.to_string()),
            ("maxmemory", max.to_string()),
            ("maxmemory_human", human_bytes(max)),
            ("maxmemory_policy", "noeviction".to_owned()),
        ],
    );
    section(
        INFO_REPLICATION,
        "Replication",
        &[
            ("role", "master".to_owned()),
            ("connected_slaves", "0".to_owned()),
        ],
    );
    // Cluster-mode clients and tools check this before asking CLUSTER SLOTS / NODES.
    section(
        INFO_CLUSTER,
        "Cluster",
        &[("cluster_enabled", "1".to_owned())],
    );
    // Like Redis, an empty database is not listed. Expiry statistics are not tracked.
    let keyspace: Vec<(&str, String)> = if keys > 0 {
        vec![("db0", format!("keys={keys},expires={expires},avg_ttl=0"))]
    } else {
        Vec::new()
    };
    section(INFO_KEYSPACE, "Keyspace", &keyspace);
    reply::bulk(out, text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn byte_counts_read_like_redis() {
        let cases = [
            (0, "0B"),
            (512, "512B"),
            (1536, "1.50K"),
            (2 << 20, "2.00M"),
            ((13 << 30) / 4, "3.25G"),
            (1 << 40, "1.00T"),
        ];
        for (bytes, want) in cases {
            assert_eq!(human_bytes(bytes), want, "{bytes}");
        }
    }
}
