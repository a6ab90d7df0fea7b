//! Reading unacknowledged records back in append order, for replay on resume.
use super::format::{
    CorruptionKind, FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES, decode_frame_header, quarantine_name,
    segment_name,
};
use super::log::Backlog;
use super::storage::SegmentStorage;
use super::types::{
    BacklogRecord, BacklogResult, Corruption, ReadBatch, ReadCursor, ReadLimits, RepairReason,
    io_err,
};
use bytes::Bytes;
use std::collections::VecDeque;

/// Bytes read from a segment per storage call (one record larger than this is read whole).
const READ_CHUNK_BYTES: u64 = 256 * 1024;

impl<S: SegmentStorage> Backlog<S> {
    /// Unacknowledged records from `cursor` on, in append order, within `limits`. Start from
    /// [`ReadCursor::START`] to replay everything; continue from [`ReadBatch::next`]. Records
    /// acknowledged meanwhile are skipped, and a cursor into a deleted segment moves on to the
    /// next live one. A damaged segment found here is quarantined, the repair mark set, and
    /// reported in [`ReadBatch::corruptions`]; reading goes on with the next segment.
    pub fn read_from(
        &mut self,
        cursor: ReadCursor,
        limits: ReadLimits,
    ) -> BacklogResult<ReadBatch> {
        self.check_usable()?;
        let records_max = limits.records_max.max(1);
        let mut batch = ReadBatch {
            next: cursor,
            ..ReadBatch::default()
        };
        let mut payload_bytes = 0usize;
        loop {
            let Some((id, segment_bytes)) = self
                .index
                .first_from(batch.next.segment_id)
                .map(|(id, meta)| (id, meta.bytes))
            else {
                // Park where the next segment will begin, so later appends are found.
                batch.next = batch
                    .next
                    .max(ReadCursor::segment_start(self.next_segment_id));
                batch.at_end = true;
                return Ok(batch);
            };
            if id != batch.next.segment_id || batch.next.offset < SEGMENT_HEADER_BYTES {
                batch.next = ReadCursor::segment_start(id);
            }
            let name = segment_name(id);
            while batch.next.offset < segment_bytes {
                let full = batch.records.len() >= records_max
                    || (payload_bytes >= limits.bytes_max && !batch.records.is_empty());
                if full {
                    return Ok(batch);
                }
                let offset = batch.next.offset;
                let chunk = match self.read_chunk(&name, offset, segment_bytes)? {
                    Ok(chunk) => chunk,
                    Err(kind) => {
                        batch
                            .corruptions
                            .push(self.quarantine_live(id, offset, kind)?);
                        break;
                    }
                };
                let mut at = 0usize;
                while at < chunk.len() {
                    if batch.records.len() >= records_max
                        || (payload_bytes >= limits.bytes_max && !batch.records.is_empty())
                    {
                        break;
                    }
                    let rest = &chunk[at..];
                    let Some(Ok(header)) = decode_frame_header(rest) else {
                        break;
                    };
                    let frame_bytes = header.frame_bytes() as usize;
                    if rest.len() < frame_bytes {
                        break;
                    }
                    let payload = chunk.slice(at + FRAME_HEADER_BYTES as usize..at + frame_bytes);
                    if crc32fast::hash(&payload) != header.payload_crc {
                        break;
                    }
                    let position = batch.next.advanced(at as u64);
                    if self
                        .acked
                        .get(&header.partition)
                        .is_none_or(|&acked| header.seq > acked)
                    {
                        payload_bytes += payload.len();
                        batch.records.push(BacklogRecord {
                            partition: header.partition,
                            seq: header.seq,
                            payload,
                            position,
                        });
                    }
                    at += frame_bytes;
                }
                if at == 0 {
                    // `read_chunk` guarantees the first frame is whole: so it is damaged.
                    let kind = match decode_frame_header(&chunk) {
                        Some(Ok(_)) => CorruptionKind::PayloadChecksum,
                        _ => CorruptionKind::FrameHeaderChecksum,
                    };
                    batch
                        .corruptions
                        .push(self.quarantine_live(id, offset, kind)?);
                    break;
                }
                batch.next = batch.next.advanced(at as u64);
            }
            if self.index.get(id).is_none() || self.index.first_from(id + 1).is_some() {
                // Segment done (or quarantined): go on with the next one.
                batch.next = ReadCursor {
                    segment_id: id + 1,
                    offset: 0,
                };
            } else {
                // The newest segment: stay at its end so later appends to it are read.
                batch.at_end = true;
                return Ok(batch);
            }
        }
    }

