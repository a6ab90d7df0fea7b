//! Oracles of a simulated site (docs/design/site-ha.md, "Invariants"), fed by the scenario as
//! the nodes run. What each part checks:
//!
//! - **role ledger** (invariant 3): every (partition, epoch) is claimed as primary by at most
//!   one node incarnation, ever;
//! - **epochs** (invariant 4): a replica's epoch never goes down; a replication message from
//!   an older epoch than the replica knows leaves its role, epoch and data unchanged;
//! - **acknowledged log** (invariants 1 and 5): when a primary releases an answer, every
//!   record up to the seq the request executed at is acknowledged. Acknowledged records form
//!   one log: a seq is never acknowledged with two different records. A replica becoming
//!   primary at epoch `e` holds every record acknowledged at earlier epochs, record for record;
//! - **versions** (invariant 6): every record a replica appends carries a version of its key
//!   newer (last-writer-wins order) than the one it held; a replica only drops to an older
//!   version when a snapshot repairs it, and never below an acknowledged one;
//! - **answers** (invariant 6): a request whose acknowledged execution changed state is never
//!   executed (and changes state) again, and every later answer to it repeats the first;
//! - **Raft**: every node applies the same map command at the same log index.
//!
//! Linearizability of the client-observed history (invariants 1, 2, 6) and convergence and
//! availability after the heal (invariants 8-like and 9) are checked by the scenario with
//! [`super::linearizability`] and the helpers at the end of this module.
use super::show_key;
use crate::trace::Fnv64;
use bytes::Bytes;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use tern_conflict::{Version, Versioned};
use tern_node::cluster::{MapCommand, NodeId};
use tern_node::core::{CommandResult, PartitionId, ReplicaCore, RequestId, Role};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SiteViolation {
    #[error(
        "invariant 3: {partition} epoch {epoch} has two primaries: {first} (incarnation {first_incarnation}) and {second} (incarnation {second_incarnation})"
    )]
    TwoPrimaries {
        partition: PartitionId,
        epoch: u64,
        first: NodeId,
        first_incarnation: u64,
        second: NodeId,
        second_incarnation: u64,
    },
    #[error(
        "invariant 4: the replica of {partition} on {node} went from epoch {from} back to {to}"
    )]
    EpochWentBack {
        node: NodeId,
        partition: PartitionId,
        from: u64,
        to: u64,
    },
    #[error(
        "invariant 4: a {message} from epoch {message_epoch} changed the replica of {partition} on {node} (at epoch {replica_epoch}): {detail}"
    )]
    StaleMessageChangedState {
        node: NodeId,
        partition: PartitionId,
        message: String,
        message_epoch: u64,
        replica_epoch: u64,
        detail: String,
    },
    #[error(
        "invariant 5: {node} became primary of {partition} at epoch {epoch} without every acknowledged write: {detail}"
    )]
    PromotedWithoutAckedWrites {
        node: NodeId,
        partition: PartitionId,
        epoch: u64,
        detail: String,
    },
    #[error(
        "invariant 1: {partition} seq {seq} was acknowledged as {first} and, by {node} at epoch {epoch}, as {second}"
    )]
    AckedLogDiverged {
        partition: PartitionId,
        seq: u64,
        first: String,
        node: NodeId,
        epoch: u64,
        second: String,
    },
    #[error(
        "invariant 6: on {node}, {partition} key {key}: version went back from {before} to {after} ({cause})"
    )]
    VersionWentBack {
        node: NodeId,
        partition: PartitionId,
        key: String,
        before: String,
        after: String,
        cause: String,
    },
    #[error(
        "invariant 6: request {request} changed state again after its acknowledged execution (answers {first} then {second}, the second by {node} at epoch {epoch})"
    )]
    DuplicateApply {
        request: String,
        first: String,
        second: String,
        node: NodeId,
        epoch: u64,
    },
    #[error(
        "invariant 6: request {request} was answered {first}, then {second} by {node} at epoch {epoch}"
    )]
    AnswersDisagree {
        request: String,
        first: String,
        second: String,
        node: NodeId,
        epoch: u64,
    },
    #[error("Raft: index {index} committed {first} on one node and {second} on {node}")]
    RaftDiverged {
        index: u64,
        first: String,
        second: String,
        node: NodeId,
    },
    #[error("map: {detail}")]
    MapBroken { detail: String },
    #[error(
        "invariant 9: {bound_ms} ms after the heal, {partition} has no serving primary: {detail}"
    )]
    NoPrimaryAfterHeal {
        partition: PartitionId,
        bound_ms: u64,
        detail: String,
    },
    #[error(
        "invariant 9: {op} invoked {after_heal_ms} ms after the heal {outcome} (bound: answered within {bound_ms} ms)"
    )]
    SlowAfterHeal {
        op: String,
        after_heal_ms: u64,
        outcome: String,
        bound_ms: u64,
    },
    #[error("client request {op} sent to {node} was never answered (waited {waited_ms} ms)")]
    Unanswered {
        op: String,
        node: String,
        waited_ms: u64,
    },
    #[error("after the heal and a quiet period: {detail}")]
    NotConverged { detail: String },
}

