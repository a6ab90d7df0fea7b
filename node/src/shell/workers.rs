//! The arbiter pool: threads that run the partition actors (and, see `resp`, the client
//! connections, so that a connection and many of the partitions it talks to share a thread).
use super::actor::{PartitionActor, PartitionLinks};
use super::map_view::MapView;
use crate::cluster::NodeId;
use crate::config::NodeConfig;
use crate::core::{Keyspace, PartitionConfig, ReplicaCore};
use actix::{Actor, Addr, Arbiter, ArbiterHandle};
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;
use tern_conflict::{KeyspaceResolvers, SiteId};

#[derive(Debug)]
pub struct Workers {
    arbiters: Vec<Arbiter>,
    actors: Vec<Addr<PartitionActor>>,
}

impl Workers {
    /// Starts `config.effective_workers()` arbiters and one actor per partition, partition `i`
    /// on arbiter `i mod workers`, each replica acting on `view` from its start and resolving
    /// WAN conflicts with `resolvers`. Must run on a thread with a running actix `System`
    /// (arbiters register with it). `config` must be validated.
    pub(crate) fn start(
        config: &NodeConfig,
        keyspace: Keyspace,
        me: NodeId,
        view: &Arc<MapView>,
        links: &PartitionLinks,
        resolvers: &Arc<KeyspaceResolvers>,
    ) -> Self {
        let arbiters: Vec<Arbiter> = (0..config.effective_workers().max(1))
            .map(|_| Arbiter::new())
            .collect();
        let tick = Duration::from_millis(config.tick_ms);
        let mailbox = config.limits.partition_mailbox_messages_max;
        let replication = config.limits.replication();
        // The std hasher's keys come from the OS RNG once per process and then increment per
        // `RandomState`, so hashing a per-partition counter gives distinct, unpredictable seeds.
        let seeds = RandomState::new();
        let actors = keyspace
            .partitions()
            .map(|partition| {
                let arbiter = &arbiters[usize::from(partition.0) % arbiters.len()];
                let core_config = PartitionConfig {
                    partition,
                    site: SiteId(config.site),
                    limits: config.limits.clone(),
                    hash_seed: seeds.hash_one(partition.0),
                };
                let replication = replication.clone();
                let view = Arc::clone(view);
                let links = links.clone();
                let resolvers = Arc::clone(resolvers);
                PartitionActor::start_in_arbiter(&arbiter.handle(), move |ctx| {
                    // Actix's own bound is not what limits the queue (see `Execute`), but it
                    // keeps actix's parking logic consistent with ours.
                    ctx.set_mailbox_capacity(mailbox);
                    let core = ReplicaCore::new(me.get(), core_config, replication)
                        .with_resolvers(resolvers);
                    PartitionActor::new(core, view, links, tick)
                })
            })
            .collect();
        Self { arbiters, actors }
    }

    /// Partition `i`'s actor at index `i`.
    pub fn actors(&self) -> Vec<Addr<PartitionActor>> {
        self.actors.clone()
    }

    pub fn handles(&self) -> Vec<ArbiterHandle> {
        self.arbiters.iter().map(Arbiter::handle).collect()
    }

    pub fn len(&self) -> usize {
        self.arbiters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.arbiters.is_empty()
    }

    /// Stops every arbiter (dropping its actors and any connection tasks on it) and waits for
    /// the threads to exit. Blocking: call it outside any async runtime.
    pub fn stop_and_join(self) {
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
        for arbiter in self.arbiters {
            if arbiter.join().is_err() {
                tracing::error!("a partition arbiter thread panicked");
            }
        }
    }
}