    /// Bytes of segment `name` from `offset` holding at least one whole frame (or the
    /// corruption that prevents it).
    fn read_chunk(
        &mut self,
        name: &str,
        offset: u64,
        segment_bytes: u64,
    ) -> BacklogResult<Result<Bytes, CorruptionKind>> {
        let remaining = segment_bytes - offset;
        let mut want = remaining.min(READ_CHUNK_BYTES);
        loop {
            let data = self
                .storage
                .read(name, offset, want as usize)
                .map_err(|e| io_err(e, format!("read segment {name} at {offset}")))?;
            if (data.len() as u64) < want {
                // Shorter than what we wrote: something cut the file behind our back.
                return Ok(Err(CorruptionKind::PayloadChecksum));
            }
            let frame_bytes = match decode_frame_header(&data) {
                Some(Ok(header)) => header.frame_bytes(),
                Some(Err(())) | None => return Ok(Err(CorruptionKind::FrameHeaderChecksum)),
            };
            if frame_bytes > remaining {
                return Ok(Err(CorruptionKind::FrameHeaderChecksum));
            }
            if frame_bytes <= want {
                return Ok(Ok(Bytes::from(data)));
            }
            want = frame_bytes;
        }
    }

    /// Quarantine live segment `id` after finding damage at `offset` while reading.
    fn quarantine_live(
        &mut self,
        id: u64,
        offset: u64,
        kind: CorruptionKind,
    ) -> BacklogResult<Corruption> {
        let records_lost = self.index.remove_segment(id).map_or(0, |meta| meta.records);
        if self.active == Some(id) {
            self.active = None;
        }
        self.unsynced.remove(&id);
        self.set_repair(RepairReason::Corruption {
            segment_id: id,
            offset,
            kind: kind.clone(),
        });
        self.remember_dropped_floors();
        self.persist_cursors()?;
        let (name, quarantined_as) = (segment_name(id), quarantine_name(id));
        if let Err(e) = self.storage.rename(&name, &quarantined_as) {
            return self.poison(io_err(e, format!("quarantine damaged segment {name}")));
        }
        self.dir_unsynced = true;
        Ok(Corruption {
            segment_id: id,
            offset,
            kind,
            records_lost,
            quarantined_as,
        })
    }

    /// Iterate over every unacknowledged record in append order (replay on resume).
    pub fn replay(&mut self) -> Replay<'_, S> {
        Replay {
            backlog: self,
            cursor: ReadCursor::START,
            buffered: VecDeque::new(),
            done: false,
            corruptions: Vec::new(),
        }
    }
}

/// Iterator of [`Backlog::replay`]. Damaged segments met on the way are quarantined (repair
/// mark set) and listed in [`Replay::corruptions`].
#[derive(Debug)]
pub struct Replay<'a, S: SegmentStorage> {
    backlog: &'a mut Backlog<S>,
    cursor: ReadCursor,
    buffered: VecDeque<BacklogRecord>,
    done: bool,
    corruptions: Vec<Corruption>,
}

impl<S: SegmentStorage> Replay<'_, S> {
    pub fn corruptions(&self) -> &[Corruption] {
        &self.corruptions
    }

    /// Where a later [`Backlog::read_from`] continues after the records yielded so far.
    pub fn cursor(&self) -> ReadCursor {
        self.buffered
            .front()
            .map_or(self.cursor, |record| record.position)
    }
}

impl<S: SegmentStorage> Iterator for Replay<'_, S> {
    type Item = BacklogResult<BacklogRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(record) = self.buffered.pop_front() {
                return Some(Ok(record));
            }
            if self.done {
                return None;
            }
            match self.backlog.read_from(self.cursor, ReadLimits::default()) {
                Err(error) => {
                    self.done = true;
                    return Some(Err(error));
                }
                Ok(batch) => {
                    self.cursor = batch.next;
                    self.corruptions.extend(batch.corruptions);
                    self.done = batch.at_end;
                    self.buffered.extend(batch.records);
                }
            }
        }
    }
}
