//! The repair requests of the site gateway, run against the node: a snapshot load pages
//! `Command::WanDump` through the router; a push sends `Command::WanApply` (retried while the
//! router fails). Each reports back to the engine as an event.
use super::engine::Event;
use super::limits::{
    REPAIR_DUMP_BYTES_MAX, REPAIR_DUMP_ENTRIES_MAX, REPAIR_LOAD_ATTEMPTS_MAX,
    REPAIR_TASK_BACKOFF_MS_MAX,
};
use crate::site::{DumpEntries, RepairLoad, RepairPush};
use std::time::Duration;
use tern_node::core::{Command, PartitionId, Response};
use tern_node::shell::Router;
use tokio::sync::mpsc;

/// Pages the partition of `load` through `WanDump` into memory and reports `Event::RepairLoaded`.
pub fn spawn_load(router: Router, load: RepairLoad, events: mpsc::UnboundedSender<Event>) {
    let RepairLoad { token, partition } = load;
    tokio::spawn(async move {
        let result = load_partition(&router, partition, &events).await;
        let _ = events.send(Event::RepairLoaded { token, result });
    });
}

async fn load_partition(
    router: &Router,
    partition: PartitionId,
    events: &mpsc::UnboundedSender<Event>,
) -> Result<DumpEntries, String> {
    let mut entries = Vec::new();
    let mut from = 0;
    let mut failures = 0;
    let mut backoff = 5;
    loop {
        let command = Command::WanDump {
            from_position: from,
            entries_max: REPAIR_DUMP_ENTRIES_MAX,
            bytes_max: REPAIR_DUMP_BYTES_MAX,
        };
        let page = match router.execute(partition, vec![command]).await {
            Ok(mut results) => match results.pop() {
                Some(Ok(Response::WanDump(page))) => page,
                other => return Err(format!("unexpected answer to WanDump: {other:?}")),
            },
            Err(error) => {
                failures += 1;
                if failures >= REPAIR_LOAD_ATTEMPTS_MAX || events.is_closed() {
                    return Err(format!("reading partition {partition} for repair: {error}"));
                }
                tokio::time::sleep(Duration::from_millis(backoff)).await;
                backoff = (backoff * 2).min(REPAIR_TASK_BACKOFF_MS_MAX);
                continue;
            }
        };
        entries.extend(page.entries);
        match page.next {
            Some(next) if next > from => from = next,
            Some(next) => return Err(format!("WanDump did not advance ({from} → {next})")),
            None => return Ok(entries),
        }
    }
}

/// Applies `push` to its partition's primary with `commands`, the core's `WanApply` for each
/// entry (retried while the router fails), and reports `Event::RepairPushed`.
pub fn spawn_push(
    router: Router,
    push: RepairPush,
    commands: Vec<Command>,
    events: mpsc::UnboundedSender<Event>,
) {
    let RepairPush { partition, entries } = push;
    tokio::spawn(async move {
        let mut backoff = 5;
        let results = loop {
            match router.execute(partition, commands.clone()).await {
                Ok(results) => break results,
                Err(error) => {
                    tracing::debug!(%partition, %error, "applying repair entries; retrying");
                    if events.is_closed() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(backoff)).await;
                    backoff = (backoff * 2).min(REPAIR_TASK_BACKOFF_MS_MAX);
                }
            }
        };
        let _ = events.send(Event::RepairPushed {
            partition,
            entries,
            results,
        });
    });
}
