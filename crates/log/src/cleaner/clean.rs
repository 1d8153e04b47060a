//! One cleaning of one log: map the dirty range, rewrite segments group by group, commit
//! each group's swap.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use exacta_wire::batch::{BatchHeader, BATCH_HEADER_LEN};
use exacta_wire::rewrite::{delete_horizon, StoredBatch};

use super::offset_map::OffsetMap;
use super::txn::CleanedTxns;
use super::{assess, swap, Checkpoint, CleanView, LastRecord, Outcome, SegmentView, Throttle};
use crate::producer_state::AbortedTxn;
use crate::segment::LogSegment;
use crate::LogError;

/// Bytes read from a segment at a time.
const READ_CHUNK: usize = 1 << 20;

/// The cleaner's reusable state: the offset map and the I/O throttle.
#[derive(Debug)]
pub struct Cleaner {
    map: OffsetMap,
    throttle: Throttle,
    stop: Arc<AtomicBool>,
}

/// Why a cleaning stopped early.
#[derive(Debug, thiserror::Error)]
pub enum CleanError {
    #[error("the cleaner is stopping")]
    Stopped,
    #[error(transparent)]
    Log(#[from] LogError),
}

impl Cleaner {
    /// A cleaner whose map holds about `map_bytes` of entries and whose reads and writes
    /// stay under `io_bytes_per_second`; setting `stop` ends a cleaning between batches.
    pub fn new(map_bytes: usize, io_bytes_per_second: f64, stop: Arc<AtomicBool>) -> Self {
        Self {
            map: OffsetMap::new(map_bytes),
            throttle: Throttle::new(io_bytes_per_second),
            stop,
        }
    }

    /// Cleans the log if it has cleanable segments (whether it is due is the caller's
    /// choice: see [`super::Assessment::due`]). Returns what to install; swaps already
    /// committed are in the outcome even if a later group failed (the error is logged and
    /// the checkpoint does not advance, so the next cleaning redoes the range).
    pub fn clean(&mut self, view: &CleanView, now_ms: i64) -> Result<Option<Outcome>, LogError> {
        let started = Instant::now();
        let assessment = assess(view, now_ms);
        let limit = assessment.first_uncleanable_offset;
        let closed = &view.segments[..view.segments.len().saturating_sub(1)];
        let cleanable: Vec<&SegmentView> =
            closed.iter().take_while(|s| s.next_base <= limit).collect();
        if cleanable.is_empty() {
            return Ok(None);
        }
        let first_dirty = assessment.first_dirty_offset;
        let end = match self.build_map(&cleanable, view, first_dirty) {
            Ok(end) => end,
            Err(CleanError::Stopped) => return Ok(None),
            Err(CleanError::Log(e)) => return Err(e),
        };
        let mut outcome = Outcome {
            checkpoint: view.checkpoint,
            ..Outcome::default()
        };
        let mut walk = Walk {
            txns: CleanedTxns::new(&view.aborted),
            producers: &view.producers,
            round_end: limit,
            now_ms,
            delete_retention_ms: view.config.delete_retention_ms,
            next_horizon: None,
        };
        let groups = group_segments(&cleanable, end, view.config.segment_bytes);
        outcome.stats.segments_before = groups.iter().map(Vec::len).sum();
        for group in &groups {
            match self.clean_group(view, group, &mut walk, &mut outcome) {
                Ok(()) => {}
                Err(CleanError::Stopped) => return Ok(Some(outcome)),
                Err(CleanError::Log(e)) => {
                    tracing::error!(dir = %view.dir.display(), error = %e, "cleaning failed; the log keeps its segments");
                    return Ok(Some(outcome));
                }
            }
        }
        outcome.stats.segments_after = groups.len();
        outcome.stats.map_utilization = self.map.utilization();
        outcome.stats.elapsed = started.elapsed();
        outcome.checkpoint = Checkpoint {
            first_dirty_offset: end.max(first_dirty),
            next_horizon_ms: walk.next_horizon,
        };
        Ok(Some(outcome))
    }

