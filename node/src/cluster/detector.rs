//! Heartbeat failure detector, sans-IO. Every node sends [`Heartbeat`]s to every peer each
//! `heartbeat_interval_ms` ([`FailureDetector::poll_heartbeats`] says when and to whom); a peer is
//! alive while heard within `node_failure_timeout_ms`. Only the local clock (`now_ms`) is used, so
//! clock skew between nodes does not matter.
//!
//! A freshly created detector calls nobody dead before it has observed for a full timeout: a new
//! Raft leader must not mark down nodes it simply has not heard from yet.
use crate::cluster::ids::NodeId;
use crate::cluster::timings::ClusterTimings;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a node sends each interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub from: NodeId,
    /// The sender's boot incarnation; must rise across restarts of a node (e.g. boot wall-clock
    /// time in ms, or a counter persisted next to the Raft state).
    pub incarnation: u64,
    /// The sender's applied map version, so a lagging node learns a newer map exists.
    pub map_version: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    Alive {
        incarnation: u64,
    },
    /// Not heard within `node_failure_timeout_ms`.
    Dead,
    /// Not heard yet, and this detector has not observed long enough to tell.
    Unknown,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct PeerView {
    last_heard_ms: Option<u64>,
    incarnation: u64,
    map_version: u64,
}

#[derive(Clone, Debug)]
pub struct FailureDetector {
    me: NodeId,
    incarnation: u64,
    timings: ClusterTimings,
    started_ms: u64,
    next_send_ms: u64,
    /// The latest `now_ms` passed in, so `poll_timeout` skips deadlines already past.
    last_now_ms: u64,
    peers: BTreeMap<NodeId, PeerView>,
}

impl FailureDetector {
    /// `peers` may include `me` (ignored). The first heartbeats are due at once.
    pub fn new(
        me: NodeId,
        incarnation: u64,
        peers: impl IntoIterator<Item = NodeId>,
        timings: ClusterTimings,
        now_ms: u64,
    ) -> Self {
        let mut detector = Self {
            me,
            incarnation,
            timings,
            started_ms: now_ms,
            next_send_ms: now_ms,
            last_now_ms: now_ms,
            peers: BTreeMap::new(),
        };
        detector.set_peers(peers);
        detector
    }

    /// Replaces the peer set (e.g. after the map added or removed nodes), keeping what is known
    /// about peers that stay.
    pub fn set_peers(&mut self, peers: impl IntoIterator<Item = NodeId>) {
        let old = std::mem::take(&mut self.peers);
        for id in peers {
            if id != self.me {
                self.peers
                    .insert(id, old.get(&id).copied().unwrap_or_default());
            }
        }
    }

