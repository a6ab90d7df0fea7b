//! Key → partition → the node that runs it. Any node accepts any command: the router sends a
//! request to the local partition actor when this node is the partition's primary (per its
//! map), else forwards it to the primary over the Forward channel. On a redirect, a lost
//! attempt or no primary, it retries the *same* request id (the primaries' dedup tables make
//! that safe) after the map moves or a short backoff, until `forward_retry_ms_max`; then the
//! client gets `-TRYAGAIN`.
//!
//! Local mailboxes are bounded by a semaphore permit carried by each message, so a full
//! mailbox means waiting, never dropping.
use super::actor::{Execute, Outcome, PartitionActor, PartitionFailed, Reply};
use super::forward::{Answer, Forwarder};
use super::routes::Routes;
use crate::core::{Command, CommandResult, Keyspace, PartitionId, Request, RequestId};
use crate::limits::Limits;
use actix::Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError, oneshot, watch};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShellError {
    #[error("ERR partition {0} is not running (node shutting down)")]
    Stopped(PartitionId),
    #[error(transparent)]
    Failed(#[from] PartitionFailed),
    #[error("TRYAGAIN partition {partition} has no reachable primary after {waited_ms} ms; retry")]
    TryAgain {
        partition: PartitionId,
        waited_ms: u64,
    },
}

/// Why [`Router::try_submit_local`] did not queue a request.
#[derive(Debug)]
pub(crate) enum NotQueued {
    /// The partition's mailbox is full: the request, to submit with
    /// [`Router::submit_local`], which waits for room.
    Full(Request),
    /// The partition is not running.
    Stopped,
}

#[derive(Debug)]
struct PartitionLink {
    addr: Addr<PartitionActor>,
    /// Free mailbox slots; one permit travels with each queued message.
    slots: Arc<Semaphore>,
}

/// Retry timings, from `Limits`.
#[derive(Clone, Copy, Debug)]
struct RetryTimings {
    give_up: Duration,
    attempt_timeout: Duration,
    backoff: Duration,
}

#[derive(Debug)]
struct Site {
    me: u64,
    routes: Arc<Routes>,
    /// `None` on a standalone node: every partition is local and never moves.
    forwarder: Option<Arc<Forwarder>>,
    next_counter: AtomicU64,
    retry: RetryTimings,
}

/// Cheaply cloneable handle to every partition of the site, as seen from this node.
#[derive(Clone, Debug)]
pub struct Router {
    keyspace: Keyspace,
    links: Arc<[PartitionLink]>,
    site: Arc<Site>,
}

/// One try at running a request.
#[derive(Debug)]
enum Attempt {
    Local(oneshot::Receiver<Reply>),
    Remote {
        to: u64,
        rx: Answer,
    },
    /// Not sent: no primary known (`to: None`), or `to`'s link refused it (closed link, full
    /// queue, this node's transport stopping). Remembering `to` is what makes the retry loop
    /// back off before trying the same node again instead of spinning on a dead link, which
    /// would hog this arbiter thread (and every partition actor and connection on it) until
    /// `forward_retry_ms_max`.
    Unsent {
        to: Option<u64>,
    },
}

impl Attempt {
    /// The node this attempt went to.
    fn target(&self, me: u64) -> Option<u64> {
        match self {
            Attempt::Local(_) => Some(me),
            Attempt::Remote { to, .. } => Some(*to),
            Attempt::Unsent { to } => *to,
        }
    }
}

/// How an attempt ended, from the retry loop's point of view.
enum Ended {
    Done(Result<Vec<CommandResult>, ShellError>),
    Redirected { epoch: u64, primary: Option<u64> },
    Lost,
}

/// Replies of a submitted batch, to await later (so a caller can submit to several
/// partitions before waiting for any).
#[derive(Debug)]
pub struct PendingReplies {
    partition: PartitionId,
    first: Attempt,
    /// What a retry needs; `None` on a standalone node, whose requests never move.
    retry: Option<Box<Retry>>,
}

#[derive(Debug)]
struct Retry {
    router: Router,
    id: RequestId,
    commands: Vec<Command>,
    started: Instant,
    attempt: u32,
}

impl PendingReplies {
    pub async fn wait(self) -> Result<Vec<CommandResult>, ShellError> {
        let PendingReplies {
            partition,
            first,
            retry,
        } = self;
        let Some(mut retry) = retry else {
            // Standalone: the local replica always answers.
            return match first {
                Attempt::Local(rx) => match rx.await {
                    Ok(Ok(Outcome::Answered(results))) => Ok(results),
                    Ok(Ok(Outcome::Redirected { .. })) => Err(ShellError::TryAgain {
                        partition,
                        waited_ms: 0,
                    }),
                    Ok(Err(failed)) => Err(failed.into()),
                    Err(_) => Err(ShellError::Stopped(partition)),
                },
                Attempt::Remote { .. } | Attempt::Unsent { .. } => Err(ShellError::TryAgain {
                    partition,
                    waited_ms: 0,
                }),
            };
        };
        retry.run(partition, first).await
    }
}

impl Retry {
    async fn run(
        &mut self,
        partition: PartitionId,
        first: Attempt,
    ) -> Result<Vec<CommandResult>, ShellError> {
        let site = Arc::clone(&self.router.site);
        let timings = site.retry;
        let deadline = self.started + timings.give_up;
        let mut map_changes = site.routes.subscribe();
        map_changes.mark_unchanged();
        let mut attempt = first;
        // After a redirect: the epoch the map must reach before its primary is trusted, and
        // the redirecting replica's hint meanwhile.
        let mut min_epoch = 0;
        let mut hint: Option<u64> = None;
        loop {
            let last_to = attempt.target(site.me);
            let ended = self
                .finish(partition, attempt, &mut map_changes, deadline)
                .await;
            // Whether to hold off before trying the same node again.
            let mut pause = match ended {
                Ended::Done(result) => return result,
                Ended::Redirected { epoch, primary } => {
                    min_epoch = min_epoch.max(epoch);
                    hint = primary;
                    true
                }
                Ended::Lost => last_to.is_some(),
            };
            let target = loop {
                if Instant::now() >= deadline {
                    return Err(self.give_up(partition));
                }
                let routed = if site.routes.epoch(partition) >= min_epoch {
                    site.routes.primary(partition)
                } else {
                    hint
                };
                match routed {
                    Some(to) if !pause || Some(to) != last_to => break to,
                    _ => {}
                }
                // Nowhere to go yet, or back to the node that just failed us: wait for the map
                // to move, bounded by a short backoff (a map update may never come).
                let wait = timings
                    .backoff
                    .min(deadline.saturating_duration_since(Instant::now()));
                if let Ok(Err(_)) = tokio::time::timeout(wait, map_changes.changed()).await {
                    // No more map updates (node stopping): plain backoff, never a spin.
                    tokio::time::sleep(wait).await;
                }
                pause = false;
            };
            attempt = self.send(partition, target).await;
        }
    }

    fn give_up(&self, partition: PartitionId) -> ShellError {
        ShellError::TryAgain {
            partition,
            waited_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        }
    }

    async fn send(&mut self, partition: PartitionId, to: u64) -> Attempt {
        self.attempt += 1;
        let deadline = self.started + self.router.site.retry.give_up;
        self.router
            .attempt(
                partition,
                to,
                self.id,
                self.attempt,
                &self.commands,
                deadline,
            )
            .await
    }

    /// Waits for `attempt` to end: its reply, or (remote) a timeout or a map change that moves
    /// the partition's primary away from where it was sent.
    async fn finish(
        &self,
        partition: PartitionId,
        attempt: Attempt,
        map_changes: &mut watch::Receiver<u64>,
        deadline: Instant,
    ) -> Ended {
        let site = &self.router.site;
        let reply = match attempt {
            Attempt::Unsent { .. } => return Ended::Lost,
            // A local replica answers every request it got exactly once (answer, redirect,
            // or failure), so there is no timeout to apply.
            Attempt::Local(rx) => match rx.await {
                Ok(reply) => reply,
                Err(_) => return Ended::Done(Err(ShellError::Stopped(partition))),
            },
            Attempt::Remote { to, mut rx } => {
                let timeout = site
                    .retry
                    .attempt_timeout
                    .min(deadline.saturating_duration_since(Instant::now()));
                let sleep = tokio::time::sleep(timeout);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        reply = &mut rx => match reply {
                            Ok(reply) => break reply,
                            Err(_) => return Ended::Lost,
                        },
                        _ = &mut sleep => return Ended::Lost,
                        changed = map_changes.changed() => {
                            if changed.is_err() {
                                return Ended::Lost;
                            }
                            if site.routes.primary(partition) != Some(to) {
                                // Abandoned: a late answer to this attempt is never read.
                                return Ended::Lost;
                            }
                        }
                    }
                }
            }
        };
        match reply {
            Ok(Outcome::Answered(results)) => Ended::Done(Ok(results)),
            Ok(Outcome::Redirected { epoch, primary }) => Ended::Redirected { epoch, primary },
            Err(failed) => Ended::Done(Err(failed.into())),
        }
    }
}

