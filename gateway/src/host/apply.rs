//! Applying a source's records: one request per (source, partition) in flight, through the
//! router to the partition's primary, which resolves each against its local entry and
//! replicates the result to its backups like any write. A request that fails at the shell
//! (primary moving, node stopping) is retried with backoff: records apply idempotently.
use super::engine::Event;
use super::limits::APPLY_RETRY_BACKOFF_MS_MAX;
use crate::wire::WanRecord;
use std::sync::Arc;
use std::time::Duration;
use tern_conflict::KeyspaceResolvers;
use tern_node::core::{Command, CommandResult, PartitionId};
use tern_node::shell::Router;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Applies `records` (one partition, in order) and reports back.
pub fn spawn_apply(
    router: Router,
    resolvers: Arc<KeyspaceResolvers>,
    source: String,
    partition: PartitionId,
    records: Vec<WanRecord>,
    events: mpsc::UnboundedSender<Event>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = 5;
        let results: Vec<CommandResult> = loop {
            let commands = records
                .iter()
                .map(|r| Command::WanApply {
                    key: r.key.clone(),
                    entry: r.entry.clone(),
                    resolver: Some(resolvers.for_key(&r.key).name().to_owned()),
                })
                .collect();
            match router.execute(partition, commands).await {
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