/// What the checker remembers of one replica (one node incarnation, one partition).
#[derive(Debug, Default)]
struct ReplicaView {
    epoch: u64,
    /// The epoch at which this replica was last seen primary (promotion checked once).
    primary_at: Option<u64>,
    /// Records up to here were version-checked.
    version_cursor: u64,
    /// The version each key had when last seen on this replica.
    versions: BTreeMap<Bytes, Version>,
    /// While primary: records up to here were compared with the acknowledged log.
    release_cursor: u64,
    /// The seq of the last snapshot install seen (the log was empty there).
    snapshot_at: Option<u64>,
}

/// The acknowledged records of one partition.
#[derive(Debug, Default)]
struct AckedLog {
    /// Every seq up to here is acknowledged (records may be unknown where the log was
    /// truncated before the checker could read it).
    upto: u64,
    /// seq → (key, entry, epoch of the primary that first acknowledged it).
    records: BTreeMap<u64, (Bytes, Versioned, u64)>,
    /// Highest seq acknowledged by a primary at each epoch.
    upto_by_epoch: BTreeMap<u64, u64>,
}

#[derive(Debug, Default)]
struct AnswerView {
    /// The answer of the acknowledged execution that changed state, if one was seen.
    changed: Option<Vec<CommandResult>>,
}

/// Counters for the run's report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckerStats {
    /// Role claims at an epoch above 1 (failovers, failbacks, handovers, re-registrations).
    pub promotions: u64,
    pub promotions_checked: u64,
    pub acked_records: u64,
    /// Acknowledged seqs whose records were truncated before the checker read them.
    pub acked_unknown: u64,
    pub stale_messages_checked: u64,
    pub snapshot_repairs: u64,
    pub committed: u64,
    /// Most `CaughtUp` commands committed for one partition in a run (in-sync churn).
    pub caught_up_max: u64,
}

#[derive(Debug, Default)]
pub struct SiteChecker {
    roles: BTreeMap<(PartitionId, u64), (NodeId, u64)>,
    replicas: BTreeMap<(NodeId, u64, PartitionId), ReplicaView>,
    acked: BTreeMap<PartitionId, AckedLog>,
    raft_log: BTreeMap<u64, MapCommand>,
    caught_up: BTreeMap<PartitionId, u64>,
    answers: BTreeMap<RequestId, AnswerView>,
    pub stats: CheckerStats,
}

/// A replica's observable state, to prove a stale message did not change it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    epoch: u64,
    role: Role,
    last_seq: u64,
    entries: u64,
}

impl Fingerprint {
    pub fn of(replica: &ReplicaCore) -> Self {
        let mut hash = Fnv64::new();
        for (key, entry) in replica.partition().snapshot_entries() {
            let _ = write!(hash, "{key:?}={entry:?};");
        }
        Self {
            epoch: replica.epoch(),
            role: replica.role(),
            last_seq: replica.last_seq(),
            entries: hash.value(),
        }
    }
}

