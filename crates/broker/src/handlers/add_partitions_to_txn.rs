//! AddPartitionsToTxn (key 24). Client versions v0-v3 add partitions to the producer's
//! open transaction (starting it). Unknown partitions fail the whole request, as Kafka
//! does: UNKNOWN_TOPIC_OR_PARTITION for them, OPERATION_NOT_ATTEMPTED for the rest.
//!
//! v4-v5 (KIP-890) is the batched form partition leaders send to the coordinator: several
//! transactional ids per request, each either added (a leader's first write of a
//! transaction with protocol v2, which starts or joins it as Produce v12 does on a single
//! node) or, with `verify_only`, only checked (NONE when the partition is in the open
//! transaction, TRANSACTION_ABORTABLE when not), without writing anything. Partitions of
//! internal topics may be named there (a group coordinator checking transactional
//! offsets).

use exacta_types::ErrorCode;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse};

use crate::Node;

/// AddPartitionsToTxn v2 is the first to know PRODUCER_FENCED (KIP-588).
const PRODUCER_FENCED_MIN_VERSION: i16 = 2;

/// v4 is the batched broker-to-coordinator form (KIP-890).
const BATCHED_MIN_VERSION: i16 = 4;

pub async fn handle(
    node: &Node,
    request: AddPartitionsToTxnRequest,
    version: i16,
) -> AddPartitionsToTxnResponse {
    let mut response = AddPartitionsToTxnResponse::default();
    if version < BATCHED_MIN_VERSION {
        let codes = add(
            node,
            &request.v3_and_below_transactional_id,
            request.v3_and_below_producer_id.0,
            request.v3_and_below_producer_epoch,
            &request.v3_and_below_topics,
            Mode::Add,
        )
        .await;
        response.results_by_topic_v3_and_below = results(
            &request.v3_and_below_topics,
            codes
                .into_iter()
                .map(|c| c.fenced_for(version, PRODUCER_FENCED_MIN_VERSION)),
        );
        return response;
    }
    for txn in &request.transactions {
        let codes = add(
            node,
            &txn.transactional_id,
            txn.producer_id.0,
            txn.producer_epoch,
            &txn.topics,
            if txn.verify_only {
                Mode::Verify
            } else {
                Mode::AddImplicitly
            },
        )
        .await;
        response.results_by_transaction.push(
            AddPartitionsToTxnResult::default()
                .with_transactional_id(txn.transactional_id.clone())
                .with_topic_results(results(&txn.topics, codes.into_iter())),
        );
    }
    response
}

/// What a request asks for its partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A client's AddPartitionsToTxn (v0-v3).
    Add,
    /// A partition leader's first write with protocol v2 (v4+).
    AddImplicitly,
    /// A partition leader's check (v4+ `verify_only`).
    Verify,
}

/// One transaction's partitions: added (or only verified); one code per partition, in
/// request order.
async fn add(
    node: &Node,
    transactional_id: &str,
    producer_id: i64,
    epoch: i16,
    topics: &[AddPartitionsToTxnTopic],
    mode: Mode,
) -> Vec<ErrorCode> {
    let wanted: Vec<(String, i32)> = topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.name.to_string(), *p)))
        .collect();
    if transactional_id.is_empty() {
        return vec![ErrorCode::InvalidRequest; wanted.len()];
    }
    let unknown: Vec<bool> = wanted
        .iter()
        .map(|(t, p)| {
            node.broker.partition(t, *p).is_none()
                || (mode == Mode::Add && exacta_types::is_internal_topic(t))
        })
        .collect();
    if unknown.iter().any(|u| *u) {
        return unknown
            .iter()
            .map(|u| {
                if *u {
                    ErrorCode::UnknownTopicOrPartition
                } else {
                    ErrorCode::OperationNotAttempted
                }
            })
            .collect();
    }
    let result = match mode {
        Mode::Verify => node
            .txns
            .verify_partitions(transactional_id, producer_id, epoch, &wanted),
        Mode::Add => node
            .txns
            .add_partitions(transactional_id, producer_id, epoch, &wanted)
            .await
            .map(|()| vec![ErrorCode::None; wanted.len()]),
        Mode::AddImplicitly => {
            let mut codes = Vec::new();
            for p in &wanted {
                let added = node
                    .txns
                    .add_implicitly(transactional_id, producer_id, epoch, p)
                    .await;
                codes.push(added.err().unwrap_or(ErrorCode::None));
            }
            Ok(codes)
        }
    };
    result.unwrap_or_else(|e| vec![e; wanted.len()])
}

fn results(
    topics: &[AddPartitionsToTxnTopic],
    mut codes: impl Iterator<Item = ErrorCode>,
) -> Vec<AddPartitionsToTxnTopicResult> {
    topics
        .iter()
        .map(|topic| {
            AddPartitionsToTxnTopicResult::default()
                .with_name(topic.name.clone())
                .with_results_by_partition(
                    topic
                        .partitions
                        .iter()
                        .map(|p| {
                            AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(*p)
                                .with_partition_error_code(
                                    codes.next().unwrap_or(ErrorCode::None).code(),
                                )
                        })
                        .collect(),
                )
        })
        .collect()
}
