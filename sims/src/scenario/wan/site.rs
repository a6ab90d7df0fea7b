//! One site: P partition cores (one replica per partition — the site-internal HA is another
//! scenario's business), the keyspace's resolvers and the clients' operations; what the
//! gateway reads (change-log pages, dumps for repair) and applies (remote entries), and the
//! loss of the whole site's memory. Every change a core commits is audited by the
//! [`WanChecker`] right away.
use super::Injection;
use crate::check::convergence::{WanChecker, WanViolation};
use crate::net::HostId;
use crate::rng::SimRng;
use bytes::Bytes;
use rand::RngCore;
use std::collections::BTreeMap;
use std::sync::Arc;
use tern_conflict::{
    ConflictResolver, KeyspaceResolvers, LastWriterWins, RegistryError, Resolution,
    ResolverRegistry, SiteId, Versioned,
};
use tern_gateway::site::DumpEntries;
use tern_node::core::{
    Command, Keyspace, PartitionConfig, PartitionCore, PartitionId, RemoteApplied, Response,
    WanChangesPage,
};
use tern_node::limits::Limits;

/// String keys (SET/DEL/GET), resolved last-writer-wins.
pub const STRING_PREFIX: &str = "s:";
/// Counter keys (only ever INCRBY), resolved by counter merge.
pub const COUNTER_PREFIX: &str = "c:";

/// Which resolver each key prefix uses, by registry name (first match wins).
pub const RESOLVER_TABLE: &[(&str, &str)] = &[
    (COUNTER_PREFIX, tern_conflict::CounterMerge::NAME),
    (STRING_PREFIX, LastWriterWins::NAME),
];

/// The keyspace's resolvers, picked per key prefix from a [`ResolverRegistry`]: the nodes'
/// [`KeyspaceResolvers`], with the fallback fixed to `lww`.
#[derive(Debug, Clone)]
pub struct Resolvers(Arc<KeyspaceResolvers>);

impl Resolvers {
    pub fn from_registry(
        registry: &ResolverRegistry,
        table: &[(&str, &str)],
    ) -> Result<Self, RegistryError> {
        KeyspaceResolvers::new(registry, table.iter().copied(), LastWriterWins::NAME)
            .map(|r| Self(Arc::new(r)))
    }

    /// The table as the gateway core takes it.
    pub fn keyspace(&self) -> &Arc<KeyspaceResolvers> {
        &self.0
    }

    pub fn for_key(&self, key: &[u8]) -> &dyn ConflictResolver {
        self.0.for_key(key).as_ref()
    }
}

/// A broken resolver for the injection tests: it keeps whichever version arrived first, so the
/// result depends on delivery order (the law kit rejects it; here convergence must catch it).
#[derive(Debug)]
pub struct FirstArrivalWins;

impl ConflictResolver for FirstArrivalWins {
    fn name(&self) -> &str {
        LastWriterWins::NAME
    }

    fn resolve(&self, _key: &[u8], _local: &Versioned, _incoming: &Versioned) -> Resolution {
        Resolution::KeepLocal
    }
}

/// The registry a run uses: the built-ins, or with `lww` replaced by the broken resolver.
pub fn registry_for(inject: Option<Injection>) -> ResolverRegistry {
    let mut registry = ResolverRegistry::with_builtins();
    if inject == Some(Injection::OrderDependentResolver) {
        registry.replace(Arc::new(FirstArrivalWins));
    }
    registry
}

/// What a client does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientOp {
    Set { key: Bytes, value: Bytes },
    Del { key: Bytes },
    IncrBy { key: Bytes, delta: i64 },
    Get { key: Bytes },
}

impl ClientOp {
    /// A random operation on the shared key set; `value_serial` makes SET values unique.
    pub fn random(
        rng: &mut SimRng,
        string_keys: u64,
        counter_keys: u64,
        site: usize,
        value_serial: u64,
    ) -> Self {
        let string_key = |rng: &mut SimRng| {
            Bytes::from(format!(
                "{STRING_PREFIX}{}",
                rng.between(0, string_keys - 1)
            ))
        };
        match rng.weighted(&[(40, 0u8), (12, 1), (33, 2), (15, 3)]) {
            0 => ClientOp::Set {
                key: string_key(rng),
                value: Bytes::from(format!("v{site}-{value_serial}")),
            },
            1 => ClientOp::Del {
                key: string_key(rng),
            },
            2 => ClientOp::IncrBy {
                key: Bytes::from(format!(
                    "{COUNTER_PREFIX}{}",
                    rng.between(0, counter_keys - 1)
                )),
                delta: rng.between_i64(-5, 9),
            },
            _ => ClientOp::Get {
                key: string_key(rng),
            },
        }
    }
}

