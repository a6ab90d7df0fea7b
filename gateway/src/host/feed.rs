//! The feed: one task per partition reads committed change records from the partition's
//! current primary (through the router, so a failover only makes it retry) and hands them to
//! the engine, which answers where to read next — the lowest seq any delegator still needs.
//! That answer is the backpressure: a delegator that refused records (a full backlog) keeps
//! the feed re-reading them later. A log found behind what was read (the partition lost its
//! memory) is always handed over; the core sees it and starts a new log generation, answering 0.
//!
//! With `overflow = "block_writes"` every read also *holds* the log after the cursor
//! ([`FeedSettings::hold_ms`]): the primary then refuses local writes that would drop records
//! the feed has not read, so a full backlog blocks writes instead of losing records to the
//! log's byte cap. The hold is a lease renewed by every read; while the engine refuses records
//! the feed re-reads every `poll_ms_max`, far more often than the lease runs out
//! ([`hold_ms_for`]), and a gateway that stops reading releases the writes when it lapses.
use super::engine::Event;
use super::limits::{HOLD_MS_MIN, HOLD_READS_MIN, LOCAL_IDLE_POLL_MS_MAX};
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
    /// The lease each read asks the primary to hold the log for (0: no hold, the
    /// `drop_and_repair` policy).
    pub hold_ms: u32,
}

/// The hold lease for a feed polling at most every `poll_ms_max`: the feed re-reads within
/// `max(poll_ms_max, LOCAL_IDLE_POLL_MS_MAX)` (plus the read itself) while records wait, so the
/// lease is at least [`HOLD_READS_MIN`] of those and never under [`HOLD_MS_MIN`].
pub fn hold_ms_for(poll_ms_max: u64) -> u32 {
    let refresh_ms = poll_ms_max.max(LOCAL_IDLE_POLL_MS_MAX);
    let hold_ms = refresh_ms.saturating_mul(HOLD_READS_MIN).max(HOLD_MS_MIN);
    u32::try_from(hold_ms).unwrap_or(u32::MAX)
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
            // Every read renews the hold, including the re-reads while the engine refuses.
            let command = Command::WanChanges {
                after_seq: after,
                records_max: settings.records_max,
                bytes_max: settings.bytes_max,
                hold_ms: settings.hold_ms,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hold_outlasts_many_refresh_intervals() {
        // (feed_poll_ms_max, expected lease)
        let cases = [
            (1, HOLD_MS_MIN),
            (4, HOLD_MS_MIN),
            (1_000, 20_000),
            (u64::MAX, u64::from(u32::MAX)),
        ];
        for (poll_ms_max, expected) in cases {
            let hold_ms = u64::from(hold_ms_for(poll_ms_max));
            assert_eq!(hold_ms, expected, "poll {poll_ms_max}");
            let refresh_ms = poll_ms_max.max(LOCAL_IDLE_POLL_MS_MAX);
            assert!(
                hold_ms
                    >= refresh_ms
                        .saturating_mul(HOLD_READS_MIN)
                        .min(u64::from(u32::MAX)),
                "poll {poll_ms_max}: lease {hold_ms} ms is not well over the refresh"
            );
        }
    }
}
