//! The leader-epoch cache of a partition: for each leader epoch that wrote to the log, the
//! offset of its first batch (`leader-epochs` beside the segments, one `epoch offset` line
//! per epoch, replaced atomically when an epoch starts or the log is truncated).
//!
//! It answers OffsetForLeaderEpoch (KIP-101, KIP-279): where a given epoch's writes ended
//! in this log, which is how a follower finds the point where its log and the leader's
//! diverge and truncates there instead of to its high watermark, and how a consumer
//! detects that the records it read were truncated away (KIP-320).

use std::path::{Path, PathBuf};

use crate::LogError;

const FILE: &str = "leader-epochs";

/// An epoch below every real one (`UNDEFINED_EPOCH` on the wire).
pub const UNDEFINED_EPOCH: i32 = -1;
/// No offset (`UNDEFINED_EPOCH_OFFSET` on the wire).
pub const UNDEFINED_OFFSET: i64 = -1;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderEpochs {
    path: PathBuf,
    /// (epoch, start offset), both strictly increasing.
    entries: Vec<(i32, i64)>,
}

impl LeaderEpochs {
    /// Loads the cache of the log in DIR, dropping epochs that start at or past LOG_END
    /// (the log lost its tail in a crash).
    pub fn load(dir: &Path, log_end: i64) -> Result<Self, LogError> {
        let path = dir.join(FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(LogError::io("read", &path)(e)),
        };
        let mut entries: Vec<(i32, i64)> = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let parsed = line.split_once(' ').and_then(|(e, o)| {
                Some((e.trim().parse::<i32>().ok()?, o.trim().parse::<i64>().ok()?))
            });
            let Some((epoch, start)) = parsed else {
                return Err(LogError::CorruptMetadata {
                    path,
                    reason: format!("leader epoch line {line:?}"),
                });
            };
            if entries
                .last()
                .is_some_and(|&(e, o)| epoch <= e || start < o)
            {
                return Err(LogError::CorruptMetadata {
                    path,
                    reason: format!("leader epochs out of order at {line:?}"),
                });
            }
            entries.push((epoch, start));
        }
        let mut cache = Self { path, entries };
        if cache.entries.last().is_some_and(|&(_, o)| o >= log_end) {
            cache.truncate_from(log_end)?;
        }
        Ok(cache)
    }

    /// The newest epoch that wrote to the log.
    pub fn latest(&self) -> Option<i32> {
        self.entries.last().map(|&(e, _)| e)
    }

    /// Records that EPOCH's first batch is at START, if EPOCH is newer than every epoch
    /// known (a batch of an older or the same epoch changes nothing).
    pub fn assign(&mut self, epoch: i32, start: i64) -> Result<(), LogError> {
        if epoch < 0 || self.latest().is_some_and(|e| epoch <= e) {
            return Ok(());
        }
        // A leader that wrote nothing leaves no offset behind: an epoch starting where the
        // previous one started replaces it.
        if self.entries.last().is_some_and(|&(_, o)| o >= start) {
            self.entries.pop();
        }
        self.entries.push((epoch, start));
        self.save()
    }

    /// Forgets the epochs that start at or after OFFSET (the log was truncated to OFFSET).
    pub fn truncate_from(&mut self, offset: i64) -> Result<(), LogError> {
        let before = self.entries.len();
        self.entries.retain(|&(_, o)| o < offset);
        if self.entries.len() != before {
            self.save()?;
        }
        Ok(())
    }

    /// OffsetForLeaderEpoch: the largest epoch at or below REQUESTED that this log knows,
    /// and the offset where the writes of REQUESTED ended here (the start of the next newer
    /// epoch, or LOG_END when REQUESTED is the newest). CURRENT, the epoch this replica now
    /// leads or follows, counts as begun at LOG_END when nothing was written in it yet (as
    /// Kafka records an epoch when it is elected). Unknown when REQUESTED is newer than
    /// every epoch, or undefined.
    pub fn end_offset_for(&self, requested: i32, log_end: i64, current: i32) -> (i32, i64) {
        let mut entries = self.entries.clone();
        if current >= 0 && self.latest().is_none_or(|l| current > l) {
            if entries.last().is_some_and(|&(_, o)| o >= log_end) {
                entries.pop();
            }
            entries.push((current, log_end));
        }
        end_offset(&entries, requested, log_end)
    }

    fn save(&self) -> Result<(), LogError> {
        let text: String = self
            .entries
            .iter()
            .map(|(e, o)| format!("{e} {o}\n"))
            .collect();
        crate::write_atomically(&self.path, text.as_bytes())
    }
}

/// [`LeaderEpochs::end_offset_for`] over ENTRIES.
fn end_offset(entries: &[(i32, i64)], requested: i32, log_end: i64) -> (i32, i64) {
    let unknown = (UNDEFINED_EPOCH, UNDEFINED_OFFSET);
    let Some(&(latest, _)) = entries.last() else {
        return unknown;
    };
    if requested == UNDEFINED_EPOCH || requested > latest {
        return unknown;
    }
    if requested == latest {
        return (latest, log_end);
    }
    let next = entries.partition_point(|&(e, _)| e <= requested);
    let next_start = entries[next].1;
    match next.checked_sub(1) {
        Some(floor) => (entries[floor].0, next_start),
        // Older than anything the log still holds: it ended before the next epoch.
        None => (requested, next_start),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_offsets_follow_kafka_rules() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = LeaderEpochs::load(dir.path(), 0).unwrap();
        assert_eq!(
            c.end_offset_for(0, 0, -1),
            (UNDEFINED_EPOCH, UNDEFINED_OFFSET)
        );
        // The epoch being led counts from the log end before anything is written in it.
        assert_eq!(c.end_offset_for(0, 0, 0), (0, 0));
        c.assign(1, 0).unwrap();
        c.assign(1, 5).unwrap();
        c.assign(3, 10).unwrap();
        c.assign(4, 20).unwrap();
        assert_eq!(c.end_offset_for(4, 30, 4), (4, 30));
        assert_eq!(c.end_offset_for(3, 30, 4), (3, 20));
        // Epoch 2 never wrote here: it ended where 3 began, answered with epoch 1.
        assert_eq!(c.end_offset_for(2, 30, 4), (1, 10));
        assert_eq!(c.end_offset_for(0, 30, 4), (0, 0));
        assert_eq!(
            c.end_offset_for(5, 30, 4),
            (UNDEFINED_EPOCH, UNDEFINED_OFFSET)
        );
        // Elected at epoch 6 with nothing written yet: epoch 4 ended at the log end.
        assert_eq!(c.end_offset_for(4, 30, 6), (4, 30));
        assert_eq!(c.end_offset_for(6, 30, 6), (6, 30));
        // Persisted, and truncation forgets the later epochs.
        let mut again = LeaderEpochs::load(dir.path(), 30).unwrap();
        assert_eq!(again, c);
        again.truncate_from(15).unwrap();
        assert_eq!(again.end_offset_for(3, 15, 3), (3, 15));
        assert_eq!(
            LeaderEpochs::load(dir.path(), 15).unwrap().latest(),
            Some(3)
        );
        // A cache past a torn log end loses what the log lost.
        assert_eq!(
            LeaderEpochs::load(dir.path(), 10).unwrap().latest(),
            Some(1)
        );
    }

    #[test]
    fn a_damaged_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), "3 10\n2 20\n").unwrap();
        assert!(LeaderEpochs::load(dir.path(), 30).is_err());
        std::fs::write(dir.path().join(FILE), "x\n").unwrap();
        assert!(LeaderEpochs::load(dir.path(), 30).is_err());
    }
}
