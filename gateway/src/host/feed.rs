//! The feed: one task per partition reads committed change records from the partition's
//! current primary (through the router, so a failover only makes it retry) and hands them to
//! the engine, which answers where to read next — the lowest seq any delegator still needs.
//! That answer is the backpressure: a delegator that refused records (a full backlog) keeps
//! the feed re-reading them later. A log found behind what was read (the partition lost its
//! memory) is reported as `restarted`; the engine starts a new log generation and answers 0.
use super::engine::Event;
use super::limits::LOCAL_IDLE_POLL_MS_MAX;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tern_node::core::{Command, PartitionId, Response};
use tern_node::shell::Router;
use tokio::sync::{mpsc, oneshot, watch};

use tokio::task::JoinHandle;

/// Per partition, a request to read the change log again from its start: set when a target is
/// added, whose delegator needs every retained record (the others skip what they have). Idle
/// partitions would otherwise never be read below where they stand.
#[derive(Debug, Default)]
pub struct FeedRewind {
    partitions: Vec<AtomicBool>,
}

impl FeedRewind {
    pub fn new(partitions: usize) -> Arc<Self> {
        Arc::new(Self {
            partitions: (0..partitions).map(|_| AtomicBool::new(false)).collect(),
        })
    }

    pub fn rewind_all(&self) {
        for flag in &self.partitions {
            flag.store(true, Ordering::Relaxed);
        }
    }

    fn take(&self, partition: PartitionId) -> bool {
        self.partitions
            .get(usize::from(partition.0))
            .is_some_and(|flag| flag.swap(false, Ordering::Relaxed))
    }
}

#[derive(Clone, Copy, Debug)]
pub struct FeedSettings {
    pub poll_ms_max: u64,
    pub records_max: u32,
    pub bytes_max: u32,
}

/// Reads `partition`'s change log after `after` forever (until the engine goes away).
pub fn spawn_feed(
    router: Router,
    partition: PartitionId,
    mut after: u64,
    settings: FeedSettings,
    rewind: Arc<FeedRewind>,
    mut commits: Option<watch::Receiver<u64>>,
    events: mpsc::UnboundedSender<Event>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let poll_max = Duration::from_millis(settings.poll_ms_max.max(1));
        let mut idle = Duration::from_millis(1).min(poll_max);
        let mut primed = false;
        if let Some(rx) = commits.as_mut() {
            rx.mark_unchanged();
        }
        loop {
            if rewind.take(partition) {
                after = 0;
            }
            let command = Command::WanChanges {
                after_seq: after,
                records_max: settings.records_max,
                bytes_max: settings.bytes_max,
            };
            let page = match router.execute(partition, vec![command]).await {
                Ok(mut results) => match results.pop() {
                    Some(Ok(Response::WanChanges(page))) => Some(page),
                    other => {
                        tracing::warn!(%partition, ?other, "unexpected answer to a WAN feed read");
                        None
                    }
                },
                Err(error) => {
                    tracing::debug!(%partition, %error, "reading the change log for the WAN");
                    None
                }
            };
            // The first page always goes to the engine (it learns whether the partition's log
            // is empty-ever); after that only pages with records, or one showing the log went
            // back below what was read (the partition lost its memory: a new generation).
            let (page, restarted) = match page {
                Some(page) if page.last_seq < after => {
                    tracing::warn!(%partition, after, last_seq = page.last_seq, "change log went back: new log generation");
                    (page, true)
                }
                Some(page) if !page.records.is_empty() || !primed => (page, false),
                _ => {
                    if events.is_closed() {
                        return;
                    }
                    // A replica on this node signals each change of its log: wake at once on a
                    // commit and poll rarely. Without one (the primary and backups are
                    // elsewhere) only polling finds new records.
                    let local = commits.as_ref().is_some_and(|rx| *rx.borrow() > 0);
                    let cap = if local {
                        poll_max.max(Duration::from_millis(LOCAL_IDLE_POLL_MS_MAX))
                    } else {
                        poll_max
                    };
                    match commits.as_mut() {
                        Some(rx) => {
                            let _ = tokio::time::timeout(idle, rx.changed()).await;
                        }
                        None => tokio::time::sleep(idle).await,
                    }
                    idle = (idle * 2).min(cap);
                    continue;
                }
            };
            primed = true;
            idle = Duration::from_millis(1).min(poll_max);
            let (reply, next) = oneshot::channel();
            let asked_after = after;
            if events
                .send(Event::Feed {
                    partition,
                    asked_after,
                    page,
                    restarted,
                    reply,
                })
                .is_err()
            {
                return;
            }
            match next.await {
                Ok(next_after) => {
                    // A restart is answered with 0 (re-read the new log at once); otherwise no
                    // progress means nothing was taken (backlog full, or a generation could not
                    // be saved): wait before offering again.
                    let progressed = next_after > asked_after || (restarted && next_after == 0);
                    if !progressed {
                        tokio::time::sleep(poll_max).await;
                    }
                    after = next_after;
                }
                Err(_) => return,
            }
        }
    })
}
