//! Runs a planned batch: one actor message per touched partition, all sent before any reply
//! is awaited, then replies encoded in request order.
use super::admin;
use super::batch::{Aggregate, Batch, Planned, ScanRequest};
use super::planner::SCAN_POSITION_BITS;
use super::reply;
use super::session::NodeContext;
use crate::core::{Command, CommandResult, PartitionId, Response, stored_bytes};
use crate::shell::ShellError;
use bytes::Bytes;
use tern_conflict::Value;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Replies are written out once this many bytes are pending, so a pipeline of large values
/// does not build one huge buffer.
const FLUSH_BYTES: usize = 64 * 1024;

const MISSING_REPLY: &str = "ERR internal error: a partition returned too few replies";
const UNEXPECTED_REPLY: &str = "ERR internal error: unexpected reply from a partition";

/// A sub-command's outcome; errors as their reply text.
type Outcome = Result<Response, String>;

pub async fn execute<W: AsyncWrite + Unpin>(
    batch: &mut Batch,
    node: &NodeContext,
    out: &mut Vec<u8>,
    writer: &mut W,
) -> std::io::Result<()> {
    let router = &node.router;
    let mut pending = Vec::with_capacity(batch.queues.len());
    for (partition, commands) in batch.queues.drain(..) {
        pending.push(router.submit(partition, commands).await);
    }
    let mut results: Vec<Result<std::vec::IntoIter<CommandResult>, ShellError>> =
        Vec::with_capacity(pending.len());
    for submitted in pending {
        results.push(match submitted {
            Ok(replies) => replies.wait().await.map(Vec::into_iter),
            Err(err) => Err(err),
        });
    }
    // Commands were queued per partition in request order, so each request takes the next
    // results of its partitions' queues.
    let mut next = |partition: PartitionId| -> Outcome {
        match batch
            .queue_index(partition)
            .and_then(|i| results.get_mut(i))
        {
            Some(Ok(replies)) => match replies.next() {
                Some(result) => result.map_err(|err| err.to_string()),
                None => Err(MISSING_REPLY.to_owned()),
            },
            Some(Err(err)) => Err(err.to_string()),
            None => Err(MISSING_REPLY.to_owned()),
        }
    };
    for request in &batch.requests {
        match request {
            Planned::Immediate(range) => {
                out.extend_from_slice(batch.immediate.get(range.clone()).unwrap_or(&[]))
            }
            Planned::Keyed { aggregate, parts } => {
                let parts = batch.parts.get(parts.clone()).unwrap_or(&[]);
                encode(*aggregate, parts.iter().map(|&p| next(p)), node, out);
            }
            Planned::Scan(request) => scan(request, node, out).await,
        }
        if out.len() >= FLUSH_BYTES {
            writer.write_all(out).await?;
            out.clear();
        }
    }
    Ok(())
}

/// Encodes a request's reply from its sub-command outcomes, consuming all of them (the
/// per-partition result queues must stay aligned even after an error).
fn encode(
    aggregate: Aggregate,
    outcomes: impl ExactSizeIterator<Item = Outcome>,
    node: &NodeContext,
    out: &mut Vec<u8>,
) {
    match aggregate {
        Aggregate::Single => {
            let mut outcomes = outcomes;
            match outcomes.next() {
                Some(Ok(response)) => encode_response(response, out),
                Some(Err(err)) => reply::error(out, &err),
                None => reply::error(out, MISSING_REPLY),
            }
            outcomes.for_each(drop);
        }
        Aggregate::Type => {
            let exists = outcomes
                .map(|o| o.map(|r| r == Response::Int(1)))
                .collect::<Result<Vec<_>, _>>();
            match exists.as_deref() {
                Ok([true]) => reply::simple(out, "string"),
                Ok(_) => reply::simple(out, "none"),
                Err(err) => reply::error(out, err),
            }
        }
        Aggregate::MemoryUsage(key_bytes) => {
            let mut outcomes = outcomes;
            match outcomes.next() {
                // Counters are sized by their rendered value: close, and like Redis's own
                // answer an estimate.
                Some(Ok(Response::Value(Some(value)))) => {
                    let bytes = stored_bytes(&[], &Value::Bytes(value)) + key_bytes;
                    reply::int(out, i64::try_from(bytes).unwrap_or(i64::MAX));
                }
                Some(Ok(_)) => reply::nil(out),
                Some(Err(err)) => reply::error(out, &err),
                None => reply::error(out, MISSING_REPLY),
            }
            outcomes.for_each(drop);
        }
        Aggregate::Sum => match sum(outcomes) {
            Ok(total) => reply::int(out, total),
            Err(err) => reply::error(out, &err),
        },
        Aggregate::Info(sections) => {
            // Alternating per partition: DBSIZE, then the keys with a TTL.
            let (mut keys, mut expiring) = (Vec::new(), Vec::new());
            for (i, outcome) in outcomes.enumerate() {
                if i % 2 == 0 {
                    keys.push(outcome);
                } else {
                    expiring.push(outcome);
                }
            }
            match (sum(keys.into_iter()), sum(expiring.into_iter())) {
                (Ok(keys), Ok(expires)) => admin::info(out, node, sections, keys, expires),
                (Err(err), _) | (_, Err(err)) => reply::error(out, &err),
            }
        }
        Aggregate::Values => {
            reply::array(out, outcomes.len());
            for outcome in outcomes {
                match outcome {
                    Ok(Response::Value(Some(value))) => reply::bulk(out, &value),
                    // MGET answers nil for anything that is not a readable string.
                    _ => reply::nil(out),
                }
            }
        }
        Aggregate::AllOk => {
            let first_error = outcomes.filter_map(|outcome| match outcome {
                Ok(Response::Ok) => None,
                Ok(_) => Some(UNEXPECTED_REPLY.to_owned()),
                Err(err) => Some(err),
            });
            match first_error.fold(None, |first, err| first.or(Some(err))) {
                None => reply::ok(out),
                Some(err) => reply::error(out, &err),
            }
        }
    }
}

