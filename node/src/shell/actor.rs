//! The partition actor: the only owner of one `PartitionCore`.
use crate::core::{Command, CommandResult, PartitionCore, PartitionId};
use actix::{Actor, AsyncContext, Context, Handler, Message};
use std::panic::{AssertUnwindSafe, catch_unwind};
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

/// A batch of commands for one partition, answered in order on `reply`.
///
/// Sent with `do_send` plus our own reply channel and mailbox permit instead of `Addr::send`:
/// actix 0.13's `send` on a full mailbox either bypasses the bound (cloned senders) or parks
/// without registering a waker (the request never completes). The permit is what bounds the
/// mailbox: it is released when the actor has handled the message.
#[derive(Debug)]
pub struct Execute {
    pub commands: Vec<Command>,
    pub reply: oneshot::Sender<Result<Vec<CommandResult>, PartitionFailed>>,
    pub permit: OwnedSemaphorePermit,
}

impl Message for Execute {
    type Result = ();
}

#[derive(Debug)]
pub struct PartitionActor {
    core: PartitionCore,
    tick: Duration,
    failed: bool,
}

impl PartitionActor {
    pub fn new(core: PartitionCore, tick: Duration) -> Self {
        Self {
            core,
            tick,
            failed: false,
        }
    }

    fn run(&mut self, commands: Vec<Command>) -> Result<Vec<CommandResult>, PartitionFailed> {
        let partition = self.core.partition();
        if self.failed {
            return Err(PartitionFailed(partition));
        }
        // One clock read per batch: commands of one batch share a timestamp, like one Redis
        // event-loop iteration.
        let now_ms = unix_now_ms();
        let core = &mut self.core;
        // A panic here is a core bug; contain it to this partition instead of losing every
        // actor and connection on the arbiter thread.
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            commands
                .into_iter()
                .map(|command| core.handle_command(command, now_ms))
                .collect()
        }));
        outcome.map_err(|_| {
            tracing::error!(%partition, "partition core panicked; the partition stops serving");
            self.failed = true;
            PartitionFailed(partition)
        })
    }
}

impl Actor for PartitionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.tick, |actor, _| {
            if actor.failed {
                return;
            }
            let core = &mut actor.core;
            if catch_unwind(AssertUnwindSafe(|| core.handle_tick(unix_now_ms()))).is_err() {
                tracing::error!(partition = %actor.core.partition(), "partition tick panicked");
                actor.failed = true;
            }
        });
    }
}

impl Handler<Execute> for PartitionActor {
    type Result = ();

    fn handle(&mut self, msg: Execute, _ctx: &mut Self::Context) {
        let Execute {
            commands,
            reply,
            permit,
        } = msg;
        // The caller may have gone away (connection closed); its answer is simply dropped.
        let _ = reply.send(self.run(commands));
        drop(permit);
    }
}
