//! The log cleaner: compaction of `cleanup.policy=compact` logs, with Kafka's rules for
//! transactions (KIP-98) and delete horizons (KIP-534).
//!
//! A log is split at its *first dirty offset* (where the last cleaning stopped, persisted in
//! `cleaner-checkpoint`) and its *first uncleanable offset*: the lowest of the active
//! segment's base, the last stable offset (nothing undecided is cleaned) and the first
//! segment younger than `min.compaction.lag.ms`, rounded down to a segment boundary. A
//! cleaning ([`Cleaner::clean`]) maps each key of the dirty range to its last offset
//! ([`offset_map`]), then rewrites every segment below the mapped end, from the log start,
//! keeping the last record per key at its original offset, and swaps the rewritten copies
//! in crash-safely ([`swap`]). What it keeps and drops (see `clean.rs`):
//!
//! - records of aborted transactions go; a marker goes once its transaction has no batch
//!   left and its delete horizon passed ([`txn`]);
//! - a tombstone (null value) stays until `delete.retention.ms` after the cleaning that
//!   first saw it: that cleaning stores the horizon in the batch (attribute bit 6);
//! - the last batch of each producer the partition still tracks stays, emptied if its
//!   records went, so sequence and epoch checks keep working after cleaning and restarts.
//!
//! The cleaner reads segments through their open files and writes new files; the log is
//! locked only to take a [`CleanView`] and to install the result, so produce and fetch
//! go on meanwhile. Memory is bounded by the offset map's limit, I/O by a byte rate.

mod clean;
pub mod offset_map;
pub mod swap;
mod txn;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use clean::Cleaner;

use crate::producer_state::AbortedTxn;
use crate::{LogConfig, LogError};

/// File in a log directory holding the cleaner's progress.
const CHECKPOINT_FILE: &str = "cleaner-checkpoint";

/// Where the last cleaning of a log stopped, persisted beside its segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Checkpoint {
    /// Offsets below this were cleaned (-1: never).
    pub first_dirty_offset: i64,
    /// Earliest delete horizon a kept tombstone or marker carries: cleaning again after it
    /// removes something even without new dirty records.
    pub next_horizon_ms: Option<i64>,
}

impl Checkpoint {
    pub fn load(dir: &Path) -> Checkpoint {
        let text = std::fs::read_to_string(dir.join(CHECKPOINT_FILE)).unwrap_or_default();
        let mut fields = text.split_whitespace().map(str::parse::<i64>);
        match (fields.next(), fields.next()) {
            (Some(Ok(dirty)), Some(Ok(horizon))) => Checkpoint {
                first_dirty_offset: dirty,
                next_horizon_ms: (horizon >= 0).then_some(horizon),
            },
            _ => Checkpoint {
                first_dirty_offset: -1,
                next_horizon_ms: None,
            },
        }
    }

    pub fn save(&self, dir: &Path) -> Result<(), LogError> {
        let text = format!(
            "{} {}\n",
            self.first_dirty_offset,
            self.next_horizon_ms.unwrap_or(-1)
        );
        crate::write_atomically(&dir.join(CHECKPOINT_FILE), text.as_bytes())
    }
}

/// One segment as the cleaner sees it: read through its open file.
#[derive(Debug, Clone)]
pub struct SegmentView {
    pub base: i64,
    /// Base of the next segment (the LEO for the active one).
    pub next_base: i64,
    pub file: Arc<File>,
    pub size: u64,
    pub max_timestamp: i64,
    pub first_batch_timestamp: i64,
}

/// A producer the partition still tracks: the cleaner keeps its last batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastRecord {
    /// Last offset of its last data batch; `None` if its last entry is a marker.
    pub last_data_offset: Option<i64>,
    pub epoch: i16,
}

/// What the cleaner needs of a log, taken under the log's lock.
#[derive(Debug)]
pub struct CleanView {
    pub dir: PathBuf,
    pub config: LogConfig,
    /// Every segment, oldest first; the last one is active.
    pub segments: Vec<SegmentView>,
    pub log_start_offset: i64,
    /// The last stable offset: nothing at or above it is cleaned.
    pub stable_offset: i64,
    pub checkpoint: Checkpoint,
    pub producers: HashMap<i64, LastRecord>,
    pub aborted: Vec<AbortedTxn>,
    pub(crate) _guard: CleaningGuard,
}

/// Marks a log as being cleaned (retention and DeleteRecords then leave its segment
/// files alone) until dropped.
#[derive(Debug)]
pub(crate) struct CleaningGuard(pub(crate) Arc<AtomicBool>);

impl Drop for CleaningGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// How dirty a log is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Assessment {
    pub first_dirty_offset: i64,
    /// Base of the first segment that may not be cleaned.
    pub first_uncleanable_offset: i64,
    /// Bytes of cleanable segments from the one holding the first dirty offset.
    pub dirty_bytes: u64,
    /// Bytes of all cleanable segments.
    pub cleanable_bytes: u64,
    /// `dirty_bytes / cleanable_bytes` (0 when nothing is cleanable).
    pub dirty_ratio: f64,
    /// How long past `max.compaction.lag.ms` the oldest dirty record is (0: not late).
    pub compaction_delay_ms: i64,
    /// A kept tombstone or marker has reached its delete horizon.
    pub horizon_due: bool,
}

