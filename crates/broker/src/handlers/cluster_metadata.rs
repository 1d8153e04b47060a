//! Metadata (key 3) in a cluster: every registered broker, the quorum's active controller,
//! and each topic's partitions with their leader, leader epoch, replicas and ISR as the
//! metadata quorum has them (this broker's applied view). Unknown topics are created
//! through the quorum when auto topic creation is on and the client allows it. The
//! internal topics are not listed: their coordinators are not replicated yet.

use std::collections::BTreeMap;

use exacta_cluster::metadata::Topic;
use exacta_types::ErrorCode;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use crate::cluster::ClusterRuntime;
use crate::Node;

pub async fn handle(
    node: &Node,
    cluster: &ClusterRuntime,
    request: MetadataRequest,
    version: i16,
) -> MetadataResponse {
    let broker = &node.broker;
    let mut response = MetadataResponse::default();
    for (id, address) in cluster.brokers() {
        let (host, port) = crate::advertised_host_port(&address).unwrap_or_default();
        response.brokers.push(
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(id))
                .with_host(StrBytes::from_string(host))
                .with_port(port),
        );
    }
    response.cluster_id = Some(StrBytes::from_string(broker.config.cluster_id.clone()));
    response.controller_id = BrokerId(cluster.controller().await.unwrap_or(-1));
    response.cluster_authorized_operations = i32::MIN;
    let requested = match request.topics {
        None => None,
        Some(t) if t.is_empty() && version == 0 => None,
        Some(t) => Some(t),
    };
    let allow_create = version < 4 || request.allow_auto_topic_creation;
    let metadata = cluster.metadata();
    let Some(requested) = requested else {
        response.topics = metadata
            .topics
            .iter()
            .map(|(name, t)| describe(name, t))
            .collect();
        return response;
    };
    for t in requested {
        let answer = match t.name {
            Some(name) => match cluster.metadata().topics.get(name.as_str()) {
                Some(topic) => describe(&name, topic),
                None => create(node, cluster, name, allow_create).await,
            },
            None => {
                let id = t.topic_id.to_string();
                match metadata.topics.iter().find(|(_, topic)| topic.id == id) {
                    Some((name, topic)) => describe(name, topic),
                    None => MetadataResponseTopic::default()
                        .with_topic_id(t.topic_id)
                        .with_error_code(ErrorCode::UnknownTopicId.code()),
                }
            }
        };
        response.topics.push(answer);
    }
    response
}

async fn create(
    node: &Node,
    cluster: &ClusterRuntime,
    name: TopicName,
    allow_create: bool,
) -> MetadataResponseTopic {
    let broker = &node.broker;
    let error = |code: ErrorCode| super::metadata::failed(&name, code);
    if !(allow_create && broker.config.auto_create_topics) {
        return error(ErrorCode::UnknownTopicOrPartition);
    }
    let brokers = cluster.brokers().len() as i32;
    let rf = broker.config.default_replication_factor.min(brokers.max(1));
    let created = cluster
        .create_topic(
            broker,
            &name,
            broker.config.num_partitions,
            rf,
            BTreeMap::new(),
            false,
        )
        .await;
    match created {
        Ok(_) => {}
        Err(e) if e.code == ErrorCode::TopicAlreadyExists => {}
        Err(e) => {
            tracing::debug!(topic = %name.as_str(), error = %e.message, "auto topic creation refused");
            return error(e.code);
        }
    }
    match cluster.metadata().topics.get(name.as_str()) {
        Some(topic) => describe(&name, topic),
        // Committed but not applied here yet: the client retries.
        None => error(ErrorCode::LeaderNotAvailable),
    }
}

fn describe(name: &str, topic: &Topic) -> MetadataResponseTopic {
    let ids = |v: &[u64]| v.iter().map(|&b| BrokerId(b as i32)).collect::<Vec<_>>();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(name.to_string()))))
        .with_topic_id(Uuid::parse_str(&topic.id).unwrap_or_default())
        .with_is_internal(exacta_types::is_internal_topic(name))
        .with_topic_authorized_operations(i32::MIN)
        .with_partitions(
            topic
                .partitions
                .iter()
                .enumerate()
                .map(|(index, p)| {
                    MetadataResponsePartition::default()
                        .with_partition_index(index as i32)
                        .with_leader_id(BrokerId(p.leader as i32))
                        .with_leader_epoch(p.leader_epoch)
                        .with_replica_nodes(ids(&p.replicas))
                        .with_isr_nodes(ids(&p.isr))
                })
                .collect(),
        )
}
