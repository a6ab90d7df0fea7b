//! Which node is each partition's primary, as this node's map says: read on every client
//! request (two relaxed atomic loads), written by the cluster actor on every map change, which
//! also wakes whoever waits for the map to move (forwarding retries).
use super::map_view::MapView;
use crate::core::PartitionId;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::watch;

#[derive(Debug)]
pub struct Routes {
    /// Primary's node id per partition; 0 = none (node ids are never 0).
    primaries: Box<[AtomicU64]>,
    epochs: Box<[AtomicU64]>,
    /// Bumped after every update.
    changes: watch::Sender<u64>,
}

impl Routes {
    pub fn new(view: &MapView) -> Self {
        let count = usize::from(view.map.partition_count());
        let routes = Self {
            primaries: (0..count).map(|_| AtomicU64::new(0)).collect(),
            epochs: (0..count).map(|_| AtomicU64::new(0)).collect(),
            changes: watch::Sender::new(0),
        };
        routes.update(view);
        routes
    }

    pub fn update(&self, view: &MapView) {
        for (i, (primary, epoch)) in self.primaries.iter().zip(self.epochs.iter()).enumerate() {
            let partition = PartitionId(u16::try_from(i).unwrap_or(u16::MAX));
            let route = view.route(partition).map_or(0, |n| n.get());
            let e = view.map.assignment(partition).map_or(0, |a| a.epoch);
            primary.store(route, Ordering::Relaxed);
            epoch.store(e, Ordering::Relaxed);
        }
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// The node to send `partition`'s requests to, if the map names one this node may use.
    pub fn primary(&self, partition: PartitionId) -> Option<u64> {
        let id = self.primaries.get(usize::from(partition.0))?;
        match id.load(Ordering::Relaxed) {
            0 => None,
            id => Some(id),
        }
    }

    pub fn epoch(&self, partition: PartitionId) -> u64 {
        self.epochs
            .get(usize::from(partition.0))
            .map_or(0, |e| e.load(Ordering::Relaxed))
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}
