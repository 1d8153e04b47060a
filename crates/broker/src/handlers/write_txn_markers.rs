//! WriteTxnMarkers (v1): the coordinator's request to partition leaders (in a cluster, for
//! the partitions another broker leads, see `txns::markers`), and admin tools' abort of a
//! hanging transaction (`exacta txn abort`, `kafka-transactions.sh abort`).
//!
//! An abort for a producer whose transaction the coordinator knows as open is carried out
//! by the coordinator, as a timeout would be: an epoch bump fences the producer and every
//! partition of the transaction gets its marker, so nothing is torn. Otherwise (a
//! transaction the coordinator does not know, the hanging kind) the marker is written to
//! the named partitions directly, as Kafka does.

use std::sync::Arc;

use exacta_types::ErrorCode;
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};

use crate::txns::markers::Marker;
use crate::Node;

/// The newest coordinator epoch any coordinator can have now: the highest leader epoch of a
/// `__transaction_state` partition in a cluster, 0 on a single node. A marker claiming a
/// newer one is refused: the partition would keep it and fence every real coordinator's
/// later markers for that producer.
fn newest_coordinator_epoch(node: &Node) -> i32 {
    match &node.cluster {
        None => 0,
        Some(cluster) => cluster
            .metadata()
            .topics
            .get(crate::txns::TXN_TOPIC)
            .and_then(|t| t.partitions.iter().map(|p| p.leader_epoch).max())
            .unwrap_or(-1),
    }
}

pub async fn handle(node: &Arc<Node>, request: WriteTxnMarkersRequest) -> WriteTxnMarkersResponse {
    let mut response = WriteTxnMarkersResponse::default();
    let newest = newest_coordinator_epoch(node);
    for marker in request.markers {
        let producer_id = marker.producer_id.0;
        if marker.coordinator_epoch > newest {
            tracing::warn!(
                producer_id,
                coordinator_epoch = marker.coordinator_epoch,
                newest,
                "refusing a transaction marker from a coordinator epoch no coordinator has"
            );
            response.markers.push(
                WritableTxnMarkerResult::default()
                    .with_producer_id(marker.producer_id)
                    .with_topics(
                        marker
                            .topics
                            .into_iter()
                            .map(|t| {
                                WritableTxnMarkerTopicResult::default()
                                    .with_partitions(
                                        t.partition_indexes
                                            .iter()
                                            .map(|&i| {
                                                WritableTxnMarkerPartitionResult::default()
                                                    .with_partition_index(i)
                                                    .with_error_code(
                                                        ErrorCode::InvalidRequest.code(),
                                                    )
                                            })
                                            .collect(),
                                    )
                                    .with_name(t.name)
                            })
                            .collect(),
                    ),
            );
            continue;
        }
        let by_coordinator = if marker.transaction_result {
            None
        } else {
            node.txns.abort_producer(producer_id).await
        };
        let mut result = WritableTxnMarkerResult::default().with_producer_id(marker.producer_id);
        for topic in marker.topics {
            let mut partitions = Vec::new();
            for index in topic.partition_indexes {
                let code = match &by_coordinator {
                    Some(Ok(())) => ErrorCode::None,
                    Some(Err(code)) => *code,
                    None => {
                        let written = Marker {
                            producer_id,
                            epoch: marker.producer_epoch,
                            commit: marker.transaction_result,
                            coordinator_epoch: marker.coordinator_epoch,
                        };
                        write_marker(node, topic.name.as_str(), index, written).await
                    }
                };
                partitions.push(
                    WritableTxnMarkerPartitionResult::default()
                        .with_partition_index(index)
                        .with_error_code(code.code()),
                );
            }
            result.topics.push(
                WritableTxnMarkerTopicResult::default()
                    .with_name(topic.name)
                    .with_partitions(partitions),
            );
        }
        response.markers.push(result);
    }
    response
}

async fn write_marker(node: &Node, topic: &str, index: i32, marker: Marker) -> ErrorCode {
    if node.broker.partition(topic, index).is_none() {
        return ErrorCode::UnknownTopicOrPartition;
    }
    let code =
        crate::txns::markers::write_local(&node.broker, &node.groups, topic, index, marker).await;
    if code == ErrorCode::None {
        tracing::debug!(
            topic,
            partition = index,
            ?marker,
            "transaction marker written on request"
        );
    }
    code
}
