//! Per-partition producer state for idempotent producers (Kafka's `ProducerStateManager`).
//!
//! For each producer id: its epoch, and the metadata (sequence range, offsets) of its last
//! [`BATCHES_RETAINED`] batches. A batch is checked before it is appended:
//!
//! - same epoch, same sequence range as a retained batch: a **duplicate** (a retry whose
//!   response was lost); it is acknowledged with the original offsets, not appended again;
//! - same epoch, first sequence = last sequence + 1 (wrapping at `i32::MAX`): in order;
//! - same epoch, any other sequence: OUT_OF_ORDER_SEQUENCE_NUMBER;
//! - older epoch: INVALID_PRODUCER_EPOCH;
//! - newer epoch: accepted only at sequence 0 (the epoch was bumped, sequences restart);
//! - unknown producer id: accepted only at sequence 0, else UNKNOWN_PRODUCER_ID.
//!
//! The state is rebuilt on recovery from the newest snapshot plus the batches after it
//! ([`ProducerStateManager::apply`] needs no validation: the log is the truth).

use std::collections::{BTreeMap, VecDeque};

use exacta_wire::batch::BatchHeader;

/// Batches remembered per producer; Kafka's clients keep at most 5 in flight.
pub const BATCHES_RETAINED: usize = 5;
pub const NO_SEQUENCE: i32 = -1;

const SNAPSHOT_VERSION: u16 = 3;

/// Offsets and sequences of one appended batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMetadata {
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
}

/// What the partition knows about one producer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    pub producer_id: i64,
    pub epoch: i16,
    /// Oldest first; at most [`BATCHES_RETAINED`].
    pub batches: VecDeque<BatchMetadata>,
    /// Max timestamp of the producer's last batch (Kafka's `lastTimestamp`); drives expiry.
    /// Taken from the batch, not the broker clock, so replay rebuilds it exactly.
    pub last_timestamp: i64,
    /// First offset of the producer's open transaction in this partition, -1 if none.
    pub current_txn_first_offset: i64,
    /// The newest transaction coordinator epoch of its markers here (-1: none yet): a
    /// marker from an older coordinator is refused (a coordinator that lost its partition
    /// but has not noticed yet must not end a newer transaction).
    pub coordinator_epoch: i32,
}

/// A transaction aborted in this partition: the range `read_committed` readers skip for
/// this producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    /// Offset of the abort marker.
    pub last_offset: i64,
}

impl ProducerEntry {
    pub fn last_sequence(&self) -> i32 {
        self.batches.back().map_or(NO_SEQUENCE, |b| b.last_sequence)
    }

    fn find_duplicate(&self, first: i32, last: i32) -> Option<BatchMetadata> {
        self.batches
            .iter()
            .find(|b| b.first_sequence == first && b.last_sequence == last)
            .copied()
    }
}

/// Why a producer's batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    #[error("producer {producer_id} epoch {epoch} is older than the current epoch {current}")]
    InvalidProducerEpoch {
        producer_id: i64,
        epoch: i16,
        current: i16,
    },
    #[error("producer {producer_id} epoch {epoch}: sequence {got} does not follow {last}")]
    OutOfOrderSequence {
        producer_id: i64,
        epoch: i16,
        last: i32,
        got: i32,
    },
    #[error("unknown producer {producer_id} sent sequence {sequence}; a new producer starts at 0")]
    UnknownProducerId { producer_id: i64, sequence: i32 },
    #[error("producer {producer_id} has an open transaction here: expected a transactional batch")]
    InvalidTxnState { producer_id: i64 },
    #[error(
        "marker for producer {producer_id} from coordinator epoch {epoch}, older than {current}"
    )]
    CoordinatorFenced {
        producer_id: i64,
        epoch: i32,
        current: i32,
    },
}

/// The verdict on a batch that passed the checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Append,
    Duplicate(BatchMetadata),
}

/// The last sequence of a batch starting at `base` with `delta` more records, wrapping
/// after `i32::MAX` to 0 as Kafka's sequences do.
pub fn last_sequence(base: i32, delta: i32) -> i32 {
    ((i64::from(base) + i64::from(delta)) % (i64::from(i32::MAX) + 1)) as i32
}

fn in_sequence(last: i32, next: i32) -> bool {
    i64::from(next) == i64::from(last) + 1 || (next == 0 && last == i32::MAX)
}

