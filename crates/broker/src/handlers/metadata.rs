//! Metadata (key 3): brokers, topics and partition leaders. Creates unknown topics when
//! auto topic creation is on and the client allows it.

use std::collections::BTreeMap;
use std::sync::Arc;

use exacta_types::ErrorCode;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use crate::partitions::{Broker, Topic};

pub fn handle(broker: &Arc<Broker>, request: MetadataRequest, version: i16) -> MetadataResponse {
    let node = BrokerId(broker.config.node_id);
    let (host, port) = crate::advertised_host_port(broker.config.advertised()).unwrap_or_default();
    let mut response = MetadataResponse::default();
    response.brokers = vec![MetadataResponseBroker::default()
        .with_node_id(node)
        .with_host(StrBytes::from_string(host))
        .with_port(port)];
    response.cluster_id = Some(StrBytes::from_string(broker.config.cluster_id.clone()));
    response.controller_id = node;
    response.cluster_authorized_operations = i32::MIN;

    // v0: an empty list means all topics; v1+: null means all, empty means none.
    let requested = match request.topics {
        None => None,
        Some(t) if t.is_empty() && version == 0 => None,
        Some(t) => Some(t),
    };
    let allow_create = version < 4 || request.allow_auto_topic_creation;
    response.topics = match requested {
        None => broker.topics().iter().map(|t| describe(t, node)).collect(),
        Some(topics) => topics
            .into_iter()
            .map(|t| match t.name {
                Some(name) => by_name(broker, name, allow_create, node),
                None => match broker.topic_by_id(t.topic_id) {
                    Some(topic) => describe(&topic, node),
                    None => MetadataResponseTopic::default()
                        .with_topic_id(t.topic_id)
                        .with_error_code(ErrorCode::UnknownTopicId.code()),
                },
            })
            .collect(),
    };
    response
}

fn by_name(
    broker: &Arc<Broker>,
    name: TopicName,
    allow_create: bool,
    node: BrokerId,
) -> MetadataResponseTopic {
    if let Some(topic) = broker.topic(&name) {
        return describe(&topic, node);
    }
    let error = |code: ErrorCode| failed(&name, code);
    if !(allow_create && broker.config.auto_create_topics) {
        return error(ErrorCode::UnknownTopicOrPartition);
    }
    match broker.create_topic(&name, broker.config.num_partitions, BTreeMap::new(), false) {
        Ok(topic) => describe(&topic, node),
        // Created concurrently by another request: describe the winner's topic.
        Err(e) if e.code == ErrorCode::TopicAlreadyExists => match broker.topic(&name) {
            Some(topic) => describe(&topic, node),
            None => error(ErrorCode::UnknownTopicOrPartition),
        },
        Err(e) => {
            tracing::debug!(topic = %name.as_str(), error = %e.message, "auto topic creation refused");
            error(e.code)
        }
    }
}

/// A topic that could not be described (or created) with why, as both forms answer it.
pub(crate) fn failed(name: &TopicName, code: ErrorCode) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(Some(name.clone()))
        .with_topic_id(Uuid::nil())
        .with_error_code(code.code())
}

fn describe(topic: &Topic, node: BrokerId) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(topic.name.clone()))))
        .with_topic_id(topic.id)
        .with_is_internal(exacta_types::is_internal_topic(&topic.name))
        .with_topic_authorized_operations(i32::MIN)
        .with_partitions(
            topic
                .partitions
                .iter()
                .map(|p| {
                    MetadataResponsePartition::default()
                        .with_partition_index(p.index)
                        .with_leader_id(node)
                        .with_leader_epoch(0)
                        .with_replica_nodes(vec![node])
                        .with_isr_nodes(vec![node])
                })
                .collect(),
        )
}
