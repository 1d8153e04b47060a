//! CreateTopics (key 19). Replication factor must be 1 (or -1 for the default) on a
//! single node; manual assignments must name this broker only. In a cluster the topic is
//! created through the metadata quorum with its replicas placed over the registered
//! brokers ([`handle_cluster`]; manual assignments are not taken there yet).

use std::collections::BTreeMap;

use exacta_types::ErrorCode;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::protocol::StrBytes;

use super::message;
use crate::cluster::ClusterRuntime;
use crate::partitions::{ApiError, Broker};
use crate::topic_config::{TopicConfigs, TOPIC_CONFIGS};

pub fn handle(broker: &Broker, request: CreateTopicsRequest, version: i16) -> CreateTopicsResponse {
    let mut response = CreateTopicsResponse::default();
    for topic in request.topics {
        let mut result = unanswered(&topic);
        let created = create(broker, &topic, request.validate_only)
            .map(|(id, partitions, configs)| (id, partitions, 1, configs));
        fill(broker, &mut result, created, version);
        response.topics.push(result);
    }
    response
}

/// CreateTopics in a cluster (see the module docs).
pub async fn handle_cluster(
    broker: &Broker,
    cluster: &ClusterRuntime,
    request: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let mut response = CreateTopicsResponse::default();
    for topic in request.topics {
        let mut result = unanswered(&topic);
        let created = async {
            if !topic.assignments.is_empty() {
                return Err(ApiError::new(
                    ErrorCode::InvalidReplicaAssignment,
                    "manual replica assignments are not taken in a cluster yet",
                ));
            }
            let configs = configs_of(&topic)?;
            let partitions = match topic.num_partitions {
                -1 => broker.config.num_partitions,
                n => n,
            };
            let rf = match topic.replication_factor {
                -1 => broker
                    .config
                    .default_replication_factor
                    .min(cluster.brokers().len().max(1) as i32),
                n => i32::from(n),
            };
            let id = cluster
                .create_topic(
                    broker,
                    &topic.name,
                    partitions,
                    rf,
                    configs.clone(),
                    request.validate_only,
                )
                .await?;
            Ok((id, partitions, rf as i16, configs))
        }
        .await;
        fill(broker, &mut result, created, version);
        response.topics.push(result);
    }
    response
}

fn unanswered(
    topic: &kafka_protocol::messages::create_topics_request::CreatableTopic,
) -> CreatableTopicResult {
    CreatableTopicResult::default()
        .with_name(topic.name.clone())
        .with_num_partitions(-1)
        .with_replication_factor(-1)
}

/// Puts a creation's outcome into its result (v5+: with the topic's configs).
fn fill(
    broker: &Broker,
    result: &mut CreatableTopicResult,
    created: Result<(uuid::Uuid, i32, i16, BTreeMap<String, String>), ApiError>,
    version: i16,
) {
    match created {
        Ok((id, partitions, replication_factor, configs)) => {
            result.topic_id = id;
            result.num_partitions = partitions;
            result.replication_factor = replication_factor;
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
}

fn configs_of(
    topic: &kafka_protocol::messages::create_topics_request::CreatableTopic,
) -> Result<BTreeMap<String, String>, ApiError> {
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
    Ok(configs)
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
    let configs = configs_of(topic)?;
    let created = broker.create_topic(&topic.name, partitions, configs, validate_only)?;
    Ok((created.id, partitions, created.configs.clone()))
}
