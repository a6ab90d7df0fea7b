//! Key → partition actor routing, with the mailbox bound as caller backpressure.
use super::actor::{Execute, PartitionActor, PartitionFailed};
use crate::core::{Command, CommandResult, Keyspace, PartitionId};
use actix::Addr;
use std::sync::Arc;
use tokio::sync::{Semaphore, oneshot};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShellError {
    #[error("ERR partition {0} is not running (node shutting down)")]
    Stopped(PartitionId),
    #[error(transparent)]
    Failed(#[from] PartitionFailed),
}

#[derive(Debug)]
struct PartitionLink {
    addr: Addr<PartitionActor>,
    /// Free mailbox slots; one permit travels with each queued message.
    slots: Arc<Semaphore>,
}

/// Cheaply cloneable handle to every partition actor of a node.
#[derive(Clone, Debug)]
pub struct Router {
    keyspace: Keyspace,
    links: Arc<[PartitionLink]>,
}

/// Replies of a submitted batch, to await later (so a caller can submit to several
/// partitions before waiting for any).
#[derive(Debug)]
pub struct PendingReplies {
    partition: PartitionId,
    rx: oneshot::Receiver<Result<Vec<CommandResult>, PartitionFailed>>,
}

impl PendingReplies {
    pub async fn wait(self) -> Result<Vec<CommandResult>, ShellError> {
        match self.rx.await {
            Ok(result) => result.map_err(ShellError::from),
            Err(_) => Err(ShellError::Stopped(self.partition)),
        }
    }
}

impl Router {
    /// `addrs[i]` must be partition `i`'s actor, and there must be one per partition.
    pub(crate) fn new(
        keyspace: Keyspace,
        addrs: Vec<Addr<PartitionActor>>,
        mailbox_messages_max: usize,
    ) -> Self {
        debug_assert_eq!(addrs.len(), usize::from(keyspace.partition_count()));
        let links = addrs
            .into_iter()
            .map(|addr| PartitionLink {
                addr,
                slots: Arc::new(Semaphore::new(mailbox_messages_max)),
            })
            .collect();
        Self { keyspace, links }
    }

    pub fn keyspace(&self) -> Keyspace {
        self.keyspace
    }

    pub fn partition_of(&self, key: &[u8]) -> PartitionId {
        self.keyspace.partition_of(key)
    }

    /// Queues `commands` at `partition`'s actor as one message. Waits (backpressure) while
    /// that mailbox already holds `partition_mailbox_messages_max` messages.
    pub async fn submit(
        &self,
        partition: PartitionId,
        commands: Vec<Command>,
    ) -> Result<PendingReplies, ShellError> {
        let link = self
            .links
            .get(usize::from(partition.0))
            .ok_or(ShellError::Stopped(partition))?;
        let permit = match Arc::clone(&link.slots).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => Arc::clone(&link.slots)
                .acquire_owned()
                .await
                .map_err(|_| ShellError::Stopped(partition))?,
        };
        let (reply, rx) = oneshot::channel();
        if !link.addr.connected() {
            return Err(ShellError::Stopped(partition));
        }
        link.addr.do_send(Execute {
            commands,
            reply,
            permit,
        });
        Ok(PendingReplies { partition, rx })
    }

    /// Submits and waits: one partition, one round trip.
    pub async fn execute(
        &self,
        partition: PartitionId,
        commands: Vec<Command>,
    ) -> Result<Vec<CommandResult>, ShellError> {
        self.submit(partition, commands).await?.wait().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{PartitionConfig, PartitionCore, Response};
    use crate::limits::Limits;
    use actix::{Actor, Arbiter};
    use std::time::{Duration, Instant};
    use tern_conflict::SiteId;

    #[test]
    fn a_full_mailbox_makes_callers_wait_instead_of_failing() {
        let system = actix::System::new();
        system.block_on(async {
            let arbiter = Arbiter::new();
            let keyspace = Keyspace::new(1).expect("one partition is valid");
            let config = PartitionConfig {
                partition: PartitionId(0),
                site: SiteId(1),
                limits: Limits::default(),
                hash_seed: 7,
            };
            let addr = PartitionActor::start_in_arbiter(&arbiter.handle(), move |_| {
                PartitionActor::new(PartitionCore::new(config), Duration::from_secs(60))
            });
            let router = Router::new(keyspace, vec![addr], 1);
            // Keep the actor's thread busy so the single mailbox slot stays taken.
            let (started_tx, started_rx) = std::sync::mpsc::channel();
            arbiter.spawn_fn(move || {
                let _ = started_tx.send(());
                std::thread::sleep(Duration::from_millis(300));
            });
            started_rx.recv().expect("blocker started");

            let first = router
                .submit(PartitionId(0), vec![Command::DbSize])
                .await
                .expect("first fits");
            let waited_from = Instant::now();
            let second = router
                .submit(PartitionId(0), vec![Command::DbSize])
                .await
                .expect("second waits, then fits");
            assert!(
                waited_from.elapsed() >= Duration::from_millis(150),
                "second submit did not wait"
            );
            assert_eq!(first.wait().await, Ok(vec![Ok(Response::Int(0))]));
            assert_eq!(second.wait().await, Ok(vec![Ok(Response::Int(0))]));
            arbiter.stop();
            assert!(arbiter.join().is_ok());
        });
    }
}
