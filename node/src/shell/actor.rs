//! The partition actor: the only owner of one partition's [`ReplicaCore`], and a thin driver of
//! it. Inputs: client requests (local or forwarded), replication messages from peers, map
//! assignments, a periodic tick with the wall clock. After each batch of inputs it carries the
//! core's outputs: answers and redirects to the waiting callers, replication messages to the
//! transport, map proposals to the cluster actor.
use super::board::{ReplicaBoard, ReplicaReport};
use super::map_view::MapView;
use super::peers::Peers;
use super::wire::{self, ReplicationFrame, WireKind};
use crate::cluster::{MapCommand, NodeId};
use crate::core::{
    CommandResult, MapProposal, PartitionId, ReplicaCore, ReplicationMessage, Request, RequestId,
};
use crate::transport::Channel;
use actix::{Actor, AsyncContext, Context, Handler, Message, Recipient};
use std::collections::{HashMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{OwnedSemaphorePermit, oneshot};

/// Wall clock as unix milliseconds: the shell's `now_ms` for the core (which never reads a
/// clock itself). A clock before 1970 reads as 0 rather than failing.
pub fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The partition's core panicked earlier; it refuses further work rather than serve state
/// that a half-applied command may have left inconsistent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("ERR internal error in partition {0}; it no longer serves requests (see the node log)")]
pub struct PartitionFailed(pub PartitionId);

/// How a request left the replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Executed and confirmed by every in-sync backup: the results, one per command.
    Answered(Vec<CommandResult>),
    /// Not answered here (not primary, handing over, or deposed after executing it): retry the
    /// same request id at `primary` once the map is at `epoch`.
    Redirected { epoch: u64, primary: Option<u64> },
}

pub type Reply = Result<Outcome, PartitionFailed>;

/// A request for this partition, answered exactly once on `reply`.
///
/// Sent with `do_send` plus our own reply channel and mailbox permit instead of `Addr::send`:
/// actix 0.13's `send` on a full mailbox either bypasses the bound (cloned senders) or parks
/// without registering a waker (the request never completes). The permit is what bounds the
/// mailbox: it is released when the actor has handled the message.
#[derive(Debug)]
pub struct Execute {
    pub request: Request,
    pub reply: oneshot::Sender<Reply>,
    pub permit: OwnedSemaphorePermit,
}

impl Message for Execute {
    type Result = ();
}

/// A replication message from the replica on node `from`.
#[derive(Debug)]
pub struct Replicated {
    pub from: NodeId,
    pub message: ReplicationMessage,
}

impl Message for Replicated {
    type Result = ();
}

/// The map after one applied (or rejected) command.
#[derive(Debug)]
pub struct Assign(pub Arc<MapView>);

impl Message for Assign {
    type Result = ();
}

/// A map command for the cluster actor to propose.
#[derive(Debug)]
pub struct ProposeMap(pub MapCommand);

impl Message for ProposeMap {
    type Result = ();
}

/// Deferred flush of replication output, so everything handled in one mailbox pass goes out
/// together (one barrier round per batch, see `ReplicaCore::poll_transmit`).
#[derive(Debug)]
struct Flush;

impl Message for Flush {
    type Result = ();
}

/// What a partition actor needs besides its core.
#[derive(Debug, Clone)]
pub struct PartitionLinks {
    pub peers: Arc<Peers>,
    pub cluster: Recipient<ProposeMap>,
    pub board: Arc<ReplicaBoard>,
}

#[derive(Debug)]
pub struct PartitionActor {
    partition: PartitionId,
    core: ReplicaCore,
    view: Arc<MapView>,
    links: PartitionLinks,
    tick: Duration,
    failed: bool,
    /// Callers waiting per request id, in arrival order: the core answers or redirects every
    /// request exactly once, in order, so outputs match waiters first-in first-out.
    waiters: HashMap<RequestId, Waiters, foldhash::fast::RandomState>,
    flush_scheduled: bool,
    /// No other replica of this partition exists (a one-node site, or no backups): the core
    /// has nothing to send, so no flush is scheduled after client requests.
    solo: bool,
}

