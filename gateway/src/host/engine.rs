//! The engine: one task driving the site's [`SiteGateway`] core — events from the feed, the
//! links, the apply and repair tasks and operators go in; the core's outputs go out to the
//! links (`LinkOut`), the router (apply, load and push tasks), the feeds (rewind) and the
//! status hub. Every decision is the core's; this file only moves inputs and outputs.
use super::apply::spawn_apply;
use super::feed::FeedRewind;
use super::links::{ConnIds, LinkOut, spawn_dialer};
use super::repair::{spawn_load, spawn_push};
use super::storage::FsSiteStorage;
use crate::net::WanEndpoint;
use crate::site::{AdminCommand, DumpEntries, Side, SiteGateway};
use crate::wire::{Message, WanRecord};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::Arc;
use tern_conflict::Versioned;
use tern_node::admin::{WanAdminError, WanAdminRequest, WanHub, WanTargetSpec};
use tern_node::core::{CommandResult, PartitionId, WanChangesPage};
use tern_node::shell::Router;
use tern_node::transport::PeerAddr;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Inputs of the engine.
pub enum Event {
    /// Committed records of `partition` read after `asked_after`; the reply says where the
    /// feed reads next.
    Feed {
        partition: PartitionId,
        asked_after: u64,
        page: WanChangesPage,
        reply: oneshot::Sender<u64>,
    },
    LinkUp {
        side: Side,
        site: String,
        conn: u64,
        out: LinkOut,
    },
    LinkDown {
        side: Side,
        site: String,
        conn: u64,
    },
    Received {
        side: Side,
        site: String,
        conn: u64,
        message: Message,
    },
    /// An apply request finished: `results[i]` is the answer for `records[i]`.
    Applied {
        source: String,
        partition: PartitionId,
        records: Vec<WanRecord>,
        results: Vec<CommandResult>,
    },
    /// A repair snapshot load finished.
    RepairLoaded {
        token: u64,
        result: Result<DumpEntries, String>,
    },
    /// A repair push (WanApply of entries a session brought) finished.
    RepairPushed {
        partition: PartitionId,
        entries: Vec<(Bytes, Versioned)>,
        results: Vec<CommandResult>,
    },
    Admin(WanAdminRequest),
    Shutdown(oneshot::Sender<()>),
}

/// What the engine needs besides the core: the node and the network.
pub struct EngineIo {
    pub router: Router,
    pub hub: WanHub,
    pub endpoint: WanEndpoint,
    pub ids: ConnIds,
    pub events: mpsc::UnboundedSender<Event>,
    pub reconnect_ms: u64,
}

pub struct Engine {
    core: SiteGateway<FsSiteStorage>,
    io: EngineIo,
    /// The writer of each link's current connection.
    links: BTreeMap<(Side, String), (u64, LinkOut)>,
    dialers: BTreeMap<String, JoinHandle<()>>,
    /// Set by the host once the feeds exist: a new target makes them re-read from the start.
    pub feed_rewind: Option<Arc<FeedRewind>>,
}

impl Engine {
    pub fn new(core: SiteGateway<FsSiteStorage>, io: EngineIo) -> Self {
        Self {
            core,
            io,
            links: BTreeMap::new(),
            dialers: BTreeMap::new(),
            feed_rewind: None,
        }
    }

    pub fn ids(&self) -> &ConnIds {
        &self.io.ids
    }

    /// Adds a peer: the core opens its backlog and sink, the engine dials it and admits it.
    pub fn add_peer(&mut self, spec: &WanTargetSpec, now_ms: u64) -> Result<(), WanAdminError> {
        self.core
            .handle_admin(AdminCommand::AddTarget(spec.clone()), now_ms)?;
        let addr = PeerAddr::parse(&spec.addr)
            .map_err(|e| WanAdminError::Invalid(format!("addr {:?}: {e}", spec.addr)))?;
        let dialer = spawn_dialer(
            self.io.endpoint.clone(),
            spec.site.clone(),
            addr,
            self.io.reconnect_ms,
            self.io.ids.clone(),
            self.io.events.clone(),
        );
        self.dialers.insert(spec.site.clone(), dialer);
        self.allow_peers();
        self.drain();
        Ok(())
    }

    fn remove_peer(&mut self, site: &str, now_ms: u64) -> Result<(), WanAdminError> {
        self.core
            .handle_admin(AdminCommand::RemoveTarget(site.to_owned()), now_ms)?;
        if let Some(dialer) = self.dialers.remove(site) {
            dialer.abort();
        }
        self.links.retain(|(_, s), _| s != site);
        self.allow_peers();
        Ok(())
    }

    fn allow_peers(&self) {
        self.io
            .endpoint
            .set_allowed(self.core.peers().map(str::to_owned).collect());
    }

