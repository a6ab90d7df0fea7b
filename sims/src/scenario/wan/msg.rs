//! Everything that travels in the multi-site world: the WAN transport between gateways (a
//! connection handshake, byte chunks of the framed stream and their transport acks), repair
//! snapshots, and the timers (messages a host sends itself).
//!
//! `Debug` is hand-written and short: the trace hashes every event through it, so it must be
//! deterministic and cheap (chunk bytes are hashed, not printed), and a `--trace` tail must stay
//! readable.
use crate::trace::Fnv64;
use bytes::Bytes;
use std::fmt;
use tern_conflict::Versioned;
use tern_node::core::PartitionId;

/// One direction of WAN replication: `source` site's delegator → `target` site's sink (site
/// indices, not `SiteId`s).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LinkId {
    pub source: usize,
    pub target: usize,
}

impl fmt::Display for LinkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}→{}", self.source, self.target)
    }
}

/// Which byte stream of a link's connection a chunk belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dir {
    /// Delegator → sink (Hello, Batch).
    Forward,
    /// Sink → delegator (HelloAck, Ack).
    Back,
}

#[derive(Clone, PartialEq, Eq)]
pub enum Msg {
    /// Site timer: a client issues its next operation.
    Think { client: u32 },
    /// Gateway timer: run whatever is due (batching, acks, retransmits, reconnects, repairs).
    Wake,
    /// Gateway timer: read new change records from the site's partitions.
    Feed,
    /// Delegator end → sink end: open connection `conn` of `link`.
    Connect { link: LinkId, conn: u64 },
    /// Sink end → delegator end: connection `conn` is open.
    Accept { link: LinkId, conn: u64 },
    /// A piece of one of the connection's byte streams, at byte `offset`.
    Chunk {
        link: LinkId,
        conn: u64,
        dir: Dir,
        offset: u64,
        bytes: Bytes,
    },
    /// Transport acknowledgement: every byte of the stream before `offset` arrived.
    StreamAck {
        link: LinkId,
        conn: u64,
        dir: Dir,
        offset: u64,
    },
    /// Full resync of one partition (the stand-in for anti-entropy until the repair module
    /// lands): the source's whole partition state, applied through the resolver.
    RepairSnapshot {
        link: LinkId,
        repair: u64,
        partition: PartitionId,
        entries: Vec<(Bytes, Versioned)>,
    },
    RepairDone {
        link: LinkId,
        repair: u64,
        partition: PartitionId,
    },
    /// Director timer: the next step of the fault schedule.
    Fault(FaultAction),
}

/// One step of a run's fault schedule (sites by index).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultAction {
    /// Cut both directions between two sites' gateways.
    Cut(usize, usize),
    /// Cut `from → to` only.
    CutOneWay {
        from: usize,
        to: usize,
    },
    /// Cut one site off from all others.
    Isolate(usize),
    /// Restore every cut link.
    HealLinks,
    CrashGateway(usize),
    RestartGateway(usize),
    /// Step a site's clocks (site and gateway host) by this many microseconds.
    ClockStep(usize, i64),
    /// Faults stop: links heal and turn loss-free, crashed gateways restart, clients stop.
    EndChaos,
}

impl fmt::Debug for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Msg::Think { client } => write!(f, "Think(c{client})"),
            Msg::Wake => f.write_str("Wake"),
            Msg::Feed => f.write_str("Feed"),
            Msg::Connect { link, conn } => write!(f, "Connect({link} #{conn})"),
            Msg::Accept { link, conn } => write!(f, "Accept({link} #{conn})"),
            Msg::Chunk {
                link,
                conn,
                dir,
                offset,
                bytes,
            } => {
                let mut hash = Fnv64::new();
                hash.write_bytes(bytes);
                write!(
                    f,
                    "Chunk({link} #{conn} {dir:?} @{offset}+{} {:016x})",
                    bytes.len(),
                    hash.value()
                )
            }
            Msg::StreamAck {
                link,
                conn,
                dir,
                offset,
            } => write!(f, "StreamAck({link} #{conn} {dir:?} @{offset})"),
            Msg::RepairSnapshot {
                link,
                repair,
                partition,
                entries,
            } => write!(
                f,
                "RepairSnapshot({link} r{repair} {partition} {} entries)",
                entries.len()
            ),
            Msg::RepairDone {
                link,
                repair,
                partition,
            } => write!(f, "RepairDone({link} r{repair} {partition})"),
            Msg::Fault(action) => write!(f, "Fault({action:?})"),
        }
    }
}
