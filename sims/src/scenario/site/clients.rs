//! The clients: each on its own host, one request at a time to a random node (a node that is
//! down refuses the connection, so the client picks another). Every operation on a plain key
//! goes into the per-key history with invoke and complete times; an operation whose outcome
//! the client never learned (`-TRYAGAIN`, or its node crashed with the connection open) is
//! recorded with an unknown outcome: it may or may not have taken effect.
use super::msg::{ClientReply, Msg};
use super::{Fault, Phase, Sim};
use crate::check::Violation;
use crate::check::linearizability::{HistoryOp, KeyOp};
use crate::check::site::SiteViolation;
use crate::net::HostId;
use crate::rng::SimRng;
use crate::time::SimTime;
use crate::world::World;
use bytes::Bytes;
use std::collections::VecDeque;
use tern_node::core::{Command, CommandResult, Expiry, SetCondition, TtlUnit};

#[derive(Debug)]
pub(super) struct Client {
    index: u32,
    pending: Option<Pending>,
    next_req: u64,
    next_value: u64,
    /// After the stop: keys still to read (the reader), or nothing (everyone else).
    final_reads: Option<VecDeque<Bytes>>,
    stopped: bool,
}

#[derive(Debug)]
struct Pending {
    req: u64,
    command: Command,
    node: usize,
    invoked: SimTime,
}

impl Client {
    pub(super) fn new(index: u32) -> Self {
        Self {
            index,
            pending: None,
            next_req: 1,
            next_value: 0,
            final_reads: None,
            stopped: false,
        }
    }
}