#[derive(Debug)]
pub struct Site {
    pub index: usize,
    pub id: SiteId,
    /// The host the site's clients run on (the gateway has its own host, so it can crash
    /// alone).
    pub host: HostId,
    keyspace: Keyspace,
    cores: Vec<PartitionCore>,
    resolvers: Resolvers,
    limits: Limits,
    /// Per partition, the last seq the checker audited.
    audited: Vec<u64>,
    /// SET values written here so far (makes each value unique).
    pub values_written: u64,
    pub conflicts: u64,
    pub clock_rejections: u64,
    /// Clients hold their operations (the site lost its memory and is being restored).
    pub paused: bool,
}

/// Empty partition cores for every partition of `keyspace`.
fn fresh_cores(
    keyspace: &Keyspace,
    site: SiteId,
    limits: &Limits,
    rng: &mut SimRng,
) -> Vec<PartitionCore> {
    keyspace
        .partitions()
        .map(|partition| {
            PartitionCore::new(PartitionConfig {
                partition,
                site,
                limits: limits.clone(),
                hash_seed: rng.next_u64(),
            })
        })
        .collect()
}

impl Site {
    pub fn new(
        index: usize,
        id: SiteId,
        host: HostId,
        partitions: u32,
        limits: &Limits,
        resolvers: Resolvers,
        rng: &mut SimRng,
    ) -> Self {
        // The partition count is drawn from a small valid range by the config.
        let keyspace = Keyspace::new(partitions).expect("partition count drawn in 2..=5");
        let cores = fresh_cores(&keyspace, id, limits, rng);
        let audited = vec![0; cores.len()];
        Self {
            index,
            id,
            host,
            keyspace,
            cores,
            resolvers,
            limits: limits.clone(),
            audited,
            values_written: 0,
            conflicts: 0,
            clock_rejections: 0,
            paused: false,
        }
    }

    pub fn partitions(&self) -> impl Iterator<Item = PartitionId> + use<> {
        self.keyspace.partitions()
    }

    pub fn core(&self, partition: PartitionId) -> &PartitionCore {
        &self.cores[usize::from(partition.0)]
    }

    pub fn partition_of(&self, key: &[u8]) -> PartitionId {
        self.keyspace.partition_of(key)
    }

    /// Run one client operation at site time `now_ms`; acknowledged writes are reported to the
    /// checker with the version they committed.
    pub fn client_op(
        &mut self,
        op: &ClientOp,
        now_ms: u64,
        checker: &mut WanChecker,
    ) -> Result<(), WanViolation> {
        let (key, command) = match op {
            ClientOp::Set { key, value } => {
                checker.register_value(value);
                self.values_written += 1;
                let command = Command::Set {
                    key: key.clone(),
                    value: value.clone(),
                    condition: tern_node::core::SetCondition::Always,
                    expiry: None,
                    get: false,
                };
                (key, command)
            }
            ClientOp::Del { key } => (key, Command::Del { key: key.clone() }),
            ClientOp::IncrBy { key, delta } => (
                key,
                Command::IncrBy {
                    key: key.clone(),
                    delta: *delta,
                },
            ),
            ClientOp::Get { key } => (key, Command::Get { key: key.clone() }),
        };
        let partition = self.partition_of(key);
        let core = &mut self.cores[usize::from(partition.0)];
        let before = core.last_seq();
        let result = core.handle_command(command, now_ms);
        let committed = core.last_seq() > before;
        match (op, &result) {
            (ClientOp::Get { key }, Ok(Response::Value(value))) => {
                checker.check_read(self.index, key, value.as_ref())?;
            }
            (ClientOp::IncrBy { key, delta }, Ok(Response::Int(_))) => {
                checker.register_increment(self.index, key, *delta);
            }
            _ => {}
        }
        if committed {
            let core = &self.cores[usize::from(partition.0)];
            if let Some(version) = core.entry(key).map(|e| e.version.clone()) {
                checker.acked_write(self.index, key, &version);
            }
        }
        self.audit(partition, checker, "a client write")
    }

