//! Bootstrap: a new or wiped site catches up from a peer while live traffic flows, at a
//! bounded rate.
//!
//! There is no separate snapshot protocol: a site that lost its data (or never had it) is
//! found by the delegator (the target's `HelloAck` reports cursors below what it had
//! acknowledged, or a new target's change log no longer starts at 1) and its partitions are
//! marked for repair; Merkle anti-entropy ([`crate::repair`], driven by `host/repair.rs`) then
//! finds that every range differs and sends every entry. That is the bootstrap, and it is
//! also the "anti-entropy on bootstrap": a target that kept some data (not empty) sends back
//! what only it held, and the resolver settles real concurrency on both sides. The live stream
//! never stops meanwhile: the delegator resends what its backlog holds from the target's
//! cursor, and every entry is applied with the same reconcile rule whichever path brings it.
//!
//! What this module adds is the pacing: every repair message a gateway sends on one link goes
//! through a [`Pacer`] whose [`TokenBucket`] refills at `bootstrap_bytes_per_sec_max`. Live
//! batches do not pass through it, so a bootstrap never holds them back: the link carries at
//! most one bucket's burst of repair bytes ahead of any batch.
mod pacer;
mod rate;

pub use pacer::Pacer;
pub use rate::TokenBucket;