/// Producer state of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerStateManager {
    producers: BTreeMap<i64, ProducerEntry>,
    /// Aborted transactions, in marker order (Kafka keeps them in `.txnindex` files; here
    /// they travel with the producer snapshot and are rebuilt by replay).
    aborted: Vec<AbortedTxn>,
}

impl ProducerStateManager {
    /// Checks the producer batches about to be appended together, in order. The first
    /// duplicate found decides the whole append (Kafka's behaviour).
    pub fn check(&self, headers: &[BatchHeader]) -> Result<Verdict, SequenceError> {
        // Earlier batches of the same request count for later ones.
        let mut pending: BTreeMap<i64, ProducerEntry> = BTreeMap::new();
        for h in headers.iter().filter(|h| h.producer_id >= 0) {
            let entry = pending
                .get(&h.producer_id)
                .or(self.producers.get(&h.producer_id));
            if let Verdict::Duplicate(d) = check_one(entry, h)? {
                return Ok(Verdict::Duplicate(d));
            }
            let mut next = entry.cloned().unwrap_or_else(|| empty_entry(h));
            push(&mut next, h);
            pending.insert(h.producer_id, next);
        }
        Ok(Verdict::Append)
    }

    /// Records an appended batch (with its assigned offsets). Also used by recovery.
    pub fn apply(&mut self, h: &BatchHeader) {
        if let Some(entry) = self.entry_for(h) {
            push(entry, h);
            open_txn(entry, h);
        }
    }

    /// Records a batch written by a coordinator on the producer's behalf (transactional
    /// offset commits): no sequence, but it opens the producer's transaction here.
    pub fn apply_coordinator(&mut self, h: &BatchHeader) {
        if let Some(entry) = self.entry_for(h) {
            if h.producer_epoch > entry.epoch {
                entry.epoch = h.producer_epoch;
                entry.batches.clear();
            }
            entry.last_timestamp = entry.last_timestamp.max(h.max_timestamp);
            open_txn(entry, h);
        }
    }

    /// The entry of the batch's producer, created if new; `None` for non-idempotent batches.
    fn entry_for(&mut self, h: &BatchHeader) -> Option<&mut ProducerEntry> {
        (h.producer_id >= 0).then(|| {
            self.producers
                .entry(h.producer_id)
                .or_insert_with(|| empty_entry(h))
        })
    }

    /// Checks a transaction marker (or a coordinator's batch, COORDINATOR_EPOCH -1) from
    /// the coordinator: its producer epoch may not be older than the producer's, nor its
    /// coordinator epoch older than the last marker's.
    pub fn check_marker(
        &self,
        producer_id: i64,
        epoch: i16,
        coordinator_epoch: i32,
    ) -> Result<(), SequenceError> {
        match self.producers.get(&producer_id) {
            Some(e) if epoch < e.epoch => Err(SequenceError::InvalidProducerEpoch {
                producer_id,
                epoch,
                current: e.epoch,
            }),
            Some(e) if coordinator_epoch >= 0 && coordinator_epoch < e.coordinator_epoch => {
                Err(SequenceError::CoordinatorFenced {
                    producer_id,
                    epoch: coordinator_epoch,
                    current: e.coordinator_epoch,
                })
            }
            _ => Ok(()),
        }
    }

    /// Ends the producer's open transaction at the marker at `marker_offset`; an abort is
    /// remembered for `read_committed` readers. Also used by recovery.
    #[allow(clippy::too_many_arguments)]
    pub fn apply_marker(
        &mut self,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
        marker_offset: i64,
        timestamp: i64,
    ) {
        let entry = self
            .producers
            .entry(producer_id)
            .or_insert_with(|| ProducerEntry {
                producer_id,
                epoch,
                batches: VecDeque::new(),
                last_timestamp: timestamp,
                current_txn_first_offset: -1,
                coordinator_epoch: -1,
            });
        entry.coordinator_epoch = entry.coordinator_epoch.max(coordinator_epoch);
        if epoch > entry.epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
        entry.last_timestamp = entry.last_timestamp.max(timestamp);
        let first = std::mem::replace(&mut entry.current_txn_first_offset, -1);
        if !commit && first >= 0 {
            self.aborted.push(AbortedTxn {
                producer_id,
                first_offset: first,
                last_offset: marker_offset,
            });
        }
    }