impl Assessment {
    /// Whether the log should be cleaned now.
    pub fn due(&self, config: &LogConfig) -> bool {
        let has_cleanable = self.cleanable_bytes > 0;
        (self.dirty_bytes > 0
            && (self.dirty_ratio > config.min_cleanable_dirty_ratio
                || self.compaction_delay_ms > 0))
            || (has_cleanable && self.horizon_due)
    }
}

/// Measures a log for cleaning at `now_ms` (Kafka's `LogCleanerManager.cleanableOffsets`).
pub fn assess(view: &CleanView, now_ms: i64) -> Assessment {
    let config = &view.config;
    let end = view.segments.last().map_or(0, |s| s.next_base);
    let active_base = view.segments.last().map_or(0, |s| s.base);
    let checkpoint = view.checkpoint.first_dirty_offset;
    let first_dirty = if checkpoint < view.log_start_offset || checkpoint > end {
        view.log_start_offset
    } else {
        checkpoint
    };
    let lag = config.min_compaction_lag_ms.max(0);
    let young = view
        .segments
        .iter()
        .filter(|s| s.next_base > first_dirty && s.base < active_base)
        .find(|s| lag > 0 && s.max_timestamp > now_ms.saturating_sub(lag))
        .map(|s| s.base);
    let limit = [Some(view.stable_offset), Some(active_base), young]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(active_base);
    // Whole segments only: those that end at or below the limit.
    let cleanable: Vec<&SegmentView> = view
        .segments
        .iter()
        .take_while(|s| s.next_base <= limit && s.base < active_base)
        .collect();
    let first_uncleanable = cleanable
        .last()
        .map_or(view.log_start_offset, |s| s.next_base);
    let cleanable_bytes: u64 = cleanable.iter().map(|s| s.size).sum();
    let dirty: Vec<&&SegmentView> = cleanable
        .iter()
        .filter(|s| s.next_base > first_dirty)
        .collect();
    let dirty_bytes: u64 = dirty.iter().map(|s| s.size).sum();
    let max_lag = config.max_compaction_lag_ms.max(0);
    let earliest = dirty
        .iter()
        .map(|s| s.first_batch_timestamp)
        .filter(|&t| t > 0)
        .min();
    let clean_until = now_ms.saturating_sub(max_lag);
    let compaction_delay_ms = earliest.map_or(0, |t| clean_until.saturating_sub(t).max(0));
    Assessment {
        first_dirty_offset: first_dirty,
        first_uncleanable_offset: first_uncleanable,
        dirty_bytes,
        cleanable_bytes,
        dirty_ratio: if cleanable_bytes == 0 {
            0.0
        } else {
            dirty_bytes as f64 / cleanable_bytes as f64
        },
        compaction_delay_ms,
        horizon_due: view.checkpoint.next_horizon_ms.is_some_and(|h| h <= now_ms),
    }
}

/// What a cleaning did; [`crate::PartitionLog::install_cleaned`] applies it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// Committed swaps: the cleaned segment at `base` replaces the segments in `[base, end)`.
    pub swaps: Vec<(i64, i64)>,
    /// Offsets of abort markers that were removed (their aborted transaction is gone).
    pub removed_aborts: Vec<i64>,
    /// The progress to persist once installed.
    pub checkpoint: Checkpoint,
    pub stats: Stats,
}

/// Counters of one cleaning.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub records_read: u64,
    pub records_kept: u64,
    pub segments_before: usize,
    pub segments_after: usize,
    pub map_utilization: f64,
    pub elapsed: Duration,
}

/// Limits the cleaner's I/O to a byte rate.
#[derive(Debug)]
pub struct Throttle {
    bytes_per_second: f64,
    window_start: Instant,
    window_bytes: f64,
}

impl Throttle {
    /// No limit when `bytes_per_second` is not a positive finite number.
    pub fn new(bytes_per_second: f64) -> Self {
        Self {
            bytes_per_second,
            window_start: Instant::now(),
            window_bytes: 0.0,
        }
    }

    /// Accounts for `bytes` of I/O, sleeping as long as needed to keep to the rate.
    pub fn take(&mut self, bytes: u64) {
        if !(self.bytes_per_second.is_finite() && self.bytes_per_second > 0.0) {
            return;
        }
        self.window_bytes += bytes as f64;
        let due = Duration::from_secs_f64(self.window_bytes / self.bytes_per_second);
        let elapsed = self.window_start.elapsed();
        if due > elapsed {
            std::thread::sleep(due - elapsed);
        }
        if self.window_start.elapsed() > Duration::from_secs(1) {
            self.window_start = Instant::now();
            self.window_bytes = 0.0;
        }
    }
}

#[cfg(test)]
mod tests;
