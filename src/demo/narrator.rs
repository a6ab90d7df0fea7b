//! The demo's voice: runs one command, prints it with its reply, and checks the reply.
use std::fmt;
use std::ops::RangeInclusive;

use anyhow::{Context, bail};
use redis::Value;
use redis::aio::MultiplexedConnection;

use super::render;

/// What a step's reply must be.
#[derive(Debug, Clone)]
pub enum Expect {
    Ok,
    Nil,
    Int(i64),
    IntIn(RangeInclusive<i64>),
    Bulk(&'static str),
    /// A bulk string built at run time.
    Text(String),
    /// MGET-style array: `None` is a nil slot.
    Bulks(Vec<Option<&'static str>>),
    /// Any error reply from the server (the wording is the node's business; the demo shows it).
    Error,
}

impl Expect {
    fn accepts(&self, reply: &Result<Value, redis::RedisError>) -> bool {
        let value = match reply {
            Ok(value) => value,
            // Only a reply from the server counts; a dropped connection is never "expected".
            Err(err) => return matches!(self, Expect::Error) && err.code().is_some(),
        };
        match (self, value) {
            (Expect::Ok, Value::Okay) => true,
            (Expect::Ok, Value::SimpleString(s)) => s == "OK",
            (Expect::Nil, Value::Nil) => true,
            (Expect::Int(want), Value::Int(got)) => want == got,
            (Expect::IntIn(range), Value::Int(got)) => range.contains(got),
            (Expect::Bulk(want), _) => bulk_eq(value, Some(want)),
            (Expect::Text(want), _) => bulk_eq(value, Some(want)),
            (Expect::Bulks(want), Value::Array(items)) => {
                want.len() == items.len()
                    && want
                        .iter()
                        .zip(items)
                        .all(|(w, got)| bulk_eq(got, w.as_deref()))
            }
            _ => false,
        }
    }
}

fn bulk_eq(value: &Value, want: Option<&str>) -> bool {
    match (value, want) {
        (Value::Nil, None) => true,
        (Value::BulkString(bytes), Some(want)) => bytes == want.as_bytes(),
        (Value::SimpleString(s), Some(want)) => s == want,
        _ => false,
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expect::Ok => write!(f, "OK"),
            Expect::Nil => write!(f, "(nil)"),
            Expect::Int(n) => write!(f, "(integer) {n}"),
            Expect::IntIn(range) => {
                write!(f, "an integer in {}..={}", range.start(), range.end())
            }
            Expect::Bulk(s) => write!(f, "{s:?}"),
            Expect::Text(s) => write!(f, "{s:?}"),
            Expect::Bulks(items) => {
                let inner: Vec<String> = items
                    .iter()
                    .map(|item| item.map_or("(nil)".to_owned(), |s| format!("{s:?}")))
                    .collect();
                write!(f, "[{}]", inner.join(", "))
            }
            Expect::Error => write!(f, "an error"),
        }
    }
}

/// Runs steps against one connection, narrating unless quiet, counting every command.
#[derive(Debug)]
pub struct Narrator {
    con: MultiplexedConnection,
    quiet: bool,
    commands: u64,
}

/// Width of the command column, so replies line up.
const COMMAND_COLUMN: usize = 44;

impl Narrator {
    pub fn new(con: MultiplexedConnection, quiet: bool) -> Self {
        Self {
            con,
            quiet,
            commands: 0,
        }
    }

    pub fn commands(&self) -> u64 {
        self.commands
    }

    /// A narrator for another server, with this one's voice (quiet or not).
    pub async fn connect_to(&self, url: &str) -> anyhow::Result<Narrator> {
        let client = redis::Client::open(url)?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(super::CONNECT_MAX))
            .set_response_timeout(Some(super::REPLY_MAX));
        let con = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .with_context(|| format!("connecting to {url}"))?;
        Ok(Narrator::new(con, self.quiet))
    }

    /// Counts `other`'s commands as this narrator's.
    pub fn absorb(&mut self, other: &Narrator) {
        self.commands += other.commands;
    }

    /// A line of story.
    pub fn say(&self, text: impl fmt::Display) {
        if !self.quiet {
            println!("  {text}");
        }
    }

    /// Runs a command and prints it with its reply; no check (the caller inspects the value).
    pub async fn show(&mut self, args: &[&str]) -> anyhow::Result<Value> {
        let reply = self.send(args).await;
        self.print_step(args, &reply, "");
        Ok(reply?)
    }

    /// Runs a command, prints it with its reply and fails the demo if the reply is not `expect`.
    pub async fn check(&mut self, args: &[&str], expect: Expect) -> anyhow::Result<Value> {
        let reply = self.send(args).await;
        let accepted = expect.accepts(&reply);
        self.print_step(args, &reply, if accepted { "  ok" } else { "  WRONG" });
        if !accepted {
            bail!(
                "`{}` replied {}, expected {expect}",
                render::command_line(args),
                shown(&reply)
            );
        }
        // An expected error is still a successful step.
        Ok(reply.unwrap_or(Value::Nil))
    }

    async fn send(&mut self, args: &[&str]) -> Result<Value, redis::RedisError> {
        let mut cmd = redis::Cmd::new();
        for arg in args {
            cmd.arg(*arg);
        }
        self.commands += 1;
        cmd.query_async(&mut self.con).await
    }

    fn print_step(&self, args: &[&str], reply: &Result<Value, redis::RedisError>, verdict: &str) {
        let failed = verdict.trim() == "WRONG";
        if !self.quiet || failed {
            let line = render::command_line(args);
            println!("  {line:<COMMAND_COLUMN$} -> {}{verdict}", shown(reply));
        }
    }
}

fn shown(reply: &Result<Value, redis::RedisError>) -> String {
    match reply {
        Ok(value) => render::reply(value),
        // redis-cli shows the server's own words: `(error) ERR value is not an integer`.
        Err(err) => match (err.code(), err.detail()) {
            (Some(code), Some(detail)) => format!("(error) {code} {detail}"),
            (Some(code), None) => format!("(error) {code}"),
            _ => format!("(error) {err}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn expectations_accept_only_matching_replies() {
        let cases: Vec<(Expect, Value, bool)> = vec![
            (Expect::Ok, Value::Okay, true),
            (Expect::Ok, Value::Nil, false),
            (Expect::Int(3), Value::Int(3), true),
            (Expect::Int(3), Value::Int(4), false),
            (Expect::IntIn(1..=300), Value::Int(300), true),
            (Expect::IntIn(1..=300), Value::Int(-2), false),
            (Expect::Bulk("v"), bulk("v"), true),
            (Expect::Bulk("v"), bulk("w"), false),
            (Expect::Bulk("v"), Value::Nil, false),
            (Expect::Nil, Value::Nil, true),
            (
                Expect::Bulks(vec![Some("a"), None]),
                Value::Array(vec![bulk("a"), Value::Nil]),
                true,
            ),
            (
                Expect::Bulks(vec![Some("a"), None]),
                Value::Array(vec![bulk("a")]),
                false,
            ),
            (Expect::Error, Value::Okay, false),
        ];
        for (expect, value, want) in cases {
            assert_eq!(
                expect.accepts(&Ok(value.clone())),
                want,
                "{expect} vs {value:?}"
            );
        }
    }
}