impl SiteChecker {
    pub fn new() -> Self {
        Self::default()
    }

    /// After every event a node handled: roles, epochs, promotions and versions of each of its
    /// replicas.
    pub fn observe_node(
        &mut self,
        node: NodeId,
        incarnation: u64,
        replicas: &[ReplicaCore],
    ) -> Result<(), SiteViolation> {
        for replica in replicas {
            let partition = replica.partition().partition();
            self.observe_replica(node, incarnation, partition, replica)?;
        }
        Ok(())
    }

    fn observe_replica(
        &mut self,
        node: NodeId,
        incarnation: u64,
        partition: PartitionId,
        replica: &ReplicaCore,
    ) -> Result<(), SiteViolation> {
        let epoch = replica.epoch();
        let view = self
            .replicas
            .entry((node, incarnation, partition))
            .or_default();
        if epoch < view.epoch {
            return Err(SiteViolation::EpochWentBack {
                node,
                partition,
                from: view.epoch,
                to: epoch,
            });
        }
        view.epoch = epoch;
        check_versions(
            node,
            partition,
            replica,
            view,
            self.acked.get(&partition),
            &mut self.stats,
        )?;
        if replica.role() != Role::Primary {
            return Ok(());
        }
        match self.roles.get(&(partition, epoch)) {
            Some(&(first, first_incarnation))
                if (first, first_incarnation) != (node, incarnation) =>
            {
                return Err(SiteViolation::TwoPrimaries {
                    partition,
                    epoch,
                    first,
                    first_incarnation,
                    second: node,
                    second_incarnation: incarnation,
                });
            }
            Some(_) => {}
            None => {
                self.roles.insert((partition, epoch), (node, incarnation));
                if epoch > 1 {
                    self.stats.promotions += 1;
                }
            }
        }
        let view = self
            .replicas
            .get_mut(&(node, incarnation, partition))
            .expect("inserted above");
        if view.primary_at != Some(epoch) {
            view.primary_at = Some(epoch);
            self.stats.promotions_checked += 1;
            let acked = self.acked.entry(partition).or_default();
            check_promotion(node, partition, epoch, replica, acked)?;
            view.release_cursor = acked
                .upto_by_epoch
                .range(..epoch)
                .map(|(_, &s)| s)
                .max()
                .unwrap_or(0);
        }
        Ok(())
    }

    /// A primary released an answer to `id`; `exec_seq` is the partition's last seq when it
    /// executed. `changed`: that execution changed state.
    #[allow(clippy::too_many_arguments)]
    pub fn released(
        &mut self,
        node: NodeId,
        incarnation: u64,
        partition: PartitionId,
        epoch: u64,
        exec_seq: Option<u64>,
        changed: bool,
        id: RequestId,
        results: &[CommandResult],
        replica: &ReplicaCore,
    ) -> Result<(), SiteViolation> {
        let request = format!("{}.{:x}", id.origin, id.counter);
        let answer = self.answers.entry(id).or_default();
        if let Some(first) = &answer.changed {
            if changed {
                return Err(SiteViolation::DuplicateApply {
                    request,
                    first: format!("{first:?}"),
                    second: format!("{results:?}"),
                    node,
                    epoch,
                });
            }
            if first.as_slice() != results {
                return Err(SiteViolation::AnswersDisagree {
                    request,
                    first: format!("{first:?}"),
                    second: format!("{results:?}"),
                    node,
                    epoch,
                });
            }
        } else if changed {
            answer.changed = Some(results.to_vec());
        }
        let Some(seq) = exec_seq else {
            return Ok(());
        };
        let acked = self.acked.entry(partition).or_default();
        let view = self
            .replicas
            .entry((node, incarnation, partition))
            .or_default();
        let at_epoch = acked.upto_by_epoch.entry(epoch).or_default();
        *at_epoch = (*at_epoch).max(seq);
        let from = view.release_cursor;
        if seq > from {
            view.release_cursor = seq;
            let show = |key: &Bytes, entry: &Versioned| format!("{} = {entry:?}", show_key(key));
            // Unreadable (truncated) records stay unknown; the count shows in the report.
            if let Ok(records) = replica.partition().changes_since(from) {
                for record in records.take_while(|r| r.seq <= seq) {
                    match acked.records.get(&record.seq) {
                        Some((key, entry, _)) if key != &record.key || entry != &record.entry => {
                            return Err(SiteViolation::AckedLogDiverged {
                                partition,
                                seq: record.seq,
                                first: show(key, entry),
                                node,
                                epoch,
                                second: show(&record.key, &record.entry),
                            });
                        }
                        Some(_) => {}
                        None => {
                            acked.records.insert(
                                record.seq,
                                (record.key.clone(), record.entry.clone(), epoch),
                            );
                        }
                    }
                }
            }
        }
        acked.upto = acked.upto.max(seq);
        Ok(())
    }

