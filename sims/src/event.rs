//! The event queue: pending events ordered by (time, sequence number). The sequence number is
//! the order of scheduling, so events due at the same instant run in a fixed order and a seed
//! replays exactly.
use crate::time::SimTime;
use std::collections::BTreeMap;

#[derive(Debug)]
pub struct EventQueue<E> {
    events: BTreeMap<(SimTime, u64), E>,
    next_seq: u64,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        Self {
            events: BTreeMap::new(),
            next_seq: 0,
        }
    }
}

impl<E> EventQueue<E> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Schedule `event` at `at`; returns its sequence number.
    pub fn push(&mut self, at: SimTime, event: E) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.events.insert((at, seq), event);
        seq
    }

    /// The earliest event (ties: the one scheduled first).
    pub fn pop(&mut self) -> Option<(SimTime, E)> {
        self.events.pop_first().map(|((at, _), event)| (at, event))
    }

    pub fn peek_time(&self) -> Option<SimTime> {
        self.events.first_key_value().map(|(&(at, _), _)| at)
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Drop every pending event for which `keep` is false (e.g. a crashed host's timers).
    pub fn retain(&mut self, mut keep: impl FnMut(&E) -> bool) {
        self.events.retain(|_, event| keep(event));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_by_time_then_scheduling_order() {
        let mut queue = EventQueue::new();
        let t = SimTime::from_micros;
        for (at, name) in [
            (5, "c"),
            (1, "a"),
            (5, "d"),
            (3, "b"),
            (5, "e"),
            (0, "first"),
        ] {
            queue.push(t(at), name);
        }
        assert_eq!(queue.peek_time(), Some(t(0)));
        let order: Vec<_> = std::iter::from_fn(|| queue.pop()).map(|(_, n)| n).collect();
        assert_eq!(order, ["first", "a", "b", "c", "d", "e"]);
        assert!(queue.is_empty());
    }

    #[test]
    fn retain_drops_matching_events() {
        let mut queue = EventQueue::new();
        for i in 0..6u32 {
            queue.push(SimTime::from_micros(u64::from(i)), i);
        }
        queue.retain(|&i| i % 2 == 0);
        assert_eq!(queue.len(), 3);
        let left: Vec<_> = std::iter::from_fn(|| queue.pop()).map(|(_, i)| i).collect();
        assert_eq!(left, [0, 2, 4]);
    }
}