    /// The first offset of the oldest open transaction, if any: the last stable offset
    /// cannot pass it.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.producers
            .values()
            .map(|e| e.current_txn_first_offset)
            .filter(|&o| o >= 0)
            .min()
    }

    /// Producers with an open transaction in this partition.
    pub fn ongoing(&self) -> impl Iterator<Item = &ProducerEntry> {
        self.producers
            .values()
            .filter(|e| e.current_txn_first_offset >= 0)
    }

    /// Aborted transactions overlapping `[from, to)`.
    pub fn aborted_between(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        self.aborted
            .iter()
            .filter(|a| a.last_offset >= from && a.first_offset < to)
            .copied()
            .collect()
    }

    /// Forgets aborted transactions that ended before the log start (retention).
    pub fn truncate_aborted_before(&mut self, log_start_offset: i64) {
        self.aborted.retain(|a| a.last_offset >= log_start_offset);
    }

    /// Forgets aborted transactions whose abort marker (at one of `marker_offsets`) the
    /// cleaner removed: none of their records is left.
    pub fn remove_aborted(&mut self, marker_offsets: &[i64]) {
        let gone: std::collections::HashSet<i64> = marker_offsets.iter().copied().collect();
        self.aborted.retain(|a| !gone.contains(&a.last_offset));
    }

    /// Every aborted transaction, in marker order.
    pub fn aborted(&self) -> &[AbortedTxn] {
        &self.aborted
    }

    /// Forgets producers idle for `expiration_ms`; returns how many.
    pub fn remove_expired(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        // A producer with an open transaction is kept: its first offset holds the LSO.
        self.producers.retain(|_, e| {
            e.current_txn_first_offset >= 0
                || now_ms.saturating_sub(e.last_timestamp) < expiration_ms
        });
        before - self.producers.len()
    }

    pub fn producers(&self) -> impl Iterator<Item = &ProducerEntry> {
        self.producers.values()
    }

    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Serializes the state: version, CRC-32C of the rest, then the entries.
    pub fn to_snapshot(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(16 + self.producers.len() * 64);
        body.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        for e in self.producers.values() {
            body.extend_from_slice(&e.producer_id.to_be_bytes());
            body.extend_from_slice(&e.epoch.to_be_bytes());
            body.extend_from_slice(&e.last_timestamp.to_be_bytes());
            body.extend_from_slice(&e.current_txn_first_offset.to_be_bytes());
            body.extend_from_slice(&e.coordinator_epoch.to_be_bytes());
            body.push(e.batches.len() as u8);
            for b in &e.batches {
                body.extend_from_slice(&b.first_sequence.to_be_bytes());
                body.extend_from_slice(&b.last_sequence.to_be_bytes());
                body.extend_from_slice(&b.first_offset.to_be_bytes());
                body.extend_from_slice(&b.last_offset.to_be_bytes());
                body.extend_from_slice(&b.max_timestamp.to_be_bytes());
            }
        }
        body.extend_from_slice(&(self.aborted.len() as u32).to_be_bytes());
        for a in &self.aborted {
            body.extend_from_slice(&a.producer_id.to_be_bytes());
            body.extend_from_slice(&a.first_offset.to_be_bytes());
            body.extend_from_slice(&a.last_offset.to_be_bytes());
        }
        let mut out = Vec::with_capacity(body.len() + 6);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Parses a snapshot written by [`ProducerStateManager::to_snapshot`].
    pub fn from_snapshot(bytes: &[u8]) -> Result<Self, String> {
        let mut r = Reader { buf: bytes, at: 0 };
        let version = u16::from_be_bytes(r.take()?);
        // Version 2 has no coordinator epochs (a single node's, where they are all 0).
        if version != SNAPSHOT_VERSION && version != 2 {
            return Err(format!("unknown snapshot version {version}"));
        }
        let crc = u32::from_be_bytes(r.take()?);
        if crc32c::crc32c(&bytes[r.at..]) != crc {
            return Err("snapshot CRC mismatch".into());
        }
        let count = u32::from_be_bytes(r.take()?);
        let mut producers = BTreeMap::new();
        for _ in 0..count {
            let producer_id = i64::from_be_bytes(r.take()?);
            let epoch = i16::from_be_bytes(r.take()?);
            let last_timestamp = i64::from_be_bytes(r.take()?);
            let current_txn_first_offset = i64::from_be_bytes(r.take()?);
            let coordinator_epoch = if version >= 3 {
                i32::from_be_bytes(r.take()?)
            } else {
                -1
            };
            let [n] = r.take::<1>()?;
            let mut batches = VecDeque::with_capacity(usize::from(n).min(BATCHES_RETAINED));
            for _ in 0..n {
                batches.push_back(BatchMetadata {
                    first_sequence: i32::from_be_bytes(r.take()?),
                    last_sequence: i32::from_be_bytes(r.take()?),
                    first_offset: i64::from_be_bytes(r.take()?),
                    last_offset: i64::from_be_bytes(r.take()?),
                    max_timestamp: i64::from_be_bytes(r.take()?),
                });
            }
            producers.insert(
                producer_id,
                ProducerEntry {
                    producer_id,
                    epoch,
                    batches,
                    last_timestamp,
                    current_txn_first_offset,
                    coordinator_epoch,
                },
            );
        }
        let aborted_count = u32::from_be_bytes(r.take()?);
        let mut aborted = Vec::new();
        for _ in 0..aborted_count {
            aborted.push(AbortedTxn {
                producer_id: i64::from_be_bytes(r.take()?),
                first_offset: i64::from_be_bytes(r.take()?),
                last_offset: i64::from_be_bytes(r.take()?),
            });
        }
        if r.at != bytes.len() {
            return Err("trailing bytes after the snapshot".into());
        }
        Ok(Self { producers, aborted })
    }
}

