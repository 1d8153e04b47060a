//! The leader's side of ISR membership: every [`CHECK_INTERVAL`] each partition this
//! broker leads compares its ISR with its followers' progress, and proposes the change to
//! the metadata quorum (ChangeIsr, refused there if the leader epoch moved on). A
//! follower that has not fetched up to the leader's log end for `replica.lag.time.max.ms`
//! leaves the ISR; one that has caught up with the high watermark (and this epoch's start)
//! joins it again. The ISR in force is the committed one: the leader applies it when the
//! metadata version arrives, never before.

use std::sync::Arc;
use std::time::Duration;

use exacta_cluster::metadata::Command;

use crate::cluster::ClusterRuntime;
use crate::partitions::Broker;

pub const CHECK_INTERVAL: Duration = Duration::from_millis(200);

/// Checks the led partitions until the process ends.
pub async fn run(broker: Arc<Broker>, cluster: Arc<ClusterRuntime>) {
    let mut tick = tokio::time::interval(CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for topic in broker.topics() {
            for partition in &topic.partitions {
                let Some((epoch, isr)) = partition.isr_change(cluster.lag_max_ms) else {
                    continue;
                };
                tracing::info!(topic = %topic.name, partition = partition.index, ?isr, "proposing an ISR change");
                let command = Command::ChangeIsr {
                    topic: topic.name.clone(),
                    partition: partition.index as usize,
                    leader_epoch: epoch,
                    isr: isr.iter().map(|&r| r as u64).collect(),
                };
                if let Err(e) = cluster.propose(command).await {
                    tracing::warn!(error = %e.message, "ISR change not committed");
                }
            }
        }
    }
}
