//! [`SourceRepair`]: answers the repair sessions one source runs against this site, with a
//! [`RepairResponder`] and a snapshot per session (messages wait while it loads).
use super::shared::{LoadOwner, RepairShared, link_pacer, pace};
use super::snapshot::{DumpEntries, SnapshotReplica};
use crate::bootstrap::Pacer;
use crate::limits::GatewayLimits;
use crate::repair::RepairResponder;
use crate::wire::Message;
use std::collections::BTreeMap;
use tern_conflict::SiteId;
use tern_node::core::PartitionId;

enum Answering {
    Loading {
        queued: Vec<Message>,
        since_ms: u64,
    },
    Ready {
        replica: SnapshotReplica,
        last_used_ms: u64,
    },
}

/// Answers the repair sessions one source runs against this site.
pub struct SourceRepair {
    site: String,
    peer: SiteId,
    responder: RepairResponder,
    /// Per (session, partition): its snapshot, or the messages waiting for it.
    replicas: BTreeMap<(u64, PartitionId), (u64 /* load token */, Answering)>,
    idle_ms_max: u64,
    sessions_max: usize,
    /// Answers for the source's link, per (session, partition), at the configured rate.
    pacer: Pacer<(u64, PartitionId), Message>,
}

impl std::fmt::Debug for SourceRepair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceRepair")
            .field("site", &self.site)
            .field("sessions", &self.replicas.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl SourceRepair {
    pub fn new(site: &str, peer: SiteId, limits: &GatewayLimits, now_ms: u64) -> Self {
        Self {
            site: site.to_owned(),
            peer,
            responder: RepairResponder::new(limits),
            replicas: BTreeMap::new(),
            idle_ms_max: limits.repair_responder_idle_ms_max,
            sessions_max: limits.repair_responder_sessions_max.max(1),
            pacer: link_pacer(limits, now_ms),
        }
    }

    /// The source's link went down: its sessions are over.
    pub fn handle_disconnected(&mut self) {
        self.replicas.clear();
        self.pacer.clear();
    }

    /// What the pacer lets go at `now_ms`.
    fn release(&mut self, now_ms: u64) -> Vec<Message> {
        let mut out = Vec::new();
        while let Some((_, message)) = self.pacer.poll_release(now_ms) {
            out.push(message);
        }
        out
    }

    /// A repair request from the source. Returns the answers for its link.
    pub fn handle_message(
        &mut self,
        message: Message,
        shared: &mut RepairShared,
        now_ms: u64,
    ) -> Vec<Message> {
        let (session, partition) = match &message {
            Message::DigestRequest(request) => (request.session, request.partition),
            Message::RangeRequest(request) => (request.session, request.partition),
            other => {
                tracing::warn!(source_site = %self.site, kind = ?other.kind(), "unexpected repair message from a source");
                return Vec::new();
            }
        };
        if !shared.is_partition(partition) {
            tracing::warn!(source_site = %self.site, %partition, "repair request for a partition this site does not have");
            return Vec::new();
        }
        let key = (session, partition);
        match self.replicas.get_mut(&key) {
            Some((_, Answering::Loading { queued, .. })) => {
                queued.push(message);
                Vec::new()
            }
            Some((_, Answering::Ready { .. })) => {
                let answers = self.answer(key, message, shared, now_ms);
                pace(&mut self.pacer, key, answers);
                self.release(now_ms)
            }
            None => {
                self.make_room();
                let owner = LoadOwner::Responder {
                    source: self.site.clone(),
                    session,
                    partition,
                };
                let token = shared.load(partition, owner);
                self.replicas.insert(
                    key,
                    (
                        token,
                        Answering::Loading {
                            queued: vec![message],
                            since_ms: now_ms,
                        },
                    ),
                );
                Vec::new()
            }
        }
    }

    /// The snapshot for `(session, partition)` arrived: answer what waited for it.
    pub fn on_loaded(
        &mut self,
        session: u64,
        partition: PartitionId,
        token: u64,
        result: Result<DumpEntries, String>,
        shared: &mut RepairShared,
        now_ms: u64,
    ) -> Vec<Message> {
        let key = (session, partition);
        let Some((loaded_token, Answering::Loading { .. })) = self.replicas.get(&key) else {
            return Vec::new();
        };
        if *loaded_token != token {
            return Vec::new();
        }
        let Some((_, Answering::Loading { queued, .. })) = self.replicas.remove(&key) else {
            return Vec::new();
        };
        let entries = match result {
            Ok(entries) => entries,
            Err(error) => {
                // The initiator times out and retries later.
                tracing::warn!(source_site = %self.site, %partition, %error, "repair snapshot not loaded");
                return Vec::new();
            }
        };
        self.replicas.insert(
            key,
            (
                token,
                Answering::Ready {
                    replica: shared.snapshot(partition, entries),
                    last_used_ms: now_ms,
                },
            ),
        );
        for message in queued {
            let answers = self.answer(key, message, shared, now_ms);
            pace(&mut self.pacer, key, answers);
        }
        self.release(now_ms)
    }

    fn answer(
        &mut self,
        key: (u64, PartitionId),
        message: Message,
        shared: &mut RepairShared,
        now_ms: u64,
    ) -> Vec<Message> {
        let Some((
            _,
            Answering::Ready {
                replica,
                last_used_ms,
            },
        )) = self.replicas.get_mut(&key)
        else {
            return Vec::new();
        };
        *last_used_ms = now_ms;
        let last = matches!(&message, Message::RangeRequest(r) if r.last);
        let answers = match self
            .responder
            .handle_message(self.peer, message, replica, now_ms)
        {
            Ok(answers) => answers,
            Err(error) => {
                tracing::warn!(source_site = %self.site, partition = %key.1, %error, "repair request refused");
                Vec::new()
            }
        };
        shared.push(key.1, replica.take_pushes());
        let in_sync = answers
            .iter()
            .any(|a| matches!(a, Message::DigestReply(r) if r.in_sync));
        if last || in_sync {
            self.replicas.remove(&key);
        }
        answers
    }

    /// Forget the oldest session when at `repair_responder_sessions_max` (like the responder).
    fn make_room(&mut self) {
        if self.replicas.len() < self.sessions_max {
            return;
        }
        let oldest = self
            .replicas
            .iter()
            .min_by_key(|(k, (_, a))| (last_used(a), **k))
            .map(|(k, _)| *k);
        if let Some(oldest) = oldest {
            self.replicas.remove(&oldest);
        }
    }

    /// Forgets idle sessions; returns the answers the pacer lets go now.
    pub fn handle_timeout(&mut self, now_ms: u64) -> Vec<Message> {
        self.responder.handle_timeout(now_ms);
        let idle_ms_max = self.idle_ms_max;
        self.replicas
            .retain(|_, (_, a)| now_ms < last_used(a).saturating_add(idle_ms_max));
        self.release(now_ms)
    }

    pub fn poll_timeout(&self) -> Option<u64> {
        let replicas = self
            .replicas
            .values()
            .map(|(_, a)| last_used(a).saturating_add(self.idle_ms_max));
        replicas
            .chain(self.responder.poll_timeout())
            .chain(self.pacer.poll_timeout())
            .min()
    }
}

fn last_used(answering: &Answering) -> u64 {
    match answering {
        Answering::Loading { since_ms, .. } => *since_ms,
        Answering::Ready { last_used_ms, .. } => *last_used_ms,
    }
}
