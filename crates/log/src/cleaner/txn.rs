//! What the cleaner knows about transactions while it walks a log from its start (Kafka's
//! `CleanedTransactionMetadata`, KIP-98).
//!
//! Aborted transactions come from the partition's aborted list (producer, first offset,
//! marker offset). Walking forward, a transactional batch is *aborted* if its producer has
//! an aborted transaction that started at or before it and whose marker is still ahead;
//! such batches are always dropped. A marker may go only when no batch of its transaction
//! was met in this walk (they are all gone already); the caller then also waits for the
//! marker's delete horizon.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::producer_state::AbortedTxn;

#[derive(Debug, Default)]
pub struct CleanedTxns {
    /// Aborted transactions not yet reached, keyed by first offset.
    pending: BTreeMap<(i64, i64), AbortedTxn>,
    /// Producer → (its aborted transaction in progress, whether a batch of it was met).
    aborted: HashMap<i64, (AbortedTxn, bool)>,
    /// Producers with a committed (not aborted) transaction in progress whose batches
    /// were met.
    committed: HashSet<i64>,
}

impl CleanedTxns {
    pub fn new(aborted: &[AbortedTxn]) -> Self {
        Self {
            pending: aborted
                .iter()
                .map(|t| ((t.first_offset, t.producer_id), *t))
                .collect(),
            ..Self::default()
        }
    }

    fn reach(&mut self, offset: i64) {
        while let Some(entry) = self.pending.first_entry() {
            if entry.key().0 > offset {
                break;
            }
            let txn = entry.remove();
            // A producer has one transaction at a time: a newer one replaces an entry whose
            // marker was never met (it was removed by an earlier cleaning).
            match self.aborted.get(&txn.producer_id) {
                Some((old, _)) if old.last_offset >= txn.first_offset => {}
                _ => {
                    self.aborted.insert(txn.producer_id, (txn, false));
                }
            }
        }
    }

    /// The producer's aborted transaction in progress at `offset`, dropping one that
    /// ended before it.
    fn aborted_at(&mut self, producer_id: i64, offset: i64) -> Option<&mut (AbortedTxn, bool)> {
        if self
            .aborted
            .get(&producer_id)
            .is_some_and(|(t, _)| t.last_offset < offset)
        {
            self.aborted.remove(&producer_id);
        }
        self.aborted.get_mut(&producer_id)
    }

    /// A data batch was read; true if it belongs to an aborted transaction.
    pub fn on_batch(&mut self, producer_id: i64, transactional: bool, last_offset: i64) -> bool {
        self.reach(last_offset);
        if !transactional {
            return false;
        }
        match self.aborted_at(producer_id, last_offset) {
            Some((_, met)) => {
                *met = true;
                true
            }
            None => {
                self.committed.insert(producer_id);
                false
            }
        }
    }

    /// A marker was read (`commit`: its type; `None`: an already emptied control batch);
    /// true if its transaction has no batch left, so the marker itself may go.
    pub fn on_marker(&mut self, producer_id: i64, commit: Option<bool>, offset: i64) -> bool {
        self.reach(offset);
        match commit {
            None => true,
            Some(false) => {
                let met = matches!(self.aborted_at(producer_id, offset), Some((_, true)));
                self.aborted.remove(&producer_id);
                !met
            }
            Some(true) => !self.committed.remove(&producer_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aborted_batches_go_and_markers_wait_for_their_batches() {
        let aborted = [AbortedTxn {
            producer_id: 1,
            first_offset: 10,
            last_offset: 20,
        }];
        let mut t = CleanedTxns::new(&aborted);
        assert!(!t.on_batch(1, true, 5), "before the aborted transaction");
        assert!(!t.on_marker(1, Some(true), 6), "its commit had a batch");
        assert!(t.on_batch(1, true, 12));
        assert!(!t.on_batch(2, true, 13), "another producer's commit");
        assert!(!t.on_batch(3, false, 14), "not transactional");
        assert!(
            !t.on_marker(1, Some(false), 20),
            "abort marker with a batch met"
        );
        assert!(!t.on_marker(2, Some(true), 21));
        assert!(t.on_marker(2, Some(true), 22), "a commit with nothing left");
        assert!(
            t.on_marker(9, Some(false), 23),
            "an abort with nothing left"
        );
        assert!(t.on_marker(9, None, 24), "an emptied marker");
    }

    #[test]
    fn an_aborted_entry_whose_marker_is_gone_does_not_swallow_later_commits() {
        let aborted = [
            AbortedTxn {
                producer_id: 1,
                first_offset: 10,
                last_offset: 20,
            },
            AbortedTxn {
                producer_id: 1,
                first_offset: 40,
                last_offset: 50,
            },
        ];
        let mut t = CleanedTxns::new(&aborted);
        assert!(!t.on_batch(1, true, 30), "committed, after the first abort");
        assert!(t.on_batch(1, true, 45), "inside the second abort");
        assert!(!t.on_marker(1, Some(false), 50));
        assert!(!t.on_batch(1, true, 60));
    }
}
