//! In a cluster, the coordinators follow the leadership of their internal partitions: after
//! every metadata version this broker applies, each `__consumer_offsets` shard is served
//! here exactly when this broker leads its partition (loading it first, see
//! `groups::load`), and dropped when it does not. FindCoordinator names those leaders.
//!
//! The internal topics are created through the quorum as soon as enough brokers have
//! registered (Kafka creates them on first use; creating them early spares the first
//! consumer the wait), with the configs a single node pins on them (`internal`).
//! `__transaction_state` is created and replicated too, but its coordinator does not
//! serve in a cluster yet (docs/cluster.md).

use std::sync::Arc;
use std::time::Duration;

use crate::cluster::ClusterRuntime;
use crate::groups::OFFSETS_TOPIC;
use crate::replication::Role;
use crate::txns::TXN_TOPIC;
use crate::Node;

/// Runs until the process ends.
pub async fn run(node: Arc<Node>, cluster: Arc<ClusterRuntime>) {
    cluster.caught_up().await;
    let mut applied = cluster.subscribe_applied();
    let mut mismatch_logged = false;
    loop {
        create_internal_topics(&node, &cluster).await;
        let partitions = cluster
            .metadata()
            .topics
            .get(OFFSETS_TOPIC)
            .map(|t| t.partitions.len() as i32);
        if partitions.is_some_and(|n| n != node.groups.partitions()) {
            // Groups would hash to other partitions here than on the other brokers.
            if !mismatch_logged {
                tracing::error!(
                    cluster = partitions,
                    configured = node.groups.partitions(),
                    "{OFFSETS_TOPIC} has another partition count than offsets_topic_partitions here; this broker coordinates no group (set the same value on every node)"
                );
                mismatch_logged = true;
            }
            (0..node.groups.partitions()).for_each(|s| node.groups.resign(s as usize));
        } else {
            follow_leadership(&node);
        }
        // A version applied, or a moment passed (topic creation waiting for brokers).
        let _ = tokio::time::timeout(Duration::from_secs(1), applied.changed()).await;
    }
}

/// Serves each group shard here exactly when this broker leads its partition.
fn follow_leadership(node: &Node) {
    for shard in 0..node.groups.partitions() {
        let role = node
            .broker
            .partition(OFFSETS_TOPIC, shard)
            .map(|p| p.role_now());
        match role {
            Some(Role::Leader(l)) => node.groups.lead(shard as usize, l.epoch),
            _ => node.groups.resign(shard as usize),
        }
    }
}

async fn create_internal_topics(node: &Node, cluster: &ClusterRuntime) {
    let config = &node.broker.config;
    let wanted = [
        (
            OFFSETS_TOPIC,
            config.offsets_topic_partitions,
            config.offsets_topic_segment_bytes,
        ),
        (
            TXN_TOPIC,
            config.transaction_state_partitions,
            config.transaction_state_segment_bytes,
        ),
    ];
    for (name, partitions, segment_bytes) in wanted {
        if cluster.metadata().topics.contains_key(name) {
            continue;
        }
        let mut configs = crate::internal::pinned_configs();
        configs.insert("segment.bytes".into(), segment_bytes.to_string());
        if let Err(e) = cluster
            .create_internal_topic(name, partitions, configs)
            .await
        {
            tracing::info!(topic = name, error = %e.message, "internal topic not created yet");
        }
    }
}
