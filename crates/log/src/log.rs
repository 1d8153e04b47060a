//! The log of one partition: an ordered map of segments, the last of which is active.
//!
//! Offsets are assigned here, on append, so they are consecutive and never reused. The
//! log end offset (LEO) is the next offset to assign; the flushed offset is the LEO at the
//! last completed fsync: every batch below it survives a power loss.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use exacta_wire::batch::{assign_offset, BatchHeader, Batches};

use crate::cleaner::{self, Checkpoint, CleanView, CleaningGuard, LastRecord, SegmentView};
use crate::leader_epochs::LeaderEpochs;
use crate::producer_state::{ProducerStateManager, Verdict};
use crate::segment::{LogSegment, Offsets};
use crate::{LogConfig, LogError};

/// Producer-state snapshots kept per partition (the newest ones).
const SNAPSHOTS_RETAINED: usize = 2;

/// File in a log directory holding the log start offset DeleteRecords set.
const LOG_START_FILE: &str = "log-start-offset";

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    pub log_start_offset: i64,
    /// The batch was a retry of one already in the log: nothing was appended and the
    /// offsets are the original batch's.
    pub duplicate: bool,
}

/// What a read found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadResult {
    /// Whole batches, possibly empty.
    pub records: Bytes,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
}

/// What opening a log found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoveryInfo {
    pub segments: usize,
    pub segments_rescanned: usize,
    pub bytes_truncated: u64,
    /// Offset of the producer-state snapshot recovery started from (-1: none).
    pub snapshot_offset: i64,
    /// Batches replayed into the producer state after the snapshot.
    pub batches_replayed: usize,
    /// Segment swaps of an interrupted cleaning completed, and unfinished cleanings undone.
    pub swaps: cleaner::swap::Recovered,
}

/// A partition's log.
#[derive(Debug)]
pub struct PartitionLog {
    dir: PathBuf,
    config: LogConfig,
    segments: BTreeMap<i64, LogSegment>,
    next_offset: i64,
    flushed_offset: i64,
    producers: ProducerStateManager,
    /// Log start offset set by DeleteRecords (the first segment's base may be lower).
    deleted_before: i64,
    /// Where cleaning stopped.
    checkpoint: Checkpoint,
    /// Set while a [`CleanView`] of this log exists.
    cleaning: Arc<AtomicBool>,
    /// Where each leader epoch's writes start.
    epochs: LeaderEpochs,
    /// The epoch stamped on the batches this log assigns offsets to (its leader's).
    leader_epoch: i32,
}

