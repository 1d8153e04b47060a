//! `exacta cluster status`: the cluster as its metadata says, for an operator. Nodes
//! (address, whether it answers, whether it is the active controller, how many partitions
//! it leads), then every partition whose ISR is smaller than its replica set
//! (under-replicated) or that has no leader in its ISR (offline); `--all` lists every
//! partition. Works against any Kafka-compatible cluster.

use std::time::Duration;

use exacta_client::{Cluster, Connection};
use serde_json::json;

use crate::admin::{Output, Rows};

#[derive(clap::Subcommand)]
pub enum ClusterCommand {
    /// Nodes, leaders and under-replicated partitions.
    Status {
        /// List every partition, not only the under-replicated and offline ones.
        #[arg(long)]
        all: bool,
    },
}

pub async fn run(
    cluster: &mut Cluster,
    command: ClusterCommand,
    output: Output,
) -> anyhow::Result<()> {
    let ClusterCommand::Status { all } = command;
    let metadata = cluster.metadata(None).await?;
    let mut nodes = Rows::new(&["NODE", "ADDRESS", "ANSWERS", "CONTROLLER", "LEADS"]);
    let mut brokers: Vec<_> = metadata.brokers.iter().collect();
    brokers.sort_by_key(|b| b.node_id.0);
    for b in brokers {
        let address = format!("{}:{}", b.host.as_str(), b.port);
        let answers = tokio::time::timeout(Duration::from_secs(3), Connection::connect(&address))
            .await
            .is_ok_and(|c| c.is_ok());
        let leads = metadata
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .filter(|p| p.leader_id == b.node_id)
            .count();
        nodes.push(vec![
            json!(b.node_id.0),
            json!(address),
            json!(answers),
            json!(metadata.controller_id == b.node_id),
            json!(leads),
        ]);
    }
    let mut partitions = Rows::new(&[
        "TOPIC",
        "PARTITION",
        "LEADER",
        "EPOCH",
        "REPLICAS",
        "ISR",
        "STATE",
    ]);
    let (mut under, mut offline, mut total) = (0, 0, 0);
    let mut topics: Vec<_> = metadata.topics.iter().filter(|t| !t.is_internal).collect();
    topics.sort_by_key(|t| t.name.as_ref().map(|n| n.to_string()));
    for t in topics {
        let name = t.name.as_ref().map(|n| n.to_string()).unwrap_or_default();
        let mut ps: Vec<_> = t.partitions.iter().collect();
        ps.sort_by_key(|p| p.partition_index);
        for p in ps {
            total += 1;
            let state = if !p.isr_nodes.contains(&p.leader_id) {
                offline += 1;
                "offline"
            } else if p.isr_nodes.len() < p.replica_nodes.len() {
                under += 1;
                "under-replicated"
            } else {
                "in sync"
            };
            if all || state != "in sync" {
                let ids = |v: &[kafka_protocol::messages::BrokerId]| {
                    v.iter()
                        .map(|b| b.0.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                };
                partitions.push(vec![
                    json!(name),
                    json!(p.partition_index),
                    json!(p.leader_id.0),
                    json!(p.leader_epoch),
                    json!(ids(&p.replica_nodes)),
                    json!(ids(&p.isr_nodes)),
                    json!(state),
                ]);
            }
        }
    }
    match output {
        Output::Json => println!(
            "{}",
            json!({
                "cluster_id": metadata.cluster_id.as_ref().map(|c| c.to_string()),
                "controller": metadata.controller_id.0,
                "nodes": nodes.to_json(),
                "partitions": total,
                "under_replicated": under,
                "offline": offline,
                "listed": partitions.to_json(),
            })
        ),
        Output::Table => {
            nodes.print(output);
            println!();
            println!("{total} partitions: {under} under-replicated, {offline} offline");
            if !partitions.is_empty() {
                partitions.print(output);
            }
        }
    }
    Ok(())
}