impl Router {
    /// `addrs[i]` must be partition `i`'s actor, and there must be one per partition.
    /// `incarnation` goes into the high bits of request ids, so an id is never reused across
    /// restarts (a primary's dedup table would answer it with another request's results).
    pub(crate) fn new(
        keyspace: Keyspace,
        addrs: Vec<Addr<PartitionActor>>,
        limits: &Limits,
        me: u64,
        incarnation: u64,
        routes: Arc<Routes>,
        forwarder: Option<Arc<Forwarder>>,
    ) -> Self {
        debug_assert_eq!(addrs.len(), usize::from(keyspace.partition_count()));
        let links = addrs
            .into_iter()
            .map(|addr| PartitionLink {
                addr,
                slots: Arc::new(Semaphore::new(limits.partition_mailbox_messages_max)),
            })
            .collect();
        let site = Site {
            me,
            routes,
            forwarder,
            next_counter: AtomicU64::new(incarnation << 40),
            retry: RetryTimings {
                give_up: Duration::from_millis(limits.forward_retry_ms_max),
                attempt_timeout: Duration::from_millis(limits.forward_attempt_timeout_ms),
                backoff: Duration::from_millis(limits.forward_backoff_ms),
            },
        };
        Self {
            keyspace,
            links,
            site: Arc::new(site),
        }
    }

