//! DeleteTopics (key 20): by name (v0-v5) or by name or id (v6+). In a cluster the
//! deletion goes through the metadata quorum ([`handle_cluster`]).

use exacta_types::ErrorCode;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::message;
use crate::cluster::ClusterRuntime;
use crate::partitions::{ApiError, Broker};

fn targets(request: DeleteTopicsRequest, version: i16) -> Vec<(Option<TopicName>, uuid::Uuid)> {
    if version >= 6 {
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
    }
}

/// DeleteTopics in a cluster.
pub async fn handle_cluster(
    broker: &Broker,
    cluster: &ClusterRuntime,
    request: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    let mut response = DeleteTopicsResponse::default();
    for (name, id) in targets(request, version) {
        let mut result = DeletableTopicResult::default()
            .with_name(name.clone())
            .with_topic_id(id);
        let name = name_of(broker, name, id);
        let topic_id = name
            .as_ref()
            .ok()
            .and_then(|n| broker.topic(n))
            .map(|t| t.id);
        let deleted = match &name {
            Ok(n) => cluster.delete_topic(broker, n).await,
            Err(e) => Err(e.clone()),
        };
        match deleted.and(name) {
            Ok(n) => {
                result.name = Some(TopicName(StrBytes::from_string(n)));
                result.topic_id = topic_id.unwrap_or(id);
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

pub fn handle(broker: &Broker, request: DeleteTopicsRequest, version: i16) -> DeleteTopicsResponse {
    let mut response = DeleteTopicsResponse::default();
    for (name, id) in targets(request, version) {
        let mut result = DeletableTopicResult::default()
            .with_name(name.clone())
            .with_topic_id(id);
        let name = name_of(broker, name, id);
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

/// The topic a deletion names: by name, or by id (v6+).
fn name_of(broker: &Broker, name: Option<TopicName>, id: uuid::Uuid) -> Result<String, ApiError> {
    match name {
        Some(n) => Ok(n.to_string()),
        None => broker
            .topic_by_id(id)
            .map(|t| t.name.clone())
            .ok_or_else(|| {
                ApiError::new(ErrorCode::UnknownTopicId, format!("unknown topic id {id}"))
            }),
    }
}