    /// Maps the keys of `[first_dirty, limit)`; returns the end of what was mapped (less
    /// than the limit when the map filled up).
    fn build_map(
        &mut self,
        cleanable: &[&SegmentView],
        view: &CleanView,
        first_dirty: i64,
    ) -> Result<i64, CleanError> {
        self.map.clear();
        self.map.advance_to(first_dirty - 1);
        let aborted: Vec<AbortedTxn> = view
            .aborted
            .iter()
            .filter(|t| t.last_offset >= first_dirty)
            .copied()
            .collect();
        let mut txns = CleanedTxns::new(&aborted);
        for segment in cleanable.iter().filter(|s| s.next_base > first_dirty) {
            let mut full = false;
            self.each_batch(segment, |map, bytes, header| {
                if header.last_offset() < first_dirty {
                    return Ok(true);
                }
                if header.is_control() {
                    let commit = marker_type(bytes)?;
                    txns.on_marker(header.producer_id, commit, header.base_offset);
                } else if !txns.on_batch(
                    header.producer_id,
                    header.is_transactional(),
                    header.last_offset(),
                ) {
                    let batch = StoredBatch::parse(bytes).map_err(|e| corrupt(view, header, e))?;
                    if map.would_overflow(batch.entries.len()) {
                        full = true;
                        return Ok(false);
                    }
                    for (i, entry) in batch.entries.iter().enumerate() {
                        if let (Some(key), true) = (batch.key(i), entry.offset >= first_dirty) {
                            map.put(key, entry.offset);
                        }
                    }
                }
                map.advance_to(header.last_offset());
                Ok(true)
            })?;
            if full {
                if self.map.latest() < first_dirty {
                    tracing::warn!(dir = %view.dir.display(), "the cleaner's offset map cannot hold one batch; raise cleaner_dedupe_buffer_bytes");
                }
                return Ok(self.map.latest() + 1);
            }
            self.map.advance_to(segment.next_base - 1);
        }
        Ok(self.map.latest() + 1)
    }

    /// Calls `f` with each batch of a segment, in order, until it returns false.
    fn each_batch(
        &mut self,
        segment: &SegmentView,
        mut f: impl FnMut(&mut OffsetMap, &[u8], &BatchHeader) -> Result<bool, CleanError>,
    ) -> Result<(), CleanError> {
        let mut position = 0u64;
        while position < segment.size {
            if self.stop.load(Ordering::Relaxed) {
                return Err(CleanError::Stopped);
            }
            let want = ((segment.size - position) as usize).min(READ_CHUNK);
            let mut buf = read_at(&segment.file, position, want)?;
            self.throttle.take(buf.len() as u64);
            let mut at = 0usize;
            loop {
                let rest = &buf[at..];
                if rest.len() < BATCH_HEADER_LEN {
                    break;
                }
                let header = BatchHeader::parse_header(rest).map_err(|e| {
                    CleanError::Log(LogError::CorruptMetadata {
                        path: Default::default(),
                        reason: format!("batch header at {}: {e}", position + at as u64),
                    })
                })?;
                if rest.len() < header.size() {
                    if at == 0 && buf.len() < header.size() && want < header.size() {
                        // One batch larger than the chunk: read it whole.
                        buf = read_at(&segment.file, position, header.size())?;
                        if buf.len() == header.size() {
                            continue;
                        }
                    }
                    break;
                }
                if !f(&mut self.map, &rest[..header.size()], &header)? {
                    return Ok(());
                }
                at += header.size();
            }
            if at == 0 {
                break;
            }
            position += at as u64;
        }
        Ok(())
    }

