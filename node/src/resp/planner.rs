//! Turns one request into a planned reply: look up the command, check arity and
//! authentication, answer connection commands at once, and turn data commands into core
//! commands for their partitions.
use super::admin::{self, NOAUTH, wrong_arity};
use super::args::{Args, lossy};
use super::batch::{Aggregate, Batch, ScanRequest};
use super::cluster_cmd;
use super::framing::parse_i64;
use super::reply;
use super::session::{NodeContext, Session};
use super::table::Kind;
use crate::core::{Command, CommandError, Expiry, SetCondition, TtlUnit};
use bytes::Bytes;

/// What the connection does after planning a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Run the batch before planning further requests (SCAN runs after the rest of its batch).
    EndBatch,
    /// Write the batch's replies, then close (QUIT).
    Close,
    /// Close without replying: an HTTP request sent to the RESP port (cross-protocol attack).
    Drop,
}

const SYNTAX_ERROR: &str = "ERR syntax error";

/// SCAN cursors are `(partition << 48) | position`.
pub const SCAN_POSITION_BITS: u32 = 48;

/// An error reply's text.
type Refusal = String;

pub fn plan(args: Args<'_>, session: &mut Session, node: &NodeContext, batch: &mut Batch) -> Flow {
    let name = args.get(0);
    let Some(kind) = Kind::from_name(name) else {
        if name.eq_ignore_ascii_case(b"post") || name.eq_ignore_ascii_case(b"host:") {
            tracing::warn!("HTTP request on the RESP port; closing the connection");
            return Flow::Drop;
        }
        batch.error(&unknown_command(&args));
        return Flow::Continue;
    };
    if !kind.arity_ok(args.len()) {
        batch.error(&wrong_arity(kind.spec().name));
        return Flow::Continue;
    }
    if !session.authenticated && !matches!(kind, Kind::Auth | Kind::Hello | Kind::Quit) {
        batch.error(NOAUTH);
        return Flow::Continue;
    }
    let planned = match kind {
        Kind::Ping => {
            match args.len() {
                1 => batch.reply(|out| reply::simple(out, "PONG")),
                2 => batch.reply(|out| reply::bulk(out, args.get(1))),
                _ => batch.error(&wrong_arity("ping")),
            }
            Ok(Flow::Continue)
        }
        Kind::Echo => immediate(batch, |out| reply::bulk(out, args.get(1))),
        Kind::Quit => {
            batch.reply(reply::ok);
            Ok(Flow::Close)
        }
        Kind::Select => immediate(batch, |out| match parse_i64(args.get(1)) {
            Some(0) => reply::ok(out),
            Some(_) => reply::error(out, "ERR DB index is out of range"),
            None => reply::error(out, &CommandError::NotAnInteger.to_string()),
        }),
        Kind::Auth => immediate(batch, |out| admin::auth(&args, session, node, out)),
        Kind::Hello => immediate(batch, |out| admin::hello(&args, session, node, out)),
        Kind::Client => immediate(batch, |out| admin::client(&args, session, out)),
        Kind::Command => immediate(batch, |out| admin::command(&args, out)),
        Kind::Cluster => {
            batch.reply(|out| cluster_cmd::cluster(&args, || node.topology(), out));
            // A slot table can be megabytes (slot mod N ranges): written out before planning
            // more, so a pipeline of them cannot pile up in the batch.
            Ok(Flow::EndBatch)
        }
        // Reads always go to primaries (a backup forwards them), so replica reads need no mode.
        Kind::ReadOnly | Kind::ReadWrite => immediate(batch, reply::ok),
        Kind::Config => immediate(batch, |out| admin::config(&args, node, out)),
        Kind::Info => {
            let sections = admin::info_sections(&args);
            if sections & admin::INFO_KEYSPACE == 0 {
                immediate(batch, |out| admin::info(out, node, sections, 0, 0))
            } else {
                // Per partition its live keys, then those with a TTL (the keyspace line).
                batch.keyed(
                    Aggregate::Info(sections),
                    node.router
                        .keyspace()
                        .partitions()
                        .flat_map(|p| [(p, Command::DbSize), (p, Command::ExpiringKeys)]),
                );
                Ok(Flow::Continue)
            }
        }
        Kind::DbSize => every_partition(node, batch, Aggregate::Sum, Command::DbSize),
        Kind::FlushAll | Kind::FlushDb => match args.len() {
            1 => every_partition(node, batch, Aggregate::AllOk, Command::FlushAll),
            2 if args.is(1, "async") || args.is(1, "sync") => {
                every_partition(node, batch, Aggregate::AllOk, Command::FlushAll)
            }
            _ => Err(SYNTAX_ERROR.to_owned()),
        },
        Kind::Get => single(node, batch, Aggregate::Single, args.get(1), |key| {
            Ok(Command::Get { key })
        }),
        Kind::Memory => memory(&args, node, batch),
        Kind::Type => single(node, batch, Aggregate::Type, args.get(1), |key| {
            Ok(Command::Exists { key })
        }),
        Kind::Ttl => single(node, batch, Aggregate::Single, args.get(1), |key| {
            Ok(Command::Ttl {
                key,
                unit: TtlUnit::Seconds,
            })
        }),
        Kind::PTtl => single(node, batch, Aggregate::Single, args.get(1), |key| {
            Ok(Command::Ttl {
                key,
                unit: TtlUnit::Milliseconds,
            })
        }),
        Kind::Incr => single(node, batch, Aggregate::Single, args.get(1), |key| {
            Ok(Command::IncrBy { key, delta: 1 })
        }),
        Kind::Decr => single(node, batch, Aggregate::Single, args.get(1), |key| {
            Ok(Command::IncrBy { key, delta: -1 })
        }),
        Kind::IncrBy => single(node, batch, Aggregate::Single, args.get(1), |key| {
            Ok(Command::IncrBy {
                key,
                delta: integer(args.get(2))?,
            })
        }),
        Kind::DecrBy => single(node, batch, Aggregate::Single, args.get(1), |key| {
            let delta = integer(args.get(2))?;
            let delta = delta
                .checked_neg()
                .ok_or_else(|| "ERR decrement would overflow".to_owned())?;
            Ok(Command::IncrBy { key, delta })
        }),
        Kind::Expire => plan_expire(&args, node, batch, "expire", 1000),
        Kind::PExpire => plan_expire(&args, node, batch, "pexpire", 1),
        Kind::Set => plan_set(&args, node, batch),
        Kind::Del => each_key(&args, node, batch, Aggregate::Sum, |key| Command::Del {
            key,
        }),
        Kind::Exists => each_key(&args, node, batch, Aggregate::Sum, |key| Command::Exists {
            key,
        }),
        Kind::MGet => each_key(&args, node, batch, Aggregate::Values, |key| Command::Get {
            key,
        }),
        Kind::MSet => plan_mset(&args, node, batch),
        Kind::Scan => plan_scan(&args, node, batch),
    };
    match planned {
        Ok(flow) => flow,
        Err(refusal) => {
            batch.error(&refusal);
            Flow::Continue
        }
    }
}

