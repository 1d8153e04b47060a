//! AddPartitionsToTxn (key 24), client versions v0-v3: adds partitions to the producer's
//! open transaction (starting it). Unknown partitions fail the whole request, as Kafka
//! does: UNKNOWN_TOPIC_OR_PARTITION for them, OPERATION_NOT_ATTEMPTED for the rest.

use exacta_types::ErrorCode;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse};

use crate::Node;

/// AddPartitionsToTxn v2 is the first to know PRODUCER_FENCED (KIP-588).
const PRODUCER_FENCED_MIN_VERSION: i16 = 2;

pub async fn handle(
    node: &Node,
    request: AddPartitionsToTxnRequest,
    version: i16,
) -> AddPartitionsToTxnResponse {
    let topics = &request.v3_and_below_topics;
    let wanted: Vec<(String, i32)> = topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.name.to_string(), *p)))
        .collect();
    let unknown: Vec<bool> = wanted
        .iter()
        .map(|(t, p)| node.broker.partition(t, *p).is_none() || exacta_types::is_internal_topic(t))
        .collect();
    let codes: Vec<ErrorCode> = if unknown.iter().any(|u| *u) {
        unknown
            .iter()
            .map(|u| {
                if *u {
                    ErrorCode::UnknownTopicOrPartition
                } else {
                    ErrorCode::OperationNotAttempted
                }
            })
            .collect()
    } else {
        let result = node
            .txns
            .add_partitions(
                &request.v3_and_below_transactional_id,
                request.v3_and_below_producer_id.0,
                request.v3_and_below_producer_epoch,
                &wanted,
            )
            .await;
        let code = result.err().unwrap_or(ErrorCode::None);
        vec![code.fenced_for(version, PRODUCER_FENCED_MIN_VERSION); wanted.len()]
    };
    let mut codes = codes.into_iter();
    let mut response = AddPartitionsToTxnResponse::default();
    for topic in &request.v3_and_below_topics {
        let mut t = AddPartitionsToTxnTopicResult::default().with_name(topic.name.clone());
        for p in &topic.partitions {
            t.results_by_partition.push(
                AddPartitionsToTxnPartitionResult::default()
                    .with_partition_index(*p)
                    .with_partition_error_code(codes.next().unwrap_or(ErrorCode::None).code()),
            );
        }
        response.results_by_topic_v3_and_below.push(t);
    }
    response
}