/// Mostly quick successions, sometimes a pause.
fn think_time_us(rng: &mut SimRng) -> u64 {
    match rng.weighted(&[(80, 0u8), (17, 1), (3, 2)]) {
        0 => rng.between(0, 20_000),
        1 => rng.between(20_000, 150_000),
        _ => rng.between(150_000, 600_000),
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Get,
    Set,
    IncrBy,
    Del,
    Exists,
    SetTtl,
    Expire,
    Ttl,
    GetTtl,
}

const KINDS: &[(u32, Kind)] = &[
    (26, Kind::Get),
    (24, Kind::Set),
    (20, Kind::IncrBy),
    (8, Kind::Del),
    (5, Kind::Exists),
    (7, Kind::SetTtl),
    (4, Kind::Expire),
    (3, Kind::Ttl),
    (3, Kind::GetTtl),
];

fn random_command(
    rng: &mut SimRng,
    plain: &[Bytes],
    ttl: &[Bytes],
    client: u32,
    next_value: &mut u64,
) -> Command {
    let mut value = |rng: &mut SimRng| {
        if rng.chance_ppm(500_000) {
            // A value nobody else writes, so a read pins down which write it saw.
            *next_value += 1;
            Bytes::from(format!("v{client}-{next_value}"))
        } else {
            Bytes::from(rng.between(0, 9).to_string())
        }
    };
    match rng.weighted(KINDS) {
        Kind::Get => Command::Get {
            key: rng.pick(plain).clone(),
        },
        Kind::Exists => Command::Exists {
            key: rng.pick(plain).clone(),
        },
        Kind::Del => Command::Del {
            key: rng.pick(plain).clone(),
        },
        Kind::IncrBy => Command::IncrBy {
            key: rng.pick(plain).clone(),
            delta: rng.between_i64(-3, 5),
        },
        Kind::Set => Command::Set {
            key: rng.pick(plain).clone(),
            value: value(rng),
            condition: rng.weighted(&[
                (70, SetCondition::Always),
                (15, SetCondition::IfAbsent),
                (15, SetCondition::IfPresent),
            ]),
            expiry: None,
            get: rng.chance_ppm(200_000),
        },
        Kind::SetTtl => Command::Set {
            key: rng.pick(ttl).clone(),
            value: value(rng),
            condition: SetCondition::Always,
            expiry: Some(Expiry::InMs(rng.between_i64(200, 3_000))),
            get: false,
        },
        Kind::Expire => Command::Expire {
            key: rng.pick(ttl).clone(),
            expiry: Expiry::InMs(rng.between_i64(-100, 3_000)),
        },
        Kind::Ttl => Command::Ttl {
            key: rng.pick(ttl).clone(),
            unit: TtlUnit::Milliseconds,
        },
        Kind::GetTtl => Command::Get {
            key: rng.pick(ttl).clone(),
        },
    }
}

impl Sim {
    pub(super) fn client_think(
        &mut self,
        world: &mut World<Msg>,
        host: HostId,
    ) -> Result<(), Violation> {
        let Some(client) = self.clients.get_mut(&host) else {
            return Ok(());
        };
        if client.pending.is_some() {
            return Ok(());
        }
        let command = if client.stopped {
            match client.final_reads.as_mut().map(|keys| keys.pop_front()) {
                Some(Some(key)) => Command::Get { key },
                Some(None) => {
                    // The reader is done: let the site settle, then check it.
                    client.final_reads = None;
                    self.phase = Phase::Quiet;
                    let quiet = self.config.quiet_ms * 1000;
                    world.set_timer(self.chaos_host, quiet, Msg::Chaos(Fault::Finish));
                    return Ok(());
                }
                None => return Ok(()),
            }
        } else {
            let index = client.index;
            random_command(
                world.rng(),
                &self.config.plain_keys,
                &self.config.ttl_keys,
                index,
                &mut client.next_value,
            )
        };
        self.send_command(world, host, command);
        Ok(())
    }

    /// Send to a random node; a node that is down refuses at once and another is tried.
    fn send_command(&mut self, world: &mut World<Msg>, host: HostId, command: Command) {
        let up: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].node.is_some() && self.slots[i].serves_clients)
            .collect();
        if up.is_empty() {
            world.set_timer(host, 50_000, Msg::ClientThink);
            return;
        }
        let node = *world.rng().pick(&up);
        let Some(client) = self.clients.get_mut(&host) else {
            return;
        };
        let req = client.next_req;
        client.next_req += 1;
        client.pending = Some(Pending {
            req,
            command: command.clone(),
            node,
            invoked: world.now(),
        });
        world.send(
            host,
            self.slots[node].host,
            Msg::ClientRequest { req, command },
        );
        world.set_timer(
            host,
            self.config.client_timeout_ms * 1000,
            Msg::ClientTimeout { req },
        );
    }

    pub(super) fn client_reply(
        &mut self,
        world: &mut World<Msg>,
        from: HostId,
        host: HostId,
        req: u64,
        reply: ClientReply,
    ) -> Result<(), Violation> {
        let Some(client) = self.clients.get_mut(&host) else {
            return Ok(());
        };
        let Some(pending) = client.pending.take_if(|p| p.req == req) else {
            world.note(&("stray reply", host, from, req));
            return Ok(());
        };
        let index = client.index;
        let outcome = match reply {
            ClientReply::Done(result) => Some(result),
            ClientReply::TryAgain => None,
        };
        self.record(world, index, pending, outcome)?;
        let think = think_time_us(world.rng());
        world.set_timer(host, think, Msg::ClientThink);
        Ok(())
    }

    pub(super) fn client_timeout(
        &mut self,
        world: &mut World<Msg>,
        host: HostId,
        req: u64,
    ) -> Result<(), Violation> {
        let Some(client) = self.clients.get(&host) else {
            return Ok(());
        };
        let Some(pending) = client.pending.as_ref().filter(|p| p.req == req) else {
            return Ok(());
        };
        Err(SiteViolation::Unanswered {
            op: format!("{:?}", pending.command),
            node: self.slots[pending.node].id.to_string(),
            waited_ms: world.now().micros_since(pending.invoked) / 1000,
        }
        .into())
    }

    /// `node` crashed: its clients' connections drop, their outcomes are unknown.
    pub(super) fn connection_lost(&mut self, world: &mut World<Msg>, node: usize) {
        let hosts: Vec<HostId> = self
            .clients
            .iter()
            .filter(|(_, c)| c.pending.as_ref().is_some_and(|p| p.node == node))
            .map(|(&h, _)| h)
            .collect();
        for host in hosts {
            let Some(client) = self.clients.get_mut(&host) else {
                continue;
            };
            let Some(pending) = client.pending.take() else {
                continue;
            };
            let index = client.index;
            // A crash happens in the chaos phase only: no bound applies, recording cannot fail.
            let _ = self.record(world, index, pending, None);
            let think = think_time_us(world.rng());
            world.set_timer(host, think, Msg::ClientThink);
        }
    }

    fn record(
        &mut self,
        world: &mut World<Msg>,
        client: u32,
        pending: Pending,
        outcome: Option<CommandResult>,
    ) -> Result<(), Violation> {
        let now = world.now();
        match &outcome {
            Some(result) => {
                self.stats.ops_ok += 1;
                self.error_replies += u64::from(result.is_err());
            }
            None => self.stats.ops_unknown += 1,
        }
        if let Some(healed) = self.healed_at {
            let bound_from = healed.after_micros(self.config.resume_bound_ms * 1000);
            if pending.invoked >= bound_from {
                let latency_ms = now.micros_since(pending.invoked) / 1000;
                self.stats.max_latency_after_bound_ms =
                    self.stats.max_latency_after_bound_ms.max(latency_ms);
                if outcome.is_none() || latency_ms > self.config.op_bound_ms {
                    return Err(SiteViolation::SlowAfterHeal {
                        op: format!("{:?}", pending.command),
                        after_heal_ms: pending.invoked.micros_since(healed) / 1000,
                        outcome: match &outcome {
                            Some(r) => format!("was answered {r:?} after {latency_ms} ms"),
                            None => format!("failed (-TRYAGAIN) after {latency_ms} ms"),
                        },
                        bound_ms: self.config.op_bound_ms,
                    }
                    .into());
                }
            }
        }
        if let Some((key, op)) = KeyOp::from_command(&pending.command)
            && let Some(history) = self.histories.get_mut(&key)
        {
            history.push(HistoryOp {
                client,
                op,
                invoked: pending.invoked,
                completed: if outcome.is_some() {
                    now
                } else {
                    SimTime::NEVER
                },
                result: outcome,
            });
        }
        Ok(())
    }

    /// Clients stop issuing random operations; the first one reads every plain key.
    pub(super) fn stop_clients(&mut self, world: &mut World<Msg>) -> Result<(), Violation> {
        self.phase = Phase::FinalReads;
        let keys: VecDeque<Bytes> = self.config.plain_keys.iter().cloned().collect();
        let mut first = true;
        let hosts: Vec<HostId> = self.clients.keys().copied().collect();
        for host in hosts {
            let Some(client) = self.clients.get_mut(&host) else {
                continue;
            };
            client.stopped = true;
            if first {
                first = false;
                client.final_reads = Some(keys.clone());
                if client.pending.is_none() {
                    world.set_timer(host, 0, Msg::ClientThink);
                }
            }
        }
        Ok(())
    }

    /// Whether any client still waits for an answer.
    pub(super) fn clients_busy(&self) -> bool {
        self.clients.values().any(|c| c.pending.is_some())
    }
}