impl PartitionLog {
    /// Opens (or creates) the log in `dir`.
    ///
    /// After an unclean shutdown (`clean == false`) the active segment is rescanned: each
    /// batch's CRC is checked, a torn or corrupt tail is truncated and the indexes are
    /// rebuilt. Older segments are rescanned only if their index files are missing, which
    /// means they were never sealed.
    pub fn open(
        dir: &Path,
        config: LogConfig,
        clean: bool,
    ) -> Result<(Self, RecoveryInfo), LogError> {
        std::fs::create_dir_all(dir).map_err(LogError::io("create log directory", dir))?;
        let swaps = cleaner::swap::recover(dir)?;
        let mut bases: Vec<i64> = std::fs::read_dir(dir)
            .map_err(LogError::io("list log directory", dir))?
            .filter_map(|entry| {
                let name = entry.ok()?.file_name().into_string().ok()?;
                name.strip_suffix(".log")?.parse::<i64>().ok()
            })
            .collect();
        bases.sort_unstable();
        let mut info = RecoveryInfo {
            swaps,
            ..RecoveryInfo::default()
        };
        let mut segments = BTreeMap::new();
        let last = bases.last().copied();
        for (i, &base) in bases.iter().enumerate() {
            let is_active = Some(base) == last;
            let has_index = dir.join(crate::segment::file_name(base, "index")).exists();
            let rescan = !has_index || (is_active && !clean);
            // Only closed segments are ever cleaned, so only they may have offset gaps.
            let offsets = match bases.get(i + 1) {
                Some(&next) => Offsets::Below(next),
                None => Offsets::Contiguous,
            };
            let (segment, truncated) =
                LogSegment::open(dir, base, config.index_interval_bytes, rescan, offsets)?;
            if rescan {
                info.segments_rescanned += 1;
            }
            if truncated > 0 {
                tracing::warn!(
                    segment = %segment.path().display(),
                    truncated_bytes = truncated,
                    "recovery truncated an invalid tail"
                );
            }
            info.bytes_truncated += truncated;
            segments.insert(base, segment);
        }
        if segments.is_empty() {
            segments.insert(0, LogSegment::create(dir, 0, config.index_interval_bytes)?);
            crate::sync_dir(dir)?;
        }
        info.segments = segments.len();
        let mut log = Self {
            dir: dir.to_path_buf(),
            config,
            segments,
            next_offset: 0,
            flushed_offset: 0,
            producers: ProducerStateManager::default(),
            deleted_before: read_log_start(dir)?,
            checkpoint: Checkpoint::load(dir),
            cleaning: Arc::new(AtomicBool::new(false)),
            epochs: LeaderEpochs::default(),
            leader_epoch: 0,
        };
        log.next_offset = log.active().next_offset();
        log.epochs = LeaderEpochs::load(dir, log.next_offset)?;
        log.leader_epoch = log.epochs.latest().unwrap_or(0);
        if log.deleted_before > log.next_offset {
            tracing::warn!(dir = %dir.display(), log_start = log.deleted_before, log_end = log.next_offset, "log start offset past the log end; using the log end");
            log.deleted_before = log.next_offset;
        }
        // Everything found on disk at open is flushed: a rescan validated and fsynced it,
        // a clean shutdown or a roll fsynced it.
        log.flushed_offset = log.next_offset;
        log.recover_producer_state(&mut info)?;
        Ok((log, info))
    }

    /// Loads the newest usable producer-state snapshot at or below the LEO, then replays
    /// the producer batches after it. Snapshots past the LEO (the log was truncated) are
    /// deleted.
    fn recover_producer_state(&mut self, info: &mut RecoveryInfo) -> Result<(), LogError> {
        info.snapshot_offset = -1;
        let mut start = self.log_start_offset();
        for (offset, path) in self.snapshot_files()?.into_iter().rev() {
            if offset > self.next_offset {
                tracing::warn!(snapshot = %path.display(), "deleting producer snapshot past the log end");
                std::fs::remove_file(&path).map_err(LogError::io("delete snapshot", &path))?;
                continue;
            }
            let bytes = std::fs::read(&path).map_err(LogError::io("read snapshot", &path))?;
            match ProducerStateManager::from_snapshot(&bytes) {
                Ok(state) => {
                    self.producers = state;
                    info.snapshot_offset = offset;
                    start = start.max(offset);
                    break;
                }
                Err(e) => {
                    tracing::warn!(snapshot = %path.display(), error = %e, "ignoring unreadable producer snapshot")
                }
            }
        }
        let mut offset = start;
        while offset < self.next_offset {
            let read = self.read(offset, 8 << 20, self.next_offset)?;
            let mut advanced = false;
            for (at, h) in Batches::new(&read.records) {
                replay(&mut self.producers, &h, &read.records[at..at + h.size()]);
                info.batches_replayed += 1;
                offset = h.last_offset() + 1;
                advanced = true;
            }
            if !advanced {
                break;
            }
        }
        Ok(())
    }

