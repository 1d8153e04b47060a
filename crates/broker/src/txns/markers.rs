//! Transaction markers: the coordinator's last step before Complete. Each partition of the
//! transaction gets a COMMIT or ABORT control batch from its leader: written here for the
//! partitions this broker leads (all of them on a single node), and asked of the other
//! leaders with WriteTxnMarkers, as Kafka's coordinator does.
//!
//! To ensure correctness: a marker counts once it is committed on its partition (below the
//! high watermark, under the leader epoch it was written in). Markers are retried until
//! every partition has one (a leader that moved is looked up again): the outcome was decided
//! by the durable Prepare record, so it must reach every partition. If this broker stops
//! coordinating the transaction meanwhile, it gives up; the new coordinator loads the
//! Prepare record and writes the markers again (a repeated marker is harmless: the second
//! finds no open transaction, or is refused as stale, and either way the partition is done).
//! Each marker carries the coordinator epoch (the leader epoch of the coordinator's
//! `__transaction_state` partition): a partition refuses markers from an older coordinator
//! than one it has seen for the producer (TRANSACTION_COORDINATOR_FENCED), so a coordinator
//! cut off from the cluster cannot end its successor's later transaction with a late marker.

use std::collections::BTreeMap;
use std::time::Duration;

use exacta_coordinator::txn::EndPlan;
use exacta_types::ErrorCode;
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{ProducerId, TopicName, WriteTxnMarkersRequest};
use kafka_protocol::protocol::StrBytes;

use super::TxnRuntime;
use crate::groups::{GroupRuntime, OFFSETS_TOPIC};
use crate::partitions::Broker;
use crate::serving::Serving;

/// One producer's marker: its producer epoch, the outcome, and the epoch of the coordinator
/// that decided it.
#[derive(Debug, Clone, Copy)]
pub struct Marker {
    pub producer_id: i64,
    pub epoch: i16,
    pub commit: bool,
    pub coordinator_epoch: i32,
}

/// The longest pause between two rounds of markers still to deliver.
const RETRY_MAX: Duration = Duration::from_secs(1);

