//! DeleteTopics (key 20): by name (v0-v5) or by name or id (v6+).

use exacta_types::ErrorCode;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::message;
use crate::partitions::{ApiError, Broker};

pub fn handle(broker: &Broker, request: DeleteTopicsRequest, version: i16) -> DeleteTopicsResponse {
    let targets: Vec<(Option<TopicName>, uuid::Uuid)> = if version >= 6 {
        request
            .topics
            .into_iter()
            .map(|t| (t.name, t.topic_id))
            .collect()
    } else {
        request
            .topic_names
            .into_iter()
            .map(|n| (Some(n), uuid::Uuid::nil()))
            .collect()
    };
    let mut response = DeleteTopicsResponse::default();
    for (name, id) in targets {
        let mut result = DeletableTopicResult::default()
            .with_name(name.clone())
            .with_topic_id(id);
        let name = match name {
            Some(n) => Ok(n.to_string()),
            None => broker
                .topic_by_id(id)
                .map(|t| t.name.clone())
                .ok_or_else(|| {
                    ApiError::new(ErrorCode::UnknownTopicId, format!("unknown topic id {id}"))
                }),
        };
        match name.and_then(|n| broker.delete_topic(&n)) {
            Ok(topic) => {
                result.name = Some(TopicName(StrBytes::from_string(topic.name.clone())));
                result.topic_id = topic.id;
            }
            Err(e) => {
                result.error_code = e.code.code();
                result.error_message = message(e.message);
            }
        }
        response.responses.push(result);
    }
    response
}