    /// Counters, with the acknowledged-log totals filled in.
    pub fn stats(&self) -> CheckerStats {
        let mut stats = self.stats;
        for acked in self.acked.values() {
            let known = acked.records.len() as u64;
            stats.acked_records += known;
            stats.acked_unknown += acked.upto.saturating_sub(known);
        }
        stats
    }

    /// A map command a node applied at Raft `index`; `Ok(true)` the first time any node
    /// applied that index.
    pub fn committed(
        &mut self,
        node: NodeId,
        index: u64,
        command: &MapCommand,
    ) -> Result<bool, SiteViolation> {
        match self.raft_log.get(&index) {
            Some(first) if first != command => Err(SiteViolation::RaftDiverged {
                index,
                first: format!("{first:?}"),
                second: format!("{command:?}"),
                node,
            }),
            Some(_) => Ok(false),
            None => {
                self.stats.committed += 1;
                if let MapCommand::CaughtUp { partition, .. } = command {
                    let count = self.caught_up.entry(*partition).or_default();
                    *count += 1;
                    self.stats.caught_up_max = self.stats.caught_up_max.max(*count);
                }
                self.raft_log.insert(index, command.clone());
                Ok(true)
            }
        }
    }

    /// A replication message from an older epoch than the replica knows was handled: nothing
    /// observable may have changed.
    pub fn stale_message_handled(
        &mut self,
        node: NodeId,
        partition: PartitionId,
        message: String,
        message_epoch: u64,
        before: &Fingerprint,
        after: &Fingerprint,
    ) -> Result<(), SiteViolation> {
        self.stats.stale_messages_checked += 1;
        if before == after {
            return Ok(());
        }
        Err(SiteViolation::StaleMessageChangedState {
            node,
            partition,
            message,
            message_epoch,
            replica_epoch: before.epoch,
            detail: format!("before {before:?}, after {after:?}"),
        })
    }
}

/// Records appended since the last look must each raise their key's version. After a
/// snapshot install (the log restarts empty at the snapshot's seq) the replica may drop
/// versions it held (records of a deposed primary, never acknowledged), but no key may sit
/// below the latest version acknowledged up to that seq at an epoch the replica has followed:
/// those were all in the sender's state.
fn check_versions(
    node: NodeId,
    partition: PartitionId,
    replica: &ReplicaCore,
    view: &mut ReplicaView,
    acked: Option<&AckedLog>,
    stats: &mut CheckerStats,
) -> Result<(), SiteViolation> {
    let core = replica.partition();
    let last_seq = core.last_seq();
    let log_empty = last_seq > 0
        && core
            .changes_since(last_seq - 1)
            .map_or(true, |mut r| r.next().is_none());
    if log_empty {
        if view.snapshot_at != Some(last_seq) || view.version_cursor != last_seq {
            view.snapshot_at = Some(last_seq);
            stats.snapshot_repairs += 1;
            resync_versions(node, partition, replica, view, acked)?;
        }
        view.version_cursor = last_seq;
        return Ok(());
    }
    view.snapshot_at = None;
    if last_seq <= view.version_cursor {
        view.version_cursor = last_seq;
        return Ok(());
    }
    if let Ok(records) = core.changes_since(view.version_cursor) {
        for record in records {
            let version = &record.entry.version;
            if let Some(before) = view.versions.get(&record.key)
                && version.lww_cmp(before) != Ordering::Greater
            {
                return Err(SiteViolation::VersionWentBack {
                    node,
                    partition,
                    key: show_key(&record.key),
                    before: format!("{before:?}"),
                    after: format!("{version:?} at seq {}", record.seq),
                    cause: "a new record".to_string(),
                });
            }
            view.versions.insert(record.key.clone(), version.clone());
        }
    }
    view.version_cursor = last_seq;
    Ok(())
}

