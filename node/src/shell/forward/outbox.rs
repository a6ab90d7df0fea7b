//! One peer's queue of forwarded requests and the task that sends it.
//!
//! Senders (client connections on the worker threads, the WAN gateway) encode each request
//! straight into the open frame; the first one into an empty outbox wakes the flusher. The
//! flusher runs on the control thread, so by the time it takes the outbox every request queued
//! meanwhile rides in the same frame: the busier the node, the larger the batch, with no timer
//! and no added wait when idle.
use super::pending::Pending;
use crate::cluster::NodeId;
use crate::core::RequestId;
use crate::shell::peers::Peers;
use crate::shell::wire::{BatchFrame, ForwardRequestRef, WireError};
use crate::transport::Channel;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::Notify;

#[derive(Debug)]
pub(super) struct Outbox {
    to: NodeId,
    state: Mutex<State>,
    wake: Notify,
    closed: AtomicBool,
}

#[derive(Debug)]
struct State {
    open: Batch,
    /// Frames closed at `BatchFrame::SOFT_BYTES_MAX`, oldest first, sent before `open`.
    sealed: Vec<Batch>,
    /// The flusher was woken and has not taken the outbox yet.
    scheduled: bool,
}

/// A frame and the attempts in it, to fail them if the link refuses the frame.
#[derive(Debug)]
struct Batch {
    frame: BatchFrame,
    attempts: Vec<(RequestId, u32)>,
}

impl Batch {
    fn new() -> Self {
        Self {
            frame: BatchFrame::requests(),
            attempts: Vec::new(),
        }
    }
}

impl Outbox {
    pub fn new(to: NodeId) -> Self {
        Self {
            to,
            state: Mutex::new(State {
                open: Batch::new(),
                sealed: Vec::new(),
                scheduled: false,
            }),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update leaves the state consistent (a frame and its attempts change together
        // after the only fallible step), so a panicked holder leaves nothing half done.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues attempt `attempt` of request `id`; the flusher sends it soon.
    pub fn push(
        &self,
        id: RequestId,
        attempt: u32,
        request: &ForwardRequestRef<'_>,
    ) -> Result<(), WireError> {
        let wake = {
            let mut guard = self.lock();
            let state = &mut *guard;
            if let Some(full) = state.open.frame.push(request)? {
                state.sealed.push(Batch {
                    frame: full,
                    attempts: std::mem::take(&mut state.open.attempts),
                });
            }
            state.open.attempts.push((id, attempt));
            !std::mem::replace(&mut state.scheduled, true)
        };
        if wake {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Everything queued, oldest first; the next push wakes the flusher again.
    fn take(&self) -> Vec<Batch> {
        let mut state = self.lock();
        state.scheduled = false;
        let mut batches = std::mem::take(&mut state.sealed);
        if !state.open.frame.is_empty() {
            batches.push(std::mem::replace(&mut state.open, Batch::new()));
        }
        batches
    }

    /// Stops the flusher.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }
}

/// The flusher: sends what the outbox holds each time a sender wakes it, until closed.
pub(super) async fn flush(outbox: Arc<Outbox>, peers: Arc<Peers>, pending: Arc<Pending>) {
    loop {
        outbox.wake.notified().await;
        if outbox.closed.load(Ordering::Relaxed) {
            return;
        }
        for Batch { frame, attempts } in outbox.take() {
            if !peers.send(outbox.to, Channel::Forward, frame.finish()) {
                pending.forget(&attempts);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Command;
    use crate::shell::actor::Reply;
    use crate::shell::wire::CommandsRef;
    use std::time::Duration;
    use tokio::sync::oneshot;

    fn id(counter: u64) -> RequestId {
        RequestId { origin: 1, counter }
    }

    fn push(outbox: &Outbox, pending: &Pending, counter: u64) -> oneshot::Receiver<Reply> {
        let slot = pending.try_slot().expect("below the cap");
        let rx = pending.register(id(counter), 1, slot);
        let commands = [Command::DbSize];
        let request = ForwardRequestRef {
            id: id(counter),
            attempt: 1,
            partition: 0,
            commands: CommandsRef(&commands),
        };
        outbox.push(id(counter), 1, &request).expect("encode");
        rx
    }

    /// Requests queued before the flusher runs share one frame, in order.
    #[test]
    fn requests_queued_together_share_a_frame() {
        let outbox = Outbox::new(NodeId::new(2).expect("non-zero"));
        let pending = Pending::new(10);
        let _rx: Vec<_> = (1..=3).map(|n| push(&outbox, &pending, n)).collect();
        let batches = outbox.take();
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].attempts, [(id(1), 1), (id(2), 1), (id(3), 1)]);
        assert_eq!(batches[0].frame.len(), 3);
        assert!(outbox.take().is_empty());
    }

    /// The link refuses the frame (here: no such peer): its attempts end at once as lost,
    /// instead of waiting out `forward_attempt_timeout_ms`.
    #[tokio::test]
    async fn a_refused_frame_loses_its_attempts_at_once() {
        let outbox = Arc::new(Outbox::new(NodeId::new(2).expect("non-zero")));
        let pending = Arc::new(Pending::new(10));
        let flusher = tokio::spawn(flush(
            Arc::clone(&outbox),
            Arc::new(Peers::none()),
            Arc::clone(&pending),
        ));
        let waiters: Vec<_> = (1..=2).map(|n| push(&outbox, &pending, n)).collect();
        for rx in waiters {
            let lost = tokio::time::timeout(Duration::from_secs(5), rx)
                .await
                .expect("the flusher ran");
            assert!(lost.is_err(), "{lost:?}");
        }
        outbox.close();
        tokio::time::timeout(Duration::from_secs(5), flusher)
            .await
            .expect("the flusher stops when closed")
            .expect("no panic");
    }
}
