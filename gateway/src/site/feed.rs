//! The feed's rules: committed records of a local partition, read by the shell a page at a
//! time, go to every delegator that still needs them, under the partition's log generation;
//! the answer says where the feed reads next — the lowest seq any delegator still needs, which
//! is also the backpressure (a delegator that refused records keeps the feed re-reading them).
//! A log found behind what was read (`restarted`) starts a new generation and is read again
//! from 0.
use super::generations::{generation_of, seq_of, wan_seq};
use super::{SiteGateway, SiteStorage};
use crate::delegator::StoreError;
use crate::wire::WanRecord;
use tern_node::core::{ChangeRecord, PartitionId, WanChangesPage};

fn to_wan_record(record: &ChangeRecord, generation: u64) -> WanRecord {
    WanRecord {
        origin: record.entry.version.origin,
        partition: record.partition,
        prev_seq: 0,
        seq: wan_seq(generation, record.seq),
        key: record.key.clone(),
        entry: record.entry.clone(),
        // The HLC's wall part is the commit time at the origin (for a relayed record too).
        committed_at_ms: record.entry.version.hlc.wall_ms,
    }
}

impl<P: SiteStorage> SiteGateway<P> {
    /// A page of `partition`'s change log read after `asked_after`. A log found behind
    /// `asked_after`, or behind what the delegators hold of the current generation, restarted
    /// (the partition lost its memory). Every partition's first
    /// page must come here, even an empty one: it tells whether the log is empty-ever.
    /// Returns the seq after which the feed reads next.
    pub fn handle_feed_page(
        &mut self,
        partition: PartitionId,
        asked_after: u64,
        page: &WanChangesPage,
        now_ms: u64,
    ) -> u64 {
        self.prime(partition, page.last_seq == 0, now_ms);
        // A feed re-reading from 0 (a rewind) cannot see its log went back: the delegators
        // can, holding records of this generation beyond the log's end.
        let restarted =
            page.last_seq < asked_after || self.log_behind_shipped(partition, page.last_seq);
        let next = if restarted {
            self.on_log_restarted(partition, asked_after)
        } else {
            self.on_feed(partition, asked_after, page, now_ms)
        };
        self.settle(now_ms);
        next
    }

    /// Whether some delegator holds a record of `partition`'s current generation beyond
    /// `last_seq`: the log restarted since it was fed.
    fn log_behind_shipped(&self, partition: PartitionId, last_seq: u64) -> bool {
        let generation = self.generations.get(partition);
        self.targets.values().any(|t| {
            t.delegator
                .resume_after(partition)
                .is_some_and(|w| generation_of(w) == generation && seq_of(w) > last_seq)
        })
    }

    /// Where `partition`'s feed starts: the lowest seq (of the partition's change log) any
    /// delegator still needs.
    pub fn feed_start(&self, partition: PartitionId) -> u64 {
        self.targets
            .values()
            .map(|t| self.raw_after(partition, t.delegator.resume_after(partition)))
            .min()
            .unwrap_or(0)
    }

    /// The change-log seq after which a delegator resuming after WAN seq `resume` needs
    /// records: records of an older generation are all shipped (the log restarted since).
    fn raw_after(&self, partition: PartitionId, resume: Option<u64>) -> u64 {
        match resume {
            Some(w) if generation_of(w) >= self.generations.get(partition) => seq_of(w),
            _ => 0,
        }
    }

    /// A backlog may hold a later generation than the saved generations (the file was lost):
    /// never ship below what a delegator already holds.
    pub(super) fn sync_generations(&mut self, site: &str) {
        let Some(target) = self.targets.get(site) else {
            return;
        };
        let ahead: Vec<(PartitionId, u64)> = self
            .partitions()
            .filter_map(|p| {
                let g = generation_of(target.delegator.resume_after(p)?);
                (g > self.generations.get(p)).then_some((p, g))
            })
            .collect();
        for (partition, generation) in ahead {
            if let Err(error) = self
                .generations
                .bump(partition, generation, &mut self.storage)
            {
                tracing::error!(%partition, %error, "saving a log generation");
            }
        }
    }