fn check_one(entry: Option<&ProducerEntry>, h: &BatchHeader) -> Result<Verdict, SequenceError> {
    let Some(entry) = entry else {
        if h.base_sequence != 0 {
            return Err(SequenceError::UnknownProducerId {
                producer_id: h.producer_id,
                sequence: h.base_sequence,
            });
        }
        return Ok(Verdict::Append);
    };
    if entry.current_txn_first_offset >= 0 && !h.is_transactional() {
        // Kafka's "Expected transactional write from producer": a plain batch cannot join
        // (or slip past) an open transaction.
        return Err(SequenceError::InvalidTxnState {
            producer_id: h.producer_id,
        });
    }
    if h.producer_epoch < entry.epoch {
        return Err(SequenceError::InvalidProducerEpoch {
            producer_id: h.producer_id,
            epoch: h.producer_epoch,
            current: entry.epoch,
        });
    }
    if h.producer_epoch > entry.epoch {
        // A bumped epoch restarts the sequence.
        if h.base_sequence != 0 {
            return Err(SequenceError::OutOfOrderSequence {
                producer_id: h.producer_id,
                epoch: h.producer_epoch,
                last: NO_SEQUENCE,
                got: h.base_sequence,
            });
        }
        return Ok(Verdict::Append);
    }
    let last = last_sequence(h.base_sequence, h.last_offset_delta);
    if let Some(d) = entry.find_duplicate(h.base_sequence, last) {
        return Ok(Verdict::Duplicate(d));
    }
    let current = entry.last_sequence();
    // No batch yet at this epoch (a marker bumped it, KIP-890): sequences restart at 0.
    let in_order = if current == NO_SEQUENCE {
        h.base_sequence == 0
    } else {
        in_sequence(current, h.base_sequence)
    };
    if !in_order {
        return Err(SequenceError::OutOfOrderSequence {
            producer_id: h.producer_id,
            epoch: h.producer_epoch,
            last: current,
            got: h.base_sequence,
        });
    }
    Ok(Verdict::Append)
}

fn empty_entry(h: &BatchHeader) -> ProducerEntry {
    ProducerEntry {
        producer_id: h.producer_id,
        epoch: h.producer_epoch,
        batches: VecDeque::with_capacity(BATCHES_RETAINED),
        last_timestamp: -1,
        current_txn_first_offset: -1,
        coordinator_epoch: -1,
    }
}

/// A transactional batch opens the producer's transaction here, if none is open.
fn open_txn(entry: &mut ProducerEntry, h: &BatchHeader) {
    if h.is_transactional() && entry.current_txn_first_offset < 0 {
        entry.current_txn_first_offset = h.base_offset;
    }
}

