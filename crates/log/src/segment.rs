//! One log segment: a file of record batches with consecutive offsets starting at
//! `base_offset`, plus two sparse indexes kept in memory and written beside it when the
//! segment is rolled or the broker shuts down cleanly.
//!
//! - offset index (`.index`): `(relative offset u32, position u32)` every
//!   `index_interval_bytes`; finds the file position of an offset.
//! - time index (`.timeindex`): `(timestamp i64, relative offset u32, position u32)`
//!   beside offset-index entries when the largest timestamp has grown: every batch before
//!   `position` has a max timestamp <= `timestamp`; finds where to start scanning for the
//!   first record at or after a timestamp.
//!
//! To ensure correctness: index files are written only after the segment file is fsynced,
//! so a segment with index files is complete. Recovery trusts such a segment and rescans
//! (validating every CRC) a segment without them.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use exacta_wire::batch::{BatchHeader, Batches, BATCH_HEADER_LEN};

use crate::LogError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OffsetEntry {
    relative_offset: u32,
    position: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TimeEntry {
    timestamp: i64,
    relative_offset: u32,
    position: u32,
}

/// A segment file and its indexes.
#[derive(Debug)]
pub struct LogSegment {
    base_offset: i64,
    path: PathBuf,
    file: Arc<File>,
    size: u64,
    /// Offset after the last batch; `base_offset` when empty.
    next_offset: i64,
    offset_index: Vec<OffsetEntry>,
    time_index: Vec<TimeEntry>,
    bytes_since_index_entry: u32,
    /// Largest batch max timestamp, -1 when empty.
    max_timestamp: i64,
    /// Max timestamp of the first batch (drives time-based rolling), -1 when empty.
    first_batch_timestamp: i64,
    index_interval_bytes: u32,
}

/// Which base offsets a rescan accepts (see [`LogSegment::open`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offsets {
    /// Each batch starts at the offset after the previous one.
    Contiguous,
    /// Increasing with gaps, every offset below the given one.
    Below(i64),
}

/// File name of a segment: the base offset padded to 20 digits, as Kafka names them.
pub fn file_name(base_offset: i64, extension: &str) -> String {
    format!("{base_offset:020}.{extension}")
}

impl LogSegment {
    /// Creates an empty segment file.
    pub fn create(
        dir: &Path,
        base_offset: i64,
        index_interval_bytes: u32,
    ) -> Result<Self, LogError> {
        Self::create_at(
            dir.join(file_name(base_offset, "log")),
            base_offset,
            index_interval_bytes,
        )
    }

