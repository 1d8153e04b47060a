//! DescribeTopicPartitions (key 75, KIP-966): topic metadata a page at a time. Topics in
//! name order, at most `response_partition_limit` partitions per answer (capped at
//! [`PARTITION_LIMIT`], Kafka's `max.request.partition.size.limit`); `next_cursor` names the
//! first partition left out. As on Kafka: an empty topic list means every topic; a listed
//! topic that does not exist is UNKNOWN_TOPIC_OR_PARTITION (INVALID_TOPIC_EXCEPTION for an
//! invalid name); a cursor whose topic is not in the list, or with a negative partition,
//! makes the whole answer INVALID_REQUEST; a cursor on a deleted topic resumes at the next
//! topic by name.

use std::collections::BTreeSet;

use exacta_types::ErrorCode;
use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::partitions::Broker;

/// Partitions one answer carries at most.
pub const PARTITION_LIMIT: i32 = 2000;

fn topic_entry(name: &str, error: ErrorCode) -> DescribeTopicPartitionsResponseTopic {
    DescribeTopicPartitionsResponseTopic::default()
        .with_error_code(error.code())
        .with_name(Some(TopicName(StrBytes::from_string(name.to_string()))))
        .with_is_internal(exacta_types::is_internal_topic(name))
        .with_topic_authorized_operations(i32::MIN)
}

pub fn handle(
    broker: &Broker,
    request: DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    let mut response = DescribeTopicPartitionsResponse::default();
    let fetch_all = request.topics.is_empty();
    let (cursor_topic, cursor_partition) = request
        .cursor
        .as_ref()
        .map(|c| (c.topic_name.to_string(), c.partition_index))
        .unwrap_or_default();
    let names: BTreeSet<String> = if fetch_all {
        broker.topics().iter().map(|t| t.name.clone()).collect()
    } else {
        request.topics.iter().map(|t| t.name.to_string()).collect()
    };
    let names: Vec<String> = names.into_iter().filter(|n| *n >= cursor_topic).collect();
    let invalid = if request.cursor.is_some() && !fetch_all && !names.contains(&cursor_topic) {
        Some(format!(
            "DescribeTopicPartitionsRequest topic list should contain the cursor topic: {cursor_topic}"
        ))
    } else if request.cursor.is_some() && cursor_partition < 0 {
        Some(format!(
            "DescribeTopicPartitionsRequest cursor partition must be valid: {cursor_topic}-{cursor_partition}"
        ))
    } else {
        None
    };
    if let Some(why) = invalid {
        tracing::debug!(reason = %why, "DescribeTopicPartitions refused");
        response.topics = request
            .topics
            .iter()
            .map(|t| topic_entry(&t.name, ErrorCode::InvalidRequest))
            .collect();
        return response;
    }
    let node = BrokerId(broker.config.node_id);
    let mut remaining = request.response_partition_limit.clamp(1, PARTITION_LIMIT);
    for name in names {
        if remaining == 0 {
            response.next_cursor = Some(
                Cursor::default()
                    .with_topic_name(TopicName(StrBytes::from_string(name)))
                    .with_partition_index(0),
            );
            break;
        }
        let Some(topic) = broker.topic(&name) else {
            if !fetch_all {
                let error = if exacta_types::validate_topic_name(&name).is_ok() {
                    ErrorCode::UnknownTopicOrPartition
                } else {
                    ErrorCode::InvalidTopicException
                };
                response.topics.push(topic_entry(&name, error));
            }
            continue;
        };
        let start = if name == cursor_topic {
            cursor_partition
        } else {
            0
        };
        let count = topic.partitions.len() as i32;
        let end = count.min(start.saturating_add(remaining));
        let mut entry = topic_entry(&name, ErrorCode::None).with_topic_id(topic.id);
        entry.partitions = (start..end)
            .map(|p| {
                DescribeTopicPartitionsResponsePartition::default()
                    .with_partition_index(p)
                    .with_leader_id(node)
                    .with_leader_epoch(0)
                    .with_replica_nodes(vec![node])
                    .with_isr_nodes(vec![node])
                    .with_eligible_leader_replicas(Some(Vec::new()))
                    .with_last_known_elr(Some(Vec::new()))
            })
            .collect();
        remaining -= (end - start).max(0);
        response.topics.push(entry);
        if end < count {
            response.next_cursor = Some(
                Cursor::default()
                    .with_topic_name(TopicName(StrBytes::from_string(name)))
                    .with_partition_index(end),
            );
            break;
        }
    }
    response
}