/// Usually one caller per request id; several only when a retry arrives while an earlier
/// attempt of the same id is still held.
#[derive(Debug)]
enum Waiters {
    One(oneshot::Sender<Reply>),
    Many(VecDeque<oneshot::Sender<Reply>>),
}

impl PartitionActor {
    pub fn new(
        core: ReplicaCore,
        view: Arc<MapView>,
        links: PartitionLinks,
        tick: Duration,
    ) -> Self {
        Self {
            partition: core.partition().partition(),
            core,
            view,
            links,
            tick,
            failed: false,
            waiters: HashMap::default(),
            flush_scheduled: false,
            solo: false,
        }
    }

    fn wait_for(&mut self, id: RequestId, waiter: oneshot::Sender<Reply>) {
        use std::collections::hash_map::Entry;
        match self.waiters.entry(id) {
            Entry::Vacant(slot) => {
                slot.insert(Waiters::One(waiter));
            }
            Entry::Occupied(mut slot) => {
                let queue = match std::mem::replace(slot.get_mut(), Waiters::Many(VecDeque::new()))
                {
                    Waiters::One(first) => VecDeque::from([first, waiter]),
                    Waiters::Many(mut queue) => {
                        queue.push_back(waiter);
                        queue
                    }
                };
                *slot.get_mut() = Waiters::Many(queue);
            }
        }
    }

    /// Runs `input` on the core; a panic is a core bug, contained to this partition instead of
    /// losing every actor and connection on the arbiter thread. `None` once failed.
    fn drive<T>(&mut self, input: impl FnOnce(&mut ReplicaCore) -> T) -> Option<T> {
        if self.failed {
            return None;
        }
        let core = &mut self.core;
        match catch_unwind(AssertUnwindSafe(|| input(core))) {
            Ok(out) => Some(out),
            Err(_) => {
                self.fail();
                None
            }
        }
    }

    fn fail(&mut self) {
        tracing::error!(partition = %self.partition, "partition core panicked; the partition stops serving");
        self.failed = true;
        self.links
            .board
            .set(self.partition, ReplicaReport::of(&self.core, true));
        let failed = PartitionFailed(self.partition);
        for (_, waiters) in self.waiters.drain() {
            match waiters {
                Waiters::One(waiter) => {
                    let _ = waiter.send(Err(failed));
                }
                Waiters::Many(queue) => {
                    for waiter in queue {
                        let _ = waiter.send(Err(failed));
                    }
                }
            }
        }
    }

    /// Answers and redirects go out at once (they are final); replication output and proposals
    /// after the current mailbox pass.
    fn after_input(&mut self, ctx: &mut Context<Self>) {
        self.deliver();
        self.schedule_flush(ctx);
    }

    fn schedule_flush(&mut self, ctx: &mut Context<Self>) {
        if !self.flush_scheduled && !self.failed {
            self.flush_scheduled = true;
            ctx.notify(Flush);
        }
    }

    fn deliver(&mut self) {
        let board = &self.links.board;
        board.note_commit(self.partition, self.core.last_seq());
        board.note_data_bytes(self.partition, self.core.partition().data_bytes());
        while let Some((id, results)) = self.core.poll_response() {
            self.answer(id, Ok(Outcome::Answered(results)));
        }
        while let Some(redirect) = self.core.poll_redirect() {
            let outcome = Outcome::Redirected {
                epoch: redirect.epoch,
                primary: redirect.primary,
            };
            self.answer(redirect.id, Ok(outcome));
        }
    }

    fn answer(&mut self, id: RequestId, reply: Reply) {
        // The caller may have gone away (connection closed); its answer is then dropped.
        match self.waiters.get_mut(&id) {
            None => {}
            Some(Waiters::One(_)) => {
                if let Some(Waiters::One(waiter)) = self.waiters.remove(&id) {
                    let _ = waiter.send(reply);
                }
            }
            Some(Waiters::Many(queue)) => {
                if let Some(waiter) = queue.pop_front() {
                    let _ = waiter.send(reply);
                }
                if queue.is_empty() {
                    self.waiters.remove(&id);
                }
            }
        }
    }

