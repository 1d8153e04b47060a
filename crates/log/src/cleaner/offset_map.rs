//! The cleaner's key → last offset map of a log's dirty range, bounded in memory.
//!
//! Keys are stored as their 128-bit XXH3 hash (Kafka stores an MD5 digest), so an entry
//! costs the same whatever the key's size; a wrong answer needs two keys of one log to
//! collide on all 128 bits. The map is reused between cleanings, so its memory stays at
//! its high-water mark, which the entry limit bounds.

use std::collections::HashMap;

/// Bytes one entry takes in the map, counted conservatively (hash, offset, table overhead).
pub const ENTRY_BYTES: usize = 40;

/// Key hash → offset of the key's last record in the mapped range.
#[derive(Debug)]
pub struct OffsetMap {
    entries: HashMap<u128, i64>,
    capacity: usize,
    /// Last offset mapped (every offset up to it was read), -1 before any.
    latest: i64,
}

impl OffsetMap {
    /// A map holding at most `memory_bytes / ENTRY_BYTES` keys (at least one).
    pub fn new(memory_bytes: usize) -> Self {
        Self {
            entries: HashMap::new(),
            capacity: (memory_bytes / ENTRY_BYTES).max(1),
            latest: -1,
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.latest = -1;
    }

    /// Whether `more` new keys might not fit.
    pub fn would_overflow(&self, more: usize) -> bool {
        self.entries.len().saturating_add(more) > self.capacity
    }

    pub fn put(&mut self, key: &[u8], offset: i64) {
        self.entries.insert(hash(key), offset);
    }

    /// The offset of the key's last record, if the key was mapped.
    pub fn get(&self, key: &[u8]) -> Option<i64> {
        self.entries.get(&hash(key)).copied()
    }

    /// Records that everything up to `offset` was mapped.
    pub fn advance_to(&mut self, offset: i64) {
        self.latest = self.latest.max(offset);
    }

    pub fn latest(&self) -> i64 {
        self.latest
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Share of the entry limit in use.
    pub fn utilization(&self) -> f64 {
        self.entries.len() as f64 / self.capacity as f64
    }
}

fn hash(key: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_offsets_win_and_the_limit_is_reported() {
        let mut map = OffsetMap::new(3 * ENTRY_BYTES);
        map.put(b"a", 1);
        map.put(b"b", 2);
        map.put(b"a", 5);
        assert_eq!(map.get(b"a"), Some(5));
        assert_eq!(map.get(b"c"), None);
        assert!(!map.would_overflow(1));
        assert!(map.would_overflow(2));
        map.advance_to(9);
        map.advance_to(4);
        assert_eq!(map.latest(), 9);
        map.clear();
        assert!(map.is_empty());
        assert_eq!(map.latest(), -1);
    }
}
