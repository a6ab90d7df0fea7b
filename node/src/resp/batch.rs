//! One read batch of a connection: the replies already known, and the partition commands to
//! send, grouped so that each touched partition gets exactly one actor message.
use super::reply;
use crate::core::{Command, PartitionId};
use std::ops::Range;

/// How the results of a request's partition commands become its reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aggregate {
    /// One command; its response encoded as is (GET, SET, INCR, TTL, ...).
    Single,
    /// One EXISTS; `+string` or `+none`.
    Type,
    /// Integers summed (DEL and EXISTS of many keys, DBSIZE).
    Sum,
    /// Values as an array, errors as nil (MGET).
    Values,
    /// `+OK` if every part succeeded, else the first error (MSET, FLUSHALL).
    AllOk,
    /// DBSIZE and the keys with a TTL of every partition (alternating) feeding the INFO text;
    /// the sections bitmask.
    Info(u8),
    /// One GET answering MEMORY USAGE of a key of this many bytes: what the value costs against
    /// `data_bytes_max`, or nil.
    MemoryUsage(usize),
}

/// SCAN's parsed arguments; executed after the rest of its batch, step by step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanRequest {
    pub partition: u16,
    pub position: u64,
    pub count: usize,
    pub pattern: Option<bytes::Bytes>,
    /// TYPE given and not "string": no key can match.
    pub matches_nothing: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Planned {
    /// Reply bytes in `Batch::immediate`.
    Immediate(Range<usize>),
    /// Reply built from the results of the commands whose partitions are `Batch::parts[parts]`.
    Keyed {
        aggregate: Aggregate,
        parts: Range<usize>,
    },
    Scan(ScanRequest),
}

#[derive(Debug)]
pub struct Batch {
    pub requests: Vec<Planned>,
    pub immediate: Vec<u8>,
    /// For each keyed request in order, the partition of each of its commands in order.
    pub parts: Vec<PartitionId>,
    /// The commands for each touched partition, in request order.
    pub queues: Vec<(PartitionId, Vec<Command>)>,
    /// Partition index → 1 + its position in `queues` (0: not touched in this batch).
    queue_of: Vec<u32>,
}

impl Batch {
    pub fn new(partition_count: u16) -> Self {
        Self {
            requests: Vec::new(),
            immediate: Vec::new(),
            parts: Vec::new(),
            queues: Vec::new(),
            queue_of: vec![0; usize::from(partition_count)],
        }
    }

    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }

    /// Queues a reply that needs no partition.
    pub fn reply(&mut self, encode: impl FnOnce(&mut Vec<u8>)) {
        let start = self.immediate.len();
        encode(&mut self.immediate);
        self.requests
            .push(Planned::Immediate(start..self.immediate.len()));
    }

    pub fn error(&mut self, text: &str) {
        self.reply(|out| reply::error(out, text));
    }

    /// Queues a request made of partition commands.
    pub fn keyed(
        &mut self,
        aggregate: Aggregate,
        commands: impl IntoIterator<Item = (PartitionId, Command)>,
    ) {
        let start = self.parts.len();
        for (partition, command) in commands {
            self.parts.push(partition);
            let slot = &mut self.queue_of[usize::from(partition.0)];
            if *slot == 0 {
                self.queues.push((partition, Vec::new()));
                // At most one queue per partition, and partitions fit in u16.
                *slot = self.queues.len() as u32;
            }
            self.queues[*slot as usize - 1].1.push(command);
        }
        self.requests.push(Planned::Keyed {
            aggregate,
            parts: start..self.parts.len(),
        });
    }

    pub fn scan(&mut self, request: ScanRequest) {
        self.requests.push(Planned::Scan(request));
    }

    /// Position in `queues` (as it was before being drained) of `partition`'s commands.
    pub fn queue_index(&self, partition: PartitionId) -> Option<usize> {
        match self.queue_of.get(usize::from(partition.0)) {
            Some(&slot) if slot > 0 => Some(slot as usize - 1),
            _ => None,
        }
    }

    /// Empties the batch for reuse, keeping allocations — except an immediate-reply buffer a
    /// huge reply grew (CLUSTER SLOTS is megabytes), which an idle connection should not pin.
    pub fn clear(&mut self) {
        const IMMEDIATE_KEPT_BYTES_MAX: usize = 64 * 1024;
        for &partition in &self.parts {
            self.queue_of[usize::from(partition.0)] = 0;
        }
        self.requests.clear();
        self.immediate.clear();
        if self.immediate.capacity() > IMMEDIATE_KEPT_BYTES_MAX {
            self.immediate = Vec::new();
        }
        self.parts.clear();
        self.queues.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small replies keep their buffer between batches; a huge one (CLUSTER SLOTS) does not.
    #[test]
    fn clear_keeps_small_buffers_and_drops_huge_ones() {
        for (reply_bytes, kept) in [(100usize, true), (4 * 1024 * 1024, false)] {
            let mut batch = Batch::new(4);
            batch.reply(|out| out.extend(std::iter::repeat_n(b'x', reply_bytes)));
            assert!(!batch.is_empty());
            let capacity = batch.immediate.capacity();
            batch.clear();
            assert!(batch.is_empty() && batch.immediate.is_empty());
            assert_eq!(
                batch.immediate.capacity() == capacity,
                kept,
                "{reply_bytes} bytes"
            );
        }
    }
}
