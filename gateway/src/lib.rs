//! tern-gateway: WAN replication between sites, as sans-IO state machines.
//!
//! Every committed change of a local partition primary reaches every other site once, in
//! per-partition order, through outages. One link per (source, target) pair of sites:
//!
//! ```text
//!  partition primaries ──ChangeRecord──▶ Delegator (per target) ──Batch──▶ Sink (per source)
//!        ▲                                 ▲  backlog until acked            │ poll_apply
//!        └────────── apply_remote ◀────────┼───────────────────────────────── ┘
//!                                          └──────────── Ack (cursors) ◀──── handle_applied
//! ```
//!
//! Like quinn-proto, the cores never read a clock, touch a socket or spawn a thread: the shell
//! feeds `handle_*(input, now_ms)` and drains `poll_*()`, and [`Delegator::poll_timeout`] /
//! [`Sink::poll_timeout`] say when to call `handle_timeout`. Outputs are ordered by `BTreeMap`s
//! and queues only, so a simulator replays them exactly.
//!
//! # Code map
//!
//! | module | job |
//! |---|---|
//! | [`wire`] | the frame envelope (`TRNW`, format version, kind, length, postcard payload), the messages ([`Hello`](wire::Hello), [`HelloAck`](wire::HelloAck), [`Batch`](wire::Batch), [`Ack`](wire::Ack), [`WanRecord`](wire::WanRecord)), [`FrameDecoder`](wire::FrameDecoder) for streams |
//! | [`delegator`] | sending side per target: unacknowledged records behind the [`RecordStore`] seam (durable: [`BacklogStore`]; in memory: [`MemoryStore`]), batching by size and time, in-flight window, resend from the acked cursors, origin filter, repair marking, restart from the backlog, backpressure and overflow reporting |
//! | [`sink`] | receiving side per source: dedup and gap detection per partition via `prev_seq`, apply queue, coalesced acks of *applied* cursors |
//! | [`apply`] | [`apply_remote`]: HLC observe + `reconcile_into` with the keyspace's resolver, reporting conflicts |
//! | [`backlog`] | the durable backlog (segmented, checksummed append-only log per target), behind [`RecordStore`] through [`BacklogStore`] |
//! | [`repair`] | Merkle anti-entropy: per-partition digest trees over scan positions, [`RepairSession`] (initiator) and [`RepairResponder`], applying through the resolver on both sides |
//! | [`bootstrap`] | how a new or wiped site catches up (Merkle repair of every marked partition, live stream uninterrupted) and the [`Pacer`](bootstrap::Pacer) / [`TokenBucket`](bootstrap::TokenBucket) that hold repair traffic to `bootstrap_bytes_per_sec_max` per link |
//! | [`site`] | [`SiteGateway`](site::SiteGateway): a site's gateway rules over its delegators and sinks — feed pages to delegators under log generations, wipe detection (Hellos held until every partition is read, cursors reset), one apply in flight per (source, partition), repair scheduling and the repair driver, backlog failure and overflow handling, operator requests, status; persistence behind [`SiteStorage`](site::SiteStorage) |
//! | [`handshake`] | peer and protocol-version checks of `Hello`/`HelloAck` |
//! | [`limits`] | [`GatewayLimits`]: every limit, named with its unit |
//!
//! The shells around these cores: [`net`] (QUIC transport and mutual TLS) and [`host`] (the
//! node integration: tokio tasks that read change logs, apply and load through the router,
//! dial and accept links and keep files, all driving one [`site::SiteGateway`]). The WAN
//! simulator (`sims/`) drives the same `SiteGateway`. Message kinds 9–11 are retired, 12–15
//! reserved.
pub mod apply;
pub mod backlog;
pub mod bootstrap;
pub mod delegator;
pub mod fault_proxy;
pub mod handshake;
pub mod host;
pub mod limits;
pub mod net;
pub mod repair;
pub mod sink;
pub mod site;
pub mod wire;

#[cfg(test)]
mod loop_tests;

pub use apply::{RemoteApply, apply_remote};
pub use delegator::{BacklogStore, Delegator, DelegatorStats, Intake, MemoryStore, RecordStore};
pub use handshake::HandshakeError;
pub use limits::GatewayLimits;
pub use repair::{CoreReplica, RepairResponder, RepairSession, Replica};
pub use sink::{Sink, SinkStats};