    /// Snapshot files, oldest first.
    fn snapshot_files(&self) -> Result<Vec<(i64, PathBuf)>, LogError> {
        let mut found: Vec<(i64, PathBuf)> = std::fs::read_dir(&self.dir)
            .map_err(LogError::io("list log directory", &self.dir))?
            .filter_map(|entry| {
                let path = entry.ok()?.path();
                let offset = path
                    .file_name()?
                    .to_str()?
                    .strip_suffix(".snapshot")?
                    .parse::<i64>()
                    .ok()?;
                Some((offset, path))
            })
            .collect();
        found.sort();
        Ok(found)
    }

    /// Writes the producer state as of the LEO and prunes old snapshots.
    fn write_snapshot(&self) -> Result<(), LogError> {
        let path = self
            .dir
            .join(crate::segment::file_name(self.next_offset, "snapshot"));
        crate::write_atomically(&path, &self.producers.to_snapshot())?;
        let files = self.snapshot_files()?;
        for (_, old) in files
            .iter()
            .take(files.len().saturating_sub(SNAPSHOTS_RETAINED))
        {
            std::fs::remove_file(old).map_err(LogError::io("delete snapshot", old))?;
        }
        Ok(())
    }

    fn active(&self) -> &LogSegment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has an active segment")
    }

    fn active_mut(&mut self) -> &mut LogSegment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has an active segment")
    }

    /// Appends validated batches (concatenated in `batches`), assigning consecutive offsets
    /// from the log end offset. Rolls the active segment first when it is full or old.
    ///
    /// To ensure correctness: the caller validated every batch (CRC, header), so a crash
    /// after this call leaves only whole valid batches or a torn tail that recovery cuts.
    pub fn append(&mut self, batches: &mut [u8]) -> Result<AppendInfo, LogError> {
        let headers: Vec<BatchHeader> = Batches::new(batches).map(|(_, h)| h).collect();
        if let Verdict::Duplicate(original) = self.producers.check(&headers)? {
            return Ok(AppendInfo {
                base_offset: original.first_offset,
                last_offset: original.last_offset,
                log_start_offset: self.log_start_offset(),
                duplicate: true,
            });
        }
        self.write_batches(batches, ProducerStateManager::apply)
    }

    /// Assigns offsets to validated batches and writes them, rolling as needed; `record`
    /// updates the producer state for each batch once it is in the segment.
    fn write_batches(
        &mut self,
        batches: &mut [u8],
        record: impl Fn(&mut ProducerStateManager, &BatchHeader),
    ) -> Result<AppendInfo, LogError> {
        let base_offset = self.next_offset;
        let mut position = 0;
        while position < batches.len() {
            let header = BatchHeader::parse(&batches[position..]).map_err(|e| {
                LogError::CorruptMetadata {
                    path: self.dir.clone(),
                    reason: format!("append of an unvalidated batch: {e}"),
                }
            })?;
            let size = header.size();
            let batch = &mut batches[position..position + size];
            assign_offset(batch, self.next_offset, self.leader_epoch);
            let header = BatchHeader {
                base_offset: self.next_offset,
                partition_leader_epoch: self.leader_epoch,
                ..header
            };
            self.maybe_roll(size as u64, header.max_timestamp)?;
            self.epochs.assign(self.leader_epoch, header.base_offset)?;
            self.active_mut().append(batch, &header)?;
            self.next_offset = header.last_offset() + 1;
            record(&mut self.producers, &header);
            position += size;
        }
        Ok(AppendInfo {
            base_offset,
            last_offset: self.next_offset - 1,
            log_start_offset: self.log_start_offset(),
            duplicate: false,
        })
    }

    /// Appends batches a coordinator writes for a producer (transactional offset commits):
    /// no sequence checks, the producer's epoch must be current.
    pub fn append_from_coordinator(&mut self, batches: &mut [u8]) -> Result<AppendInfo, LogError> {
        for (_, h) in Batches::new(batches) {
            self.producers
                .check_marker(h.producer_id, h.producer_epoch, -1)?;
        }
        self.write_batches(batches, ProducerStateManager::apply_coordinator)
    }

    /// Appends a transaction marker for `producer_id` (the coordinator's WriteTxnMarkers)
    /// and ends its open transaction here. Returns the marker's offset.
    pub fn append_marker(
        &mut self,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
        now_ms: i64,
    ) -> Result<i64, LogError> {
        self.producers
            .check_marker(producer_id, producer_epoch, coordinator_epoch)?;
        let mut batch = exacta_wire::batch::build_control_batch(
            producer_id,
            producer_epoch,
            commit,
            coordinator_epoch,
            now_ms,
        );
        let info = self.write_batches(&mut batch, |producers, h| {
            producers.apply_marker(
                producer_id,
                producer_epoch,
                commit,
                coordinator_epoch,
                h.base_offset,
                h.max_timestamp,
            )
        })?;
        let offset = info.base_offset;
        Ok(offset)
    }

    /// Appends batches fetched from the partition's leader as they are: their offsets and
    /// leader epochs are the leader's, and must continue this log exactly. The producer
    /// state is rebuilt from them as recovery rebuilds it, so that idempotent retries and
    /// open transactions are known here if this replica becomes the leader.
    pub fn append_replica(&mut self, batches: &[u8]) -> Result<AppendInfo, LogError> {
        let base_offset = self.next_offset;
        for (at, header) in Batches::new(batches) {
            let batch = &batches[at..at + header.size()];
            if header.base_offset != self.next_offset {
                return Err(LogError::NotContiguous {
                    expected: self.next_offset,
                    got: header.base_offset,
                });
            }
            if let Err(e) = BatchHeader::parse_and_verify(batch) {
                return Err(LogError::InvalidReplica {
                    offset: header.base_offset,
                    reason: e.to_string(),
                });
            }
            if header.last_offset_delta < 0 {
                return Err(LogError::InvalidReplica {
                    offset: header.base_offset,
                    reason: format!("last offset delta {}", header.last_offset_delta),
                });
            }
            self.maybe_roll(header.size() as u64, header.max_timestamp)?;
            self.epochs
                .assign(header.partition_leader_epoch, header.base_offset)?;
            self.active_mut().append(batch, &header)?;
            self.next_offset = header.last_offset() + 1;
            replay(&mut self.producers, &header, batch);
        }
        Ok(AppendInfo {
            base_offset,
            last_offset: self.next_offset - 1,
            log_start_offset: self.log_start_offset(),
            duplicate: false,
        })
    }

    /// Cuts the log at OFFSET (a batch boundary at or below the LEO): a follower whose
    /// log diverged from its leader's drops what the leader does not have. The cut is
    /// fsynced, the producer state is rebuilt from the newest snapshot below it, and the
    /// epochs that started at or after it are forgotten.
    pub fn truncate_to(&mut self, offset: i64) -> Result<(), LogError> {
        if offset >= self.next_offset {
            return Ok(());
        }
        let offset = offset.max(self.log_start_offset());
        let above: Vec<i64> = self.segments.range(offset + 1..).map(|(b, _)| *b).collect();
        for base in above {
            if self.segments.len() == 1 {
                break;
            }
            if let Some(segment) = self.segments.remove(&base) {
                segment.delete()?;
            }
        }
        let base = self.active().base_offset();
        let interval = self.config.index_interval_bytes;
        let cut = self.active().position_of(offset)?;
        let segment = self.segments.remove(&base).expect("the active segment");
        segment.remove_index_files()?;
        let file = segment.file();
        drop(segment);
        file.set_len(cut)
            .map_err(LogError::io("truncate segment", &self.dir))?;
        crate::sync_file(&file, true);
        drop(file);
        let (segment, _) =
            LogSegment::open(&self.dir, base, interval, true, Offsets::Below(offset))?;
        self.segments.insert(base, segment);
        crate::sync_dir(&self.dir)?;
        self.next_offset = self.active().next_offset().max(base);
        self.flushed_offset = self.flushed_offset.min(self.next_offset);
        self.epochs.truncate_from(self.next_offset)?;
        self.producers = ProducerStateManager::default();
        self.recover_producer_state(&mut RecoveryInfo::default())?;
        tracing::warn!(dir = %self.dir.display(), offset = self.next_offset, "truncated the log to its leader's");
        Ok(())
    }

    /// The leader epoch stamped on batches appended from now on.
    pub fn set_leader_epoch(&mut self, epoch: i32) {
        self.leader_epoch = epoch;
    }

    /// OffsetForLeaderEpoch for this log (see [`LeaderEpochs::end_offset_for`]).
    pub fn epoch_end_offset(&self, requested: i32) -> (i32, i64) {
        self.epochs
            .end_offset_for(requested, self.next_offset, self.leader_epoch)
    }

    /// The newest leader epoch that wrote to this log.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.epochs.latest()
    }

    /// The last stable offset: below it every transaction is decided. It never passes
    /// `high_watermark`.
    pub fn last_stable_offset(&self, high_watermark: i64) -> i64 {
        self.producers
            .first_unstable_offset()
            .map_or(high_watermark, |o| o.min(high_watermark))
    }

    /// Rolls before a batch of `incoming_bytes` whose max timestamp is `incoming_timestamp`.
    /// As Kafka's `LogSegment.shouldRoll`, age is measured between the segment's first batch
    /// and the incoming one, so replaying old data does not roll at every batch.
    fn maybe_roll(&mut self, incoming_bytes: u64, incoming_timestamp: i64) -> Result<(), LogError> {
        if self.roll_due(incoming_bytes, incoming_timestamp) {
            self.roll()?;
        }
        Ok(())
    }

    fn roll_due(&self, incoming_bytes: u64, incoming_timestamp: i64) -> bool {
        let active = self.active();
        if active.is_empty() {
            return false;
        }
        let full = active.size() + incoming_bytes > self.config.segment_bytes;
        let old = active.first_batch_timestamp() >= 0
            && incoming_timestamp.saturating_sub(active.first_batch_timestamp())
                > self.config.segment_ms;
        // Relative offsets and positions in the indexes are u32.
        let index_full = self.next_offset - active.base_offset() > i64::from(u32::MAX) - (1 << 20)
            || active.size() + incoming_bytes > u64::from(u32::MAX);
        full || old || index_full
    }

    /// Whether appending `batches` would first roll the active segment (fsyncs: a slow
    /// call the caller may want to make off an async worker).
    pub fn append_rolls(&self, batches: &[u8]) -> bool {
        Batches::new(batches).any(|(_, h)| self.roll_due(h.size() as u64, h.max_timestamp))
    }

    /// Seals the active segment (fsync, index files) and starts a new one at the LEO.
    pub fn roll(&mut self) -> Result<(), LogError> {
        self.active().seal()?;
        self.write_snapshot()?;
        let segment = LogSegment::create(
            &self.dir,
            self.next_offset,
            self.config.index_interval_bytes,
        )?;
        crate::sync_dir(&self.dir)?;
        tracing::debug!(dir = %self.dir.display(), base_offset = self.next_offset, "rolled segment");
        self.segments.insert(self.next_offset, segment);
        Ok(())
    }

    /// Reads whole batches from `offset`, at most `max_bytes` (but at least one batch),
    /// never at or past `upper` (the high watermark the reader may see).
    pub fn read(&self, offset: i64, max_bytes: usize, upper: i64) -> Result<ReadResult, LogError> {
        let start = self.log_start_offset();
        if offset < start || offset > self.next_offset {
            return Err(LogError::OffsetOutOfRange {
                offset,
                start,
                end: self.next_offset,
            });
        }
        let mut records = Bytes::new();
        // The segment holding `offset`, or the next one if it is past that segment's end
        // (an empty segment after a roll).
        for (_, segment) in self
            .segments
            .range(..=offset)
            .next_back()
            .into_iter()
            .chain(self.segments.range(offset + 1..))
        {
            if let Some(bytes) =
                segment.read(offset.max(segment.base_offset()), max_bytes, upper)?
            {
                records = bytes;
                break;
            }
            if segment.base_offset() >= upper {
                break;
            }
        }
        Ok(ReadResult {
            records,
            log_start_offset: start,
            log_end_offset: self.next_offset,
        })
    }

    /// The first offset whose record timestamp is at least `timestamp`, with that
    /// record's timestamp; `None` if every record is older.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>, LogError> {
        for segment in self.segments.values() {
            let Some((position, header)) = segment.find_timestamp_position(timestamp)? else {
                continue;
            };
            let batch = segment.read_batch(position, &header)?;
            for (offset, record_timestamp) in record_timestamps(&batch)? {
                if record_timestamp >= timestamp {
                    return Ok(Some((offset, record_timestamp)));
                }
            }
            // The batch's max timestamp said otherwise; fall back to its last offset.
            return Ok(Some((header.last_offset(), header.max_timestamp)));
        }
        Ok(None)
    }

    /// The offset and timestamp of the record with the largest timestamp (ListOffsets -3).
    pub fn max_timestamp_offset(&self) -> Result<Option<(i64, i64)>, LogError> {
        let Some(segment) = self
            .segments
            .values()
            .filter(|s| !s.is_empty())
            .max_by_key(|s| s.max_timestamp())
        else {
            return Ok(None);
        };
        let max = segment.max_timestamp();
        let Some((position, header)) = segment.find_timestamp_position(max)? else {
            return Ok(None);
        };
        let batch = segment.read_batch(position, &header)?;
        let found = record_timestamps(&batch)?
            .into_iter()
            .find(|&(_, ts)| ts == max)
            .unwrap_or((header.last_offset(), max));
        Ok(Some(found))
    }

    /// The active file and the LEO it holds, for an fsync without holding the log.
    ///
    /// To ensure correctness: segments before the active one were fsynced when rolled, so
    /// after `fsync(file)` every offset below the returned LEO is durable; report it with
    /// [`PartitionLog::mark_flushed`].
    pub fn flush_target(&self) -> (Arc<File>, i64) {
        (self.active().file(), self.next_offset)
    }

    /// Records that everything below `offset` is durable.
    pub fn mark_flushed(&mut self, offset: i64) {
        self.flushed_offset = self.flushed_offset.max(offset.min(self.next_offset));
    }

    /// Fsyncs the active segment now (a failed fsync does not return: see
    /// [`crate::sync_file`]).
    pub fn flush(&mut self) {
        let (file, offset) = self.flush_target();
        crate::sync_file(&file, false);
        self.mark_flushed(offset);
    }

    /// Deletes segments past the retention time or size. The active segment is rolled
    /// first when it alone is expired, so an idle topic still ages out. Returns how many
    /// segments were deleted.
    pub fn apply_retention(&mut self, now_ms: i64) -> Result<usize, LogError> {
        if !self.config.delete || self.is_cleaning() {
            return Ok(0);
        }
        let expired = |s: &LogSegment, cfg: &LogConfig| {
            cfg.retention_ms >= 0
                && !s.is_empty()
                && now_ms.saturating_sub(s.max_timestamp()) > cfg.retention_ms
        };
        if expired(self.active(), &self.config) {
            self.roll()?;
        }
        let mut total: i64 = self.segments.values().map(|s| s.size() as i64).sum();
        let mut deleted = 0;
        loop {
            if self.segments.len() <= 1 {
                break;
            }
            let (&base, oldest) = self.segments.iter().next().expect("non-empty");
            let by_time = expired(oldest, &self.config);
            let by_size = self.config.retention_bytes >= 0
                && total - oldest.size() as i64 >= self.config.retention_bytes;
            if !(by_time || by_size) {
                break;
            }
            let segment = self.segments.remove(&base).expect("present");
            total -= segment.size() as i64;
            tracing::info!(
                segment = %segment.path().display(),
                reason = if by_time { "retention.ms" } else { "retention.bytes" },
                "deleting segment"
            );
            segment.delete()?;
            deleted += 1;
        }
        if deleted > 0 {
            crate::sync_dir(&self.dir)?;
            let start = self.log_start_offset();
            self.producers.truncate_aborted_before(start);
        }
        Ok(deleted)
    }

    /// DeleteRecords: moves the log start offset to `offset` (at most the LEO; the caller
    /// checks it against the high watermark) durably, then deletes the segments wholly
    /// below it. A lower offset changes nothing. Returns the log start offset.
    pub fn delete_records_before(&mut self, offset: i64) -> Result<i64, LogError> {
        let offset = offset.min(self.next_offset);
        if offset <= self.log_start_offset() {
            return Ok(self.log_start_offset());
        }
        crate::write_atomically(
            &self.dir.join(LOG_START_FILE),
            offset.to_string().as_bytes(),
        )?;
        self.deleted_before = offset;
        if self.active().base_offset() < offset && offset == self.next_offset {
            // Everything is deleted: start a new segment so the active one can go too.
            self.roll()?;
        }
        self.delete_segments_below_start()?;
        self.producers.truncate_aborted_before(offset);
        Ok(self.log_start_offset())
    }

    /// Deletes segments whose every offset is below the log start offset (never the active
    /// one, never during a cleaning: that waits for the cleaning to be installed).
    fn delete_segments_below_start(&mut self) -> Result<usize, LogError> {
        if self.is_cleaning() {
            return Ok(0);
        }
        let bases: Vec<i64> = self.segments.keys().copied().collect();
        let mut deleted = 0;
        for pair in bases.windows(2) {
            if pair[1] > self.deleted_before {
                break;
            }
            if let Some(segment) = self.segments.remove(&pair[0]) {
                tracing::info!(segment = %segment.path().display(), "deleting segment below the log start offset");
                segment.delete()?;
                deleted += 1;
            }
        }
        if deleted > 0 {
            crate::sync_dir(&self.dir)?;
        }
        Ok(deleted)
    }

    fn is_cleaning(&self) -> bool {
        self.cleaning.load(Ordering::Acquire)
    }

    /// What the cleaner needs to clean this log, with `stable_offset` the last stable
    /// offset; `None` while another view exists. Retention and DeleteRecords leave the
    /// segment files alone until the view is dropped.
    pub fn clean_view(&self, stable_offset: i64) -> Option<CleanView> {
        if self
            .cleaning
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return None;
        }
        let guard = CleaningGuard(Arc::clone(&self.cleaning));
        let bases: Vec<i64> = self.segments.keys().copied().collect();
        let segments = self
            .segments
            .values()
            .enumerate()
            .map(|(i, s)| SegmentView {
                base: s.base_offset(),
                next_base: bases.get(i + 1).copied().unwrap_or(self.next_offset),
                file: s.file(),
                size: s.size(),
                max_timestamp: s.max_timestamp(),
                first_batch_timestamp: s.first_batch_timestamp(),
            })
            .collect();
        let producers = self
            .producers
            .producers()
            .map(|e| {
                let last = LastRecord {
                    last_data_offset: e.batches.back().map(|b| b.last_offset),
                    epoch: e.epoch,
                };
                (e.producer_id, last)
            })
            .collect();
        Some(CleanView {
            dir: self.dir.clone(),
            config: self.config.clone(),
            segments,
            log_start_offset: self.log_start_offset(),
            stable_offset: self.last_stable_offset(stable_offset),
            checkpoint: self.checkpoint,
            producers,
            aborted: self.producers.aborted().to_vec(),
            _guard: guard,
        })
    }

    /// Installs a cleaning's committed swaps: the replaced segments leave the log and the
    /// cleaned ones (already on disk under the final names) are opened in their place.
    /// Readers keep seeing whole batches throughout: until now they read the replaced
    /// segments through their open files.
    pub fn install_cleaned(
        &mut self,
        view: CleanView,
        outcome: &cleaner::Outcome,
    ) -> Result<(), LogError> {
        for &(base, end) in &outcome.swaps {
            let (segment, _) = LogSegment::open(
                &self.dir,
                base,
                self.config.index_interval_bytes,
                false,
                Offsets::Below(end),
            )?;
            let replaced: Vec<i64> = self.segments.range(base..end).map(|(b, _)| *b).collect();
            for b in replaced {
                self.segments.remove(&b);
            }
            self.segments.insert(base, segment);
        }
        self.producers.remove_aborted(&outcome.removed_aborts);
        self.checkpoint = outcome.checkpoint;
        drop(view);
        self.delete_segments_below_start()?;
        Ok(())
    }

    /// Where cleaning stopped.
    pub fn cleaner_checkpoint(&self) -> Checkpoint {
        self.checkpoint
    }

    /// Fsyncs and seals the active segment for a clean shutdown.
    pub fn close(&mut self) -> Result<(), LogError> {
        self.active().seal()?;
        self.write_snapshot()?;
        self.flushed_offset = self.next_offset;
        Ok(())
    }

    /// Forgets producers idle for `expiration_ms` (`producer.id.expiration.ms`).
    pub fn remove_expired_producers(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        self.producers.remove_expired(now_ms, expiration_ms)
    }

    pub fn producer_state(&self) -> &ProducerStateManager {
        &self.producers
    }

    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }
    pub fn config(&self) -> &LogConfig {
        &self.config
    }
    pub fn log_start_offset(&self) -> i64 {
        let first = self.segments.values().next().map_or(0, |s| s.base_offset());
        first.max(self.deleted_before)
    }
    pub fn log_end_offset(&self) -> i64 {
        self.next_offset
    }
    pub fn flushed_offset(&self) -> i64 {
        self.flushed_offset
    }
    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.size()).sum()
    }
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The log start offset DeleteRecords persisted in `dir` (0 if none).
fn read_log_start(dir: &Path) -> Result<i64, LogError> {
    let path = dir.join(LOG_START_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse().map_err(|_| LogError::CorruptMetadata {
            path,
            reason: format!("log start offset '{}'", text.trim()),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(LogError::io("read", path)(e)),
    }
}

/// (offset, timestamp) of every record in a batch, decompressing if needed.
fn record_timestamps(batch: &Bytes) -> Result<Vec<(i64, i64)>, LogError> {
    let mut buf = batch.clone();
    let set = exacta_wire::kafka_protocol::records::RecordBatchDecoder::decode(&mut buf).map_err(
        |e| LogError::CorruptMetadata {
            path: PathBuf::new(),
            reason: format!("decoding batch for timestamps: {e}"),
        },
    )?;
    Ok(set
        .records
        .iter()
        .map(|r| (r.offset, r.timestamp))
        .collect())
}

/// Applies one batch of the log to the producer state (recovery and replication).
fn replay(producers: &mut ProducerStateManager, h: &BatchHeader, batch: &[u8]) {
    if h.is_control() {
        if let Some((commit, coordinator_epoch)) = exacta_wire::batch::marker(batch) {
            producers.apply_marker(
                h.producer_id,
                h.producer_epoch,
                commit,
                coordinator_epoch,
                h.base_offset,
                h.max_timestamp,
            );
        }
    } else if h.base_sequence < 0 {
        producers.apply_coordinator(h);
    } else {
        producers.apply(h);
    }
}

/// Counts the whole batches in `buf` (test and tooling helper).
pub fn count_batches(buf: &[u8]) -> usize {
    Batches::new(buf).count()
}