    /// Creates an empty segment file at `path` (the cleaner's temporary files).
    pub fn create_at(
        path: PathBuf,
        base_offset: i64,
        index_interval_bytes: u32,
    ) -> Result<Self, LogError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(LogError::io("create segment", &path))?;
        Ok(Self::empty(path, file, base_offset, index_interval_bytes))
    }

    fn empty(path: PathBuf, file: File, base_offset: i64, index_interval_bytes: u32) -> Self {
        Self {
            base_offset,
            path,
            file: Arc::new(file),
            size: 0,
            next_offset: base_offset,
            offset_index: Vec::new(),
            time_index: Vec::new(),
            bytes_since_index_entry: 0,
            max_timestamp: -1,
            first_batch_timestamp: -1,
            index_interval_bytes,
        }
    }

    /// Opens an existing segment.
    ///
    /// With `rescan` (the active segment after an unclean shutdown, or a segment without
    /// index files) every batch is read and CRC-checked, the file is truncated after the
    /// last valid batch, fsynced, and the indexes are rebuilt. Otherwise the index files
    /// are loaded.
    /// Returns the segment and the number of bytes truncated.
    ///
    /// `offsets` says what a rescan accepts: [`Offsets::Contiguous`] for a segment only
    /// ever appended to (the active one: every batch starts where the last ended), or
    /// [`Offsets::Below`] for a segment the cleaner may have rewritten (gaps allowed, but
    /// every offset below the next segment's base).
    pub fn open(
        dir: &Path,
        base_offset: i64,
        index_interval_bytes: u32,
        rescan: bool,
        offsets: Offsets,
    ) -> Result<(Self, u64), LogError> {
        let path = dir.join(file_name(base_offset, "log"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(LogError::io("open segment", &path))?;
        let file_size = file
            .metadata()
            .map_err(LogError::io("stat segment", &path))?
            .len();
        let mut segment = Self::empty(path, file, base_offset, index_interval_bytes);
        if !rescan && segment.load_indexes(file_size)? {
            return Ok((segment, 0));
        }
        let valid = segment.rebuild(file_size, offsets)?;
        let truncated = file_size - valid;
        if truncated > 0 {
            segment
                .file
                .set_len(valid)
                .map_err(LogError::io("truncate segment", &segment.path))?;
        }
        // What the rescan accepted may have been only in the page cache (a crash of the
        // process, not of the machine): make it durable before anything counts it so.
        crate::sync_file(&segment.file, true);
        Ok((segment, truncated))
    }

    /// Scans the file from the start, validating each batch; rebuilds the indexes and
    /// returns the length of the valid prefix.
    fn rebuild(&mut self, file_size: u64, offsets: Offsets) -> Result<u64, LogError> {
        // The base offset precedes the checksummed part of a batch, so damage to it is
        // caught only by these rules, not by the CRC.
        let acceptable = |header: &BatchHeader, expected: i64| match offsets {
            Offsets::Contiguous => header.base_offset == expected,
            Offsets::Below(limit) => header.base_offset >= expected && header.last_offset() < limit,
        };
        const CHUNK: usize = 8 << 20;
        let mut position: u64 = 0;
        let mut expected_offset = self.base_offset;
        while position < file_size {
            let want = ((file_size - position) as usize).min(CHUNK);
            let buf = self.read_at(position, want)?;
            let mut advanced = 0usize;
            let mut stop = false;
            let mut batches = Batches::new(&buf);
            for (at, header) in batches.by_ref() {
                let bytes = &buf[at..at + header.size()];
                let valid = BatchHeader::parse_and_verify(bytes).is_ok()
                    && acceptable(&header, expected_offset)
                    && header.last_offset_delta >= 0;
                if !valid {
                    stop = true;
                    break;
                }
                self.index_batch(&header, (position + at as u64) as u32);
                expected_offset = header.last_offset() + 1;
                advanced = at + header.size();
            }
            // A batch larger than the chunk: read it whole before giving up on it.
            if !stop && advanced == 0 {
                match BatchHeader::parse(&buf) {
                    Err(exacta_wire::batch::BatchError::Truncated { need, .. })
                        if need > buf.len() && position + need as u64 <= file_size =>
                    {
                        let whole = self.read_at(position, need)?;
                        match BatchHeader::parse_and_verify(&whole) {
                            Ok(header) if acceptable(&header, expected_offset) => {
                                self.index_batch(&header, position as u32);
                                expected_offset = header.last_offset() + 1;
                                advanced = need;
                            }
                            _ => stop = true,
                        }
                    }
                    _ => stop = true,
                }
            }
            position += advanced as u64;
            if stop || advanced == 0 {
                break;
            }
        }
        self.size = position;
        Ok(position)
    }

    /// Loads `.index` and `.timeindex`; false if they are missing or inconsistent.
    fn load_indexes(&mut self, file_size: u64) -> Result<bool, LogError> {
        let (Ok(offsets), Ok(times)) = (
            std::fs::read(self.index_path("index")),
            std::fs::read(self.index_path("timeindex")),
        ) else {
            return Ok(false);
        };
        if offsets.len() % 8 != 0 || times.len() % 16 != 0 {
            return Ok(false);
        }
        self.offset_index = offsets
            .chunks_exact(8)
            .map(|c| OffsetEntry {
                relative_offset: u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
                position: u32::from_be_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect();
        self.time_index = times
            .chunks_exact(16)
            .map(|c| TimeEntry {
                timestamp: i64::from_be_bytes(c[0..8].try_into().unwrap_or([0; 8])),
                relative_offset: u32::from_be_bytes([c[8], c[9], c[10], c[11]]),
                position: u32::from_be_bytes([c[12], c[13], c[14], c[15]]),
            })
            .collect();
        if self
            .offset_index
            .last()
            .is_some_and(|e| u64::from(e.position) >= file_size)
        {
            return Ok(false);
        }
        // Walk the headers after the last index entry to find the end and the timestamps.
        let start = self.offset_index.last().map_or(0, |e| e.position as u64);
        self.size = start;
        self.next_offset = self.base_offset;
        if let Some(e) = self.offset_index.last() {
            self.next_offset = self.base_offset + i64::from(e.relative_offset);
        }
        let mut position = start;
        while position < file_size {
            let Ok(head) = self.read_at(position, BATCH_HEADER_LEN) else {
                return Ok(false);
            };
            let Ok(header) = BatchHeader::parse_header(&head) else {
                return Ok(false);
            };
            if position + header.size() as u64 > file_size {
                return Ok(false);
            }
            self.next_offset = header.last_offset() + 1;
            self.max_timestamp = self.max_timestamp.max(header.max_timestamp);
            position += header.size() as u64;
        }
        if position != file_size {
            return Ok(false);
        }
        self.size = file_size;
        if let Some(t) = self.time_index.last() {
            self.max_timestamp = self.max_timestamp.max(t.timestamp);
        }
        if file_size > 0 {
            let head = self.read_at(0, BATCH_HEADER_LEN)?;
            self.first_batch_timestamp =
                BatchHeader::parse_header(&head).map_or(-1, |h| h.max_timestamp);
        }
        Ok(true)
    }

    fn index_path(&self, extension: &str) -> PathBuf {
        self.path.with_extension(extension)
    }

    /// Records a batch just written (or found by recovery) at `position` in the indexes.
    ///
    /// Both indexes get an entry only every `index_interval_bytes`, so their size is
    /// bounded by the segment's bytes, not its batch count. A time entry
    /// `(T, position)` means every batch before `position` has max timestamp <= T.
    fn index_batch(&mut self, header: &BatchHeader, position: u32) {
        let relative_offset = (header.base_offset - self.base_offset) as u32;
        if self.offset_index.is_empty() || self.bytes_since_index_entry >= self.index_interval_bytes
        {
            self.offset_index.push(OffsetEntry {
                relative_offset,
                position,
            });
            self.bytes_since_index_entry = 0;
            let grew = self
                .time_index
                .last()
                .is_none_or(|t| self.max_timestamp > t.timestamp);
            if self.max_timestamp >= 0 && grew {
                self.time_index.push(TimeEntry {
                    timestamp: self.max_timestamp,
                    relative_offset,
                    position,
                });
            }
        }
        self.bytes_since_index_entry = self
            .bytes_since_index_entry
            .saturating_add(header.size() as u32);
        self.max_timestamp = self.max_timestamp.max(header.max_timestamp);
        if self.first_batch_timestamp < 0 {
            self.first_batch_timestamp = header.max_timestamp;
        }
        self.next_offset = header.last_offset() + 1;
        self.size = u64::from(position) + header.size() as u64;
    }

    /// Appends a batch whose base offset the caller has already assigned.
    ///
    /// The bytes reach the page cache, not the disk: durability comes from fsyncing
    /// [`LogSegment::file`] afterwards.
    pub fn append(&mut self, batch: &[u8], header: &BatchHeader) -> Result<(), LogError> {
        debug_assert_eq!(header.base_offset, self.next_offset.max(header.base_offset));
        debug_assert_eq!(batch.len(), header.size());
        let position = self.size;
        self.file
            .write_all_at(batch, position)
            .map_err(LogError::io("write segment", &self.path))?;
        self.index_batch(header, position as u32);
        Ok(())
    }

    /// Reads whole batches starting with the one holding `offset`, up to `max_bytes`
    /// (at least one batch even if it is larger), stopping before `upper` (exclusive).
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        upper: i64,
    ) -> Result<Option<Bytes>, LogError> {
        let Some(start) = self.find_position(offset)? else {
            return Ok(None);
        };
        let available = (self.size - start) as usize;
        let buf = self.read_at(start, max_bytes.max(BATCH_HEADER_LEN).min(available))?;
        let mut end = 0usize;
        let mut first_size = None;
        let mut batches = Batches::new(&buf);
        for (at, header) in batches.by_ref() {
            if header.base_offset >= upper {
                break;
            }
            end = at + header.size();
        }
        if end == 0 {
            // The first batch did not fit in max_bytes: return it whole (KIP-74).
            if let Ok(header) = BatchHeader::parse_header(&buf) {
                if header.base_offset < upper {
                    first_size = Some(header.size());
                }
            }
        }
        match first_size {
            Some(size) => Ok(Some(self.read_at(start, size)?.freeze())),
            None if end == 0 => Ok(None),
            None => Ok(Some(buf.freeze().slice(..end))),
        }
    }

    /// File position of the batch that holds `offset`, or `None` if past the end.
    fn find_position(&self, offset: i64) -> Result<Option<u64>, LogError> {
        if offset >= self.next_offset {
            return Ok(None);
        }
        let relative = (offset - self.base_offset).max(0) as u32;
        let slot = self
            .offset_index
            .partition_point(|e| e.relative_offset <= relative);
        let mut position = if slot == 0 {
            0
        } else {
            u64::from(self.offset_index[slot - 1].position)
        };
        while position < self.size {
            let head = self.read_at(position, BATCH_HEADER_LEN)?;
            let header =
                BatchHeader::parse_header(&head).map_err(|e| LogError::CorruptMetadata {
                    path: self.path.clone(),
                    reason: format!("batch header at {position}: {e}"),
                })?;
            if header.last_offset() >= offset {
                return Ok(Some(position));
            }
            position += header.size() as u64;
        }
        Ok(None)
    }

    /// File position where the batch holding `offset` starts (the size when `offset` is
    /// past the last batch): where a truncation to `offset` cuts the file.
    pub fn position_of(&self, offset: i64) -> Result<u64, LogError> {
        Ok(self.find_position(offset)?.unwrap_or(self.size))
    }

    /// Position of the first batch whose max timestamp is at least `timestamp`.
    pub fn find_timestamp_position(
        &self,
        timestamp: i64,
    ) -> Result<Option<(u64, BatchHeader)>, LogError> {
        if self.max_timestamp < timestamp {
            return Ok(None);
        }
        let slot = self.time_index.partition_point(|e| e.timestamp < timestamp);
        let mut position = if slot == 0 {
            0
        } else {
            u64::from(self.time_index[slot - 1].position)
        };
        while position < self.size {
            let head = self.read_at(position, BATCH_HEADER_LEN)?;
            let header =
                BatchHeader::parse_header(&head).map_err(|e| LogError::CorruptMetadata {
                    path: self.path.clone(),
                    reason: format!("batch header at {position}: {e}"),
                })?;
            if header.max_timestamp >= timestamp {
                return Ok(Some((position, header)));
            }
            position += header.size() as u64;
        }
        Ok(None)
    }

    /// Reads the whole batch at `position`.
    pub fn read_batch(&self, position: u64, header: &BatchHeader) -> Result<Bytes, LogError> {
        Ok(self.read_at(position, header.size())?.freeze())
    }

    fn read_at(&self, position: u64, len: usize) -> Result<BytesMut, LogError> {
        let mut buf = BytesMut::zeroed(len);
        let mut filled = 0;
        while filled < len {
            let n = self
                .file
                .read_at(&mut buf[filled..], position + filled as u64)
                .map_err(LogError::io("read segment", &self.path))?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        buf.truncate(filled);
        Ok(buf)
    }

    /// Fsyncs the segment file, then writes and fsyncs both index files.
    pub fn seal(&self) -> Result<(), LogError> {
        crate::sync_file(&self.file, false);
        let (offsets, times) = self.index_bytes();
        crate::write_atomically(&self.index_path("index"), &offsets)?;
        crate::write_atomically(&self.index_path("timeindex"), &times)?;
        Ok(())
    }

    /// As [`LogSegment::seal`], writing the indexes to the given paths (plain writes, each
    /// fsynced: the cleaner's files, which count only once a swap commits them).
    pub fn seal_to(&self, index: &Path, timeindex: &Path) -> Result<(), LogError> {
        use std::io::Write;
        crate::sync_file(&self.file, false);
        let (offsets, times) = self.index_bytes();
        for (path, bytes) in [(index, offsets), (timeindex, times)] {
            let mut file = File::create(path).map_err(LogError::io("create", path))?;
            file.write_all(&bytes)
                .map_err(LogError::io("write", path))?;
            crate::sync_file(&file, false);
        }
        Ok(())
    }

    fn index_bytes(&self) -> (Vec<u8>, Vec<u8>) {
        let mut offsets = Vec::with_capacity(self.offset_index.len() * 8);
        for e in &self.offset_index {
            offsets.extend_from_slice(&e.relative_offset.to_be_bytes());
            offsets.extend_from_slice(&e.position.to_be_bytes());
        }
        let mut times = Vec::with_capacity(self.time_index.len() * 16);
        for e in &self.time_index {
            times.extend_from_slice(&e.timestamp.to_be_bytes());
            times.extend_from_slice(&e.relative_offset.to_be_bytes());
            times.extend_from_slice(&e.position.to_be_bytes());
        }
        (offsets, times)
    }

    /// Removes the segment's files.
    pub fn delete(self) -> Result<(), LogError> {
        for path in [
            self.path.clone(),
            self.index_path("index"),
            self.index_path("timeindex"),
        ] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(LogError::io("delete", path)(e)),
            }
        }
        Ok(())
    }

    /// Removes the index files, marking the segment as one recovery must rescan.
    pub fn remove_index_files(&self) -> Result<(), LogError> {
        for path in [self.index_path("index"), self.index_path("timeindex")] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(LogError::io("delete", path)(e)),
            }
        }
        Ok(())
    }

    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }
    pub fn size(&self) -> u64 {
        self.size
    }
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }
    pub fn first_batch_timestamp(&self) -> i64 {
        self.first_batch_timestamp
    }
    /// The file handle, for an fsync outside the partition lock.
    pub fn file(&self) -> Arc<File> {
        Arc::clone(&self.file)
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
}