fn sum(outcomes: impl Iterator<Item = Outcome>) -> Result<i64, String> {
    let mut total: i64 = 0;
    let mut first_error = None;
    for outcome in outcomes {
        match outcome {
            Ok(Response::Int(n)) => total = total.saturating_add(n),
            Ok(_) => first_error = first_error.or(Some(UNEXPECTED_REPLY.to_owned())),
            Err(err) => first_error = first_error.or(Some(err)),
        }
    }
    first_error.map_or(Ok(total), Err)
}

fn encode_response(response: Response, out: &mut Vec<u8>) {
    match response {
        Response::Ok => reply::ok(out),
        Response::Value(Some(value)) => reply::bulk(out, &value),
        Response::Value(None) => reply::nil(out),
        Response::Int(n) => reply::int(out, n),
        // SCAN pages are stitched by `scan`; the WAN answers go to the gateway host, never to
        // a RESP client (no RESP command maps to them).
        Response::ScanPage { .. }
        | Response::WanApplied { .. }
        | Response::WanChanges(_)
        | Response::WanDump(_) => reply::error(out, UNEXPECTED_REPLY),
    }
}

/// Walks partitions from the cursor's, one step per round trip, until `count` keys are found
/// or the last partition is done (cursor 0).
async fn scan(request: &ScanRequest, node: &NodeContext, out: &mut Vec<u8>) {
    let partitions = node.router.keyspace().partition_count();
    let mut keys: Vec<Bytes> = Vec::new();
    let (mut partition, mut position) = (request.partition, request.position);
    let cursor = loop {
        if request.matches_nothing || partition >= partitions {
            break 0;
        }
        let step = Command::Scan {
            from: position,
            count: request.count - keys.len(),
            pattern: request.pattern.clone(),
        };
        let result = node
            .router
            .execute(PartitionId(partition), vec![step])
            .await;
        match result.map(|mut replies| replies.pop()) {
            Ok(Some(Ok(Response::ScanPage { keys: found, next }))) => {
                keys.extend(found);
                match next {
                    Some(next) if next > position && next >> SCAN_POSITION_BITS == 0 => {
                        position = next
                    }
                    Some(next) => {
                        tracing::error!(
                            partition,
                            position,
                            next,
                            "scan position did not advance or is too large; skipping the rest of the partition"
                        );
                        (partition, position) = (partition + 1, 0);
                    }
                    None => (partition, position) = (partition + 1, 0),
                }
            }
            Ok(Some(Err(err))) => return reply::error(out, &err.to_string()),
            Ok(_) => return reply::error(out, UNEXPECTED_REPLY),
            Err(err) => return reply::error(out, &err.to_string()),
        }
        if partition >= partitions {
            break 0;
        }
        if keys.len() >= request.count {
            break (u64::from(partition) << SCAN_POSITION_BITS) | position;
        }
    };
    reply::array(out, 2);
    reply::bulk_u64(out, cursor);
    reply::array(out, keys.len());
    for key in &keys {
        reply::bulk(out, key);
    }
}