fn immediate(batch: &mut Batch, encode: impl FnOnce(&mut Vec<u8>)) -> Result<Flow, Refusal> {
    batch.reply(encode);
    Ok(Flow::Continue)
}

/// `ERR unknown command 'foo', with args beginning with: 'a' 'b' ` (Redis's exact text,
/// arguments cut at 128 characters in total).
fn unknown_command(args: &Args<'_>) -> String {
    const SHOWN_MAX: usize = 128;
    let name = args.get(0);
    let name = lossy(&name[..name.len().min(SHOWN_MAX)]);
    let mut shown = String::new();
    for arg in args.from(1) {
        if shown.len() >= SHOWN_MAX {
            break;
        }
        let room = SHOWN_MAX - shown.len();
        shown.push('\'');
        shown.push_str(&lossy(&arg[..arg.len().min(room)]));
        shown.push_str("' ");
    }
    format!("ERR unknown command '{name}', with args beginning with: {shown}")
}

fn integer(arg: &[u8]) -> Result<i64, Refusal> {
    parse_i64(arg).ok_or_else(|| CommandError::NotAnInteger.to_string())
}

/// Copies a key out of the request buffer (stored keys must not pin whole read buffers),
/// refusing one over `key_bytes_max` before it travels to a partition.
fn key(node: &NodeContext, arg: &[u8]) -> Result<Bytes, Refusal> {
    let max = node.limits.key_bytes_max;
    if arg.len() > max {
        return Err(CommandError::KeyTooLarge {
            len: arg.len(),
            max,
        }
        .to_string());
    }
    Ok(Bytes::copy_from_slice(arg))
}

fn value(node: &NodeContext, arg: &[u8]) -> Result<Bytes, Refusal> {
    let max = node.limits.value_bytes_max;
    if arg.len() > max {
        return Err(CommandError::ValueTooLarge {
            len: arg.len(),
            max,
        }
        .to_string());
    }
    Ok(Bytes::copy_from_slice(arg))
}