    pub fn me(&self) -> NodeId {
        self.me
    }

    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Records a heartbeat. Ones from an older incarnation than already seen (delayed in the
    /// network past a restart) are ignored; ones from unknown nodes are tracked too (a node
    /// being added may speak before the map lists it).
    pub fn handle_heartbeat(&mut self, heartbeat: &Heartbeat, now_ms: u64) {
        self.last_now_ms = self.last_now_ms.max(now_ms);
        if heartbeat.from == self.me {
            return;
        }
        let view = self.peers.entry(heartbeat.from).or_default();
        if heartbeat.incarnation < view.incarnation {
            return;
        }
        view.incarnation = heartbeat.incarnation;
        view.map_version = heartbeat.map_version;
        view.last_heard_ms = Some(view.last_heard_ms.map_or(now_ms, |t| t.max(now_ms)));
    }

    pub fn liveness(&self, node: NodeId, now_ms: u64) -> Liveness {
        if node == self.me {
            return Liveness::Alive {
                incarnation: self.incarnation,
            };
        }
        let timeout = self.timings.node_failure_timeout_ms;
        match self
            .peers
            .get(&node)
            .and_then(|v| v.last_heard_ms.map(|t| (t, v.incarnation)))
        {
            Some((heard, incarnation)) if now_ms < heard.saturating_add(timeout) => {
                Liveness::Alive { incarnation }
            }
            Some(_) => Liveness::Dead,
            None if now_ms >= self.started_ms.saturating_add(timeout) => Liveness::Dead,
            None => Liveness::Unknown,
        }
    }

    /// When `node` was last heard (local clock), if ever.
    pub fn last_heard_ms(&self, node: NodeId) -> Option<u64> {
        self.peers.get(&node).and_then(|v| v.last_heard_ms)
    }

    /// The highest map version any peer reported, with the peer (lowest id on ties).
    pub fn newest_peer_map(&self) -> Option<(NodeId, u64)> {
        self.peers
            .iter()
            .filter(|(_, v)| v.last_heard_ms.is_some())
            .max_by_key(|(id, v)| (v.map_version, std::cmp::Reverse(**id)))
            .map(|(id, v)| (*id, v.map_version))
    }

    /// Peers due a heartbeat now (all of them once per interval, ascending), else empty.
    pub fn poll_heartbeats(&mut self, now_ms: u64) -> Vec<NodeId> {
        self.last_now_ms = self.last_now_ms.max(now_ms);
        if now_ms < self.next_send_ms {
            return Vec::new();
        }
        // Next slot after now; a stalled caller sends once, not a burst of missed rounds.
        let interval = self.timings.heartbeat_interval_ms.max(1);
        let missed = (now_ms - self.next_send_ms) / interval;
        self.next_send_ms += (missed + 1) * interval;
        self.peers.keys().copied().collect()
    }

    /// The heartbeat this node sends.
    pub fn heartbeat(&self, map_version: u64) -> Heartbeat {
        Heartbeat {
            from: self.me,
            incarnation: self.incarnation,
            map_version,
        }
    }

    /// The next time something changes without input: a heartbeat falls due, a peer's liveness
    /// expires, or the initial observation window ends.
    pub fn poll_timeout(&self) -> Option<u64> {
        let timeout = self.timings.node_failure_timeout_ms;
        // Expiries already behind the last `now_ms` seen change nothing any more.
        let next_expiry = self
            .peers
            .values()
            .map(|v| {
                v.last_heard_ms
                    .unwrap_or(self.started_ms)
                    .saturating_add(timeout)
            })
            .filter(|&t| t > self.last_now_ms)
            .min();
        Some(next_expiry.map_or(self.next_send_ms, |t| t.min(self.next_send_ms)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> NodeId {
        NodeId::new(n).expect("non-zero")
    }

    fn detector(now: u64) -> FailureDetector {
        FailureDetector::new(
            id(1),
            7,
            [id(1), id(2), id(3)],
            ClusterTimings::default(),
            now,
        )
    }

    fn hb(from: u64, incarnation: u64) -> Heartbeat {
        Heartbeat {
            from: id(from),
            incarnation,
            map_version: 3,
        }
    }

    #[test]
    fn liveness_over_time() {
        let mut d = detector(1000);
        // (time, heartbeat from 2 before asking?, expected for 2, expected for 3)
        let cases: &[(u64, Option<u64>, Liveness, Liveness)] = &[
            (1000, None, Liveness::Unknown, Liveness::Unknown),
            (
                1200,
                Some(5),
                Liveness::Alive { incarnation: 5 },
                Liveness::Unknown,
            ),
            (
                1499,
                None,
                Liveness::Alive { incarnation: 5 },
                Liveness::Unknown,
            ),
            (
                1500,
                None,
                Liveness::Alive { incarnation: 5 },
                Liveness::Dead,
            ),
            (
                1699,
                None,
                Liveness::Alive { incarnation: 5 },
                Liveness::Dead,
            ),
            (1700, None, Liveness::Dead, Liveness::Dead),
            (1800, Some(4), Liveness::Dead, Liveness::Dead), // older incarnation: ignored
            (
                1900,
                Some(6),
                Liveness::Alive { incarnation: 6 },
                Liveness::Dead,
            ),
        ];
        for &(now, beat, two, three) in cases {
            if let Some(inc) = beat {
                d.handle_heartbeat(&hb(2, inc), now);
            }
            assert_eq!(d.liveness(id(2), now), two, "node 2 at {now}");
            assert_eq!(d.liveness(id(3), now), three, "node 3 at {now}");
            assert_eq!(d.liveness(id(1), now), Liveness::Alive { incarnation: 7 });
        }
        assert_eq!(d.last_heard_ms(id(2)), Some(1900));
        assert_eq!(d.newest_peer_map(), Some((id(2), 3)));
    }

    #[test]
    fn heartbeats_go_to_every_peer_each_interval_without_bursts() {
        let mut d = detector(0);
        assert_eq!(d.poll_heartbeats(0), vec![id(2), id(3)]);
        assert_eq!(d.poll_heartbeats(50), Vec::<NodeId>::new());
        assert_eq!(d.poll_timeout(), Some(100));
        assert_eq!(d.poll_heartbeats(100), vec![id(2), id(3)]);
        // A stalled caller: one round, then back on the grid.
        assert_eq!(d.poll_heartbeats(1050).len(), 2);
        assert_eq!(d.poll_heartbeats(1099).len(), 0);
        assert_eq!(d.poll_heartbeats(1100).len(), 2);
        assert_eq!(
            d.heartbeat(9),
            Heartbeat {
                from: id(1),
                incarnation: 7,
                map_version: 9
            }
        );
    }

    #[test]
    fn poll_timeout_reports_liveness_expiry() {
        let mut d = detector(0);
        d.handle_heartbeat(&hb(2, 1), 10);
        d.handle_heartbeat(&hb(3, 1), 20);
        let _ = d.poll_heartbeats(0);
        let _ = d.poll_heartbeats(400);
        assert_eq!(d.poll_timeout(), Some(500));
        let _ = d.poll_heartbeats(500);
        // Node 2 expires at 510, before the next send at 600.
        assert_eq!(d.poll_timeout(), Some(510));
    }

    #[test]
    fn set_peers_keeps_known_state() {
        let mut d = detector(0);
        d.handle_heartbeat(&hb(2, 1), 10);
        d.set_peers([id(2), id(4)]);
        assert_eq!(d.last_heard_ms(id(2)), Some(10));
        assert_eq!(d.poll_heartbeats(0), vec![id(2), id(4)]);
    }
}
