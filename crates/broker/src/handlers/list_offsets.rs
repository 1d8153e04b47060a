//! ListOffsets (key 2): the offset for a timestamp, or one of the special timestamps
//! -1 (latest: the high watermark, or the last stable offset for `read_committed`),
//! -2 (earliest: the log start offset), -3 (the record with the largest timestamp), -4
//! (earliest local, v8: the log start here) and -5 (latest tiered, v9: none here, -1).
//! Answered by the partition's leader at the client's current leader epoch (v4+), else
//! NOT_LEADER_OR_FOLLOWER / FENCED_LEADER_EPOCH / UNKNOWN_LEADER_EPOCH.

use exacta_types::ErrorCode;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use crate::partitions::{ApiError, Broker, Partition};

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
/// KIP-405 (v8): the first offset held locally; without tiered storage, the log start.
const EARLIEST_LOCAL: i64 = -4;
/// KIP-1005 (v9): the last offset in tiered storage; without it, -1 as on Kafka.
const LATEST_TIERED: i64 = -5;

/// ListOffsets v4 added the leader epoch; setting it for v1-v3 fails the encoding.
const LEADER_EPOCH_MIN_VERSION: i16 = 4;

pub fn handle(broker: &Broker, request: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    let leader_epoch = if version >= LEADER_EPOCH_MIN_VERSION {
        0
    } else {
        -1
    };
    let mut response = ListOffsetsResponse::default();
    for topic in request.topics {
        let mut topic_response = ListOffsetsTopicResponse::default().with_name(topic.name.clone());
        for p in topic.partitions {
            let mut pr = ListOffsetsPartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_timestamp(-1)
                .with_offset(-1)
                .with_leader_epoch(leader_epoch);
            let result = match broker.partition(&topic.name, p.partition_index) {
                None => Err(ApiError::new(ErrorCode::UnknownTopicOrPartition, "")),
                Some(partition) => {
                    let requested = if version >= LEADER_EPOCH_MIN_VERSION {
                        p.current_leader_epoch
                    } else {
                        -1
                    };
                    partition.check_leader(requested).and_then(|epoch| {
                        if version >= LEADER_EPOCH_MIN_VERSION {
                            pr.leader_epoch = epoch;
                        }
                        lookup(&partition, p.timestamp, request.isolation_level == 1)
                    })
                }
            };
            match result {
                Ok(Some((offset, timestamp))) => {
                    pr.offset = offset;
                    pr.timestamp = timestamp;
                }
                Ok(None) => {}
                Err(e) => pr.error_code = e.code.code(),
            }
            topic_response.partitions.push(pr);
        }
        response.topics.push(topic_response);
    }
    response
}

fn lookup(
    partition: &Partition,
    timestamp: i64,
    read_committed: bool,
) -> Result<Option<(i64, i64)>, ApiError> {
    match timestamp {
        LATEST if read_committed => Ok(Some((partition.last_stable_offset(), -1))),
        LATEST => Ok(Some((partition.high_watermark(), -1))),
        EARLIEST | EARLIEST_LOCAL => Ok(Some((partition.log_start_offset(), -1))),
        LATEST_TIERED => Ok(Some((-1, -1))),
        MAX_TIMESTAMP => partition.max_timestamp_offset(),
        ts if ts >= 0 => partition.offset_for_timestamp(ts),
        other => Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("unsupported ListOffsets timestamp {other}"),
        )),
    }
}
