//! Per-partition stream state of a delegator.
use super::store::RecoveredStream;

/// Where one partition's stream stands towards the target.
///
/// `prev_seq` on the wire: each record carries the seq of the record the target should hold
/// before it. Records are stored with `prev_seq` = the previous record shipped; when sending,
/// a `prev_seq` above `chain_end` (what the target holds or was sent on this connection) means
/// records in between are gone for good (dropped on overflow, lost with a damaged segment, or
/// lost by the target itself): the record is rebased onto `chain_end` and the partition marked
/// for repair, so the stream goes on and anti-entropy fills the hole. Never silent.
#[derive(Clone, Copy, Debug)]
pub(super) struct Stream {
    /// Highest seq handed in (shipped or filtered).
    pub last_seen: u64,
    /// Highest seq shipped (or, before any, the seq the stream starts after): the stored
    /// `prev_seq` of the next record.
    pub last_shipped: u64,
    /// Highest seq the target acknowledged (or that the stream starts after).
    pub acked: u64,
    /// `acked` when the current connection started: a `HelloAck` cursor below it means the
    /// target lost records it had acknowledged. (Acks of this connection may overtake the
    /// `HelloAck` on a reordering network, so `acked` itself cannot be the yardstick.)
    pub acked_at_connect: u64,
    /// Highest seq the target is known to hold: `acked`, or less after it lost records.
    pub target_has: u64,
    /// `prev_seq` for the next record sent on this connection.
    pub chain_end: u64,
    /// Highest seq sent on this connection (0 after a rewind).
    pub sent_through: u64,
}

impl Stream {
    /// A stream whose first record is `first_seq`: the target is assumed to hold everything
    /// before it (checked against its `HelloAck`).
    pub fn starting_at(first_seq: u64) -> Self {
        Self::acked_through(first_seq.saturating_sub(1), first_seq.saturating_sub(1))
    }

    /// A stream rebuilt from what a durable store recovered.
    pub fn recovered(found: &RecoveredStream) -> Self {
        // Never acknowledged: the target was assumed to hold what preceded the oldest record
        // (as `starting_at` assumed when the stream began).
        let acked = found
            .acked
            .or(found.oldest_prev_seq)
            .unwrap_or(found.last_appended);
        Self::acked_through(found.last_appended, acked)
    }

    fn acked_through(last_shipped: u64, acked: u64) -> Self {
        Self {
            last_seen: last_shipped,
            last_shipped,
            acked,
            acked_at_connect: acked,
            target_has: acked,
            chain_end: acked,
            sent_through: 0,
        }
    }

    /// Forget what was sent on this connection.
    pub fn rewind(&mut self) {
        self.chain_end = self.target_has;
        self.sent_through = 0;
    }

    /// The target holds everything up to `cursor`.
    pub fn acknowledge(&mut self, cursor: u64) {
        self.acked = self.acked.max(cursor);
        self.target_has = self.target_has.max(cursor);
        self.chain_end = self.chain_end.max(cursor);
    }
}
