//! Every supported command over raw RESP, replies compared with Redis's, as tables of
//! (command, expected reply) run in order on one connection.
mod common;

use common::{Raw, bounded, start, test_config};

const ARITY_GET: &str = "-ERR wrong number of arguments for 'get' command";
const NOT_INTEGER: &str = "-ERR value is not an integer or out of range";
const SYNTAX: &str = "-ERR syntax error";

#[tokio::test]
async fn connection_commands_answer_like_redis() {
    bounded(async {
        let node = start(test_config()).await;
        let mut c = Raw::connect(node.local_addr()).await;
        c.expect_table(&[
            (&["PING"], "+PONG"),
            (&["ping", "hello"], "\"hello\""),
            (&["PING", "a", "b"], "-ERR wrong number of arguments for 'ping' command"),
            (&["ECHO", "x y"], "\"x y\""),
            (&["ECHO"], "-ERR wrong number of arguments for 'echo' command"),
            (&["SELECT", "0"], "+OK"),
            (&["SELECT", "1"], "-ERR DB index is out of range"),
            (&["SELECT", "x"], NOT_INTEGER),
            (&["CLIENT", "GETNAME"], "nil"),
            (&["CLIENT", "SETNAME", "worker-1"], "+OK"),
            (&["client", "getname"], "\"worker-1\""),
            (&["CLIENT", "SETNAME", "has space"], "-ERR Client names cannot contain spaces, newlines or special characters."),
            (&["CLIENT", "SETNAME"], "-ERR wrong number of arguments for 'client|setname' command"),
            (&["CLIENT", "SETINFO", "LIB-NAME", "redis-rs"], "+OK"),
            (&["CLIENT", "SETINFO", "COLOR", "blue"], "-ERR Unrecognized option 'COLOR'"),
            (&["CLIENT", "KILL", "x"], "-ERR unknown subcommand 'KILL'. Try CLIENT HELP."),
            (&["CLIENT"], "-ERR wrong number of arguments for 'client' command"),
            (&["AUTH", "pw"], "-ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?"),
            (&["AUTH", "default", "anything"], "+OK"),
            (&["AUTH", "alice", "pw"], "-WRONGPASS invalid username-password pair or user is disabled."),
            (&["HELLO", "3"], "-NOPROTO sorry, this protocol version is not supported"),
            (&["HELLO", "4"], "-NOPROTO unsupported protocol version"),
            (&["HELLO", "two"], "-ERR Protocol version is not an integer or out of range"),
            (&["HELLO", "2", "FOO"], "-ERR Syntax error in HELLO option 'FOO'"),
            (&["CONFIG", "GET", "save"], "[\"save\", \"\"]"),
            (&["CONFIG", "GET", "appendonly"], "[\"appendonly\", \"no\"]"),
            (&["CONFIG", "GET", "nosuch"], "[]"),
            (&["COMMAND", "DOCS"], "[]"),
            (&["COMMAND", "COUNT"], ":33"),
            (&["COMMAND", "INFO", "nosuch"], "[nil]"),
            (&["COMMAND", "INFO", "get"], "[[\"get\", :2, [+readonly, +fast], :1, :1, :1, [], [], [], []]]"),
            (&["COMMAND", "FOO"], "-ERR unknown subcommand 'FOO'. Try COMMAND HELP."),
            (&["FOO", "a", "b"], "-ERR unknown command 'FOO', with args beginning with: 'a' 'b' "),
            (&["foo"], "-ERR unknown command 'foo', with args beginning with: "),
        ])
        .await;
        let id = c.cmd(&["CLIENT", "ID"]).await;
        assert!(id.starts_with(':'), "CLIENT ID is an integer: {id}");
        let hello = c.cmd(&["HELLO", "2", "SETNAME", "via-hello"]).await;
        assert_eq!(
            hello,
            format!("[\"server\", \"redis\", \"version\", \"7.2.0\", \"proto\", :2, \"id\", {id}, \"mode\", \"standalone\", \"role\", \"master\", \"modules\", []]")
        );
        assert_eq!(c.cmd(&["CLIENT", "GETNAME"]).await, "\"via-hello\"");
        let all = c.cmd(&["COMMAND"]).await;
        assert!(all.contains("\"mset\", :-3, [+write, +denyoom], :1, :-1, :2"), "{all}");
        assert_eq!(c.cmd(&["QUIT"]).await, "+OK");
        assert!(c.is_closed().await, "QUIT closes the connection");
        node.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn string_and_counter_commands_answer_like_redis() {
    bounded(async {
        let node = start(test_config()).await;
        let mut c = Raw::connect(node.local_addr()).await;
        c.expect_table(&[
            (&["GET", "k"], "nil"),
            (&["GET"], ARITY_GET),
            (&["GET", "a", "b"], ARITY_GET),
            (
                &["SET", "k"],
                "-ERR wrong number of arguments for 'set' command",
            ),
            (&["SET", "k", "v1"], "+OK"),
            (&["get", "k"], "\"v1\""),
            (&["TYPE", "k"], "+string"),
            (&["TYPE", "missing"], "+none"),
            (&["SET", "k", "v2", "NX"], "nil"),
            (&["SET", "k", "v2", "XX", "GET"], "\"v1\""),
            (&["SET", "new", "v", "XX"], "nil"),
            (&["SET", "new", "v", "NX", "GET"], "nil"),
            (&["GET", "new"], "\"v\""),
            (&["SET", "k", "v", "NX", "XX"], SYNTAX),
            (&["SET", "k", "v", "EX", "10", "PX", "100"], SYNTAX),
            (&["SET", "k", "v", "EX", "10", "KEEPTTL"], SYNTAX),
            (&["SET", "k", "v", "KEEPTTL", "EX", "10"], SYNTAX),
            (&["SET", "k", "v", "EX"], SYNTAX),
            (&["SET", "k", "v", "BOGUS"], SYNTAX),
            (&["SET", "k", "v", "EX", "ten"], NOT_INTEGER),
            (
                &["SET", "k", "v", "EX", "0"],
                "-ERR invalid expire time in 'set' command",
            ),
            (
                &["SET", "k", "v", "PX", "-5"],
                "-ERR invalid expire time in 'set' command",
            ),
            (
                &["SET", "k", "v", "EX", "9223372036854775807"],
                "-ERR invalid expire time in 'set' command",
            ),
            (&["SET", "k", "v", "EX", "100"], "+OK"),
            (&["TTL", "k"], ":100"),
            (&["SET", "k", "w", "KEEPTTL"], "+OK"),
            (&["TTL", "k"], ":100"),
            (&["SET", "k", "w"], "+OK"),
            (&["TTL", "k"], ":-1"),
            (&["TTL", "missing"], ":-2"),
            (&["PTTL", "missing"], ":-2"),
            (&["EXPIRE", "k", "50"], ":1"),
            (&["TTL", "k"], ":50"),
            (&["EXPIRE", "missing", "50"], ":0"),
            (&["EXPIRE", "k", "x"], NOT_INTEGER),
            (&["EXPIRE", "k", "010"], NOT_INTEGER),
            (&["EXPIRE", "k", "50", "NX"], "-ERR Unsupported option NX"),
            (
                &["EXPIRE", "k", "9223372036854775807"],
                "-ERR invalid expire time in 'expire' command",
            ),
            (&["PEXPIRE", "k", "100000"], ":1"),
            (&["TTL", "k"], ":100"),
            (&["EXPIRE", "k", "0"], ":1"),
            (&["GET", "k"], "nil"),
            (&["INCR", "n"], ":1"),
            (&["INCRBY", "n", "10"], ":11"),
            (&["DECR", "n"], ":10"),
            (&["DECRBY", "n", "4"], ":6"),
            (&["GET", "n"], "\"6\""),
            (&["TYPE", "n"], "+string"),
            (&["INCRBY", "n", "x"], NOT_INTEGER),
            // Redis's string2ll: no leading zeros, no "-0", no "+".
            (&["INCRBY", "n", "007"], NOT_INTEGER),
            (&["INCRBY", "n", "-0"], NOT_INTEGER),
            (&["INCRBY", "n", "+5"], NOT_INTEGER),
            (
                &["DECRBY", "n", "-9223372036854775808"],
                "-ERR decrement would overflow",
            ),
            (&["SET", "s", "abc"], "+OK"),
            (&["INCR", "s"], NOT_INTEGER),
            (&["SET", "big", "9223372036854775807"], "+OK"),
            (
                &["INCR", "big"],
                "-ERR increment or decrement would overflow",
            ),
            (
                &["INCR"],
                "-ERR wrong number of arguments for 'incr' command",
            ),
        ])
        .await;
        // Absolute expiry: an hour from now, in seconds and in milliseconds.
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_millis() as u64;
        let exat = (now_ms / 1000 + 3600).to_string();
        let pxat = (now_ms + 7_200_000).to_string();
        assert_eq!(c.cmd(&["SET", "abs", "v", "EXAT", &exat]).await, "+OK");
        // Whole seconds from now: 3599.0 to 3600 s remain, which TTL rounds to either.
        let ttl = c.cmd(&["TTL", "abs"]).await;
        assert!(ttl == ":3599" || ttl == ":3600", "TTL after EXAT: {ttl}");
        c.expect_table(&[
            (&["SET", "abs", "v", "PXAT", &pxat], "+OK"),
            (&["TTL", "abs"], ":7200"),
        ])
        .await;
        node.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn multi_key_commands_fan_out_and_aggregate() {
    bounded(async {
        let node = start(test_config()).await;
        let mut c = Raw::connect(node.local_addr()).await;
        c.expect_table(&[
            (&["DBSIZE"], ":0"),
            (
                &[
                    "MSET", "a", "1", "b", "2", "c", "3", "{t}x", "4", "{t}y", "5",
                ],
                "+OK",
            ),
            (
                &["MSET", "a", "1", "b"],
                "-ERR wrong number of arguments for 'mset' command",
            ),
            (
                &["MSET"],
                "-ERR wrong number of arguments for 'mset' command",
            ),
            (
                &["MGET", "a", "missing", "c", "{t}y"],
                "[\"1\", nil, \"3\", \"5\"]",
            ),
            (
                &["MGET"],
                "-ERR wrong number of arguments for 'mget' command",
            ),
            (&["DBSIZE"], ":5"),
            (
                &["DBSIZE", "x"],
                "-ERR wrong number of arguments for 'dbsize' command",
            ),
            (&["EXISTS", "a", "b", "missing", "a"], ":3"),
            (&["DEL", "a", "b", "missing"], ":2"),
            (&["EXISTS", "a", "b"], ":0"),
            (&["DEL"], "-ERR wrong number of arguments for 'del' command"),
            (&["DBSIZE"], ":3"),
            (&["FLUSHALL", "NOW"], SYNTAX),
            (&["FLUSHALL", "ASYNC"], "+OK"),
            (&["DBSIZE"], ":0"),
            (&["SET", "a", "1"], "+OK"),
            (&["FLUSHDB"], "+OK"),
            (&["FLUSHALL", "SYNC"], "+OK"),
            (&["DBSIZE"], ":0"),
        ])
        .await;
        node.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn info_reports_sections_and_key_count() {
    bounded(async {
        let node = start(test_config()).await;
        let mut c = Raw::connect(node.local_addr()).await;
        assert_eq!(c.cmd(&["MSET", "a", "1", "b", "2"]).await, "+OK");
        let info = c.cmd(&["INFO"]).await;
        for needle in [
            "# Server\\r\\n",
            "redis_version:7.2.0",
            "role:master",
            "connected_clients:1",
            "# Keyspace\\r\\ndb0:keys=2,expires=0,avg_ttl=0\\r\\n",
            "tern_partitions:64",
        ] {
            assert!(info.contains(needle), "INFO lacks {needle}: {info}");
        }
        let replication = c.cmd(&["INFO", "replication"]).await;
        assert_eq!(
            replication,
            "\"# Replication\\r\\nrole:master\\r\\nconnected_slaves:0\\r\\n\""
        );
        assert_eq!(
            c.cmd(&["INFO", "keyspace"]).await,
            "\"# Keyspace\\r\\ndb0:keys=2,expires=0,avg_ttl=0\\r\\n\""
        );
        // Keys with a TTL are counted; an expired one is neither a key nor an expiring one.
        assert_eq!(c.cmd(&["SET", "c", "3", "EX", "100"]).await, "+OK");
        assert_eq!(c.cmd(&["PEXPIRE", "a", "100000"]).await, ":1");
        assert_eq!(c.cmd(&["SET", "gone", "x", "PX", "1"]).await, "+OK");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert_eq!(
            c.cmd(&["INFO", "keyspace"]).await,
            "\"# Keyspace\\r\\ndb0:keys=3,expires=2,avg_ttl=0\\r\\n\""
        );
        assert_eq!(c.cmd(&["INFO", "nosuchsection"]).await, "\"\"");
        node.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn keys_and_values_over_their_limits_are_refused() {
    bounded(async {
        let mut config = test_config();
        config.limits.key_bytes_max = 8;
        config.limits.value_bytes_max = 16;
        let node = start(config).await;
        let mut c = Raw::connect(node.local_addr()).await;
        let long_key = "k".repeat(9);
        let long_value = "v".repeat(17);
        c.expect_table(&[
            (
                &["SET", &long_key, "v"],
                "-ERR key of 9 bytes exceeds key_bytes_max (8 bytes)",
            ),
            (
                &["GET", &long_key],
                "-ERR key of 9 bytes exceeds key_bytes_max (8 bytes)",
            ),
            (
                &["SET", "k", &long_value],
                "-ERR value of 17 bytes exceeds value_bytes_max (16 bytes)",
            ),
            (
                &["MSET", "a", "1", "k", &long_value],
                "-ERR value of 17 bytes exceeds value_bytes_max (16 bytes)",
            ),
            (&["EXISTS", "a"], ":0"),
            (&["SET", "k", &"v".repeat(16)], "+OK"),
        ])
        .await;
        node.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_short_px_expires_the_key() {
    bounded(async {
        let node = start(test_config()).await;
        let mut c = Raw::connect(node.local_addr()).await;
        assert_eq!(c.cmd(&["SET", "short", "v", "PX", "50"]).await, "+OK");
        assert_eq!(c.cmd(&["GET", "short"]).await, "\"v\"");
        let pttl = c.cmd(&["PTTL", "short"]).await;
        let ms: i64 = pttl
            .trim_start_matches(':')
            .parse()
            .expect("PTTL is an integer");
        assert!((1..=50).contains(&ms), "PTTL {ms}");
        tokio::time::sleep(std::time::Duration::from_millis(120)).await;
        c.expect_table(&[
            (&["GET", "short"], "nil"),
            (&["TTL", "short"], ":-2"),
            (&["EXISTS", "short"], ":0"),
        ])
        .await;
        // The tick (every 10 ms here) removes it from the count too.
        assert_eq!(c.cmd(&["DBSIZE"]).await, ":0");
        node.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn memory_usage_answers_what_a_key_costs_against_the_data_cap() {
    bounded(async {
        let node = start(test_config()).await;
        let mut c = Raw::connect(node.local_addr()).await;
        let value = "v".repeat(64);
        let cost = tern_node::core::stored_bytes(
            b"k",
            &tern_conflict::Value::Bytes(bytes::Bytes::from(value.clone())),
        );
        let cost = format!(":{cost}");
        c.expect_table(&[
            (&["SET", "k", &value], "+OK"),
            (&["MEMORY", "USAGE", "k"], &cost),
            (&["memory", "usage", "k", "SAMPLES", "5"], &cost),
            (&["MEMORY", "USAGE", "missing"], "nil"),
            (&["MEMORY", "USAGE", "k", "SAMPLES", "x"], NOT_INTEGER),
            (&["MEMORY", "USAGE", "k", "EXTRA"], SYNTAX),
            (
                &["MEMORY", "STATS"],
                "-ERR unknown subcommand 'STATS'. Try MEMORY HELP.",
            ),
            (
                &["MEMORY"],
                "-ERR wrong number of arguments for 'memory' command",
            ),
        ])
        .await;
        let help = c.cmd(&["MEMORY", "HELP"]).await;
        assert!(help.contains("USAGE <key> [SAMPLES <count>]"), "{help}");
        node.shutdown().await;
    })
    .await;
}