    /// Rewrites one group of segments into one cleaned segment and commits the swap.
    fn clean_group(
        &mut self,
        view: &CleanView,
        group: &[&SegmentView],
        walk: &mut Walk<'_>,
        outcome: &mut Outcome,
    ) -> Result<(), CleanError> {
        let base = group[0].base;
        let group_end = group[group.len() - 1].next_base;
        let path = swap::cleaned_path(&view.dir, base, "log");
        for ext in swap::EXTENSIONS {
            let stale = swap::cleaned_path(&view.dir, base, ext);
            if stale.exists() {
                std::fs::remove_file(&stale).map_err(LogError::io("delete", &stale))?;
            }
        }
        let mut cleaned = LogSegment::create_at(path, base, view.config.index_interval_bytes)?;
        let latest = self.map.latest();
        for segment in group {
            let mut written = Vec::new();
            let mut failed = None;
            self.each_batch(segment, |map, bytes, header| {
                outcome.stats.bytes_read += bytes.len() as u64;
                outcome.stats.records_read += header.records_count.max(0) as u64;
                match walk.filter(map, latest, bytes, header) {
                    Ok(out) => {
                        if out.removed_abort {
                            outcome.removed_aborts.push(header.base_offset);
                        }
                        written.extend(out.bytes);
                    }
                    Err(e) => {
                        failed = Some(corrupt(view, header, e));
                        return Ok(false);
                    }
                }
                Ok(true)
            })?;
            if let Some(e) = failed {
                return Err(e);
            }
            for kept in written {
                let header = BatchHeader::parse(&kept).map_err(|e| {
                    CleanError::Log(LogError::CorruptMetadata {
                        path: view.dir.clone(),
                        reason: format!("rebuilt batch: {e}"),
                    })
                })?;
                cleaned.append(&kept, &header)?;
                self.throttle.take(kept.len() as u64);
                outcome.stats.bytes_written += kept.len() as u64;
                outcome.stats.records_kept += header.records_count.max(0) as u64;
            }
        }
        cleaned.seal_to(
            &swap::cleaned_path(&view.dir, base, "index"),
            &swap::cleaned_path(&view.dir, base, "timeindex"),
        )?;
        drop(cleaned);
        let replaced: Vec<i64> = group.iter().map(|s| s.base).collect();
        swap::commit(&view.dir, base, group_end, &replaced)?;
        outcome.swaps.push((base, group_end));
        Ok(())
    }
}

/// What becomes of one batch.
struct Kept {
    /// The batch to write into the cleaned segment; `None` drops it.
    bytes: Option<Vec<u8>>,
    /// It is an abort marker whose record goes (its aborted transaction is gone).
    removed_abort: bool,
}

/// The state carried along the walk from the log start.
struct Walk<'a> {
    txns: CleanedTxns,
    producers: &'a HashMap<i64, LastRecord>,
    /// The first uncleanable offset: the batch that ends there is always kept.
    round_end: i64,
    now_ms: i64,
    delete_retention_ms: i64,
    next_horizon: Option<i64>,
}

