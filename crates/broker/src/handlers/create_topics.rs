//! CreateTopics (key 19). Replication factor must be 1 (or -1 for the default) on a
//! single node; manual assignments must name this broker only.

use std::collections::BTreeMap;

use exacta_types::ErrorCode;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::protocol::StrBytes;

use super::message;
use crate::partitions::{ApiError, Broker};
use crate::topic_config::{TopicConfigs, TOPIC_CONFIGS};

pub fn handle(broker: &Broker, request: CreateTopicsRequest, version: i16) -> CreateTopicsResponse {
    let mut response = CreateTopicsResponse::default();
    for topic in request.topics {
        let mut result = CreatableTopicResult::default()
            .with_name(topic.name.clone())
            .with_num_partitions(-1)
            .with_replication_factor(-1);
        match create(broker, &topic, request.validate_only) {
            Ok((id, partitions, configs)) => {
                result.topic_id = id;
                result.num_partitions = partitions;
                result.replication_factor = 1;
                if version >= 5 {
                    let live = broker.live();
                    let resolved = TopicConfigs {
                        overrides: &configs,
                        broker: &live,
                    };
                    result.configs = Some(
                        TOPIC_CONFIGS
                            .iter()
                            .filter_map(|d| {
                                let (value, is_default) = resolved.value(d.name)?;
                                Some(
                                    CreatableTopicConfigs::default()
                                        .with_name(StrBytes::from_static_str(d.name))
                                        .with_value(Some(StrBytes::from_string(value)))
                                        .with_config_source(if is_default { 5 } else { 1 }),
                                )
                            })
                            .collect(),
                    );
                }
            }
            Err(e) => {
                result.error_code = e.code.code();
                result.error_message = message(e.message);
            }
        }
        response.topics.push(result);
    }
    response
}

fn create(
    broker: &Broker,
    topic: &kafka_protocol::messages::create_topics_request::CreatableTopic,
    validate_only: bool,
) -> Result<(uuid::Uuid, i32, BTreeMap<String, String>), ApiError> {
    let node = broker.config.node_id;
    let partitions = if !topic.assignments.is_empty() {
        if topic.num_partitions != -1 || topic.replication_factor != -1 {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "give either assignments or num_partitions/replication_factor, not both",
            ));
        }
        let mut indexes: Vec<i32> = topic
            .assignments
            .iter()
            .map(|a| a.partition_index)
            .collect();
        indexes.sort_unstable();
        let contiguous = indexes.iter().enumerate().all(|(i, &p)| p == i as i32);
        let only_us = topic
            .assignments
            .iter()
            .all(|a| a.broker_ids.len() == 1 && a.broker_ids[0].0 == node);
        if !contiguous || !only_us {
            return Err(ApiError::new(
                ErrorCode::InvalidReplicaAssignment,
                format!("assignments must cover partitions 0..n, each on broker {node} alone"),
            ));
        }
        indexes.len() as i32
    } else {
        if topic.replication_factor != -1 && topic.replication_factor != 1 {
            return Err(ApiError::new(
                ErrorCode::InvalidReplicationFactor,
                format!(
                    "replication factor {} is larger than the 1 available broker",
                    topic.replication_factor
                ),
            ));
        }
        match topic.num_partitions {
            -1 => broker.config.num_partitions,
            n => n,
        }
    };
    let mut configs = BTreeMap::new();
    for c in &topic.configs {
        let value = c.value.as_ref().ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidConfig,
                format!("config {} has no value", c.name.as_str()),
            )
        })?;
        configs.insert(c.name.to_string(), value.to_string());
    }
    let created = broker.create_topic(&topic.name, partitions, configs, validate_only)?;
    Ok((created.id, partitions, created.configs.clone()))
}
