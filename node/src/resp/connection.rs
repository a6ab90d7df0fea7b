//! One client connection: read, frame, plan a batch, execute it, write all its replies with
//! one write, repeat. Requests are answered strictly in order.
use super::args::Args;
use super::batch::Batch;
use super::execute::execute;
use super::framing::{ProtocolError, RequestParser};
use super::planner::{Flow, plan};
use super::reply;
use super::session::NodeContext;
use bytes::{Buf, BytesMut};
use std::io;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Read buffer growth step, and the least free space offered to each read.
const READ_CHUNK_BYTES: usize = 16 * 1024;
/// Buffers grown past this by a large request or reply are given back once idle.
const IDLE_BUFFER_BYTES_MAX: usize = 1024 * 1024;

/// How a batch ends the connection, if it does.
enum Ending {
    None,
    Quit,
    Protocol(ProtocolError),
}

pub async fn serve(stream: TcpStream, node: &NodeContext) {
    let peer = stream.peer_addr().ok();
    if let Err(err) = run(stream, node).await {
        // Resets and broken pipes are how clients usually leave; not worth more than debug.
        tracing::debug!(?peer, error = %err, "client connection ended with an I/O error");
    }
}

async fn run(mut stream: TcpStream, node: &NodeContext) -> io::Result<()> {
    let limits = &node.limits;
    let mut session = node.new_session();
    let mut parser = RequestParser::new(limits.frame_bytes_max, limits.args_per_command_max);
    let mut input = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let mut out: Vec<u8> = Vec::with_capacity(READ_CHUNK_BYTES);
    let mut batch = Batch::new(node.router.keyspace().partition_count());
    let mut need_input = true;
    loop {
        if need_input {
            if input.is_empty() && input.capacity() > IDLE_BUFFER_BYTES_MAX {
                input = BytesMut::with_capacity(READ_CHUNK_BYTES);
            }
            let wanted = parser.bytes_wanted(input.len()).max(READ_CHUNK_BYTES);
            input.reserve(wanted);
            if stream.read_buf(&mut input).await? == 0 {
                // Peer closed; an incomplete trailing frame is discarded, as Redis does.
                return Ok(());
            }
        }
        let mut consumed = 0;
        let mut ending = Ending::None;
        need_input = false;
        while batch.requests.len() < limits.pipeline_commands_max {
            match parser.parse(&input[consumed..]) {
                Ok(Some(len)) => {
                    let frame = &input[consumed..consumed + len];
                    consumed += len;
                    let args = Args::new(frame, parser.args());
                    if args.is_empty() {
                        continue;
                    }
                    match plan(args, &mut session, node, &mut batch) {
                        Flow::Continue => {}
                        Flow::EndBatch => break,
                        Flow::Close => {
                            ending = Ending::Quit;
                            break;
                        }
                        Flow::Drop => return Ok(()),
                    }
                }
                Ok(None) => {
                    need_input = true;
                    break;
                }
                Err(err) => {
                    ending = Ending::Protocol(err);
                    break;
                }
            }
        }
        input.advance(consumed);
        if !batch.is_empty() {
            execute(&mut batch, node, &mut out, &mut stream).await?;
            batch.clear();
        }
        if let Ending::Protocol(err) = &ending {
            reply::error(&mut out, &format!("ERR Protocol error: {err}"));
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
            if out.capacity() > IDLE_BUFFER_BYTES_MAX {
                out = Vec::with_capacity(READ_CHUNK_BYTES);
            }
        }
        if !matches!(ending, Ending::None) {
            // Only this connection closes; shutdown flushes the reply before the FIN.
            let _ = stream.shutdown().await;
            return Ok(());
        }
    }
}