fn resync_versions(
    node: NodeId,
    partition: PartitionId,
    replica: &ReplicaCore,
    view: &mut ReplicaView,
    acked: Option<&AckedLog>,
) -> Result<(), SiteViolation> {
    let core = replica.partition();
    let last_seq = core.last_seq();
    let epoch = replica.epoch();
    let mut acked_latest: BTreeMap<&Bytes, &Versioned> = BTreeMap::new();
    if let Some(acked) = acked {
        for (_, (key, entry, at)) in acked.records.range(..=last_seq) {
            if *at <= epoch {
                acked_latest.insert(key, entry);
            }
        }
    }
    view.versions = core
        .snapshot_entries()
        .map(|(key, entry)| (key.clone(), entry.version.clone()))
        .collect();
    for (key, acked_entry) in acked_latest {
        let held = view.versions.get(key);
        if held.is_none_or(|v| v.lww_cmp(&acked_entry.version) == Ordering::Less) {
            return Err(SiteViolation::VersionWentBack {
                node,
                partition,
                key: show_key(key),
                before: format!("acknowledged {:?}", acked_entry.version),
                after: format!("{held:?}"),
                cause: format!("installing a snapshot at seq {last_seq} (epoch {epoch})"),
            });
        }
    }
    Ok(())
}

/// Invariant 5 at the moment `replica` is first seen primary at `epoch`.
fn check_promotion(
    node: NodeId,
    partition: PartitionId,
    epoch: u64,
    replica: &ReplicaCore,
    acked: &AckedLog,
) -> Result<(), SiteViolation> {
    let required = acked
        .upto_by_epoch
        .range(..epoch)
        .map(|(_, &s)| s)
        .max()
        .unwrap_or(0);
    if required == 0 {
        return Ok(());
    }
    let fail = |detail: String| SiteViolation::PromotedWithoutAckedWrites {
        node,
        partition,
        epoch,
        detail,
    };
    let last_seq = replica.last_seq();
    if last_seq < required {
        return Err(fail(format!(
            "its log ends at seq {last_seq}, but seq {required} was acknowledged"
        )));
    }
    let core = replica.partition();
    match core.changes_since(0) {
        Ok(records) => {
            for record in records.take_while(|r| r.seq <= required) {
                if let Some((key, entry, _)) = acked.records.get(&record.seq)
                    && (key != &record.key || entry != &record.entry)
                {
                    return Err(fail(format!(
                        "seq {} holds {} = {:?}, but {} = {entry:?} was acknowledged",
                        record.seq,
                        show_key(&record.key),
                        record.entry,
                        show_key(key)
                    )));
                }
            }
        }
        Err(_) => {
            // Truncated log (or a snapshot install): compare state with the latest acknowledged
            // version of every key.
            let mut latest: BTreeMap<&Bytes, &Versioned> = BTreeMap::new();
            for (_, (key, entry, _)) in acked.records.range(..=required) {
                latest.insert(key, entry);
            }
            for (key, entry) in latest {
                let held = core.entry(key);
                let ok = held.is_some_and(|h| h.version.lww_cmp(&entry.version) != Ordering::Less);
                if !ok {
                    return Err(fail(format!(
                        "key {} holds {held:?}, older than the acknowledged {entry:?}",
                        show_key(key)
                    )));
                }
            }
        }
    }
    Ok(())
}
