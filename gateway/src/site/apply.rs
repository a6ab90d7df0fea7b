//! Applying a source's records: one request per (source, partition) in flight (which keeps
//! per-partition order), sized by `apply_records_max` / `apply_bytes_max`; the results go to
//! the sink, which acknowledges only what the partition confirmed applied.
use super::repair::value_len;
use super::{SiteGateway, SiteStorage};
use crate::wire::WanRecord;
use bytes::Bytes;
use tern_conflict::Versioned;
use tern_node::core::{Command, CommandResult, PartitionId, Response};

/// Records of one source and partition, in order, to reconcile into the partition (the host
/// sends one `WanApply` per record through the router); answer with
/// [`SiteGateway::handle_applied`].
#[derive(Clone, Debug, PartialEq)]
pub struct ApplyRequest {
    pub source: String,
    pub partition: PartitionId,
    pub records: Vec<WanRecord>,
}

impl<P: SiteStorage> SiteGateway<P> {
    /// The command that reconciles a remote entry (a sink record or a repair push) at its
    /// partition's primary, naming the resolver this site's table gives `key`: the primary
    /// may be another node of the site, one without the `[wan]` table.
    pub fn wan_apply_command(&self, key: &Bytes, entry: &Versioned) -> Command {
        Command::WanApply {
            key: key.clone(),
            entry: entry.clone(),
            resolver: Some(self.config.resolvers.for_key(key).name().to_owned()),
        }
    }

    /// Queues the next apply request of (`site`, `partition`) unless one is in flight.
    pub(super) fn dispatch(&mut self, site: &str, partition: PartitionId) {
        let records_max = self.config.apply_records_max.max(1) as usize;
        let bytes_max = self.config.apply_bytes_max as usize;
        let Some(source) = self.sources.get_mut(site) else {
            return;
        };
        if source.inflight.contains(&partition) {
            return;
        }
        let Some(queue) = source.pending.get_mut(&partition) else {
            return;
        };
        let mut chunk = Vec::new();
        let mut bytes = 0;
        while let Some(record) = queue.front() {
            let size = record.key.len() + value_len(&record.entry.value);
            if !chunk.is_empty() && (chunk.len() >= records_max || bytes + size > bytes_max) {
                break;
            }
            bytes += size;
            chunk.extend(queue.pop_front());
        }
        if queue.is_empty() {
            source.pending.remove(&partition);
        }
        if chunk.is_empty() {
            return;
        }
        source.inflight.insert(partition);
        self.applies.push_back(ApplyRequest {
            source: site.to_owned(),
            partition,
            records: chunk,
        });
    }

    /// An apply request finished: `results[i]` is the answer for `records[i]`.
    pub fn handle_applied(
        &mut self,
        site: &str,
        partition: PartitionId,
        records: &[WanRecord],
        results: &[CommandResult],
        now_ms: u64,
    ) {
        self.on_applied(site, partition, records, results, now_ms);
        self.settle(now_ms);
    }

    fn on_applied(
        &mut self,
        site: &str,
        partition: PartitionId,
        records: &[WanRecord],
        results: &[CommandResult],
        now_ms: u64,
    ) {
        let Some(source) = self.sources.get_mut(site) else {
            return;
        };
        source.inflight.remove(&partition);
        for (record, result) in records.iter().zip(results) {
            match result {
                Ok(Response::WanApplied {
                    conflict,
                    clock_rejected,
                    ..
                }) => {
                    source.applied_total += 1;
                    source
                        .lag
                        .record(now_ms.saturating_sub(record.committed_at_ms));
                    if *conflict {
                        let name = self.config.resolvers.for_key(&record.key).name().to_owned();
                        *source.conflicts.entry(name).or_default() += 1;
                    }
                    if *clock_rejected {
                        tracing::warn!(source_site = site, "remote HLC beyond hlc_offset_ms_max");
                    }
                }
                other => {
                    // The record cannot apply here (e.g. over this site's limits): counted and
                    // logged, and the stream goes on rather than stalling every later record.
                    source.apply_errors_total += 1;
                    tracing::error!(source_site = site, %partition, seq = record.seq, ?other, "WAN record not applied");
                }
            }
        }
        if results.len() != records.len() {
            tracing::error!(
                source_site = site,
                "apply answered {} of {} records",
                results.len(),
                records.len()
            );
        }
        if let Some(last) = records.last() {
            source.sink.handle_applied(partition, last.seq, now_ms);
            source.cursors_dirty = true;
        }
        self.dispatch(site, partition);
    }
}