/// MEMORY USAGE key [SAMPLES count] (SAMPLES is accepted and ignored: nothing is sampled, the
/// answer is the key's size as counted against `data_bytes_max`) and MEMORY HELP.
fn memory(args: &Args<'_>, node: &NodeContext, batch: &mut Batch) -> Result<Flow, Refusal> {
    let sub = args.get(1).to_ascii_lowercase();
    match sub.as_slice() {
        b"usage" if args.len() == 3 || (args.len() == 5 && args.is(3, "samples")) => {
            if args.len() == 5 && parse_i64(args.get(4)).is_none_or(|n| n < 0) {
                return Err(CommandError::NotAnInteger.to_string());
            }
            let key_bytes = args.get(2).len();
            single(
                node,
                batch,
                Aggregate::MemoryUsage(key_bytes),
                args.get(2),
                |key| Ok(Command::Get { key }),
            )
        }
        b"usage" => Err(SYNTAX_ERROR.to_owned()),
        b"help" => immediate(batch, |out| {
            let lines: [&[u8]; 4] = [
                b"MEMORY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                b"USAGE <key> [SAMPLES <count>]",
                b"    Return the memory the key and its value cost, in bytes (as counted against data_bytes_max).",
                b"HELP",
            ];
            reply::array(out, lines.len());
            for line in lines {
                reply::simple(out, &String::from_utf8_lossy(line));
            }
        }),
        _ => Err(format!(
            "ERR unknown subcommand '{}'. Try MEMORY HELP.",
            String::from_utf8_lossy(args.get(1))
        )),
    }
}

fn single(
    node: &NodeContext,
    batch: &mut Batch,
    aggregate: Aggregate,
    key_arg: &[u8],
    build: impl FnOnce(Bytes) -> Result<Command, Refusal>,
) -> Result<Flow, Refusal> {
    let partition = node.router.partition_of(key_arg);
    let command = build(key(node, key_arg)?)?;
    batch.keyed(aggregate, [(partition, command)]);
    Ok(Flow::Continue)
}

/// DEL, EXISTS, MGET: one command per key, each to its partition. Every key is checked
/// before any command is queued, so a refused request has no partial effect.
fn each_key(
    args: &Args<'_>,
    node: &NodeContext,
    batch: &mut Batch,
    aggregate: Aggregate,
    build: impl Fn(Bytes) -> Command,
) -> Result<Flow, Refusal> {
    let commands = args
        .from(1)
        .map(|arg| Ok((node.router.partition_of(arg), build(key(node, arg)?))))
        .collect::<Result<Vec<_>, Refusal>>()?;
    batch.keyed(aggregate, commands);
    Ok(Flow::Continue)
}

fn every_partition(
    node: &NodeContext,
    batch: &mut Batch,
    aggregate: Aggregate,
    command: Command,
) -> Result<Flow, Refusal> {
    batch.keyed(
        aggregate,
        node.router
            .keyspace()
            .partitions()
            .map(|p| (p, command.clone())),
    );
    Ok(Flow::Continue)
}

/// MSET k v [k v ...]: one SET per pair, each atomic in its partition. MSET as a whole is
/// NOT atomic across partitions: a reader may see some pairs before others, and if one
/// partition refuses its SET the others still apply (the reply is the first error).
fn plan_mset(args: &Args<'_>, node: &NodeContext, batch: &mut Batch) -> Result<Flow, Refusal> {
    if args.len().is_multiple_of(2) {
        return Err(wrong_arity("mset"));
    }
    let mut commands = Vec::with_capacity(args.len() / 2);
    for pair in (1..args.len()).step_by(2) {
        let (k, v) = (args.get(pair), args.get(pair + 1));
        let command = Command::Set {
            key: key(node, k)?,
            value: value(node, v)?,
            condition: SetCondition::Always,
            expiry: None,
            get: false,
        };
        commands.push((node.router.partition_of(k), command));
    }
    batch.keyed(Aggregate::AllOk, commands);
    Ok(Flow::Continue)
}

