//! Wipe detection: a local partition whose change log is empty-ever although a sink applied
//! records into it lost its memory (the site restarted without its data). Its sink cursors
//! go back to 0, so the sources, seeing the lower cursor in our `HelloAck`, resend and repair
//! it. Hellos are therefore held until every partition's first feed page arrived (at most
//! `HELLO_HOLD_MS_MAX`); a partition primed after Hellos were answered closes the source
//! links whose cursor it reset, so the sources greet again.
use super::{Side, SiteGateway, SiteStorage};
use crate::wire::Message;
use tern_node::core::PartitionId;

impl<P: SiteStorage> SiteGateway<P> {
    /// The first page of `partition` arrived (`log_empty`: its log never held a record).
    pub(super) fn prime(&mut self, partition: PartitionId, log_empty: bool, now_ms: u64) {
        // Before this page counts: were sources already answered with our cursors?
        let hellos_answered = self.hellos_released(now_ms);
        if !self.primed.insert(partition) {
            return;
        }
        if log_empty {
            for (site, source) in &mut self.sources {
                let applied = source
                    .sink
                    .applied_cursors()
                    .find(|(p, _)| *p == partition)
                    .map_or(0, |(_, seq)| seq);
                if applied > 0 {
                    tracing::warn!(source_site = %site, %partition, applied, "local partition is empty although records were applied: cursor reset, the source repairs it");
                    source.sink.reset_cursor(partition, 0);
                    source.cursors_dirty = true;
                    if hellos_answered && let Some(conn) = source.link.take() {
                        // Our HelloAck reported the old cursor: make the source greet again.
                        source.sink.handle_disconnected(now_ms);
                        source.repair.handle_disconnected();
                        self.closes.push_back(super::LinkRef {
                            side: Side::FromSource,
                            site: site.clone(),
                            conn,
                        });
                    }
                }
            }
        }
        self.release_hellos(now_ms);
    }

    /// Whether sources' Hellos are answered now (every partition primed, or held long enough).
    pub(super) fn hellos_released(&self, now_ms: u64) -> bool {
        self.primed.len() >= usize::from(self.config.partition_count)
            || now_ms >= self.hellos_held_until_ms
    }

    pub(super) fn release_hellos(&mut self, now_ms: u64) {
        if self.held_hellos.is_empty() || !self.hellos_released(now_ms) {
            return;
        }
        let partitions = usize::from(self.config.partition_count);
        if self.primed.len() < partitions {
            tracing::warn!(
                unprimed = partitions - self.primed.len(),
                "answering WAN sources before every partition could be read (no primary?)"
            );
        }
        for (site, conn, hello) in std::mem::take(&mut self.held_hellos) {
            self.on_message(Side::FromSource, &site, conn, Message::Hello(hello), now_ms);
        }
    }
}