impl Walk<'_> {
    /// Kafka's batch and record retention rules.
    fn filter(
        &mut self,
        map: &OffsetMap,
        latest: i64,
        bytes: &[u8],
        h: &BatchHeader,
    ) -> Result<Kept, exacta_wire::batch::BatchError> {
        let batch = StoredBatch::parse(bytes)?;
        let horizon = delete_horizon(h);
        let horizon_passed = horizon.is_some_and(|t| t <= self.now_ms);
        let commit = h.is_control().then(|| control_type(&batch)).flatten();
        let (discard_records, marker_removable) = if h.is_control() {
            let removable = self.txns.on_marker(h.producer_id, commit, h.base_offset);
            (removable && horizon_passed, removable)
        } else {
            let aborted = self
                .txns
                .on_batch(h.producer_id, h.is_transactional(), h.last_offset());
            (aborted, false)
        };
        let last_of_producer = h.producer_id >= 0
            && self
                .producers
                .get(&h.producer_id)
                .is_some_and(|last| match last.last_data_offset {
                    Some(offset) => h.last_offset() == offset,
                    None => h.is_control() && h.producer_epoch == last.epoch,
                });
        let retain_empty = last_of_producer || h.last_offset() + 1 == self.round_end;
        let retain_deletes = horizon.is_none_or(|t| self.now_ms < t);
        let keep: Vec<bool> = batch
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                if discard_records {
                    false
                } else if h.is_control() || e.offset > latest {
                    true
                } else {
                    let Some(key) = batch.key(i) else {
                        return false;
                    };
                    let latest_for_key = map.get(key).is_none_or(|o| e.offset >= o);
                    latest_for_key && (e.has_value || retain_deletes)
                }
            })
            .collect();
        let kept = keep.iter().filter(|k| **k).count();
        let has_tombstone = batch
            .entries
            .iter()
            .zip(&keep)
            .any(|(e, k)| *k && !e.has_value);
        let new_horizon = (horizon.is_none() && (has_tombstone || marker_removable))
            .then(|| self.now_ms.saturating_add(self.delete_retention_ms));
        let removed_abort = kept == 0 && commit == Some(false);
        if kept == 0 && !retain_empty {
            return Ok(Kept {
                bytes: None,
                removed_abort,
            });
        }
        if kept > 0 && (has_tombstone || h.is_control()) {
            let due = new_horizon.or(horizon);
            if let Some(due) = due {
                self.next_horizon = Some(self.next_horizon.map_or(due, |n: i64| n.min(due)));
            }
        }
        let bytes = if kept == batch.entries.len() && new_horizon.is_none() {
            bytes.to_vec()
        } else {
            batch.rebuild(&keep, new_horizon)
        };
        Ok(Kept {
            bytes: Some(bytes),
            removed_abort,
        })
    }
}

/// Groups consecutive segments below `end` whose combined size fits in one segment (and
/// whose offsets fit a segment's 32-bit relative offsets).
fn group_segments<'a>(
    segments: &[&'a SegmentView],
    end: i64,
    segment_bytes: u64,
) -> Vec<Vec<&'a SegmentView>> {
    let max_span = i64::from(u32::MAX) - (1 << 20);
    let mut groups: Vec<Vec<&SegmentView>> = Vec::new();
    let mut size = 0u64;
    for segment in segments.iter().copied().filter(|s| s.base < end) {
        let fits = groups.last().is_some_and(|g| {
            size + segment.size <= segment_bytes && segment.next_base - g[0].base <= max_span
        });
        if fits {
            size += segment.size;
            if let Some(g) = groups.last_mut() {
                g.push(segment);
            }
        } else {
            size = segment.size;
            groups.push(vec![segment]);
        }
    }
    groups
}

fn control_type(batch: &StoredBatch) -> Option<bool> {
    let key = batch.key(0)?;
    (key.len() >= 4).then(|| i16::from_be_bytes([key[2], key[3]]) == 1)
}

fn marker_type(bytes: &[u8]) -> Result<Option<bool>, CleanError> {
    let batch = StoredBatch::parse(bytes).map_err(|e| {
        CleanError::Log(LogError::CorruptMetadata {
            path: Default::default(),
            reason: format!("control batch: {e}"),
        })
    })?;
    Ok(control_type(&batch))
}

fn corrupt(view: &CleanView, h: &BatchHeader, e: exacta_wire::batch::BatchError) -> CleanError {
    CleanError::Log(LogError::CorruptMetadata {
        path: view.dir.clone(),
        reason: format!("batch at offset {}: {e}", h.base_offset),
    })
}

fn read_at(file: &File, position: u64, len: usize) -> Result<Vec<u8>, LogError> {
    let mut buf = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        let n = file
            .read_at(&mut buf[filled..], position + filled as u64)
            .map_err(LogError::io("read segment", ""))?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    buf.truncate(filled);
    Ok(buf)
}
