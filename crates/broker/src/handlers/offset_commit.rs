//! OffsetCommit (key 8): checked against the group's generation and member (Kafka's rules,
//! see `GroupCoordinator::commit_offsets`); answered once the offsets are durable.

use exacta_coordinator::group::{CommitPartition, Output};
use exacta_types::ErrorCode;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use crate::groups::GroupRuntime;
use crate::partitions::Broker;

pub async fn handle(
    broker: &Broker,
    groups: &GroupRuntime,
    request: OffsetCommitRequest,
    version: i16,
) -> OffsetCommitResponse {
    // Unknown topics or partitions are refused per partition, as Kafka does.
    let mut partitions = Vec::new();
    let mut unknown = Vec::new();
    for topic in &request.topics {
        for p in &topic.partitions {
            if broker.partition(&topic.name, p.partition_index).is_none() {
                unknown.push((topic.name.to_string(), p.partition_index));
                continue;
            }
            partitions.push(CommitPartition {
                topic: topic.name.to_string(),
                partition: p.partition_index,
                offset: p.committed_offset,
                leader_epoch: p.committed_leader_epoch,
                metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
            });
        }
    }
    let mut verdict = Err(ErrorCode::UnknownServerError);
    let written = groups
        .run(&request.group_id, |c, now| {
            verdict = c.commit_offsets(
                &request.group_id,
                request.generation_id_or_member_epoch,
                &request.member_id,
                request.group_instance_id.as_deref(),
                &partitions,
                version,
                now,
            );
            let records = match &verdict {
                Ok(results) => results.iter().filter_map(|(_, r)| r.clone()).collect(),
                Err(_) => Vec::new(),
            };
            Output {
                records,
                replies: Vec::new(),
            }
        })
        .await;
    let codes: Vec<ErrorCode> = match (&written, &verdict) {
        (Err(e), _) => vec![e.code; partitions.len()],
        (Ok(()), Err(e)) => vec![*e; partitions.len()],
        (Ok(()), Ok(results)) => results.iter().map(|(e, _)| *e).collect(),
    };
    let mut response = OffsetCommitResponse::default();
    let mut codes = codes.into_iter();
    for topic in request.topics {
        let mut t = OffsetCommitResponseTopic::default().with_name(topic.name.clone());
        for p in topic.partitions {
            let code = if unknown.contains(&(topic.name.to_string(), p.partition_index)) {
                ErrorCode::UnknownTopicOrPartition
            } else {
                codes.next().unwrap_or(ErrorCode::UnknownServerError)
            };
            t.partitions.push(
                OffsetCommitResponsePartition::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(code.code()),
            );
        }
        response.topics.push(t);
    }
    response
}
