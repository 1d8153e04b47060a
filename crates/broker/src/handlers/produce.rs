//! Produce (key 0): validate each batch (header, CRC, codec, size), append it as sent,
//! and answer per `acks`:
//! - `acks=0`: no response at all;
//! - `acks=1`: after the append (the batch is in the page cache);
//! - `acks=all` (-1): with `flush_policy = "always"`, after the group fsync that covers
//!   the batch; otherwise as acks=1. A batch not durable within `timeout_ms` is answered
//!   REQUEST_TIMED_OUT (it may still become durable: the producer will retry).

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use exacta_types::ErrorCode;
use exacta_wire::batch::validate_produced;
use kafka_protocol::messages::produce_request::PartitionProduceData;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use super::{message, Ctx, Reply};
use crate::config::FlushPolicy;
use crate::config::WriteGuarantee;
use crate::partitions::{ApiError, Partition};
use crate::Node;

pub fn handle(node: &Arc<Node>, request: ProduceRequest, ctx: Ctx) -> Reply {
    let broker = &node.broker;
    let acks = request.acks;
    let mut response = ProduceResponse::default();
    // (topic index, partition index, partition, last offset) of appends to wait for.
    let mut waits: Vec<(usize, usize, Arc<Partition>, i64)> = Vec::new();
    // Transaction records of partitions that joined a transaction implicitly (Produce
    // v12): durable before any answer, whatever the acks.
    let mut txn_records: Vec<crate::txns::Durable> = Vec::new();
    for (ti, topic) in request.topic_data.into_iter().enumerate() {
        let mut topic_response = TopicProduceResponse::default().with_name(topic.name.clone());
        for (pi, data) in topic.partition_data.into_iter().enumerate() {
            let index = data.index;
            let result = if matches!(acks, -1..=1) {
                append(node, &topic.name, data, ctx.version, &mut txn_records)
            } else {
                Err(ApiError::new(
                    ErrorCode::InvalidRequiredAcks,
                    format!("acks must be -1, 0 or 1, got {acks}"),
                ))
            };
            let mut pr = PartitionProduceResponse::default()
                .with_index(index)
                .with_log_append_time_ms(-1);
            match result {
                Ok((partition, info)) => {
                    pr.base_offset = info.base_offset;
                    pr.log_start_offset = info.log_start_offset;
                    waits.push((ti, pi, partition, info.last_offset));
                }
                Err(e) => {
                    tracing::debug!(topic = %topic.name.as_str(), partition = index, error = %e.message, "produce refused");
                    pr.error_code = e.code.code();
                    pr.error_message = message(e.message);
                    pr.base_offset = -1;
                    pr.log_start_offset = -1;
                }
            }
            topic_response.partition_responses.push(pr);
        }
        response.responses.push(topic_response);
    }
    if acks == 0 {
        return Box::pin(std::future::ready(Ok(None)));
    }
    if txn_records.is_empty()
        && (acks == 1 || broker.config.flush_policy != FlushPolicy::Always || waits.is_empty())
    {
        let reply = ctx.encode(&response);
        return Box::pin(std::future::ready(reply));
    }
    if acks == 1 || broker.config.flush_policy != FlushPolicy::Always {
        waits.clear();
    }
    let timeout = Duration::from_millis(request.timeout_ms.max(0) as u64);
    Box::pin(async move {
        crate::txns::TxnRuntime::durable_records(txn_records).await;
        let deadline = tokio::time::Instant::now() + timeout;
        for (ti, pi, partition, last_offset) in waits {
            let durable =
                tokio::time::timeout_at(deadline, partition.wait_for_high_watermark(last_offset))
                    .await;
            if durable.is_err() {
                let pr = &mut response.responses[ti].partition_responses[pi];
                pr.error_code = ErrorCode::RequestTimedOut.code();
                pr.error_message = message("the batch was not fsynced within the request timeout");
            }
        }
        ctx.encode(&response)
    })
}

/// Produce v12+ is transaction protocol v2 (KIP-890): a transactional batch adds its
/// partition to the producer's transaction implicitly.
pub const V2_MIN_VERSION: i16 = 12;

fn append(
    node: &Node,
    topic: &str,
    data: PartitionProduceData,
    version: i16,
    txn_records: &mut Vec<crate::txns::Durable>,
) -> Result<(Arc<Partition>, exacta_log::AppendInfo), ApiError> {
    let broker = &node.broker;
    if exacta_types::is_internal_topic(topic) {
        return Err(ApiError::new(
            ErrorCode::InvalidTopicException,
            format!("cannot append to internal topic {topic}"),
        ));
    }
    let partition = broker.partition(topic, data.index).ok_or_else(|| {
        ApiError::new(
            ErrorCode::UnknownTopicOrPartition,
            format!("unknown topic or partition {topic}-{}", data.index),
        )
    })?;
    let records = data.records.unwrap_or_default();
    validate(
        &records,
        partition.max_message_bytes(),
        partition.write_guarantee(),
        topic,
    )?;
    let mut buf = BytesMut::from(&records[..]);
    let first = exacta_wire::batch::BatchHeader::parse_header(&records)
        .map_err(|e| ApiError::new(e.error_code(), e.to_string()))?;
    let info = if first.is_transactional() {
        // Only into an open transaction that contains this partition, checked and
        // appended atomically with respect to the transaction's end.
        let (info, added) = node
            .txns
            .verified(
                first.producer_id,
                first.producer_epoch,
                topic,
                data.index,
                version >= V2_MIN_VERSION,
                || partition.append(&mut buf),
            )
            .map_err(|mut e| {
                // Produce answers a fenced producer INVALID_PRODUCER_EPOCH at every version,
                // as Kafka does (KAFKA-10687).
                e.code = e.code.fenced_for(version, i16::MAX);
                e
            })?;
        txn_records.extend(added);
        info
    } else {
        partition.append(&mut buf)?
    };
    Ok((partition, info))
}

/// Checks every batch in a partition's records: whole, valid, within the size limit, and
/// from a producer the topic's `exacta.write.guarantee` admits.
fn validate(
    records: &Bytes,
    max_message_bytes: i64,
    guarantee: WriteGuarantee,
    topic: &str,
) -> Result<(), ApiError> {
    if records.is_empty() {
        return Err(ApiError::new(
            ErrorCode::CorruptMessage,
            "no record batch in the request",
        ));
    }
    let mut position = 0;
    while position < records.len() {
        let header = validate_produced(&records[position..])
            .map_err(|e| ApiError::new(e.error_code(), e.to_string()))?;
        if header.size() as i64 > max_message_bytes {
            return Err(ApiError::new(
                ErrorCode::MessageTooLarge,
                format!(
                    "batch of {} bytes exceeds max.message.bytes {max_message_bytes}",
                    header.size()
                ),
            ));
        }
        let refused = match guarantee {
            WriteGuarantee::None => None,
            WriteGuarantee::Idempotent if header.producer_id < 0 => {
                Some("idempotent or transactional producers (set enable.idempotence=true)")
            }
            WriteGuarantee::Transactional if !header.is_transactional() => {
                Some("transactional producers (set transactional.id)")
            }
            _ => None,
        };
        if let Some(who) = refused {
            return Err(ApiError::new(
                ErrorCode::PolicyViolation,
                format!(
                    "topic {topic} accepts writes only from {who}: exacta.write.guarantee={}",
                    guarantee.name()
                ),
            ));
        }
        position += header.size();
    }
    Ok(())
}
