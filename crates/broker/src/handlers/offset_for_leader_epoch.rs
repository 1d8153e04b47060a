//! OffsetForLeaderEpoch (key 23, v2-v4): for each partition, the largest leader epoch
//! this leader knows at or below the requested one and the offset where it ended (the
//! start of the next epoch, or the log end for the current one). Followers (replica id
//! set) and consumers (KIP-320, replica id -1) use it to find where their log or position
//! diverges from the leader's. The client's current leader epoch is checked first.

use exacta_types::ErrorCode;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use crate::partitions::Broker;

pub fn handle(
    broker: &Broker,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let mut response = OffsetForLeaderEpochResponse::default();
    for topic in request.topics {
        let mut result = OffsetForLeaderTopicResult::default().with_topic(topic.topic.clone());
        for p in topic.partitions {
            let mut answer = EpochEndOffset::default()
                .with_partition(p.partition)
                .with_leader_epoch(-1)
                .with_end_offset(-1);
            match broker.partition(&topic.topic, p.partition) {
                None => answer.error_code = ErrorCode::UnknownTopicOrPartition.code(),
                Some(partition) => match partition.check_leader(p.current_leader_epoch) {
                    Ok(_) => {
                        let (epoch, end) = partition.epoch_end_offset(p.leader_epoch);
                        answer.leader_epoch = epoch;
                        answer.end_offset = end;
                    }
                    Err(e) => answer.error_code = e.code.code(),
                },
            }
            result.partitions.push(answer);
        }
        response.topics.push(result);
    }
    response
}
