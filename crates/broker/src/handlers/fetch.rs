//! Fetch (key 1): whole batches below the high watermark, long-polling until `min_bytes`
//! are available or `max_wait_ms` passes. `max_bytes` (at most the broker's
//! `fetch_bytes_max`) and `partition_max_bytes` bound the answer, except that the first
//! batch of the first non-empty partition is returned even if larger (KIP-74), so a
//! consumer can always make progress.
//!
//! Fetch sessions (KIP-227) are not kept: every answer has session id 0, which tells the
//! client to send full fetch requests. Topics are named (v4-v12) or identified (v13+).
//! In a cluster only the partition's leader answers, at the client's current leader
//! epoch (KIP-320); a follower's fetch (a replica id) is `replica_fetch`'s.

use std::sync::Arc;
use std::time::Duration;

use exacta_types::ErrorCode;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ProducerId};

use super::{Ctx, Reply};
use crate::partitions::{ApiError, Broker, Topic};

const READ_COMMITTED: i8 = 1;

pub fn handle(broker: &Arc<Broker>, request: FetchRequest, ctx: Ctx) -> Reply {
    let replica = if ctx.version >= 15 {
        request.replica_state.replica_id.0
    } else {
        request.replica_id.0
    };
    if replica >= 0 {
        return super::replica_fetch::handle(broker, request, replica, ctx);
    }
    let broker = Arc::clone(broker);
    Box::pin(async move {
        let wait = Duration::from_millis(request.max_wait_ms.max(0) as u64);
        let deadline = tokio::time::Instant::now() + wait;
        let min_bytes = request.min_bytes.max(0) as usize;
        let mut arrivals = broker.subscribe_arrivals();
        loop {
            arrivals.borrow_and_update();
            let (response, bytes, has_error) =
                crate::blocking(|| build(&broker, &request, ctx.version));
            if bytes >= min_bytes.max(1) || has_error || tokio::time::Instant::now() >= deadline {
                return ctx.encode(&response);
            }
            if tokio::time::timeout_at(deadline, arrivals.changed())
                .await
                .is_err()
            {
                let (response, _, _) = crate::blocking(|| build(&broker, &request, ctx.version));
                return ctx.encode(&response);
            }
        }
    })
}

/// One pass over the requested partitions: the response, its record bytes, and whether
/// any partition had an error (which ends the long poll at once, as in Kafka).
fn build(broker: &Broker, request: &FetchRequest, version: i16) -> (FetchResponse, usize, bool) {
    // The broker's `fetch_bytes_max` bounds every answer, whatever the client asks for.
    let mut remaining = request.max_bytes.clamp(0, broker.config.fetch_bytes_max) as usize;
    let mut total = 0usize;
    let mut has_error = false;
    let mut response = FetchResponse::default();
    for topic in &request.topics {
        let (found, mut topic_response) = lookup(broker, topic, version);
        for p in &topic.partitions {
            let mut data = PartitionData::default()
                .with_partition_index(p.partition)
                .with_high_watermark(-1)
                .with_last_stable_offset(-1)
                .with_log_start_offset(-1)
                .with_aborted_transactions(
                    (request.isolation_level == READ_COMMITTED).then(Vec::new),
                );
            let partition = found.as_ref().and_then(|t| {
                usize::try_from(p.partition)
                    .ok()
                    .and_then(|i| t.partitions.get(i))
            });
            let Some(partition) = partition else {
                data.error_code = if version >= 13 && found.is_none() {
                    ErrorCode::UnknownTopicId.code()
                } else {
                    ErrorCode::UnknownTopicOrPartition.code()
                };
                has_error = true;
                topic_response.partitions.push(data);
                continue;
            };
            let limit = (p.partition_max_bytes.max(0) as usize).min(remaining);
            let committed = request.isolation_level == READ_COMMITTED;
            // Out of response budget: report the offsets, no records.
            let budget = if limit == 0 && total > 0 {
                0
            } else {
                limit.max(1)
            };
            let read = partition
                .check_leader(p.current_leader_epoch)
                .and_then(|_| partition.read_isolated(p.fetch_offset, budget, committed));
            match read {
                Ok(read) => {
                    data.high_watermark = read.high_watermark;
                    data.last_stable_offset = read.last_stable_offset;
                    data.log_start_offset = read.result.log_start_offset;
                    let len = read.result.records.len();
                    // Only the first non-empty partition may exceed its limit.
                    if budget > 0 && len > 0 && (total == 0 || len <= limit) {
                        total += len;
                        remaining = remaining.saturating_sub(len);
                        data.records = Some(read.result.records);
                        data.aborted_transactions = read.aborted.map(|list| {
                            list.into_iter()
                                .map(|a| {
                                    AbortedTransaction::default()
                                        .with_producer_id(ProducerId(a.producer_id))
                                        .with_first_offset(a.first_offset)
                                })
                                .collect()
                        });
                    }
                }
                Err(ApiError { code, message }) => {
                    tracing::debug!(topic = %partition.topic, partition = p.partition, %message, "fetch error");
                    data.error_code = code.code();
                    data.high_watermark = partition.high_watermark();
                    data.last_stable_offset = partition.last_stable_offset();
                    data.log_start_offset = partition.log_start_offset();
                    has_error = true;
                }
            }
            topic_response.partitions.push(data);
        }
        response.responses.push(topic_response);
    }
    (response, total, has_error)
}

/// A fetched topic by name (v4-v12) or id (v13+), and its answer with that name or id.
pub(crate) fn lookup(
    broker: &Broker,
    topic: &kafka_protocol::messages::fetch_request::FetchTopic,
    version: i16,
) -> (Option<Arc<Topic>>, FetchableTopicResponse) {
    let mut answer = FetchableTopicResponse::default();
    if version >= 13 {
        answer.topic_id = topic.topic_id;
        (broker.topic_by_id(topic.topic_id), answer)
    } else {
        answer.topic = topic.topic.clone();
        (broker.topic(&topic.topic), answer)
    }
}
