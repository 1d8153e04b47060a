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

use std::sync::Arc;

use crate::groups::OFFSETS_TOPIC;
use crate::Node;

/// In a cluster the group coordinator (this broker) and the transaction coordinator may be
/// different brokers: the first offsets of a transaction are checked with the latter
/// (`txns::verify`), under a guard on the offsets partition.
async fn in_cluster(
    node: &Arc<Node>,
    request: &TxnOffsetCommitRequest,
    version: i16,
    member: Option<(i32, String, Option<String>)>,
    partitions: &[CommitPartition],
) -> Result<Vec<ErrorCode>, ErrorCode> {
    let (pid, epoch) = (request.producer_id.0, request.producer_epoch);
    let index = node.groups.partition_of(&request.group_id);
    let partition = node
        .broker
        .partition(OFFSETS_TOPIC, index)
        .ok_or(ErrorCode::CoordinatorNotAvailable)?;
    let guard = partition.begin_txn_write(pid, epoch);
    if guard.is_some() {
        let code = crate::txns::verify::check(
            node,
            &request.transactional_id,
            pid,
            epoch,
            OFFSETS_TOPIC,
            index,
            version >= V2_MIN_VERSION,
        )
        .await;
        match code {
            ErrorCode::None => {}
            ErrorCode::NotCoordinator
            | ErrorCode::CoordinatorNotAvailable
            | ErrorCode::CoordinatorLoadInProgress
            | ErrorCode::ConcurrentTransactions => {
                return Err(ErrorCode::CoordinatorLoadInProgress)
            }
            ErrorCode::TransactionAbortable => return Err(ErrorCode::InvalidTxnState),
            other => return Err(other),
        }
    }
    let check =
        |log: &exacta_log::PartitionLog| partition.txn_write_allowed(log, pid, epoch, guard);
    let (wait, codes) =
        node.groups
            .append_txn_offsets(&request.group_id, pid, epoch, member, partitions, check)?;
    if let Some((partition, last, leader_epoch)) = wait {
        if !partition.committed_at(last, leader_epoch).await {
            return Err(ErrorCode::NotCoordinator);
        }
    }
    Ok(codes)
}

/// TxnOffsetCommit v5+ is transaction protocol v2 (KIP-890): the group's offsets partition
/// joins the transaction implicitly.
pub const V2_MIN_VERSION: i16 = 5;

pub async fn handle(
    node: &Arc<Node>,
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
    let codes = if node.cluster.is_some() {
        in_cluster(node, &request, version, member, &partitions).await
    } else {
        // Checked and appended under the transaction coordinator's lock: the offsets
        // precede the transaction's marker or are refused.
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
                    |_| Ok(()),
                ))
            },
        );
        match appended {
            Err(e) => Err(e.code),
            Ok((Err(code), _)) => Err(code),
            Ok((Ok((wait, codes)), added)) => {
                if let Some((partition, last, _)) = wait {
                    partition.wait_for_high_watermark(last).await;
                }
                // A single node: the records cannot fail to commit.
                let _ = crate::txns::TxnRuntime::durable_records(added).await;
                Ok(codes)
            }
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