/// SET key value [NX | XX] [GET] [EX s | PX ms | EXAT s | PXAT ms | KEEPTTL], with Redis's
/// rules for which options combine.
fn plan_set(args: &Args<'_>, node: &NodeContext, batch: &mut Batch) -> Result<Flow, Refusal> {
    let invalid_expire = || CommandError::InvalidExpire { command: "set" }.to_string();
    let mut condition = SetCondition::Always;
    let mut get = false;
    let mut expiry = None;
    let mut at = 3;
    while at < args.len() {
        let has_operand = at + 1 < args.len();
        if args.is(at, "nx") && condition != SetCondition::IfPresent {
            condition = SetCondition::IfAbsent;
        } else if args.is(at, "xx") && condition != SetCondition::IfAbsent {
            condition = SetCondition::IfPresent;
        } else if args.is(at, "get") {
            get = true;
        } else if args.is(at, "keepttl") && expiry.is_none() {
            expiry = Some(Expiry::Keep);
        } else if expiry.is_none() && has_operand {
            let (scale, absolute) = match args.get(at).to_ascii_lowercase().as_slice() {
                b"ex" => (1000, false),
                b"px" => (1, false),
                b"exat" => (1000, true),
                b"pxat" => (1, true),
                _ => return Err(SYNTAX_ERROR.to_owned()),
            };
            let amount = integer(args.get(at + 1))?;
            if amount <= 0 {
                return Err(invalid_expire());
            }
            let ms = amount.checked_mul(scale).ok_or_else(invalid_expire)?;
            expiry = Some(if absolute {
                Expiry::AtMs(ms)
            } else {
                Expiry::InMs(ms)
            });
            at += 1;
        } else {
            return Err(SYNTAX_ERROR.to_owned());
        }
        at += 1;
    }
    let key_arg = args.get(1);
    let command = Command::Set {
        key: key(node, key_arg)?,
        value: value(node, args.get(2))?,
        condition,
        expiry,
        get,
    };
    batch.keyed(
        Aggregate::Single,
        [(node.router.partition_of(key_arg), command)],
    );
    Ok(Flow::Continue)
}

/// EXPIRE/PEXPIRE key amount. Redis 7's NX/XX/GT/LT flags are not supported.
fn plan_expire(
    args: &Args<'_>,
    node: &NodeContext,
    batch: &mut Batch,
    name: &'static str,
    scale: i64,
) -> Result<Flow, Refusal> {
    let amount = integer(args.get(2))?;
    if args.len() > 3 {
        return Err(format!("ERR Unsupported option {}", lossy(args.get(3))));
    }
    let ms = amount
        .checked_mul(scale)
        .ok_or_else(|| CommandError::InvalidExpire { command: name }.to_string())?;
    single(node, batch, Aggregate::Single, args.get(1), |key| {
        Ok(Command::Expire {
            key,
            expiry: Expiry::InMs(ms),
        })
    })
}

/// SCAN cursor [MATCH pattern] [COUNT n] [TYPE type].
fn plan_scan(args: &Args<'_>, node: &NodeContext, batch: &mut Batch) -> Result<Flow, Refusal> {
    let invalid_cursor = || "ERR invalid cursor".to_owned();
    let cursor: u64 = std::str::from_utf8(args.get(1))
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(invalid_cursor)?;
    let partition = u16::try_from(cursor >> SCAN_POSITION_BITS).map_err(|_| invalid_cursor())?;
    if partition >= node.router.keyspace().partition_count() {
        return Err(invalid_cursor());
    }
    let mut count = 10;
    let mut pattern = None;
    let mut matches_nothing = false;
    let mut at = 2;
    while at < args.len() {
        if at + 1 >= args.len() {
            return Err(SYNTAX_ERROR.to_owned());
        }
        let operand = args.get(at + 1);
        if args.is(at, "count") {
            let n = integer(operand)?;
            if n < 1 {
                return Err(SYNTAX_ERROR.to_owned());
            }
            let max = node.limits.scan_count_max;
            count = usize::try_from(n)
                .ok()
                .filter(|&n| n <= max)
                .ok_or_else(|| format!("ERR COUNT {n} exceeds scan_count_max ({max})"))?;
        } else if args.is(at, "match") {
            // `*` matches everything; skipping it spares the partitions a glob match per key.
            pattern = (operand != b"*").then(|| Bytes::copy_from_slice(operand));
        } else if args.is(at, "type") {
            // Only strings (counters included) exist in this node.
            matches_nothing = !operand.eq_ignore_ascii_case(b"string");
        } else {
            return Err(SYNTAX_ERROR.to_owned());
        }
        at += 2;
    }
    let position = cursor & ((1 << SCAN_POSITION_BITS) - 1);
    batch.scan(ScanRequest {
        partition,
        position,
        count,
        pattern,
        matches_nothing,
    });
    Ok(Flow::EndBatch)
}
