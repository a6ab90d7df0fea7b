//! Protocol-level behaviour over raw TCP: framing errors close only the offending
//! connection, limits, inline requests, pipelining order, QUIT.
mod common;

use common::{Raw, bounded, encode_request, render, start, test_config};
use std::time::Duration;

#[tokio::test]
async fn malformed_input_closes_only_that_connection() {
    bounded(async {
        let node = start(test_config()).await;
        let addr = node.local_addr();
        let mut healthy = Raw::connect(addr).await;
        assert_eq!(healthy.cmd(&["SET", "k", "v"]).await, "+OK");
        let cases: &[(&[u8], &str)] = &[
            (
                b"*1\r\n+PING\r\n",
                "-ERR Protocol error: expected '$', got '+'",
            ),
            (b"*x\r\n", "-ERR Protocol error: invalid multibulk length"),
            (b"*1\r\n$-3\r\n", "-ERR Protocol error: invalid bulk length"),
            (
                b"*1\r\n$4\r\nPINGxx",
                "-ERR Protocol error: bulk string not terminated by CRLF",
            ),
            (
                b"*1\r\n$99999999999999999999999999\r\n",
                "-ERR Protocol error: invalid bulk length",
            ),
        ];
        for (input, expected) in cases {
            let mut bad = Raw::connect(addr).await;
            bad.send(input).await;
            let reply = render(&bad.reply().await);
            assert_eq!(reply, *expected, "reply to {input:?}");
            assert!(bad.is_closed().await, "connection closed after {input:?}");
            assert_eq!(
                healthy.cmd(&["GET", "k"]).await,
                "\"v\"",
                "other connection unaffected by {input:?}"
            );
        }
        node.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn replies_before_a_protocol_error_are_still_sent() {
    bounded(async {
        let node = start(test_config()).await;
        let mut c = Raw::connect(node.local_addr()).await;
        let mut input = encode_request(&[b"SET", b"a", b"1"]);
        input.extend_from_slice(&encode_request(&[b"GET", b"a"]));
        input.extend_from_slice(b"*1\r\n:5\r\n");
        c.send(&input).await;
        assert_eq!(render(&c.reply().await), "+OK");
        assert_eq!(render(&c.reply().await), "\"1\"");
        assert_eq!(
            render(&c.reply().await),
            "-ERR Protocol error: expected '$', got ':'"
        );
        assert!(c.is_closed().await);
        node.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn oversized_frames_and_argument_counts_are_refused() {
    bounded(async {
        let mut config = test_config();
        config.limits.frame_bytes_max = 1024;
        config.limits.args_per_command_max = 8;
        config.limits.key_bytes_max = 256;
        config.limits.value_bytes_max = 512;
        let node = start(config).await;
        let addr = node.local_addr();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            // Refused from the header alone, before the data is sent.
            (b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5000\r\n".to_vec(),
                "-ERR Protocol error: request frame of 5029 bytes or more exceeds frame_bytes_max (1024)"),
            (b"*9\r\n".to_vec(), "-ERR Protocol error: command has 9 arguments, more than args_per_command_max (8)"),
            (b"*1000000000\r\n".to_vec(), "-ERR Protocol error: command has 1000000000 arguments, more than args_per_command_max (8)"),
            (vec![b'x'; 2000], "-ERR Protocol error: request frame of 2000 bytes or more exceeds frame_bytes_max (1024)"),
            (b"a b c d e f g h i\r\n".to_vec(), "-ERR Protocol error: command has 9 arguments, more than args_per_command_max (8)"),
        ];
        for (input, expected) in cases {
            let mut c = Raw::connect(addr).await;
            c.send(&input).await;
            assert_eq!(render(&c.reply().await), expected, "reply to {:?}", String::from_utf8_lossy(&input[..input.len().min(40)]));
            assert!(c.is_closed().await);
        }
        // Within the limits everything works.
        let mut c = Raw::connect(addr).await;
        let value = "v".repeat(512);
        assert_eq!(c.cmd(&["SET", "k", &value]).await, "+OK");
        let mget = c.cmd(&["MGET", "a", "b", "c", "d", "e", "f", "k"]).await;
        assert_eq!(mget, format!("[nil, nil, nil, nil, nil, nil, {value:?}]"));
        node.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn deeply_nested_input_is_refused_not_recursed() {
    bounded(async {
        let node = start(test_config()).await;
        let mut c = Raw::connect(node.local_addr()).await;
        c.send(&b"*1\r\n".repeat(100_000)).await;
        assert_eq!(
            render(&c.reply().await),
            "-ERR Protocol error: expected '$', got '*'"
        );
        assert!(c.is_closed().await);
        node.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn inline_requests_and_empty_arrays_work() {
    bounded(async {
        let node = start(test_config()).await;
        let mut c = Raw::connect(node.local_addr()).await;
        c.send(b"PING\r\nSET  k\tv\r\n*0\r\n\r\nGET k\n").await;
        let replies: Vec<String> = [c.reply().await, c.reply().await, c.reply().await]
            .iter()
            .map(render)
            .collect();
        assert_eq!(replies, ["+PONG", "+OK", "\"v\""]);
        node.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn http_requests_are_dropped_without_reply() {
    bounded(async {
        let node = start(test_config()).await;
        let mut c = Raw::connect(node.local_addr()).await;
        c.send(b"POST / HTTP/1.1\r\nHost: example\r\n\r\n").await;
        assert!(c.is_closed().await);
        node.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn pipelined_replies_keep_request_order_across_partitions() {
    bounded(async {
        let mut config = test_config();
        config.limits.pipeline_commands_max = 64; // several batches per write
        let node = start(config).await;
        let mut c = Raw::connect(node.local_addr()).await;
        let n = 1000;
        let mut input = Vec::new();
        let mut expected = Vec::new();
        for i in 0..n {
            let key = format!("key:{i}");
            let value = format!("value:{i}");
            input.extend_from_slice(&encode_request(&[b"SET", key.as_bytes(), value.as_bytes()]));
            expected.push("+OK".to_owned());
            input.extend_from_slice(&encode_request(&[b"GET", key.as_bytes()]));
            expected.push(format!("{value:?}"));
            input.extend_from_slice(&encode_request(&[
                b"INCR",
                format!("n:{}", i % 7).as_bytes(),
            ]));
            expected.push(format!(":{}", i / 7 + 1));
            if i % 100 == 0 {
                input.extend_from_slice(&encode_request(&[b"PING"]));
                expected.push("+PONG".to_owned());
                input.extend_from_slice(&encode_request(&[b"DBSIZE"]));
                expected.push(format!(":{}", i + 1 + (i + 1).min(7)));
            }
        }
        c.send(&input).await;
        for (at, want) in expected.iter().enumerate() {
            assert_eq!(&render(&c.reply().await), want, "reply #{at}");
        }
        node.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn connections_over_the_limit_are_refused() {
    bounded(async {
        let mut config = test_config();
        config.limits.connections_max = 2;
        let node = start(config).await;
        let addr = node.local_addr();
        let mut first = Raw::connect(addr).await;
        let mut second = Raw::connect(addr).await;
        assert_eq!(first.cmd(&["PING"]).await, "+PONG");
        assert_eq!(second.cmd(&["PING"]).await, "+PONG");
        let mut third = Raw::connect(addr).await;
        assert_eq!(
            render(&third.reply().await),
            "-ERR max number of clients reached"
        );
        assert!(third.is_closed().await);
        // A slot frees when a client leaves.
        assert_eq!(first.cmd(&["QUIT"]).await, "+OK");
        assert!(first.is_closed().await);
        let mut admitted = None;
        for _ in 0..100 {
            let mut again = Raw::connect(addr).await;
            again.send(&encode_request(&[b"PING"])).await;
            if render(&again.reply().await) == "+PONG" {
                admitted = Some(again);
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            admitted.is_some(),
            "a new client is admitted after one left"
        );
        assert_eq!(second.cmd(&["PING"]).await, "+PONG");
        node.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_large_value_round_trips() {
    bounded(async {
        let node = start(test_config()).await;
        let mut c = Raw::connect(node.local_addr()).await;
        let value: String = (0..3_000_000)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        assert_eq!(c.cmd(&["SET", "big", &value]).await, "+OK");
        let mut input = Vec::new();
        for _ in 0..4 {
            input.extend_from_slice(&encode_request(&[b"GET", b"big"]));
        }
        c.send(&input).await;
        for _ in 0..4 {
            match c.reply().await {
                redis_protocol::resp2::types::OwnedFrame::BulkString(got) => {
                    assert!(got == value.as_bytes())
                }
                other => panic!("unexpected reply {}", render(&other)),
            }
        }
        node.shutdown().await;
    })
    .await;
}