impl TxnRuntime {
    /// Writes PLAN's marker in every partition of its transaction and waits until each is
    /// committed (see the module docs).
    pub(super) async fn write_markers(&self, plan: &EndPlan) -> Result<(), ErrorCode> {
        let coordinator_epoch = self.coordinator_epoch(&plan.transactional_id)?;
        let mut pending: Vec<(String, i32)> = plan.partitions.clone();
        let mut pause = Duration::from_millis(20);
        loop {
            let mut by_leader: BTreeMap<i32, Vec<(String, i32)>> = BTreeMap::new();
            for (topic, index) in pending.drain(..) {
                let leader = match &self.cluster {
                    None => self.broker.config.node_id,
                    Some(c) => match c.leader_of(&topic, index) {
                        Some(l) => l,
                        None => {
                            tracing::warn!(topic = %topic, partition = index, "transaction partition no longer exists; skipping its marker");
                            continue;
                        }
                    },
                };
                by_leader.entry(leader).or_default().push((topic, index));
            }
            for (leader, partitions) in by_leader {
                let left = match &self.cluster {
                    Some(c) if leader != c.me => {
                        self.remote(c, leader, plan, coordinator_epoch, partitions)
                            .await?
                    }
                    _ => self.local(plan, coordinator_epoch, partitions).await?,
                };
                pending.extend(left);
            }
            if pending.is_empty() {
                return Ok(());
            }
            if self.with_id(&plan.transactional_id, |_| ()).is_err() {
                tracing::info!(transactional_id = %plan.transactional_id, "no longer the coordinator; its successor writes the remaining markers");
                return Err(ErrorCode::NotCoordinator);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(RETRY_MAX);
        }
    }

    /// Markers on partitions this broker leads; returns those to try again. An error that
    /// no retry can fix ends the transaction's completion here.
    async fn local(
        &self,
        plan: &EndPlan,
        coordinator_epoch: i32,
        partitions: Vec<(String, i32)>,
    ) -> Result<Vec<(String, i32)>, ErrorCode> {
        let mut again = Vec::new();
        for (topic, index) in partitions {
            let marker = Marker {
                producer_id: plan.producer_id,
                epoch: plan.epoch,
                commit: plan.commit,
                coordinator_epoch,
            };
            let code = write_local(&self.broker, &self.groups, &topic, index, marker).await;
            match code {
                ErrorCode::None => {}
                ErrorCode::NotLeaderOrFollower if self.cluster.is_some() => {
                    again.push((topic, index))
                }
                code => {
                    tracing::error!(topic = %topic, partition = index, error = %code, "writing a transaction marker failed");
                    return Err(code);
                }
            }
        }
        Ok(again)
    }

    /// WriteTxnMarkers to LEADER for PARTITIONS; returns those to try again, or
    /// NOT_COORDINATOR when a partition knows a newer coordinator.
    async fn remote(
        &self,
        cluster: &crate::cluster::ClusterRuntime,
        leader: i32,
        plan: &EndPlan,
        coordinator_epoch: i32,
        partitions: Vec<(String, i32)>,
    ) -> Result<Vec<(String, i32)>, ErrorCode> {
        let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (topic, index) in &partitions {
            topics.entry(topic).or_default().push(*index);
        }
        let marker = WritableTxnMarker::default()
            .with_producer_id(ProducerId(plan.producer_id))
            .with_producer_epoch(plan.epoch)
            .with_transaction_result(plan.commit)
            .with_coordinator_epoch(coordinator_epoch)
            .with_topics(
                topics
                    .into_iter()
                    .map(|(name, indexes)| {
                        WritableTxnMarkerTopic::default()
                            .with_name(TopicName(StrBytes::from_string(name.to_string())))
                            .with_partition_indexes(indexes)
                    })
                    .collect(),
            );
        let request = WriteTxnMarkersRequest::default().with_markers(vec![marker]);
        let response = match cluster.call(leader, &request).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(leader, error = %e, "transaction markers not delivered yet");
                return Ok(partitions);
            }
        };
        let mut again = Vec::new();
        for result in response.markers {
            for topic in result.topics {
                for p in topic.partitions {
                    match ErrorCode::from_code(p.error_code) {
                        Some(ErrorCode::None) => {}
                        Some(ErrorCode::TransactionCoordinatorFenced) => {
                            tracing::info!(leader, transactional_id = %plan.transactional_id, "a newer coordinator wrote this producer's markers; stopping");
                            return Err(ErrorCode::NotCoordinator);
                        }
                        code => {
                            tracing::debug!(leader, topic = %topic.name.as_str(), partition = p.partition_index, error = ?code, "transaction marker not written yet");
                            again.push((topic.name.to_string(), p.partition_index));
                        }
                    }
                }
            }
        }
        Ok(again)
    }

    /// The coordinator epoch markers for TRANSACTIONAL_ID carry: its shard's leader epoch
    /// (0 on a single node).
    fn coordinator_epoch(&self, transactional_id: &str) -> Result<i32, ErrorCode> {
        match self.lock(self.shard_of(transactional_id)).serving {
            Serving::Leader(epoch) => Ok(epoch),
            _ => Err(ErrorCode::NotCoordinator),
        }
    }
}

/// Writes one marker on a partition this broker leads and waits until it is committed; the
/// group coordinator then applies or drops the producer's offsets when the partition is
/// `__consumer_offsets`. NONE also when there is nothing to do: the partition is gone, or a
/// marker with a newer epoch already ended this producer's transaction there.
pub async fn write_local(
    broker: &Broker,
    groups: &GroupRuntime,
    topic: &str,
    index: i32,
    marker: Marker,
) -> ErrorCode {
    let Marker {
        producer_id,
        epoch,
        commit,
        coordinator_epoch,
    } = marker;
    let Some(partition) = broker.partition(topic, index) else {
        tracing::warn!(
            topic,
            partition = index,
            "transaction partition no longer exists; skipping its marker"
        );
        return ErrorCode::None;
    };
    let written = partition.append_marker(producer_id, epoch, commit, coordinator_epoch);
    let (offset, leader_epoch) = match written {
        Ok(written) => written,
        Err(e) if e.code == ErrorCode::InvalidProducerEpoch => {
            tracing::warn!(topic, partition = index, error = %e.message, "skipping a stale transaction marker");
            return ErrorCode::None;
        }
        Err(e) => return e.code,
    };
    if !partition.committed_at(offset, leader_epoch).await {
        return ErrorCode::NotLeaderOrFollower;
    }
    if topic == OFFSETS_TOPIC {
        groups.end_txn(producer_id, commit);
    }
    ErrorCode::None
}