    /// The partition's log restarted (it lost its memory): ship its records under a new
    /// generation. Returns where the feed reads next.
    fn on_log_restarted(&mut self, partition: PartitionId, asked_after: u64) -> u64 {
        let newest = self
            .targets
            .values()
            .filter_map(|t| t.delegator.resume_after(partition))
            .map(generation_of)
            .max()
            .unwrap_or(0);
        match self
            .generations
            .bump(partition, newest + 1, &mut self.storage)
        {
            Ok(generation) => {
                tracing::warn!(
                    %partition,
                    generation,
                    "change log restarted: shipping it as a new generation (peers repair it)"
                );
                0
            }
            Err(error) => {
                tracing::error!(%partition, %error, "saving a new log generation; retrying");
                asked_after
            }
        }
    }

    fn on_feed(
        &mut self,
        partition: PartitionId,
        asked_after: u64,
        page: &WanChangesPage,
        now_ms: u64,
    ) -> u64 {
        let last_in_page = page.records.last().map_or(asked_after, |r| r.seq);
        let generation = self.generations.get(partition);
        for (site, target) in &mut self.targets {
            let resume = target.delegator.resume_after(partition);
            // Past generations are shipped in full: compare within the current one.
            let resume_seq = match resume {
                Some(w) if generation_of(w) >= generation => Some(w),
                Some(_) => Some(wan_seq(generation, 0)),
                None => None,
            };
            // A stream not begun must begin at the log's start; if this page was read from
            // further on (for other targets), the feed re-reads from 0 (see the reply).
            if resume.is_none() && asked_after > 0 {
                continue;
            }
            let records: Vec<WanRecord> = page
                .records
                .iter()
                .filter(|r| resume_seq.is_none_or(|s| wan_seq(generation, r.seq) > s))
                .map(|r| to_wan_record(r, generation))
                .collect();
            let Some(first) = records.first().map(|r| seq_of(r.seq)) else {
                continue;
            };
            // The log no longer holds the start of this partition's history: the target
            // misses what came before, which only anti-entropy can bring.
            let lost_start = resume.is_none() && first > 1;
            match target.delegator.handle_records(records, now_ms) {
                Ok(intake) => {
                    for notice in &intake.notices {
                        tracing::warn!(target_site = %site, %notice, "WAN feed");
                    }
                    if let Some(dropped) = intake.overflow {
                        target.overflows_total += 1;
                        tracing::error!(
                            target_site = %site,
                            records = dropped.records,
                            bytes = dropped.bytes,
                            "WAN backlog over its byte cap: dropped, target marked for repair"
                        );
                    }
                    if lost_start {
                        tracing::warn!(target_site = %site, %partition, first, "change log starts after 1: partition marked for repair");
                        target.delegator.mark_repair(partition);
                    }
                    // A stream begun after the very first WAN seq assumes the target holds
                    // what precedes it; only a handshake checks that (a target holding less
                    // would wait for the missing records forever, e.g. the first records of
                    // a new log generation to a target that never had this partition). If
                    // the link is up the handshake is over: greet again.
                    if resume.is_none()
                        && wan_seq(generation, first) > 1
                        && let Some(conn) = target.link.take()
                    {
                        tracing::info!(target_site = %site, %partition, "stream begun mid-log on a live link: reconnecting to check the target's cursor");
                        target.delegator.handle_disconnected(now_ms);
                        target.repair.handle_disconnected(now_ms);
                        self.closes.push_back(super::LinkRef {
                            side: super::Side::ToTarget,
                            site: site.clone(),
                            conn,
                        });
                    }
                }
                Err(StoreError::Full { .. }) => {
                    tracing::debug!(target_site = %site, "WAN backlog full: shipping waits");
                }
                Err(error) => {
                    tracing::error!(target_site = %site, %error, "WAN backlog failed");
                    target.failure = Some(error.to_string());
                }
            }
        }
        if self.targets.is_empty() {
            return last_in_page;
        }
        self.feed_start(partition)
    }
}
