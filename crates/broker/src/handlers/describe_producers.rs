//! DescribeProducers (key 61, KIP-664): the idempotent producers a partition remembers,
//! with their epoch, last sequence and last timestamp.

use exacta_types::ErrorCode;
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};

use crate::partitions::Broker;

pub fn handle(broker: &Broker, request: DescribeProducersRequest) -> DescribeProducersResponse {
    let mut response = DescribeProducersResponse::default();
    for topic in request.topics {
        let mut topic_response = TopicResponse::default().with_name(topic.name.clone());
        for index in topic.partition_indexes {
            let mut pr = PartitionResponse::default().with_partition_index(index);
            match broker.partition(&topic.name, index) {
                None => pr.error_code = ErrorCode::UnknownTopicOrPartition.code(),
                Some(partition) => {
                    pr.active_producers = partition
                        .producers()
                        .into_iter()
                        .map(|p| {
                            ProducerState::default()
                                .with_producer_id(ProducerId(p.producer_id))
                                .with_producer_epoch(i32::from(p.epoch))
                                .with_last_sequence(p.last_sequence())
                                .with_last_timestamp(p.last_timestamp)
                                .with_coordinator_epoch(p.coordinator_epoch)
                                .with_current_txn_start_offset(p.current_txn_first_offset)
                        })
                        .collect();
                }
            }
            topic_response.partitions.push(pr);
        }
        response.topics.push(topic_response);
    }
    response
}
