//! The simulated world: hosts with their own clocks, the network between them, the event queue,
//! the run's RNG and its trace. Scenarios own their hosts' state machines and drive the loop:
//!
//! ```text
//! while let Some(event) = world.next_event() {
//!     match event { Event::Deliver { .. } => ..., Event::Timer { .. } => ... }
//! }
//! ```
//!
//! calling [`World::send`] and [`World::set_timer`] from their handlers. Time only moves inside
//! `next_event`, straight to the next due event, so idle stretches cost nothing.
use crate::event::EventQueue;
use crate::net::{HostId, LinkConfig, Network};
use crate::rng::SimRng;
use crate::time::{HostClock, SimTime};
use crate::trace::Trace;
use std::fmt::Debug;

/// What happens to a host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event<M> {
    /// A message arrives.
    Deliver { from: HostId, to: HostId, msg: M },
    /// A timer the host set fires.
    Timer { host: HostId, msg: M },
}

#[derive(Debug)]
struct Scheduled<M> {
    event: Event<M>,
    /// The target's incarnation when a timer was set: a timer does not survive a crash.
    incarnation: u32,
}

#[derive(Debug)]
struct Host {
    name: String,
    clock: HostClock,
    up: bool,
    incarnation: u32,
}

#[derive(Debug)]
pub struct World<M> {
    now: SimTime,
    rng: SimRng,
    queue: EventQueue<Scheduled<M>>,
    net: Network,
    hosts: Vec<Host>,
    trace: Trace,
}

impl<M: Clone + Debug> World<M> {
    pub fn new(rng: SimRng, default_link: LinkConfig, trace: Trace) -> Self {
        Self {
            now: SimTime::ZERO,
            rng,
            queue: EventQueue::new(),
            net: Network::new(default_link),
            hosts: Vec::new(),
            trace,
        }
    }

    pub fn add_host(&mut self, name: impl Into<String>, clock: HostClock) -> HostId {
        let id = HostId(u32::try_from(self.hosts.len()).unwrap_or(u32::MAX));
        self.hosts.push(Host {
            name: name.into(),
            clock,
            up: true,
            incarnation: 0,
        });
        id
    }

    pub fn now(&self) -> SimTime {
        self.now
    }

    /// `host`'s clock reading (unix ms): the `now_ms` its cores get.
    pub fn local_ms(&self, host: HostId) -> u64 {
        self.host(host).clock.unix_millis(self.now)
    }

    pub fn clock_mut(&mut self, host: HostId) -> &mut HostClock {
        &mut self.host_mut(host).clock
    }

    pub fn host_name(&self, host: HostId) -> &str {
        &self.host(host).name
    }

    pub fn rng(&mut self) -> &mut SimRng {
        &mut self.rng
    }

    pub fn net(&self) -> &Network {
        &self.net
    }

    pub fn net_mut(&mut self) -> &mut Network {
        &mut self.net
    }

    pub fn trace(&self) -> &Trace {
        &self.trace
    }

    /// Record something that is not an event (a scenario's decision, a checker's note).
    pub fn note(&mut self, what: &dyn Debug) {
        self.trace.record(self.now, what);
    }

    pub fn pending_events(&self) -> usize {
        self.queue.len()
    }

    /// Send `msg` over the network; it arrives zero, one or two times.
    pub fn send(&mut self, from: HostId, to: HostId, msg: M) {
        let arrivals = self.net.transmit(from, to, self.now, &mut self.rng);
        if arrivals.is_empty() {
            self.trace.record(self.now, &("dropped", from, to, &msg));
        }
        let incarnation = self.host(to).incarnation;
        for at in arrivals {
            let event = Event::Deliver {
                from,
                to,
                msg: msg.clone(),
            };
            self.queue.push(at, Scheduled { event, incarnation });
        }
    }

    /// Fire `msg` at `host` after `after_us` of global time (unless the host crashes first).
    pub fn set_timer(&mut self, host: HostId, after_us: u64, msg: M) {
        let incarnation = self.host(host).incarnation;
        let at = self.now.after_micros(after_us);
        self.queue.push(
            at,
            Scheduled {
                event: Event::Timer { host, msg },
                incarnation,
            },
        );
    }