    pub fn keyspace(&self) -> Keyspace {
        self.keyspace
    }

    pub fn partition_of(&self, key: &[u8]) -> PartitionId {
        self.keyspace.partition_of(key)
    }

    /// Sends `commands` (one request) towards `partition`'s primary. Waits (backpressure)
    /// while the local mailbox already holds `partition_mailbox_messages_max` messages.
    pub async fn submit(
        &self,
        partition: PartitionId,
        commands: Vec<Command>,
    ) -> Result<PendingReplies, ShellError> {
        let site = &self.site;
        let id = RequestId {
            origin: site.me,
            counter: site.next_counter.fetch_add(1, Ordering::Relaxed),
        };
        if site.forwarder.is_none() {
            let request = Request { id, commands };
            let rx = self.submit_local(partition, request).await?;
            return Ok(PendingReplies {
                partition,
                first: Attempt::Local(rx),
                retry: None,
            });
        }
        let retry = Box::new(Retry {
            router: self.clone(),
            id,
            commands,
            started: Instant::now(),
            attempt: 1,
        });
        let deadline = retry.started + site.retry.give_up;
        let first = match site.routes.primary(partition) {
            Some(to) => {
                self.attempt(partition, to, id, 1, &retry.commands, deadline)
                    .await
            }
            None => Attempt::Unsent { to: None },
        };
        Ok(PendingReplies {
            partition,
            first,
            retry: Some(retry),
        })
    }

    /// Submits and waits: one partition, one round trip.
    pub async fn execute(
        &self,
        partition: PartitionId,
        commands: Vec<Command>,
    ) -> Result<Vec<CommandResult>, ShellError> {
        self.submit(partition, commands).await?.wait().await
    }

