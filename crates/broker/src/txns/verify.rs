//! In a cluster, a transactional write reaches a partition's leader, and the transaction's
//! coordinator may be another broker. Before the first write of a transaction to a
//! partition, the leader asks the coordinator (AddPartitionsToTxn v4+, as Kafka's
//! KIP-890 brokers do): with transaction protocol v2 (Produce v12+, TxnOffsetCommit v5+)
//! to add the partition to the transaction, before that only to confirm it is in it.
//!
//! To ensure correctness: the check and the append are not under one lock any more, so a
//! marker could land between them and the late write would open a transaction no
//! coordinator knows (a hanging transaction). The leader therefore sets a guard for the
//! producer before asking; a marker for the producer clears it (`Partition::append_marker`);
//! the append happens under the log lock only while the guard is still there. Once a batch
//! of the transaction is in the partition (its producer state shows the transaction open
//! at that epoch), later batches need no check: the coordinator has the partition and will
//! send it a marker, which they precede.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use exacta_types::ErrorCode;
use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, ProducerId, TopicName, TransactionalId};
use kafka_protocol::protocol::StrBytes;

use super::TXN_TOPIC;
use crate::partitions::{ApiError, Partition};
use crate::Node;

/// Tells guards apart (a guard set again after a marker is another one).
static NEXT_GUARD: AtomicU64 = AtomicU64::new(1);

/// A verification in flight: producer id, epoch and token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guard {
    pub producer_id: i64,
    pub epoch: i16,
    token: u64,
}

/// What the leader needs before appending a transactional batch.
pub enum TxnAppend<T> {
    /// Appended (the transaction was open here, or the guard held).
    Done(T),
    /// First write of the transaction here: ask the coordinator, then append again with
    /// this guard.
    Check(Guard),
}

