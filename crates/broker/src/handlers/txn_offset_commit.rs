//! TxnOffsetCommit (key 28): offsets committed inside a transaction. The group's offsets
//! partition must be in the transaction (AddOffsetsToTxn); with member information (v3,
//! KIP-447) the generation and member are checked; from v5 (KIP-890) the partition joins
//! the transaction implicitly. The offsets become visible only when the
//! commit marker reaches `__consumer_offsets`; an abort drops them.

use exacta_coordinator::group::CommitPartition;
use exacta_types::ErrorCode;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};

use crate::Node;

/// TxnOffsetCommit v5+ is transaction protocol v2 (KIP-890): the group's offsets partition
/// joins the transaction implicitly.
pub const V2_MIN_VERSION: i16 = 5;

pub async fn handle(
    node: &Node,
    request: TxnOffsetCommitRequest,
    version: i16,
) -> TxnOffsetCommitResponse {
    let partitions: Vec<CommitPartition> = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| CommitPartition {
                topic: t.name.to_string(),
                partition: p.partition_index,
                offset: p.committed_offset,
                leader_epoch: p.committed_leader_epoch,
                metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
            })
        })
        .collect();
    let (offsets_topic, offsets_partition) = node.txns.offsets_partition(&request.group_id);
    let member = (version >= 3).then(|| {
        (
            request.generation_id,
            request.member_id.to_string(),
            request.group_instance_id.as_ref().map(|i| i.to_string()),
        )
    });
    // Checked and appended under the transaction coordinator's lock: the offsets precede
    // the transaction's marker or are refused.
    let appended = node.txns.verified(
        request.producer_id.0,
        request.producer_epoch,
        &offsets_topic,
        offsets_partition,
        version >= V2_MIN_VERSION,
        || {
            Ok(node.groups.append_txn_offsets(
                &request.group_id,
                request.producer_id.0,
                request.producer_epoch,
                member,
                &partitions,
            ))
        },
    );
    let codes = match appended {
        Err(e) => Err(e.code),
        Ok((Err(code), _)) => Err(code),
        Ok((Ok((wait, codes)), added)) => {
            if let Some((partition, last)) = wait {
                partition.wait_for_high_watermark(last).await;
            }
            crate::txns::TxnRuntime::durable_records(added).await;
            Ok(codes)
        }
    };
    let codes = match codes {
        Ok(c) => c,
        Err(e) => vec![e; partitions.len()],
    };
    let mut codes = codes.into_iter();
    let mut response = TxnOffsetCommitResponse::default();
    for topic in request.topics {
        let mut t = TxnOffsetCommitResponseTopic::default().with_name(topic.name);
        for p in topic.partitions {
            t.partitions.push(
                TxnOffsetCommitResponsePartition::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(codes.next().unwrap_or(ErrorCode::None).code()),
            );
        }
        response.topics.push(t);
    }
    response
}
