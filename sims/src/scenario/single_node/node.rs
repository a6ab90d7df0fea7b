//! The node host of `single-node`: its partition cores, and the checkers that watch every
//! step they take (reference model, core audit, SCAN/DBSIZE aggregation).
use super::{ClientOp, Config, Injection};
use crate::check::core_audit::CoreAuditor;
use crate::check::model::ReferenceModel;
use crate::check::{Violation, show_key};
use crate::net::HostId;
use crate::rng::SimRng;
use bytes::Bytes;
use rand::RngCore;
use tern_conflict::{SiteId, Value, Versioned};
use tern_node::core::{
    ChangeRecord, Command, CommandResult, Keyspace, PartitionConfig, PartitionCore, PartitionId,
    Response,
};

/// The node host: partition cores plus the checkers that watch them.
pub(super) struct Node {
    pub(super) host: HostId,
    keyspace: Keyspace,
    cores: Vec<PartitionCore>,
    pub(super) model: ReferenceModel,
    pub(super) auditor: CoreAuditor,
    /// Every key the clients use.
    keys: Vec<Bytes>,
    plain_keys: Vec<Bytes>,
    requests: u64,
    inject: Option<Injection>,
}

impl Node {
    pub(super) fn new(config: &Config, host: HostId, rng: &mut SimRng) -> Self {
        // The partition count comes from a 4..=8 draw, always valid.
        let keyspace = Keyspace::new(config.partitions).expect("partition count drawn in 4..=8");
        let cores = keyspace
            .partitions()
            .map(|partition| {
                PartitionCore::new(PartitionConfig {
                    partition,
                    site: SiteId(1),
                    limits: config.limits.clone(),
                    hash_seed: rng.next_u64(),
                })
            })
            .collect();
        Self {
            host,
            keyspace,
            cores,
            model: ReferenceModel::new(config.limits.ttl_ms_max),
            auditor: CoreAuditor::new(config.limits.tombstone_retention_ms),
            keys: config
                .plain_keys
                .iter()
                .chain(&config.ttl_keys)
                .cloned()
                .collect(),
            plain_keys: config.plain_keys.clone(),
            requests: 0,
            inject: config.inject,
        }
    }

    /// Apply one client request at node time `now_ms`, check it, and return the reply to send.
    pub(super) fn handle(
        &mut self,
        op: &ClientOp,
        now_ms: u64,
    ) -> Result<CommandResult, Violation> {
        self.requests += 1;
        let result = match op {
            ClientOp::Key(command) => self.handle_key_command(command, now_ms)?,
            ClientOp::DbSize => self.handle_dbsize(now_ms)?,
            ClientOp::Scan { count, pattern } => {
                self.handle_scan(*count, pattern.clone(), now_ms)?
            }
            ClientOp::FlushAll => self.handle_flush_all(now_ms)?,
        };
        Ok(self.maybe_phantom(op, result))
    }

    fn handle_key_command(
        &mut self,
        command: &Command,
        now_ms: u64,
    ) -> Result<CommandResult, Violation> {
        let key = command_key(command).cloned().unwrap_or_default();
        let partition = self.keyspace.partition_of(&key);
        let actual = self
            .core_mut(partition)
            .handle_command(command.clone(), now_ms);
        let actual = self.maybe_corrupt(actual);
        let outcome = self.model.apply(command, now_ms);
        expect_result(command, &actual, &outcome.result, now_ms)?;
        let cause = format!("{command:?}");
        self.audit_partition(partition, &outcome.changed, &cause, now_ms)?;
        self.audit_key(&key, &cause, now_ms)?;
        Ok(actual)
    }

    fn handle_dbsize(&mut self, now_ms: u64) -> Result<CommandResult, Violation> {
        let mut total = 0i64;
        for partition in self.keyspace.partitions() {
            match self
                .core_mut(partition)
                .handle_command(Command::DbSize, now_ms)
            {
                Ok(Response::Int(n)) => total += n,
                other => {
                    let command = format!("DbSize on {partition}");
                    return expect_result(&command, &other, &Ok(Response::Int(0)), now_ms)
                        .map(|()| other);
                }
            }
            self.audit_partition(partition, &[], "DbSize", now_ms)?;
        }
        let actual = Ok(Response::Int(total));
        let expected = self.model.apply(&Command::DbSize, now_ms).result;
        expect_result(&Command::DbSize, &actual, &expected, now_ms)?;
        Ok(actual)
    }

