//! Everything that travels in the multi-site world: the WAN transport between gateways (a
//! connection handshake, byte chunks of the framed stream and their transport acks, a close),
//! and the timers (messages a host sends itself).
//!
//! `Debug` is hand-written and short: the trace hashes every event through it, so it must be
//! deterministic and cheap (chunk bytes are hashed, not printed), and a `--trace` tail must stay
//! readable.
use crate::trace::Fnv64;
use bytes::Bytes;
use std::fmt;

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
    /// Either end → the other: connection `conn` of `link` is closed (the gateway core asked
    /// for it, or the receiver does not know the connection: it restarted, like a QUIC
    /// stateless reset); the dialer then reconnects and greets again.
    Close { link: LinkId, conn: u64 },
    /// Dialer → acceptor: keep-alive of an idle connection (QUIC PING), so that one whose
    /// acceptor restarted is found dead without data to send.
    Ping { link: LinkId, conn: u64 },
    /// Director timer: the next step of the fault schedule.
    Fault(FaultAction),
    /// Director timer: check whether wiped sites got their data back.
    RestoreCheck,
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
    /// The site loses its memory: every partition wiped (change logs restart at seq 1), its
    /// gateway restarted with its disks intact. The wipe waits until every write the site took
    /// reached every other site, and until no other site is being restored (otherwise writes
    /// are lost for real, which no invariant could tell from a bug). Its clients write at once, to keys not yet restored too: the site
    /// writes under a new data line (`tern_conflict::Writer`), so its new versions and
    /// increments meet the old line's as concurrent and are merged, whatever its restarted
    /// clock reads. With `wipe_holds_clients` they hold their writes until it holds again
    /// everything the other sites held at the wipe.
    WipeSite(usize),
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
            Msg::Close { link, conn } => write!(f, "Close({link} #{conn})"),
            Msg::Ping { link, conn } => write!(f, "Ping({link} #{conn})"),
            Msg::Fault(action) => write!(f, "Fault({action:?})"),
            Msg::RestoreCheck => f.write_str("RestoreCheck"),
        }
    }
}
