//! `tern node` as a real process, spoken to over TCP with the `redis` crate.
mod support;

use redis::Value;
use support::NodeProcess;

fn bulk(s: &str) -> Value {
    Value::BulkString(s.as_bytes().to_vec())
}

fn cmd(args: &[&str]) -> redis::Cmd {
    let mut cmd = redis::Cmd::new();
    for arg in args {
        cmd.arg(*arg);
    }
    cmd
}

/// Replies are compared loosely on status strings (`OK` may arrive as Okay or SimpleString).
fn same_reply(got: &Value, want: &Value) -> bool {
    match (got, want) {
        (Value::SimpleString(s), Value::Okay) | (Value::Okay, Value::SimpleString(s)) => s == "OK",
        _ => got == want,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_commands_round_trip() {
    let node = NodeProcess::start(&[], &[]);
    let mut con = node.connect().await;
    // Each step depends on the ones before it: a small, replayable session.
    let steps: Vec<(&[&str], Value)> = vec![
        (&["SET", "k1", "v1"], Value::Okay),
        (&["GET", "k1"], bulk("v1")),
        (&["GET", "missing"], Value::Nil),
        (&["EXISTS", "k1", "missing"], Value::Int(1)),
        (&["MSET", "a", "1", "b", "2", "c", "3"], Value::Okay),
        (
            &["MGET", "a", "nope", "c", "b"],
            Value::Array(vec![bulk("1"), Value::Nil, bulk("3"), bulk("2")]),
        ),
        (&["INCR", "a"], Value::Int(2)),
        (&["INCRBY", "a", "10"], Value::Int(12)),
        (&["DECR", "a"], Value::Int(11)),
        (&["DBSIZE"], Value::Int(4)),
        (&["DEL", "k1", "b", "missing"], Value::Int(2)),
        (&["GET", "k1"], Value::Nil),
        (&["DBSIZE"], Value::Int(2)),
        (&["SET", "ttl", "x", "PX", "60000"], Value::Okay),
    ];
    for (args, want) in steps {
        let got: Value = cmd(args)
            .query_async(&mut con)
            .await
            .unwrap_or_else(|err| panic!("{args:?} failed: {err}"));
        assert!(
            same_reply(&got, &want),
            "{args:?}: got {got:?}, want {want:?}"
        );
    }
    let pttl: i64 = cmd(&["PTTL", "ttl"])
        .query_async(&mut con)
        .await
        .expect("PTTL");
    assert!((1..=60_000).contains(&pttl), "PTTL {pttl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_keep_the_connection_usable() {
    let node = NodeProcess::start(&[], &[]);
    let mut con = node.connect().await;
    let bad: &[&[&str]] = &[
        &["NOSUCHCOMMAND", "x"],
        &["GET"],
        &["SET", "only-key"],
        &["INCRBY", "n", "not-a-number"],
    ];
    for args in bad {
        let reply: redis::RedisResult<Value> = cmd(args).query_async(&mut con).await;
        assert!(reply.is_err(), "{args:?} should be refused, got {reply:?}");
    }
    let _: () = cmd(&["SET", "still", "here"])
        .query_async(&mut con)
        .await
        .expect("SET after errors");
    let got: String = cmd(&["GET", "still"])
        .query_async(&mut con)
        .await
        .expect("GET after errors");
    assert_eq!(got, "here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_writes_are_all_applied_and_scannable() {
    const KEYS: usize = 500;
    let node = NodeProcess::start(&[], &[]);
    let mut con = node.connect().await;
    let mut pipe = redis::pipe();
    for i in 0..KEYS {
        pipe.cmd("SET").arg(format!("key:{i}")).arg(i).ignore();
    }
    let _: () = pipe.query_async(&mut con).await.expect("pipelined SETs");
    let size: usize = cmd(&["DBSIZE"])
        .query_async(&mut con)
        .await
        .expect("DBSIZE");
    assert_eq!(size, KEYS);

    let mut seen = std::collections::BTreeSet::new();
    let mut cursor: u64 = 0;
    for _ in 0..=KEYS {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(50)
            .query_async(&mut con)
            .await
            .expect("SCAN");
        seen.extend(keys);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    assert_eq!(cursor, 0, "SCAN did not finish");
    let want: std::collections::BTreeSet<String> = (0..KEYS).map(|i| format!("key:{i}")).collect();
    assert_eq!(seen, want);
}