    /// One try at `to` (this node or another). A forward waits for room among the
    /// `forward_requests_pending_max` until `deadline`, then counts as unsent (so the retry
    /// loop gives up with `-TRYAGAIN`).
    async fn attempt(
        &self,
        partition: PartitionId,
        to: u64,
        id: RequestId,
        attempt: u32,
        commands: &[Command],
        deadline: Instant,
    ) -> Attempt {
        if to == self.site.me {
            let request = Request {
                id,
                commands: commands.to_vec(),
            };
            return match self.submit_local(partition, request).await {
                Ok(rx) => Attempt::Local(rx),
                Err(_) => Attempt::Unsent { to: Some(to) },
            };
        }
        let Some(forwarder) = &self.site.forwarder else {
            return Attempt::Unsent { to: Some(to) };
        };
        match forwarder
            .send(to, partition, id, attempt, commands, deadline)
            .await
        {
            Some(rx) => Attempt::Remote { to, rx },
            None => Attempt::Unsent { to: Some(to) },
        }
    }

    /// Queues `request` at this node's replica of `partition`, whatever its role (a replica
    /// that is not primary redirects). Used for local requests and forwarded ones.
    pub(crate) async fn submit_local(
        &self,
        partition: PartitionId,
        request: Request,
    ) -> Result<oneshot::Receiver<Reply>, ShellError> {
        let link = self.link(partition)?;
        let permit = match Arc::clone(&link.slots).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => Arc::clone(&link.slots)
                .acquire_owned()
                .await
                .map_err(|_| ShellError::Stopped(partition))?,
        };
        Self::queue(partition, link, request, permit)
    }

    /// [`Self::submit_local`] without waiting: a full mailbox hands the request back, so a
    /// caller serving many requests queues the others before it waits for this one.
    pub(crate) fn try_submit_local(
        &self,
        partition: PartitionId,
        request: Request,
    ) -> Result<oneshot::Receiver<Reply>, NotQueued> {
        let link = self.link(partition).map_err(|_| NotQueued::Stopped)?;
        let permit = match Arc::clone(&link.slots).try_acquire_owned() {
            Ok(permit) => permit,
            Err(TryAcquireError::NoPermits) => return Err(NotQueued::Full(request)),
            Err(TryAcquireError::Closed) => return Err(NotQueued::Stopped),
        };
        Self::queue(partition, link, request, permit).map_err(|_| NotQueued::Stopped)
    }

    fn link(&self, partition: PartitionId) -> Result<&PartitionLink, ShellError> {
        self.links
            .get(usize::from(partition.0))
            .ok_or(ShellError::Stopped(partition))
    }

    fn queue(
        partition: PartitionId,
        link: &PartitionLink,
        request: Request,
        permit: OwnedSemaphorePermit,
    ) -> Result<oneshot::Receiver<Reply>, ShellError> {
        let (reply, rx) = oneshot::channel();
        if !link.addr.connected() {
            return Err(ShellError::Stopped(partition));
        }
        link.addr.do_send(Execute {
            request,
            reply,
            permit,
        });
        Ok(rx)
    }

    pub(crate) fn actor(&self, partition: PartitionId) -> Option<&Addr<PartitionActor>> {
        self.links.get(usize::from(partition.0)).map(|l| &l.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{MapCommand, NodeId, PartitionMap, PeerSpec};
    use crate::core::{PartitionConfig, ReplicaCore, ReplicationLimits, Response};
    use crate::shell::actor::{PartitionLinks, ProposeMap};
    use crate::shell::board::ReplicaBoard;
    use crate::shell::map_view::MapView;
    use crate::shell::peers::Peers;
    use actix::{Actor, Arbiter, Context, Handler};
    use std::time::{Duration, Instant};
    use tern_conflict::SiteId;

    /// Takes the map proposals nobody makes in a one-node site.
    struct NoCluster;

    impl Actor for NoCluster {
        type Context = Context<Self>;
    }

    impl Handler<ProposeMap> for NoCluster {
        type Result = ();

        fn handle(&mut self, _: ProposeMap, _: &mut Self::Context) {}
    }

    #[test]
    fn a_full_mailbox_makes_callers_wait_instead_of_failing() {
        let system = actix::System::new();
        system.block_on(async {
            let arbiter = Arbiter::new();
            let keyspace = Keyspace::new(1).expect("one partition is valid");
            let me = NodeId::new(1).expect("non-zero");
            let mut map = PartitionMap::bootstrap(
                1,
                0,
                [PeerSpec {
                    id: me,
                    addr: "here".into(),
                    zone: None,
                }],
            );
            map.apply(&MapCommand::MarkUp {
                id: me,
                incarnation: 1,
            })
            .expect("register");
            let view = Arc::new(MapView::new(map, me, 1));
            let links = PartitionLinks {
                peers: Arc::new(Peers::none()),
                cluster: NoCluster.start().recipient(),
                board: Arc::new(ReplicaBoard::new(1)),
            };
            let limits = Limits {
                partition_mailbox_messages_max: 1,
                ..Limits::default()
            };
            let config = PartitionConfig {
                partition: PartitionId(0),
                site: SiteId(1),
                limits: limits.clone(),
                hash_seed: 7,
            };
            let actor_view = Arc::clone(&view);
            let addr = PartitionActor::start_in_arbiter(&arbiter.handle(), move |_| {
                let core = ReplicaCore::new(1, config, ReplicationLimits::default());
                PartitionActor::new(core, actor_view, links, Duration::from_secs(60))
            });
            let routes = Arc::new(Routes::new(&view));
            let router = Router::new(keyspace, vec![addr], &limits, 1, 1, routes, None);
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

    /// A primary whose link refuses every frame (this node's transport stopping, a full queue)
    /// must not turn the retry loop into a spin: that hogs the arbiter thread, so neither the
    /// partition actors nor the connections on it (nor the arbiter's own stop) run until
    /// `forward_retry_ms_max` runs out.
    #[test]
    fn retrying_against_a_refusing_link_yields_the_thread() {
        let system = actix::System::new();
        system.block_on(async {
            let arbiter = Arbiter::new();
            let keyspace = Keyspace::new(1).expect("one partition is valid");
            let ids = [1, 2].map(|n| NodeId::new(n).expect("non-zero"));
            let mut map = PartitionMap::bootstrap(
                1,
                0,
                ids.map(|id| PeerSpec {
                    id,
                    addr: format!("node-{id}"),
                    zone: None,
                }),
            );
            for id in ids {
                map.apply(&MapCommand::MarkUp { id, incarnation: 1 })
                    .expect("register");
            }
            let primary = map.partitions()[0].primary.expect("a primary");
            // This node is the other one: every request is forwarded to `primary`.
            let me = ids.into_iter().find(|&n| n != primary).expect("two nodes");
            let view = Arc::new(MapView::new(map, me, 1));
            // No peer links at all: every forward is refused at once.
            let peers = Arc::new(Peers::none());
            let links = PartitionLinks {
                peers: Arc::clone(&peers),
                cluster: NoCluster.start().recipient(),
                board: Arc::new(ReplicaBoard::new(1)),
            };
            let limits = Limits {
                forward_retry_ms_max: 300,
                forward_backoff_ms: 10,
                ..Limits::default()
            };
            let config = PartitionConfig {
                partition: PartitionId(0),
                site: SiteId(1),
                limits: limits.clone(),
                hash_seed: 7,
            };
            let actor_view = Arc::clone(&view);
            let addr = PartitionActor::start_in_arbiter(&arbiter.handle(), move |_| {
                let core = ReplicaCore::new(me.get(), config, ReplicationLimits::default());
                PartitionActor::new(core, actor_view, links, Duration::from_secs(60))
            });
            let routes = Arc::new(Routes::new(&view));
            let forwarder = Some(Arc::new(Forwarder::new(peers, &limits)));
            let router = Router::new(
                keyspace,
                vec![addr],
                &limits,
                me.get(),
                1,
                routes,
                forwarder,
            );

            // A task on the same thread that only needs the thread to be given back now and
            // then.
            let ticks = Arc::new(AtomicU64::new(0));
            let counter = Arc::clone(&ticks);
            let ticker = actix::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            });
            let started = Instant::now();
            let outcome = router.execute(PartitionId(0), vec![Command::DbSize]).await;
            let waited = started.elapsed();
            ticker.abort();
            assert!(
                matches!(outcome, Err(ShellError::TryAgain { .. })),
                "{outcome:?}"
            );
            assert!(
                waited >= Duration::from_millis(300),
                "gave up after {waited:?}"
            );
            let ticks = ticks.load(Ordering::Relaxed);
            assert!(
                ticks >= 10,
                "the retry loop kept the thread for {waited:?} (the other task ran {ticks} times)"
            );
            arbiter.stop();
            assert!(arbiter.join().is_ok());
        });
    }
}
