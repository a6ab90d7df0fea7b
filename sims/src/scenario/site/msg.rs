//! Everything that travels in a simulated site: node ↔ node traffic (Raft, heartbeats, map
//! proposals, partition replication, request forwarding), client ↔ node traffic, and the timers
//! (which are messages a host sends itself).
//!
//! `Debug` is hand-written and short: the trace hashes every event through it, so it must be
//! deterministic and cheap, and a `--trace` tail must stay readable.
use crate::trace::Fnv64;
use bytes::Bytes;
use std::fmt;
use tern_node::cluster::{Heartbeat, MapCommand};
use tern_node::core::{
    Command, CommandResult, PartitionId, ReplicaId, ReplicationMessage, RequestId,
};

#[derive(Clone)]
pub enum Msg {
    /// A Raft message of the map group (protobuf bytes as `RaftGroup` emits them).
    Raft(Bytes),
    Heartbeat(Heartbeat),
    /// A map command for the Raft leader (a replica's proposal forwarded to the leader hint).
    Propose(MapCommand),
    /// Between the replicas of one partition.
    Replication {
        partition: PartitionId,
        message: ReplicationMessage,
    },
    /// Forwarder → the node it believes primary: run this request. `attempt` identifies the
    /// try, so the forwarder can tell a late answer to an abandoned try from the current one.
    Forward {
        id: RequestId,
        attempt: u32,
        partition: PartitionId,
        commands: Vec<Command>,
    },
    /// The node that ran (or refused) an attempt → the request's origin node.
    ForwardReply {
        id: RequestId,
        attempt: u32,
        reply: ForwardReply,
    },
    /// Client → any node.
    ClientRequest {
        req: u64,
        command: Command,
    },
    /// Node → client.
    ClientReply {
        req: u64,
        reply: ClientReply,
    },
    /// Node timer: Raft tick, heartbeats, replica timers, planner, forward retries.
    NodeTick,
    /// Client timer: issue the next operation.
    ClientThink,
    /// Client timer: request `req` has waited too long; its outcome stays unknown.
    ClientTimeout {
        req: u64,
    },
    /// Timer of the chaos host: the next fault (or heal) of the schedule.
    Chaos(super::chaos::Fault),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ForwardReply {
    /// The request's results, released by the primary.
    Answer(Vec<CommandResult>),
    /// Not answered here: retry (same id) once the map is at least `epoch`, at `primary` if
    /// known.
    Redirect {
        epoch: u64,
        primary: Option<ReplicaId>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientReply {
    Done(CommandResult),
    /// `-TRYAGAIN`: the node gave up forwarding; the command may or may not have run.
    TryAgain,
}

impl fmt::Debug for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Msg::Raft(bytes) => {
                let mut hash = Fnv64::new();
                hash.write_bytes(bytes);
                write!(f, "Raft({}B #{:08x})", bytes.len(), hash.value() as u32)
            }
            Msg::Heartbeat(h) => write!(
                f,
                "Heartbeat({} inc {} map v{})",
                h.from, h.incarnation, h.map_version
            ),
            Msg::Propose(command) => write!(f, "Propose({command:?})"),
            Msg::Replication { partition, message } => {
                write!(f, "Repl({partition} ")?;
                show_replication(message, f)?;
                f.write_str(")")
            }
            Msg::Forward {
                id,
                attempt,
                partition,
                commands,
            } => write!(
                f,
                "Forward(r{}.{:x}#{attempt} {partition} {commands:?})",
                id.origin, id.counter
            ),
            Msg::ForwardReply { id, attempt, reply } => write!(
                f,
                "ForwardReply(r{}.{:x}#{attempt} {reply:?})",
                id.origin, id.counter
            ),
            Msg::ClientRequest { req, command } => write!(f, "ClientRequest({req} {command:?})"),
            Msg::ClientReply { req, reply } => write!(f, "ClientReply({req} {reply:?})"),
            Msg::NodeTick => f.write_str("NodeTick"),
            Msg::ClientThink => f.write_str("ClientThink"),
            Msg::ClientTimeout { req } => write!(f, "ClientTimeout({req})"),
            Msg::Chaos(fault) => write!(f, "Chaos({fault:?})"),
        }
    }
}

/// A replication message in one line: kind, epoch, positions and sizes, not the payload.
fn show_replication(message: &ReplicationMessage, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match message {
        ReplicationMessage::Replicate(r) => write!(
            f,
            "Replicate e{} r{} prev {}@e{} recs {} outcomes {}",
            r.epoch,
            r.round,
            r.prev_seq,
            r.prev_epoch,
            r.records.len(),
            r.outcomes.len()
        ),
        ReplicationMessage::Ack {
            epoch,
            round,
            matched_seq,
        } => write!(f, "Ack e{epoch} r{round} matched {matched_seq}"),
        ReplicationMessage::Nack {
            epoch,
            round,
            last_seq,
            last_epoch,
        } => write!(f, "Nack e{epoch} r{round} last {last_seq}@{last_epoch:?}"),
        ReplicationMessage::SnapshotChunk(c) => write!(
            f,
            "Chunk e{} r{} seq {}@e{} #{} entries {} last {}",
            c.epoch,
            c.round,
            c.seq,
            c.seq_epoch,
            c.index,
            c.entries.len(),
            c.last
        ),
        ReplicationMessage::ChunkAck {
            epoch,
            round,
            seq,
            index,
        } => write!(f, "ChunkAck e{epoch} r{round} seq {seq} #{index}"),
        ReplicationMessage::Fenced { epoch } => write!(f, "Fenced e{epoch}"),
    }
}
