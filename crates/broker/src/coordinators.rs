//! In a cluster, the coordinators follow the leadership of their internal partitions: after
//! every metadata version this broker applies, each `__consumer_offsets` and
//! `__transaction_state` shard is served here exactly when this broker leads its partition
//! (loading it first, see `groups::load` and `txns::load`), and dropped when it does not.
//! FindCoordinator names those leaders.
//!
//! The internal topics are created through the quorum as soon as enough brokers have
//! registered (Kafka creates them on first use; creating them early spares the first
//! consumer the wait), with the configs a single node pins on them (`internal`).

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
        let metadata = cluster.metadata();
        let count = |topic: &str| {
            metadata
                .topics
                .get(topic)
                .map(|t| t.partitions.len() as i32)
        };
        let groups_match = count(OFFSETS_TOPIC).is_none_or(|n| n == node.groups.partitions());
        let txns_match = count(TXN_TOPIC).is_none_or(|n| n == node.txns.partitions());
        let matching = groups_match && txns_match;
        if !matching && !mismatch_logged {
            // Keys would hash to other partitions here than on the other brokers.
            tracing::error!(
                offsets = count(OFFSETS_TOPIC),
                transactions = count(TXN_TOPIC),
                "an internal topic has another partition count than offsets_topic_partitions or transaction_state_partitions here; this broker does not coordinate its keys (set the same values on every node)"
            );
            mismatch_logged = true;
        }
        follow_leadership(&node, groups_match, txns_match);
        // A version applied, or a moment passed (topic creation waiting for brokers).
        let _ = tokio::time::timeout(Duration::from_secs(1), applied.changed()).await;
    }
}

/// Serves each coordinator shard here exactly when this broker leads its partition (and
/// the topic's partition count is this broker's: GROUPS, TXNS).
fn follow_leadership(node: &Arc<Node>, groups: bool, txns: bool) {
    let leading = |topic: &str, shard: i32| match node.broker.partition(topic, shard) {
        Some(p) => match p.role_now() {
            Role::Leader(l) => Some(l.epoch),
            _ => None,
        },
        None => None,
    };
    for shard in 0..node.groups.partitions() {
        match leading(OFFSETS_TOPIC, shard).filter(|_| groups) {
            Some(epoch) => node.groups.lead(shard as usize, epoch),
            None => node.groups.resign(shard as usize),
        }
    }
    for shard in 0..node.txns.partitions() {
        match leading(TXN_TOPIC, shard).filter(|_| txns) {
            Some(epoch) => node.txns.lead(shard as usize, epoch),
            None => node.txns.resign(shard as usize),
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