    /// Where every partition's feed starts.
    pub fn feed_start(&self, partition: PartitionId) -> u64 {
        self.core.feed_start(partition)
    }

    pub fn next_deadline_ms(&self) -> u64 {
        self.core.next_deadline_ms()
    }

    pub fn handle_timers(&mut self, now_ms: u64) {
        self.core.handle_timers(now_ms);
        self.drain();
    }

    /// Handles one event; returns false when the engine must stop.
    pub fn handle(&mut self, event: Event, now_ms: u64) -> bool {
        match event {
            Event::Feed {
                partition,
                asked_after,
                page,
                reply,
            } => {
                let next = self
                    .core
                    .handle_feed_page(partition, asked_after, &page, now_ms);
                let _ = reply.send(next);
            }
            Event::LinkUp {
                side,
                site,
                conn,
                out,
            } => {
                self.links.insert((side, site.clone()), (conn, out));
                self.core.handle_link_up(side, &site, conn, now_ms);
            }
            Event::LinkDown { side, site, conn } => {
                let key = (side, site);
                if self.links.get(&key).is_some_and(|(c, _)| *c == conn) {
                    self.links.remove(&key);
                }
                self.core.handle_link_down(side, &key.1, conn, now_ms);
            }
            Event::Received {
                side,
                site,
                conn,
                message,
            } => self.core.handle_message(side, &site, conn, message, now_ms),
            Event::Applied {
                source,
                partition,
                records,
                results,
            } => self
                .core
                .handle_applied(&source, partition, &records, &results, now_ms),
            Event::RepairLoaded { token, result } => {
                self.core.handle_repair_loaded(token, result, now_ms);
            }
            Event::RepairPushed {
                partition,
                entries,
                results,
            } => self
                .core
                .handle_repair_pushed(partition, &entries, &results, now_ms),
            Event::Admin(request) => self.on_admin(request, now_ms),
            Event::Shutdown(done) => {
                self.stop();
                let _ = done.send(());
                return false;
            }
        }
        self.drain();
        true
    }

    fn on_admin(&mut self, request: WanAdminRequest, now_ms: u64) {
        match request {
            WanAdminRequest::AddTarget { spec, reply } => {
                let _ = reply.send(self.add_peer(&spec, now_ms));
            }
            WanAdminRequest::RemoveTarget { site, reply } => {
                let _ = reply.send(self.remove_peer(&site, now_ms));
            }
            WanAdminRequest::Repair { site, reply } => {
                let _ = reply.send(self.core.handle_admin(AdminCommand::Repair(site), now_ms));
            }
        }
    }

    /// Carries out what the core asked for.
    fn drain(&mut self) {
        while let Some(close) = self.core.poll_close_link() {
            let key = (close.side, close.site);
            // Dropping the writer ends the link's tasks: the peer reconnects.
            if self.links.get(&key).is_some_and(|(c, _)| *c == close.conn) {
                self.links.remove(&key);
            }
        }
        while let Some(transmit) = self.core.poll_transmit() {
            let key = (transmit.link.side, transmit.link.site);
            if let Some((conn, out)) = self.links.get(&key)
                && *conn == transmit.link.conn
            {
                let _ = out.send(transmit.messages);
            }
        }
        while let Some(apply) = self.core.poll_apply() {
            let commands = apply
                .records
                .iter()
                .map(|r| self.core.wan_apply_command(&r.key, &r.entry))
                .collect();
            spawn_apply(
                self.io.router.clone(),
                apply.source,
                apply.partition,
                apply.records,
                commands,
                self.io.events.clone(),
            );
        }
        while let Some(load) = self.core.poll_repair_load() {
            spawn_load(self.io.router.clone(), load, self.io.events.clone());
        }
        while let Some(push) = self.core.poll_repair_push() {
            let commands = push
                .entries
                .iter()
                .map(|(key, entry)| self.core.wan_apply_command(key, entry))
                .collect();
            spawn_push(
                self.io.router.clone(),
                push,
                commands,
                self.io.events.clone(),
            );
        }
        if self.core.poll_feed_rewind()
            && let Some(rewind) = &self.feed_rewind
        {
            rewind.rewind_all();
        }
        if let Some(status) = self.core.poll_status() {
            self.publish(status);
        }
    }

    fn publish(&self, mut status: tern_node::admin::WanStatus) {
        status.refused_total = self.io.endpoint.refusals();
        self.io.hub.publish(status);
    }

    /// Stops dialing, saves cursors, syncs backlogs.
    pub fn stop(&mut self) {
        for dialer in self.dialers.values() {
            dialer.abort();
        }
        self.core.stop();
        self.publish(self.core.status());
        self.io.endpoint.close();
    }
}
