//! Per-partition storage settings: the resolved values of a topic's configs over the
//! broker's defaults.

/// Storage settings of one partition log.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// Roll the active segment when it would grow past this size.
    pub segment_bytes: u64,
    /// Roll the active segment when its first batch is older than this.
    pub segment_ms: i64,
    /// Delete segments whose newest record is older than this; -1 keeps them forever.
    pub retention_ms: i64,
    /// Delete the oldest segments while the log is bigger than this; -1 means no limit.
    pub retention_bytes: i64,
    /// Add an offset-index entry after this many bytes of batches.
    pub index_interval_bytes: u32,
    /// `cleanup.policy` has `delete`: retention deletes old segments.
    pub delete: bool,
    /// `cleanup.policy` has `compact`: the cleaner keeps the last record per key.
    pub compact: bool,
    /// `min.cleanable.dirty.ratio`: clean when the dirty share of the log exceeds this.
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms`: records younger than this are not cleaned.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: a dirty segment older than this is cleaned whatever the ratio.
    pub max_compaction_lag_ms: i64,
    /// `delete.retention.ms`: how long tombstones and emptied transaction markers stay
    /// after the cleaner first sees them (their delete horizon).
    pub delete_retention_ms: i64,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            index_interval_bytes: 4096,
            delete: true,
            compact: false,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            delete_retention_ms: 24 * 3600 * 1000,
        }
    }
}