    fn flush(&mut self) {
        let partition = self.partition;
        let Some(transmits) = self.drive(|core| {
            let mut out = Vec::new();
            while let Some(transmit) = core.poll_transmit() {
                out.push(transmit);
            }
            out
        }) else {
            return;
        };
        let peers = &self.links.peers;
        for (to, message) in transmits {
            let Some(to) = NodeId::new(to) else { continue };
            let frame = ReplicationFrame {
                partition: partition.0,
                message,
            };
            match wire::encode(WireKind::Replication, &frame) {
                Ok(bytes) => {
                    peers.send(to, Channel::Replication, bytes);
                }
                Err(e) => tracing::error!(%partition, "encode a replication message: {e}"),
            }
        }
        while let Some(proposal) = self.core.poll_map_proposal() {
            if let Some(command) = self.map_command(proposal) {
                self.links.cluster.do_send(ProposeMap(command));
            }
        }
        // Flushing may release held answers (e.g. no backups left to wait for).
        self.deliver();
    }

    fn map_command(&self, proposal: MapProposal) -> Option<MapCommand> {
        let generation = self.view.sync_generation(self.partition);
        MapCommand::from_replica_proposal(self.partition, proposal, generation)
    }

    fn report(&self) {
        self.links
            .board
            .set(self.partition, ReplicaReport::of(&self.core, self.failed));
    }
}

impl Actor for PartitionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // The map this node booted with, before any client request can arrive.
        let facts = self.view.facts(self.partition);
        let me = self.view.me.get();
        self.solo = facts.replicas.iter().all(|&n| n == me) && facts.in_sync.is_empty();
        self.drive(|core| core.handle_assignment(&facts, unix_now_ms()));
        self.report();
        self.after_input(ctx);
        ctx.run_interval(self.tick, |actor, ctx| {
            actor.drive(|core| core.handle_tick(unix_now_ms()));
            actor.report();
            actor.after_input(ctx);
        });
    }
}

impl Handler<Execute> for PartitionActor {
    type Result = ();

    fn handle(&mut self, msg: Execute, ctx: &mut Self::Context) {
        let Execute {
            request,
            reply,
            permit,
        } = msg;
        if self.failed {
            let _ = reply.send(Err(PartitionFailed(self.partition)));
            return;
        }
        self.wait_for(request.id, reply);
        let memory_full = self.links.board.memory_full();
        // One clock read per request: its commands share a timestamp, like one Redis
        // event-loop iteration.
        self.drive(|core| {
            core.handle_memory_full(memory_full);
            core.handle_request(request, unix_now_ms())
        });
        drop(permit);
        self.deliver();
        if !self.solo {
            self.schedule_flush(ctx);
        }
    }
}

impl Handler<Replicated> for PartitionActor {
    type Result = ();

    fn handle(&mut self, msg: Replicated, ctx: &mut Self::Context) {
        let Replicated { from, message } = msg;
        self.drive(|core| core.handle_message(from.get(), message, unix_now_ms()));
        self.after_input(ctx);
    }
}

impl Handler<Assign> for PartitionActor {
    type Result = ();

    fn handle(&mut self, msg: Assign, ctx: &mut Self::Context) {
        self.view = msg.0;
        let facts = self.view.facts(self.partition);
        let me = self.view.me.get();
        self.solo = facts.replicas.iter().all(|&n| n == me) && facts.in_sync.is_empty();
        self.drive(|core| core.handle_assignment(&facts, unix_now_ms()));
        self.report();
        self.after_input(ctx);
    }
}

impl Handler<Flush> for PartitionActor {
    type Result = ();

    fn handle(&mut self, _: Flush, _ctx: &mut Self::Context) {
        self.flush_scheduled = false;
        self.flush();
    }
}