fn push(entry: &mut ProducerEntry, h: &BatchHeader) {
    if h.producer_epoch != entry.epoch {
        entry.epoch = h.producer_epoch;
        entry.batches.clear();
    }
    if entry.batches.len() == BATCHES_RETAINED {
        entry.batches.pop_front();
    }
    entry.batches.push_back(BatchMetadata {
        first_sequence: h.base_sequence,
        last_sequence: last_sequence(h.base_sequence, h.last_offset_delta),
        first_offset: h.base_offset,
        last_offset: h.last_offset(),
        max_timestamp: h.max_timestamp,
    });
    entry.last_timestamp = entry.last_timestamp.max(h.max_timestamp);
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let end = self.at + N;
        let bytes = self
            .buf
            .get(self.at..end)
            .ok_or_else(|| "snapshot is truncated".to_string())?;
        self.at = end;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(pid: i64, epoch: i16, seq: i32, records: i32, offset: i64) -> BatchHeader {
        BatchHeader {
            base_offset: offset,
            batch_length: 100,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: records - 1,
            base_timestamp: 1000,
            max_timestamp: 1000,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            records_count: records,
        }
    }

    fn appended(m: &mut ProducerStateManager, h: BatchHeader) {
        assert_eq!(m.check(&[h]), Ok(Verdict::Append));
        m.apply(&h);
    }

    #[test]
    fn in_order_batches_are_appended() {
        let mut m = ProducerStateManager::default();
        appended(&mut m, batch(7, 0, 0, 3, 0));
        appended(&mut m, batch(7, 0, 3, 2, 3));
        assert_eq!(m.get(7).unwrap().last_sequence(), 4);
    }

    #[test]
    fn retried_batch_returns_original_offset() {
        let mut m = ProducerStateManager::default();
        for i in 0..5 {
            appended(&mut m, batch(7, 0, i * 2, 2, 100 + i64::from(i) * 2));
        }
        // Any of the last 5 batches, retried, is a duplicate with its first offsets.
        let v = m.check(&[batch(7, 0, 2, 2, -1)]).unwrap();
        let Verdict::Duplicate(d) = v else {
            panic!("{v:?}")
        };
        assert_eq!((d.first_offset, d.last_offset), (102, 103));
        // A sixth batch pushes the oldest out: its retry is now out of order.
        appended(&mut m, batch(7, 0, 10, 2, 110));
        assert!(matches!(
            m.check(&[batch(7, 0, 0, 2, -1)]),
            Err(SequenceError::OutOfOrderSequence { .. })
        ));
    }

    #[test]
    fn gap_is_out_of_order() {
        let mut m = ProducerStateManager::default();
        appended(&mut m, batch(7, 0, 0, 3, 0));
        assert_eq!(
            m.check(&[batch(7, 0, 5, 1, -1)]),
            Err(SequenceError::OutOfOrderSequence {
                producer_id: 7,
                epoch: 0,
                last: 2,
                got: 5
            })
        );
    }

    #[test]
    fn older_epoch_is_invalid_and_bumped_epoch_restarts_at_zero() {
        let mut m = ProducerStateManager::default();
        appended(&mut m, batch(7, 3, 0, 3, 0));
        assert!(matches!(
            m.check(&[batch(7, 2, 3, 1, -1)]),
            Err(SequenceError::InvalidProducerEpoch { current: 3, .. })
        ));
        assert!(matches!(
            m.check(&[batch(7, 4, 3, 1, -1)]),
            Err(SequenceError::OutOfOrderSequence { .. })
        ));
        appended(&mut m, batch(7, 4, 0, 1, 3));
        let e = m.get(7).unwrap();
        assert_eq!((e.epoch, e.batches.len()), (4, 1));
    }

    #[test]
    fn after_an_epoch_bumping_marker_sequences_restart_at_zero() {
        let mut m = ProducerStateManager::default();
        appended(&mut m, batch(7, 0, 0, 3, 0));
        m.apply_marker(7, 1, true, 0, 3, 1000);
        assert!(matches!(
            m.check(&[batch(7, 1, 3, 1, -1)]),
            Err(SequenceError::OutOfOrderSequence { .. })
        ));
        assert_eq!(m.check(&[batch(7, 1, 0, 1, -1)]), Ok(Verdict::Append));
    }

    #[test]
    fn markers_from_an_older_coordinator_are_fenced_and_the_epoch_survives_a_snapshot() {
        let mut m = ProducerStateManager::default();
        appended(&mut m, batch(7, 0, 0, 3, 0));
        assert_eq!(m.check_marker(7, 0, 2), Ok(()));
        m.apply_marker(7, 0, true, 2, 3, 1000);
        // A coordinator that lost its partition (epoch 1) may not end a later transaction.
        assert!(matches!(
            m.check_marker(7, 0, 1),
            Err(SequenceError::CoordinatorFenced {
                epoch: 1,
                current: 2,
                ..
            })
        ));
        assert_eq!(m.check_marker(7, 0, 2), Ok(()));
        assert_eq!(m.check_marker(7, 0, 3), Ok(()));
        // No coordinator epoch (a coordinator's own batch, an operator's abort): unchecked.
        assert_eq!(m.check_marker(7, 0, -1), Ok(()));
        // An older coordinator epoch never lowers the one kept.
        m.apply_marker(7, 0, false, -1, 4, 1001);
        let restored = ProducerStateManager::from_snapshot(&m.to_snapshot()).unwrap();
        assert_eq!(restored, m);
        assert_eq!(restored.get(7).unwrap().coordinator_epoch, 2);
    }

    #[test]
    fn a_version_2_snapshot_loads_without_coordinator_epochs() {
        let mut m = ProducerStateManager::default();
        appended(&mut m, batch(7, 0, 0, 3, 0));
        let v3 = m.to_snapshot();
        // Version 2: the same entries without the 4-byte coordinator epoch (after the
        // producer id, epoch, timestamp and open transaction offset), CRC recomputed.
        let body = &v3[6..];
        let entry_start = 4;
        let epoch_at = entry_start + 8 + 2 + 8 + 8;
        let mut body2 = body[..epoch_at].to_vec();
        body2.extend_from_slice(&body[epoch_at + 4..]);
        let mut v2 = 2u16.to_be_bytes().to_vec();
        v2.extend_from_slice(&crc32c::crc32c(&body2).to_be_bytes());
        v2.extend_from_slice(&body2);
        let loaded = ProducerStateManager::from_snapshot(&v2).unwrap();
        assert_eq!(loaded.get(7).unwrap().coordinator_epoch, -1);
        assert_eq!(loaded.get(7).unwrap().batches, m.get(7).unwrap().batches);
    }

    #[test]
    fn unknown_producer_must_start_at_zero() {
        let m = ProducerStateManager::default();
        assert_eq!(
            m.check(&[batch(9, 0, 17, 1, -1)]),
            Err(SequenceError::UnknownProducerId {
                producer_id: 9,
                sequence: 17
            })
        );
        assert_eq!(m.check(&[batch(9, 0, 0, 1, -1)]), Ok(Verdict::Append));
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        assert_eq!(last_sequence(i32::MAX - 1, 3), 1);
        let mut m = ProducerStateManager::default();
        appended(&mut m, batch(7, 0, 0, 1, 0));
        // Jump the state near the end of the range via a fresh epoch-0 history.
        m.producers
            .get_mut(&7)
            .unwrap()
            .batches
            .back_mut()
            .unwrap()
            .last_sequence = i32::MAX - 1;
        appended(&mut m, batch(7, 0, i32::MAX, 2, 1));
        assert_eq!(m.get(7).unwrap().last_sequence(), 0);
        appended(&mut m, batch(7, 0, 1, 1, 3));
    }

    #[test]
    fn batches_of_one_request_are_checked_together() {
        let m = ProducerStateManager::default();
        assert_eq!(
            m.check(&[batch(7, 0, 0, 2, 0), batch(7, 0, 2, 2, 2)]),
            Ok(Verdict::Append)
        );
        assert!(m
            .check(&[batch(7, 0, 0, 2, 0), batch(7, 0, 5, 2, 2)])
            .is_err());
    }

    #[test]
    fn expiry_forgets_idle_producers() {
        let mut m = ProducerStateManager::default();
        let mut old = batch(1, 0, 0, 1, 0);
        old.max_timestamp = 1_000;
        let mut recent = batch(2, 0, 0, 1, 1);
        recent.max_timestamp = 50_000;
        m.apply(&old);
        m.apply(&recent);
        assert_eq!(m.remove_expired(60_000, 20_000), 1);
        assert!(m.get(1).is_none() && m.get(2).is_some());
    }

    #[test]
    fn snapshot_round_trips_and_detects_corruption() {
        let mut m = ProducerStateManager::default();
        for pid in 0..20 {
            for i in 0..(pid % 8) {
                m.apply(&batch(
                    pid,
                    (pid % 3) as i16,
                    i as i32 * 4,
                    4,
                    pid * 100 + i * 4,
                ));
            }
        }
        let bytes = m.to_snapshot();
        assert_eq!(ProducerStateManager::from_snapshot(&bytes).unwrap(), m);
        let mut bad = bytes.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(ProducerStateManager::from_snapshot(&bad).is_err());
        assert!(ProducerStateManager::from_snapshot(&bytes[..bytes.len() - 3]).is_err());
    }
}