    /// Apply an entry another site committed (a sink's record or a repair snapshot's entry)
    /// through the key's resolver.
    pub fn apply_remote(
        &mut self,
        key: Bytes,
        entry: Versioned,
        now_ms: u64,
        checker: &mut WanChecker,
        cause: &str,
    ) -> Result<RemoteApplied, WanViolation> {
        checker.check_entry(self.index, &key, &entry, cause)?;
        let partition = self.partition_of(&key);
        let resolver = self.resolvers.for_key(&key);
        let applied =
            self.cores[usize::from(partition.0)].apply_remote(key, entry, resolver, now_ms);
        self.conflicts += u64::from(applied.is_conflict());
        self.clock_rejections += u64::from(applied.clock.is_err());
        self.audit(partition, checker, cause)?;
        Ok(applied)
    }

    /// The site loses its memory: every partition empty, change logs starting again at seq 1.
    pub fn wipe(&mut self, rng: &mut SimRng) {
        self.cores = fresh_cores(&self.keyspace, self.id, &self.limits, rng);
        self.audited.iter_mut().for_each(|seq| *seq = 0);
    }

    /// A page of `partition`'s change log after `after_seq`, as the gateway's feed reads it
    /// (`Command::WanChanges`; no hold: the scenarios drop and repair on overflow).
    pub fn wan_changes(
        &mut self,
        partition: PartitionId,
        after_seq: u64,
        records_max: u32,
        bytes_max: u32,
    ) -> WanChangesPage {
        let command = Command::WanChanges {
            after_seq,
            records_max,
            bytes_max,
            hold_ms: 0,
        };
        // `WanChanges` is a read at the core: the clock does not matter.
        match self.cores[usize::from(partition.0)].handle_command(command, 0) {
            Ok(Response::WanChanges(page)) => page,
            _ => WanChangesPage {
                records: Vec::new(),
                last_seq: self.cores[usize::from(partition.0)].last_seq(),
            },
        }
    }

    /// Every stored entry of `partition` in scan order, paged through `Command::WanDump` as
    /// the host loads a repair snapshot.
    pub fn dump(
        &mut self,
        partition: PartitionId,
        entries_max: u32,
        bytes_max: u32,
    ) -> Result<DumpEntries, String> {
        let core = &mut self.cores[usize::from(partition.0)];
        let mut entries = Vec::new();
        let mut from = 0;
        loop {
            let command = Command::WanDump {
                from_position: from,
                entries_max,
                bytes_max,
            };
            let page = match core.handle_command(command, 0) {
                Ok(Response::WanDump(page)) => page,
                other => return Err(format!("unexpected answer to WanDump: {other:?}")),
            };
            entries.extend(page.entries);
            match page.next {
                Some(next) if next > from => from = next,
                Some(next) => return Err(format!("WanDump did not advance ({from} → {next})")),
                None => return Ok(entries),
            }
        }
    }

    /// Every entry of every partition, tombstones included: what convergence compares.
    pub fn state(&self) -> BTreeMap<Bytes, Versioned> {
        self.cores
            .iter()
            .flat_map(|core| core.snapshot_entries())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Records committed since the last audit (each mutation commits at most one, so they are
    /// always still in the log).
    fn audit(
        &mut self,
        partition: PartitionId,
        checker: &mut WanChecker,
        cause: &str,
    ) -> Result<(), WanViolation> {
        let index = usize::from(partition.0);
        let core = &self.cores[index];
        let Ok(records) = core.changes_since(self.audited[index]) else {
            return Err(WanViolation::LinkBroken {
                link: format!("site {} {partition}", self.index),
                detail: "the change log dropped records before the audit read them".into(),
            });
        };
        for record in records {
            checker.audit_record(self.index, record, cause)?;
            self.audited[index] = record.seq;
        }
        Ok(())
    }
}
