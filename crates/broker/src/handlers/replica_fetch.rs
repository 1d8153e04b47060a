//! Fetch from a follower (a replica id in the request): the leader records the follower's
//! fetch offset as its log end (which may move the high watermark, see `replication`) and
//! answers with what its log holds from there, up to its log end rather than the high
//! watermark, long-polling on appends until there are records or `max_wait_ms` passes.

use std::sync::Arc;
use std::time::Duration;

use exacta_types::ErrorCode;
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::{FetchRequest, FetchResponse};

use super::{Ctx, Reply};
use crate::partitions::{ApiError, Broker};

pub fn handle(broker: &Arc<Broker>, request: FetchRequest, replica: i32, ctx: Ctx) -> Reply {
    let broker = Arc::clone(broker);
    Box::pin(async move {
        let wait = Duration::from_millis(request.max_wait_ms.max(0) as u64);
        let deadline = tokio::time::Instant::now() + wait;
        let mut appends = broker.subscribe_appends();
        loop {
            appends.borrow_and_update();
            let (response, bytes) =
                crate::blocking(|| build(&broker, &request, replica, ctx.version));
            let expired = tokio::time::Instant::now() >= deadline;
            if bytes > 0 || expired {
                return ctx.encode(&response);
            }
            if tokio::time::timeout_at(deadline, appends.changed())
                .await
                .is_err()
            {
                return ctx.encode(&response);
            }
        }
    })
}

fn build(
    broker: &Broker,
    request: &FetchRequest,
    replica: i32,
    version: i16,
) -> (FetchResponse, usize) {
    let mut remaining = request.max_bytes.clamp(0, broker.config.fetch_bytes_max) as usize;
    let mut total = 0;
    let mut response = FetchResponse::default();
    for topic in &request.topics {
        let (found, mut topic_response) = super::fetch::lookup(broker, topic, version);
        for p in &topic.partitions {
            let mut data = PartitionData::default()
                .with_partition_index(p.partition)
                .with_high_watermark(-1)
                .with_last_stable_offset(-1)
                .with_log_start_offset(-1);
            let partition = found.as_ref().and_then(|t| {
                usize::try_from(p.partition)
                    .ok()
                    .and_then(|i| t.partitions.get(i))
            });
            let result = match partition {
                None => Err(ApiError::new(ErrorCode::UnknownTopicOrPartition, "")),
                Some(partition) => {
                    let limit = (p.partition_max_bytes.max(0) as usize)
                        .min(remaining)
                        .max(1);
                    partition.replica_fetch(replica, p.fetch_offset, p.current_leader_epoch, limit)
                }
            };
            match result {
                Ok((records, hw, log_start)) => {
                    total += records.len();
                    remaining = remaining.saturating_sub(records.len());
                    data.high_watermark = hw;
                    data.last_stable_offset = hw;
                    data.log_start_offset = log_start;
                    data.records = Some(records);
                }
                Err(e) => {
                    tracing::debug!(replica, partition = p.partition, error = %e.message, "replica fetch refused");
                    data.error_code = e.code.code();
                }
            }
            topic_response.partitions.push(data);
        }
        response.responses.push(topic_response);
    }
    (response, total)
}
