//! CreatePartitions (key 37): grows a topic's partition count.

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use super::message;
use crate::partitions::Broker;

pub fn handle(broker: &Broker, request: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let mut response = CreatePartitionsResponse::default();
    for topic in request.topics {
        let mut result = CreatePartitionsTopicResult::default().with_name(topic.name.clone());
        if let Err(e) = broker.create_partitions(&topic.name, topic.count, request.validate_only) {
            result.error_code = e.code.code();
            result.error_message = message(e.message);
        }
        response.results.push(result);
    }
    response
}
