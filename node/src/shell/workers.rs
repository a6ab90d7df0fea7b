//! The arbiter pool: threads that run the partition actors (and, see `resp`, the client
//! connections, so that a connection and many of the partitions it talks to share a thread).
use super::actor::PartitionActor;
use super::router::Router;
use crate::config::NodeConfig;
use crate::core::{Keyspace, PartitionConfig, PartitionCore};
use actix::{Actor, Arbiter, ArbiterHandle};
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::Duration;
use tern_conflict::SiteId;

#[derive(Debug)]
pub struct Workers {
    arbiters: Vec<Arbiter>,
    router: Router,
}

impl Workers {
    /// Starts `config.effective_workers()` arbiters and one actor per partition, partition `i`
    /// on arbiter `i mod workers`. Must run on a thread with a running actix `System` (arbiters
    /// register with it). `config` must be validated.
    pub fn start(config: &NodeConfig, keyspace: Keyspace) -> Self {
        let arbiters: Vec<Arbiter> = (0..config.effective_workers().max(1))
            .map(|_| Arbiter::new())
            .collect();
        let tick = Duration::from_millis(config.tick_ms);
        let mailbox = config.limits.partition_mailbox_messages_max;
        // The std hasher's keys come from the OS RNG once per process and then increment per
        // `RandomState`, so hashing a per-partition counter gives distinct, unpredictable seeds.
        let seeds = RandomState::new();
        let addrs = keyspace
            .partitions()
            .map(|partition| {
                let arbiter = &arbiters[usize::from(partition.0) % arbiters.len()];
                let core_config = PartitionConfig {
                    partition,
                    site: SiteId(config.site),
                    limits: config.limits.clone(),
                    hash_seed: seeds.hash_one(partition.0),
                };
                PartitionActor::start_in_arbiter(&arbiter.handle(), move |ctx| {
                    // Actix's own bound is not what limits the queue (see `Execute`), but it
                    // keeps actix's parking logic consistent with ours.
                    ctx.set_mailbox_capacity(mailbox);
                    PartitionActor::new(PartitionCore::new(core_config), tick)
                })
            })
            .collect();
        let router = Router::new(keyspace, addrs, mailbox);
        Self { arbiters, router }
    }

    pub fn router(&self) -> &Router {
        &self.router
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
