//! Applying a source's records: one request per (source, partition) in flight, through the
//! router to the partition's primary, which resolves each against its local entry and
//! replicates the result to its backups like any write. A request that fails at the shell
//! (primary moving, node stopping) is retried with backoff: records apply idempotently.
use super::engine::Event;
use super::limits::APPLY_RETRY_BACKOFF_MS_MAX;
use crate::wire::WanRecord;
use std::time::Duration;
use tern_node::core::{Command, CommandResult, PartitionId};
use tern_node::shell::Router;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Applies `records` (one partition, in order) with `commands`, the core's `WanApply` for
/// each, and reports back.
pub fn spawn_apply(
    router: Router,
    source: String,
    partition: PartitionId,
    records: Vec<WanRecord>,
    commands: Vec<Command>,
    events: mpsc::UnboundedSender<Event>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = 5;
        let results: Vec<CommandResult> = loop {
            match router.execute(partition, commands.clone()).await {
                Ok(results) => break results,
                Err(error) => {
                    tracing::debug!(%source, %partition, %error, "applying WAN records; retrying");
                    if events.is_closed() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(backoff)).await;
                    backoff = (backoff * 2).min(APPLY_RETRY_BACKOFF_MS_MAX);
                }
            }
        };
        let _ = events.send(Event::Applied {
            source,
            partition,
            records,
            results,
        });
    })
}
