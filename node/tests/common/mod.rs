//! Helpers shared by the integration tests: start a node on a free port, talk to it over raw
//! TCP (replies decoded with `redis-protocol` and rendered as short text), bound every test.
#![allow(dead_code)]

use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::types::OwnedFrame;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tern_node::config::NodeConfig;
use tern_node::server::{self, NodeHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Every test body runs under this bound, so a hang fails instead of blocking CI.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a single reply may take.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn bounded<F: Future>(body: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .expect("test exceeded its time bound")
}

/// A node on 127.0.0.1 with an OS-chosen port and two workers (the test machine's size).
pub fn test_config() -> NodeConfig {
    NodeConfig {
        listen: "127.0.0.1:0".parse().expect("literal address"),
        workers: 2,
        tick_ms: 10,
        ..NodeConfig::default()
    }
}

pub async fn start(config: NodeConfig) -> NodeHandle {
    server::start(config).await.expect("node starts")
}

pub async fn redis_connection(addr: SocketAddr) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(format!("redis://{addr}/")).expect("client url");
    client
        .get_multiplexed_async_connection()
        .await
        .expect("redis client connects")
}

/// Encodes a request as a RESP array of bulk strings.
pub fn encode_request(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Renders a reply compactly: `+OK`, `-ERR ...`, `:1`, `"bulk"`, `nil`, `[a, b]`.
pub fn render(frame: &OwnedFrame) -> String {
    match frame {
        OwnedFrame::SimpleString(s) => format!("+{}", String::from_utf8_lossy(s)),
        OwnedFrame::Error(e) => format!("-{e}"),
        OwnedFrame::Integer(i) => format!(":{i}"),
        OwnedFrame::BulkString(b) => format!("{:?}", String::from_utf8_lossy(b)),
        OwnedFrame::Null => "nil".to_owned(),
        OwnedFrame::Array(items) => format!(
            "[{}]",
            items.iter().map(render).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// A raw RESP connection.
pub struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("tcp connect");
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write request");
    }

    /// The next reply, or `None` if the server closed the connection first.
    pub async fn try_reply(&mut self) -> Option<OwnedFrame> {
        loop {
            match decode(&self.buf).expect("server sent valid RESP") {
                Some((frame, used)) => {
                    self.buf.drain(..used);
                    return Some(frame);
                }
                None => {
                    self.buf.reserve(64 * 1024);
                    let n =
                        tokio::time::timeout(REPLY_TIMEOUT, self.stream.read_buf(&mut self.buf))
                            .await
                            .expect("reply within the timeout")
                            .unwrap_or(0);
                    if n == 0 {
                        return None;
                    }
                }
            }
        }
    }

    pub async fn reply(&mut self) -> OwnedFrame {
        self.try_reply()
            .await
            .expect("a reply before the connection closed")
    }

    /// Sends one command and renders its reply.
    pub async fn cmd(&mut self, args: &[&str]) -> String {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.send(&encode_request(&args)).await;
        render(&self.reply().await)
    }

    /// Runs a table of (command, expected rendered reply) in order on this connection.
    pub async fn expect_table(&mut self, table: &[(&[&str], &str)]) {
        for (command, expected) in table {
            let got = self.cmd(command).await;
            assert_eq!(got, *expected, "reply to {command:?}");
        }
    }

    /// Whether the server has closed the connection (after any pending replies).
    pub async fn is_closed(&mut self) -> bool {
        self.try_reply().await.is_none()
    }
}
