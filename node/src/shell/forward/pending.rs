//! The origin's table of forwarded requests awaiting an answer, bounded by
//! `forward_requests_pending_max`.
//!
//! Each entry holds the current attempt of one request id, its waiter and a slot (a semaphore
//! permit). The slot lives exactly as long as the entry, so every way an entry ends (answer,
//! redirect, a refused frame, the origin dropping its [`Answer`], a sweep) gives it back, and a
//! retry of an id still in the table takes over its slot instead of a second one. At the cap, a
//! new request waits for a slot (FIFO) until its deadline: the answers of the requests already
//! in flight free slots whatever their callers do meanwhile, so waiting never deadlocks.
use crate::core::RequestId;
use crate::shell::actor::{Outcome, Reply};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError, oneshot};

/// A forwarded request's place in the table, taken before its attempt is registered.
pub(super) type Slot = OwnedSemaphorePermit;

#[derive(Debug)]
struct Waiter {
    attempt: u32,
    tx: oneshot::Sender<Reply>,
    /// Given back when the entry goes, however it goes.
    slot: Slot,
}

/// Each request id's current attempt and its waiter.
type Waiters = HashMap<RequestId, Waiter, foldhash::fast::RandomState>;

/// The current attempt of each request id sent to another node, and its waiter.
#[derive(Debug)]
pub(super) struct Pending {
    waiters: Mutex<Waiters>,
    /// One permit per entry of `waiters`, at most `forward_requests_pending_max`.
    slots: Arc<Semaphore>,
    slots_max: usize,
    /// Requests that got no slot by their deadline (for the node's metrics).
    refused_full: AtomicU64,
}

