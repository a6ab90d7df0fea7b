//! Links as the core sees them: which connection of which peer is current, and the messages
//! that arrive on it. A link is identified by (side, site, connection id); events of a
//! connection the core already replaced are ignored.
use super::{SiteGateway, SiteStorage};
use crate::wire::Message;
use std::collections::VecDeque;

/// Which side of the pair a link serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Side {
    /// We dialed: our delegator ships to the peer's sink.
    ToTarget,
    /// The peer dialed: its delegator ships to our sink.
    FromSource,
}

/// One connection of one peer's link.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct LinkRef {
    pub side: Side,
    pub site: String,
    pub conn: u64,
}

/// Messages for one connection, to be written in order (one `Vec`, one write).
#[derive(Clone, Debug, PartialEq)]
pub struct Transmit {
    pub link: LinkRef,
    pub messages: Vec<Message>,
}

/// Queues `messages` for `site`'s current connection `link`, if it is up (a link that went
/// down fails its sessions; the protocol resends on the next one).
pub(super) fn queue(
    out: &mut VecDeque<Transmit>,
    side: Side,
    site: &str,
    link: Option<u64>,
    messages: Vec<Message>,
) {
    if let (Some(conn), false) = (link, messages.is_empty()) {
        out.push_back(Transmit {
            link: LinkRef {
                side,
                site: site.to_owned(),
                conn,
            },
            messages,
        });
    }
}

impl<P: SiteStorage> SiteGateway<P> {
    /// Connection `conn` of `site`'s link on `side` is up (it replaces any previous one).
    pub fn handle_link_up(&mut self, side: Side, site: &str, conn: u64, now_ms: u64) {
        match side {
            Side::ToTarget => {
                if let Some(target) = self.targets.get_mut(site) {
                    target.link = Some(conn);
                    target.delegator.handle_connected(now_ms);
                }
            }
            Side::FromSource => {
                let Some(source) = self.sources.get_mut(site) else {
                    tracing::warn!(site, "link from a site that is not a peer: ignored");
                    return;
                };
                if source.link.is_some() {
                    source.sink.handle_disconnected(now_ms);
                }
                source.link = Some(conn);
            }
        }
        self.settle(now_ms);
    }

    /// Connection `conn` went down (ignored unless it is the current one).
    pub fn handle_link_down(&mut self, side: Side, site: &str, conn: u64, now_ms: u64) {
        match side {
            Side::ToTarget => {
                if let Some(target) = self.targets.get_mut(site)
                    && target.link == Some(conn)
                {
                    target.link = None;
                    target.delegator.handle_disconnected(now_ms);
                    target.repair.handle_disconnected(now_ms);
                }
            }
            Side::FromSource => {
                if let Some(source) = self.sources.get_mut(site)
                    && source.link == Some(conn)
                {
                    source.link = None;
                    source.sink.handle_disconnected(now_ms);
                    source.repair.handle_disconnected();
                }
            }
        }
        self.settle(now_ms);
    }

    /// A message that arrived on connection `conn`.
    pub fn handle_message(
        &mut self,
        side: Side,
        site: &str,
        conn: u64,
        message: Message,
        now_ms: u64,
    ) {
        self.on_message(side, site, conn, message, now_ms);
        self.settle(now_ms);
    }

    pub(super) fn on_message(
        &mut self,
        side: Side,
        site: &str,
        conn: u64,
        message: Message,
        now_ms: u64,
    ) {
        match side {
            Side::ToTarget => self.on_target_message(site, conn, message, now_ms),
            Side::FromSource => self.on_source_message(site, conn, message, now_ms),
        }
    }

    fn on_target_message(&mut self, site: &str, conn: u64, message: Message, now_ms: u64) {
        let Some(target) = self.targets.get_mut(site) else {
            return;
        };
        if target.link != Some(conn) {
            return;
        }
        let result = match message {
            Message::HelloAck(ack) => target
                .delegator
                .handle_hello_ack(ack, now_ms)
                .map_err(|e| e.to_string()),
            Message::Ack(ack) => target
                .delegator
                .handle_ack(ack, now_ms)
                .map_err(|e| e.to_string()),
            message @ (Message::DigestReply(_) | Message::RangeEntries(_)) => {
                let out = target
                    .repair
                    .handle_message(message, &mut self.repair, now_ms);
                queue(&mut self.transmits, Side::ToTarget, site, target.link, out);
                Ok(())
            }
            other => Err(format!("unexpected {:?} from a target", other.kind())),
        };
        if let Err(error) = result {
            tracing::warn!(target_site = site, %error, "WAN target message refused");
        }
    }

    fn on_source_message(&mut self, site: &str, conn: u64, message: Message, now_ms: u64) {
        let released = self.hellos_released(now_ms);
        let Some(source) = self.sources.get_mut(site) else {
            return;
        };
        if source.link != Some(conn) {
            return;
        }
        let result = match message {
            Message::Hello(hello) if !released => {
                self.held_hellos.push((site.to_owned(), conn, hello));
                return;
            }
            Message::Hello(hello) => source
                .sink
                .handle_hello(hello, now_ms)
                .map_err(|e| e.to_string()),
            Message::Batch(batch) => source
                .sink
                .handle_batch(batch, now_ms)
                .map_err(|e| e.to_string()),
            message @ (Message::DigestRequest(_) | Message::RangeRequest(_)) => {
                let out = source
                    .repair
                    .handle_message(message, &mut self.repair, now_ms);
                queue(
                    &mut self.transmits,
                    Side::FromSource,
                    site,
                    source.link,
                    out,
                );
                Ok(())
            }
            other => Err(format!("unexpected {:?} from a source", other.kind())),
        };
        if let Err(error) = result {
            tracing::warn!(source_site = site, %error, "WAN source message refused");
        }
        while let Some(record) = source.sink.poll_apply() {
            source
                .pending
                .entry(record.partition)
                .or_default()
                .push_back(record);
        }
        let partitions: Vec<_> = source.pending.keys().copied().collect();
        for partition in partitions {
            self.dispatch(site, partition);
        }
    }
}