    /// Stop `host`: its pending timers are dropped and messages reaching it are lost until
    /// [`World::restart`]. The scenario discards the host's volatile state.
    pub fn crash(&mut self, host: HostId) {
        let target = self.host_mut(host);
        target.up = false;
        target.incarnation += 1;
        self.trace.record(self.now, &("crash", host));
    }

    pub fn restart(&mut self, host: HostId) {
        self.host_mut(host).up = true;
        self.trace.record(self.now, &("restart", host));
    }

    pub fn is_up(&self, host: HostId) -> bool {
        self.host(host).up
    }

    /// Advance to the next event that reaches a running host, record it, and return it.
    pub fn next_event(&mut self) -> Option<Event<M>> {
        while let Some((at, scheduled)) = self.queue.pop() {
            self.now = at;
            let reaches = match &scheduled.event {
                Event::Deliver { from, to, .. } => self.host(*to).up && self.net.arrive(*from, *to),
                Event::Timer { host, .. } => {
                    let target = self.host(*host);
                    target.up && target.incarnation == scheduled.incarnation
                }
            };
            if reaches {
                self.trace.record(at, &scheduled.event);
                return Some(scheduled.event);
            }
            self.trace.record(at, &("lost", &scheduled.event));
        }
        None
    }

    fn host(&self, host: HostId) -> &Host {
        // HostIds are only made by add_host, so they always index a host.
        &self.hosts[host.0 as usize]
    }

    fn host_mut(&mut self, host: HostId) -> &mut Host {
        &mut self.hosts[host.0 as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world() -> World<&'static str> {
        World::new(
            SimRng::from_seed(1),
            LinkConfig::reliable(1_000),
            Trace::hash_only(),
        )
    }

    #[test]
    fn events_arrive_in_time_order_and_time_jumps_to_them() {
        let mut world = world();
        let a = world.add_host("a", HostClock::perfect());
        let b = world.add_host("b", HostClock::skewed(5_000_000, 0));
        world.set_timer(a, 10_000_000, "late timer");
        world.send(a, b, "hello");
        assert_eq!(
            world.next_event(),
            Some(Event::Deliver {
                from: a,
                to: b,
                msg: "hello"
            })
        );
        assert_eq!(world.now(), SimTime::from_millis(1));
        assert_eq!(world.local_ms(b), HostClock::RUN_START_UNIX_MS + 5_001);
        assert_eq!(
            world.next_event(),
            Some(Event::Timer {
                host: a,
                msg: "late timer"
            })
        );
        assert_eq!(world.now(), SimTime::from_millis(10_000));
        assert_eq!(world.next_event(), None);
        assert_eq!(world.trace().events(), 2);
    }

    #[test]
    fn crashes_drop_timers_and_messages_until_restart() {
        let mut world = world();
        let a = world.add_host("a", HostClock::perfect());
        let b = world.add_host("b", HostClock::perfect());
        world.set_timer(b, 5, "old timer");
        world.send(a, b, "lost in crash");
        world.crash(b);
        assert_eq!(world.next_event(), None);
        world.restart(b);
        world.set_timer(b, 5, "new timer");
        world.send(a, b, "after restart");
        assert_eq!(
            world.next_event(),
            Some(Event::Timer {
                host: b,
                msg: "new timer"
            })
        );
        assert_eq!(
            world.next_event(),
            Some(Event::Deliver {
                from: a,
                to: b,
                msg: "after restart"
            })
        );
    }

    #[test]
    fn partitions_drop_messages_in_flight() {
        let mut world = world();
        let a = world.add_host("a", HostClock::perfect());
        let b = world.add_host("b", HostClock::perfect());
        world.send(a, b, "in flight");
        world.net_mut().cut_both(a, b);
        world.send(a, b, "sent into the cut");
        assert_eq!(world.next_event(), None);
        assert_eq!(world.net().stats().cut, 2);
    }
}