impl Pending {
    /// A table of at most `requests_max` requests (clamped to what a tokio semaphore holds, so
    /// an absurd configured value cannot panic here).
    pub fn new(requests_max: usize) -> Self {
        let slots_max = requests_max.min(Semaphore::MAX_PERMITS);
        Self {
            waiters: Mutex::default(),
            slots: Arc::new(Semaphore::new(slots_max)),
            slots_max,
            refused_full: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Waiters> {
        // The map stays consistent even if a holder panicked (single inserts and removes).
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for request `id`: the one its previous attempt holds if that attempt is still in
    /// the table (it ends as lost, as registering the retry would end it anyway), else a free
    /// one, waiting for it until `deadline`. `None`: no slot freed up in time.
    pub async fn slot(&self, id: RequestId, deadline: Instant) -> Option<Slot> {
        let previous = self.lock().remove(&id);
        if let Some(Waiter { slot, .. }) = previous {
            return Some(slot);
        }
        match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(slot) => return Some(slot),
            // Never closed: `Pending` owns the semaphore and never closes it.
            Err(TryAcquireError::Closed) => return None,
            Err(TryAcquireError::NoPermits) => {}
        }
        let acquire = Arc::clone(&self.slots).acquire_owned();
        match tokio::time::timeout_at(deadline.into(), acquire).await {
            Ok(Ok(slot)) => Some(slot),
            // Closed (never, see above) or the deadline passed.
            Ok(Err(_)) | Err(_) => {
                self.refused_full.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// (requests waiting for an answer, the cap, requests refused at the cap so far).
    pub fn stats(&self) -> (usize, usize, u64) {
        let pending = self.slots_max - self.slots.available_permits().min(self.slots_max);
        (
            pending,
            self.slots_max,
            self.refused_full.load(Ordering::Relaxed),
        )
    }

    /// Makes `attempt` the current one of `id` (dropping an older attempt's waiter), holding
    /// `slot` until it ends.
    pub fn register(&self, id: RequestId, attempt: u32, slot: Slot) -> oneshot::Receiver<Reply> {
        let (tx, rx) = oneshot::channel();
        let replaced = self.lock().insert(id, Waiter { attempt, tx, slot });
        // Outside the lock: waking the older attempt's receiver may run another thread.
        drop(replaced);
        rx
    }

    /// Hands each outcome to its attempt's waiter, if that attempt is still the current one.
    pub fn complete(&self, outcomes: impl IntoIterator<Item = (RequestId, u32, Outcome)>) {
        let mut ready = Vec::new();
        {
            let mut pending = self.lock();
            for (id, attempt, outcome) in outcomes {
                if let Some(waiter) = take_current(&mut pending, id, attempt) {
                    ready.push((waiter, outcome));
                }
            }
        }
        // Outside the lock: each send may wake a task on another thread. The slot goes back
        // before the answer is read, so a request waiting at the cap proceeds at once.
        for (Waiter { tx, slot, .. }, outcome) in ready {
            drop(slot);
            let _ = tx.send(Ok(outcome));
        }
    }

    /// Drops the waiters of these attempts (if still current): they end as lost.
    pub fn forget(&self, attempts: &[(RequestId, u32)]) {
        let mut dropped = Vec::with_capacity(attempts.len());
        {
            let mut pending = self.lock();
            dropped.extend(
                attempts
                    .iter()
                    .filter_map(|&(id, attempt)| take_current(&mut pending, id, attempt)),
            );
        }
        drop(dropped);
    }

    /// Drops the entries whose origin gave up (the receiver is gone).
    pub fn sweep(&self) {
        self.lock().retain(|_, waiter| !waiter.tx.is_closed());
    }

    /// A free slot, without waiting.
    #[cfg(test)]
    pub fn try_slot(&self) -> Option<Slot> {
        Arc::clone(&self.slots).try_acquire_owned().ok()
    }

    /// Slots free right now (the cap minus the requests in the table).
    #[cfg(test)]
    pub fn slots_free(&self) -> usize {
        self.slots.available_permits()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

fn take_current(pending: &mut Waiters, id: RequestId, attempt: u32) -> Option<Waiter> {
    if pending
        .get(&id)
        .is_some_and(|waiter| waiter.attempt == attempt)
    {
        pending.remove(&id)
    } else {
        None
    }
}

/// The reply to one forwarded attempt. Dropping it unanswered (the attempt timed out, the map
/// moved the primary, the client went away) removes the attempt from the table at once, so its
/// slot does not wait for the next sweep.
#[derive(Debug)]
pub struct Answer {
    rx: oneshot::Receiver<Reply>,
    id: RequestId,
    attempt: u32,
    pending: Arc<Pending>,
    /// The receiver yielded: the entry is already gone.
    settled: bool,
}

impl Answer {
    pub(super) fn new(
        rx: oneshot::Receiver<Reply>,
        id: RequestId,
        attempt: u32,
        pending: Arc<Pending>,
    ) -> Self {
        Self {
            rx,
            id,
            attempt,
            pending,
            settled: false,
        }
    }
}

impl Future for Answer {
    /// An error when the attempt ended without a reply (lost).
    type Output = Result<Reply, oneshot::error::RecvError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let polled = Pin::new(&mut self.rx).poll(cx);
        if polled.is_ready() {
            self.settled = true;
        }
        polled
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        if !self.settled {
            self.pending.forget(&[(self.id, self.attempt)]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Response;

    fn id(counter: u64) -> RequestId {
        RequestId { origin: 1, counter }
    }

    fn answered(n: i64) -> Outcome {
        Outcome::Answered(vec![Ok(Response::Int(n))])
    }

    fn register(pending: &Pending, counter: u64, attempt: u32) -> oneshot::Receiver<Reply> {
        let slot = pending.try_slot().expect("the tests stay below the cap");
        pending.register(id(counter), attempt, slot)
    }

    /// Only the current attempt of an id is completed; a retry's registration drops the
    /// earlier attempt's waiter, and a late answer to it is ignored.
    #[test]
    fn only_the_current_attempt_is_completed() {
        let pending = Pending::new(10);
        let mut first = register(&pending, 1, 1);
        let mut second = register(&pending, 1, 2);
        let mut other = register(&pending, 2, 1);
        assert!(
            first
                .try_recv()
                .is_err_and(|e| e == oneshot::error::TryRecvError::Closed)
        );
        pending.complete([
            (id(1), 1, answered(1)),
            (id(1), 2, answered(2)),
            (id(2), 5, answered(3)),
        ]);
        assert_eq!(second.try_recv(), Ok(Ok(answered(2))));
        assert!(
            other
                .try_recv()
                .is_err_and(|e| e == oneshot::error::TryRecvError::Empty)
        );
        pending.forget(&[(id(2), 9)]);
        assert!(
            other
                .try_recv()
                .is_err_and(|e| e == oneshot::error::TryRecvError::Empty)
        );
        pending.forget(&[(id(2), 1)]);
        assert!(
            other
                .try_recv()
                .is_err_and(|e| e == oneshot::error::TryRecvError::Closed)
        );
        assert!(pending.is_empty());
        assert_eq!(pending.slots_free(), 10);
    }

    /// A sweep drops the entries whose receiver is gone, and gives their slots back.
    #[test]
    fn a_sweep_frees_the_slots_of_abandoned_attempts() {
        let pending = Pending::new(3);
        let kept = register(&pending, 1, 1);
        drop(register(&pending, 2, 1));
        assert_eq!(pending.slots_free(), 1);
        pending.sweep();
        assert_eq!(pending.slots_free(), 2);
        drop(kept);
        pending.sweep();
        assert_eq!(pending.slots_free(), 3);
        assert!(pending.is_empty());
    }

    /// A configured cap beyond what a semaphore holds is clamped, not a panic.
    #[test]
    fn an_absurd_cap_is_clamped() {
        assert_eq!(
            Pending::new(usize::MAX).slots_free(),
            Semaphore::MAX_PERMITS
        );
    }
}
