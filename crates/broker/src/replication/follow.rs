//! Applies the quorum's metadata to this broker, version after version: every topic of
//! the cluster exists here with the cluster's topic id (partitions placed elsewhere are
//! [`Role::Absent`], an empty log), topics the cluster dropped are deleted, and each
//! partition this broker replicates leads or follows as the metadata says. Internal
//! topics too: their coordinators follow these roles (`crate::coordinators`).

use std::collections::BTreeMap;
use std::sync::Arc;

use exacta_cluster::metadata::{Metadata, PartitionState};
use exacta_log::topics::TopicMetadata;
use uuid::Uuid;

use super::fetcher::Fetchers;
use super::Role;
use crate::cluster::ClusterRuntime;
use crate::partitions::{ApiError, Broker, Topic};

/// Follows the metadata until the process ends.
pub async fn run(broker: Arc<Broker>, cluster: Arc<ClusterRuntime>) {
    // Until then the local metadata may lack topics committed before this start.
    cluster.caught_up().await;
    tracing::info!("cluster metadata caught up; applying it");
    let mut versions = cluster.subscribe();
    let mut fetchers = Fetchers::new(Arc::clone(&broker), Arc::clone(&cluster));
    loop {
        let metadata = versions.borrow_and_update().clone();
        let b = Arc::clone(&broker);
        let me = cluster.me;
        let applied = tokio::task::spawn_blocking(move || apply(&b, me, &metadata)).await;
        match applied {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e.message, "applying cluster metadata"),
            Err(e) => tracing::error!(error = %e, "applying cluster metadata"),
        }
        fetchers.refresh();
        cluster.mark_applied();
        if versions.changed().await.is_err() {
            return;
        }
    }
}

/// Makes this broker's topics and partition roles those of METADATA.
pub fn apply(broker: &Broker, me: i32, metadata: &Metadata) -> Result<(), ApiError> {
    for local in broker.topics() {
        let keep = metadata
            .topics
            .get(&local.name)
            .is_some_and(|t| t.id == local.id.to_string());
        if !keep {
            tracing::info!(topic = %local.name, "topic dropped by the cluster");
            broker.remove_topic(&local.name)?;
        }
    }
    for (name, topic) in &metadata.topics {
        let id = Uuid::parse_str(&topic.id).unwrap_or_default();
        let local = ensure_topic(
            broker,
            name,
            id,
            topic.partitions.len() as i32,
            &topic.configs,
        )?;
        for (partition, state) in local.partitions.iter().zip(&topic.partitions) {
            apply_role(partition, me, state);
        }
    }
    Ok(())
}

fn apply_role(partition: &crate::partitions::Partition, me: i32, state: &PartitionState) {
    let me64 = me as u64;
    let to_i32 = |v: &[u64]| v.iter().map(|&b| b as i32).collect::<Vec<_>>();
    if state.leader == me64 {
        partition.lead(
            me,
            state.leader_epoch,
            to_i32(&state.replicas),
            to_i32(&state.isr),
        );
    } else if state.replicas.contains(&me64) {
        partition.follow(state.leader as i32, state.leader_epoch);
    } else if partition.role_now() != Role::Absent {
        partition.set_absent();
    }
}

/// The topic as the cluster has it: created with its id, grown to PARTITIONS.
fn ensure_topic(
    broker: &Broker,
    name: &str,
    id: Uuid,
    partitions: i32,
    configs: &BTreeMap<String, String>,
) -> Result<Arc<Topic>, ApiError> {
    let existing = broker.topic(name);
    if let Some(t) = &existing {
        if t.partitions.len() as i32 >= partitions {
            return Ok(Arc::clone(t));
        }
    }
    let meta = TopicMetadata {
        name: name.to_string(),
        id,
        partitions,
        configs: configs.clone(),
    };
    let mut opened: Vec<_> = existing
        .as_ref()
        .map(|t| t.partitions.clone())
        .unwrap_or_default();
    for index in opened.len() as i32..partitions {
        // A directory left by an earlier run is recovered (this broker's copy).
        opened.push(broker.open_partition(&meta, index, false)?.0);
    }
    exacta_log::sync_dir(&broker.data_dir)?;
    broker.store.save(&meta)?;
    tracing::info!(topic = name, partitions, id = %id, "topic from the cluster");
    Ok(broker.install(Topic {
        name: meta.name,
        id,
        partitions: opened,
        configs: meta.configs,
    }))
}