impl Partition {
    pub(crate) fn txn_guards(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<i64, Guard>> {
        self.txn_guards.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether PRODUCER_ID's transaction at EPOCH has a batch in this log and no marker.
    fn txn_open(log: &exacta_log::PartitionLog, producer_id: i64, epoch: i16) -> bool {
        log.producer_state()
            .get(producer_id)
            .is_some_and(|p| p.epoch == epoch && p.current_txn_first_offset >= 0)
    }

    /// Appends PRODUCER_ID's transactional batches if its transaction at EPOCH is open in
    /// this partition or GUARD is still in place; else asks for a check (no guard given:
    /// one is set) or refuses (a marker ended the transaction since the check:
    /// INVALID_TXN_STATE). Returns the append and its leader epoch.
    pub fn append_in_txn(
        self: &Arc<Self>,
        batches: &mut [u8],
        producer_id: i64,
        epoch: i16,
        guard: Option<Guard>,
    ) -> Result<TxnAppend<(exacta_log::AppendInfo, i32)>, ApiError> {
        let appended = self.append_unless(batches, |log| {
            if Self::txn_open(log, producer_id, epoch) {
                return Ok(None);
            }
            let mut guards = self.txn_guards();
            match guard {
                Some(g) if guards.get(&producer_id) == Some(&g) => Ok(None),
                Some(_) => Err(ApiError::new(
                    ErrorCode::InvalidTxnState,
                    format!(
                        "producer {producer_id}'s transaction ended on {}-{} while its write was checked",
                        self.topic, self.index
                    ),
                )),
                None => {
                    let g = Guard {
                        producer_id,
                        epoch,
                        token: NEXT_GUARD.fetch_add(1, Ordering::Relaxed),
                    };
                    guards.insert(producer_id, g);
                    Ok(Some(g))
                }
            }
        })?;
        Ok(match appended {
            Ok(done) => {
                if let Some(g) = guard {
                    // The transaction is open here now: its producer state says so.
                    let mut guards = self.txn_guards();
                    if guards.get(&producer_id) == Some(&g) {
                        guards.remove(&producer_id);
                    }
                }
                TxnAppend::Done(done)
            }
            Err(g) => TxnAppend::Check(g),
        })
    }
}

impl Partition {
    /// Before a transactional write that is not [`Partition::append_in_txn`]'s (offsets
    /// a group coordinator writes): `None` when PRODUCER_ID's transaction at EPOCH is open
    /// here already, else the guard to check with the coordinator and then pass to
    /// [`Partition::txn_write_allowed`].
    pub fn begin_txn_write(&self, producer_id: i64, epoch: i16) -> Option<Guard> {
        let log = self.log();
        if Self::txn_open(&log, producer_id, epoch) {
            return None;
        }
        let g = Guard {
            producer_id,
            epoch,
            token: NEXT_GUARD.fetch_add(1, Ordering::Relaxed),
        };
        self.txn_guards().insert(producer_id, g);
        Some(g)
    }

    /// Under the log lock: whether the write checked with GUARD (if it needed one) may be
    /// appended now.
    pub fn txn_write_allowed(
        &self,
        log: &exacta_log::PartitionLog,
        producer_id: i64,
        epoch: i16,
        guard: Option<Guard>,
    ) -> Result<(), ApiError> {
        if Self::txn_open(log, producer_id, epoch)
            || guard.is_some_and(|g| self.txn_guards().get(&producer_id) == Some(&g))
        {
            return Ok(());
        }
        Err(ApiError::new(
            ErrorCode::InvalidTxnState,
            format!(
                "producer {producer_id}'s transaction ended on {}-{} while its write was checked",
                self.topic, self.index
            ),
        ))
    }
}

/// Asks the coordinator of TRANSACTIONAL_ID whether TOPIC-INDEX is in PRODUCER_ID's open
/// transaction at EPOCH, adding it first when IMPLICIT (protocol v2). NONE when it is.
pub async fn check(
    node: &Arc<Node>,
    transactional_id: &str,
    producer_id: i64,
    epoch: i16,
    topic: &str,
    index: i32,
    implicit: bool,
) -> ErrorCode {
    let Some(cluster) = &node.cluster else {
        return ErrorCode::InvalidRequest;
    };
    let shard = exacta_coordinator::group::partition_for(transactional_id, node.txns.partitions());
    let Some(coordinator) = cluster.leader_of(TXN_TOPIC, shard) else {
        return ErrorCode::CoordinatorNotAvailable;
    };
    let wanted = [(topic.to_string(), index)];
    if coordinator == cluster.me {
        let result = if implicit {
            node.txns
                .add_implicitly(transactional_id, producer_id, epoch, &wanted[0])
                .await
        } else {
            node.txns
                .verify_partitions(transactional_id, producer_id, epoch, &wanted)
                .map(|codes| codes[0])
                .and_then(|c| if c == ErrorCode::None { Ok(()) } else { Err(c) })
        };
        return result.err().unwrap_or(ErrorCode::None);
    }
    let request = AddPartitionsToTxnRequest::default().with_transactions(vec![
        AddPartitionsToTxnTransaction::default()
            .with_transactional_id(TransactionalId(StrBytes::from_string(
                transactional_id.to_string(),
            )))
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(epoch)
            .with_verify_only(!implicit)
            .with_topics(vec![AddPartitionsToTxnTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(vec![index])]),
    ]);
    match cluster.call(coordinator, &request).await {
        Err(e) => {
            tracing::debug!(coordinator, error = %e, "transaction check not answered");
            ErrorCode::CoordinatorNotAvailable
        }
        Ok(response) => {
            let code = response
                .results_by_transaction
                .iter()
                .flat_map(|t| &t.topic_results)
                .flat_map(|t| &t.results_by_partition)
                .map(|p| p.partition_error_code)
                .find(|&c| c != 0)
                .unwrap_or(response.error_code);
            ErrorCode::from_code(code).unwrap_or(ErrorCode::UnknownServerError)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BrokerConfig;
    use crate::partitions::Broker;

    fn batch(sequence: i32) -> Vec<u8> {
        exacta_wire::batch::build_transactional_batch(
            &[b"r".to_vec()],
            1_700_000_000_000,
            (7, 0, sequence),
        )
    }

    /// The race the guard closes: a marker lands between the coordinator's check and the
    /// append. The late write is refused and nothing is appended; a checked write whose
    /// guard held goes in, and later writes of its transaction need no check.
    #[test]
    fn a_write_checked_before_a_marker_is_refused_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::open(BrokerConfig {
            data_dir: dir.path().to_path_buf(),
            ..BrokerConfig::default()
        })
        .unwrap();
        let topic = broker
            .create_topic("t", 1, Default::default(), false)
            .unwrap();
        let p = Arc::clone(&topic.partitions[0]);
        let TxnAppend::Check(guard) = p.append_in_txn(&mut batch(0), 7, 0, None).unwrap() else {
            panic!("the first write of a transaction must be checked");
        };
        assert_eq!(p.log_end_offset(), 0, "nothing appended before the check");
        // The coordinator ends the transaction (it had timed out, say) before the append.
        p.append_marker(7, 0, false, 0).unwrap();
        let end = p.log_end_offset();
        let late = p.append_in_txn(&mut batch(0), 7, 0, Some(guard));
        assert_eq!(late.err().map(|e| e.code), Some(ErrorCode::InvalidTxnState));
        assert_eq!(p.log_end_offset(), end, "the late write was not appended");
        // The next transaction: checked, then appended while its guard holds.
        let TxnAppend::Check(guard) = p.append_in_txn(&mut batch(0), 7, 0, None).unwrap() else {
            panic!("a new transaction is checked again");
        };
        assert!(matches!(
            p.append_in_txn(&mut batch(0), 7, 0, Some(guard)).unwrap(),
            TxnAppend::Done(_)
        ));
        // Open here now: the next batch goes straight in, no check.
        assert!(matches!(
            p.append_in_txn(&mut batch(1), 7, 0, None).unwrap(),
            TxnAppend::Done(_)
        ));
        // A marker from an older coordinator than the last one is refused.
        p.append_marker(7, 0, true, 2).unwrap();
        let stale = p.append_marker(7, 0, true, 1);
        assert_eq!(
            stale.err().map(|e| e.code),
            Some(ErrorCode::TransactionCoordinatorFenced)
        );
    }
}