    /// Walk every partition to the end in steps of `count`, checking each step, then compare the
    /// keys found with the model's live keys.
    fn handle_scan(
        &mut self,
        count: usize,
        pattern: Option<Bytes>,
        now_ms: u64,
    ) -> Result<CommandResult, Violation> {
        const STEPS_MAX: usize = 100_000;
        let broken = |detail: String| Violation::ScanBroken { now_ms, detail };
        let mut found: Vec<Bytes> = Vec::new();
        for partition in self.keyspace.partitions() {
            let mut from = 0u64;
            for step in 0.. {
                if step == STEPS_MAX {
                    return Err(broken(format!(
                        "{partition} not finished after {STEPS_MAX} steps"
                    )));
                }
                let command = Command::Scan {
                    from,
                    count,
                    pattern: pattern.clone(),
                };
                let reply = self.core_mut(partition).handle_command(command, now_ms);
                let Ok(Response::ScanPage { keys, next }) = reply else {
                    return Err(broken(format!(
                        "{partition} step from {from} answered {reply:?}"
                    )));
                };
                if let Some(stray) = keys
                    .iter()
                    .find(|k| self.keyspace.partition_of(k) != partition)
                {
                    return Err(broken(format!(
                        "{partition} returned {} from another partition",
                        show_key(stray)
                    )));
                }
                found.extend(keys);
                match next {
                    None => break,
                    Some(next) if next > from => from = next,
                    Some(next) => {
                        return Err(broken(format!(
                            "{partition} step from {from} did not advance (next {next})"
                        )));
                    }
                }
            }
            self.audit_partition(partition, &[], "Scan", now_ms)?;
        }
        let returned = found.len();
        found.sort();
        found.dedup();
        if found.len() != returned {
            return Err(broken(format!(
                "a key was returned twice: {found:?} from {returned} results"
            )));
        }
        let actual = Ok(Response::ScanPage {
            keys: found,
            next: None,
        });
        let command = Command::Scan {
            from: 0,
            count,
            pattern,
        };
        let expected = self.model.apply(&command, now_ms).result;
        expect_result(&command, &actual, &expected, now_ms)?;
        Ok(actual)
    }

    fn handle_flush_all(&mut self, now_ms: u64) -> Result<CommandResult, Violation> {
        let changed = self.model.apply(&Command::FlushAll, now_ms).changed;
        for partition in self.keyspace.partitions() {
            let reply = self
                .core_mut(partition)
                .handle_command(Command::FlushAll, now_ms);
            let command = format!("FlushAll on {partition}");
            expect_result(&command, &reply, &Ok(Response::Ok), now_ms)?;
            let mine: Vec<Bytes> = changed
                .iter()
                .filter(|k| self.keyspace.partition_of(k) == partition)
                .cloned()
                .collect();
            self.audit_partition(partition, &mine, "FlushAll", now_ms)?;
        }
        for key in self.keys.clone() {
            self.audit_key(&key, "FlushAll", now_ms)?;
        }
        Ok(Ok(Response::Ok))
    }

    /// Housekeeping on every core, then check every key and every partition's live count.
    pub(super) fn tick(&mut self, now_ms: u64) -> Result<(), Violation> {
        for partition in self.keyspace.partitions() {
            self.core_mut(partition).handle_tick(now_ms);
            self.audit_partition(partition, &[], "a tick", now_ms)?;
        }
        for key in self.keys.clone() {
            self.audit_key(&key, "a tick", now_ms)?;
        }
        for partition in self.keyspace.partitions() {
            let core = self.cores[usize::from(partition.0)].live_keys();
            let model = self
                .model
                .live_keys(now_ms)
                .filter(|k| self.keyspace.partition_of(k) == partition)
                .count();
            if core != model {
                return Err(Violation::LiveCountDiffers {
                    now_ms,
                    partition,
                    core,
                    model,
                });
            }
        }
        self.model.forget_expired(now_ms);
        Ok(())
    }

    fn audit_partition(
        &mut self,
        partition: PartitionId,
        changed: &[Bytes],
        cause: &str,
        now_ms: u64,
    ) -> Result<(), Violation> {
        let core = &self.cores[usize::from(partition.0)];
        let after = self.auditor.checked_seq(partition);
        let records = core
            .changes_since(after)
            .map_err(|e| Violation::LogUnreadable {
                partition,
                cause: cause.to_string(),
                detail: e.to_string(),
            })?;
        let records: Vec<&ChangeRecord> = records.collect();
        // Injected faults tamper with a copy; the core's log is never touched.
        let tampered: Option<Vec<ChangeRecord>> = match self.inject {
            Some(Injection::HiddenRecord { request })
                if self.requests >= request && !records.is_empty() =>
            {
                Some(records[1..].iter().map(|&r| r.clone()).collect())
            }
            Some(Injection::SkippedSeq { request })
                if self.requests >= request && !records.is_empty() =>
            {
                let mut copy: Vec<ChangeRecord> = records.iter().map(|&r| r.clone()).collect();
                copy[0].seq += 1;
                Some(copy)
            }
            _ => None,
        };
        let entry = |key: &[u8]| core.entry(key);
        match &tampered {
            Some(copy) => {
                self.inject = None;
                self.auditor
                    .audit_records(partition, copy, entry, changed, cause, now_ms)
            }
            None => self
                .auditor
                .audit_records(partition, records, entry, changed, cause, now_ms),
        }
    }

    /// Check `key`'s stored entry: consistent with the records, and showing the model's state.
    fn audit_key(&mut self, key: &Bytes, cause: &str, now_ms: u64) -> Result<(), Violation> {
        let partition = self.keyspace.partition_of(key);
        let entry = self.cores[usize::from(partition.0)].entry(key);
        self.auditor.audit_entry(key, entry, now_ms)?;
        let actual = entry
            .filter(|e| !e.is_tombstone() && !e.is_expired(now_ms))
            .map(visible);
        let expected = self
            .model
            .live(key, now_ms)
            .map(|e| (Some(e.value.clone()), e.expires_at_ms));
        if actual != expected {
            return Err(Violation::StateDiverged {
                now_ms,
                cause: cause.to_string(),
                key: show_key(key),
                actual: format!("{actual:?}"),
                expected: format!("{expected:?}"),
            });
        }
        Ok(())
    }

    fn core_mut(&mut self, partition: PartitionId) -> &mut PartitionCore {
        &mut self.cores[usize::from(partition.0)]
    }

    fn maybe_corrupt(&mut self, actual: CommandResult) -> CommandResult {
        match self.inject {
            Some(Injection::WrongResult { request }) if self.requests >= request => {
                self.inject = None;
                match actual {
                    Ok(Response::Int(n)) => Ok(Response::Int(n.wrapping_add(1))),
                    _ => Ok(Response::Value(Some(Bytes::from_static(b"corrupted")))),
                }
            }
            _ => actual,
        }
    }

    fn maybe_phantom(&mut self, op: &ClientOp, result: CommandResult) -> CommandResult {
        match (self.inject, op) {
            (Some(Injection::PhantomRead { request }), ClientOp::Key(Command::Get { key }))
                if self.requests >= request && self.plain_keys.contains(key) =>
            {
                self.inject = None;
                Ok(Response::Value(Some(Bytes::from_static(b"phantom"))))
            }
            _ => result,
        }
    }
}

fn expect_result(
    command: &dyn std::fmt::Debug,
    actual: &CommandResult,
    expected: &CommandResult,
    now_ms: u64,
) -> Result<(), Violation> {
    if actual == expected {
        return Ok(());
    }
    Err(Violation::WrongResult {
        now_ms,
        command: format!("{command:?}"),
        actual: format!("{actual:?}"),
        expected: format!("{expected:?}"),
    })
}

/// What a client can observe of a stored entry: its value as GET shows it, and its deadline.
fn visible(entry: &Versioned) -> (Option<Bytes>, Option<u64>) {
    let value = match &entry.value {
        Value::Bytes(bytes) => Some(bytes.clone()),
        Value::Counter(counter) => counter.value().map(|n| Bytes::from(n.to_string())),
        Value::Tombstone => None,
    };
    (value, entry.expires_at_ms)
}

pub(super) fn command_key(command: &Command) -> Option<&Bytes> {
    match command {
        Command::Get { key }
        | Command::Set { key, .. }
        | Command::Del { key }
        | Command::Exists { key }
        | Command::IncrBy { key, .. }
        | Command::Expire { key, .. }
        | Command::Ttl { key, .. }
        | Command::WanApply { key, .. } => Some(key),
        Command::Scan { .. }
        | Command::DbSize
        | Command::ExpiringKeys
        | Command::FlushAll
        | Command::WanChanges { .. }
        | Command::WanDump { .. } => None,
    }
}
