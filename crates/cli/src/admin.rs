//! `exacta topic|group|txn ...`: admin commands against any Kafka-compatible cluster,
//! over `exacta-client`. Tables for people by default, `--output json` for scripts.

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use exacta_client::{Cluster, KafkaError, GROUP, TRANSACTION};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use serde_json::{json, Value};

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// Rows with named columns, printed as an aligned table or a JSON array of objects.
pub(crate) struct Rows {
    columns: Vec<&'static str>,
    rows: Vec<Vec<Value>>,
}

impl Rows {
    pub(crate) fn new(columns: &[&'static str]) -> Self {
        Self {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, row: Vec<Value>) {
        self.rows.push(row);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The rows as JSON objects keyed by snake_case column names.
    pub(crate) fn to_json(&self) -> Value {
        Value::Array(
            self.rows
                .iter()
                .map(|row| {
                    let map: serde_json::Map<String, Value> = self
                        .columns
                        .iter()
                        .map(|c| c.to_lowercase().replace(' ', "_"))
                        .zip(row.iter().cloned())
                        .collect();
                    Value::Object(map)
                })
                .collect(),
        )
    }

    /// Prints to stdout; a closed pipe (`| head`) just ends the output.
    pub(crate) fn print(&self, output: Output) {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        match output {
            Output::Json => {
                let _ = writeln!(out, "{}", self.to_json());
            }
            Output::Table => {
                let text = |v: &Value| match v {
                    Value::String(s) => s.clone(),
                    Value::Null => "-".to_string(),
                    other => other.to_string(),
                };
                let cells: Vec<Vec<String>> = self
                    .rows
                    .iter()
                    .map(|r| r.iter().map(text).collect())
                    .collect();
                let widths: Vec<usize> = self
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        cells
                            .iter()
                            .map(|r| r[i].len())
                            .chain([c.len()])
                            .max()
                            .unwrap_or(0)
                    })
                    .collect();
                let mut line = |values: Vec<String>| {
                    let padded: Vec<String> = values
                        .iter()
                        .zip(&widths)
                        .map(|(v, w)| format!("{v:<w$}"))
                        .collect();
                    let _ = writeln!(out, "{}", padded.join("  ").trim_end());
                };
                line(self.columns.iter().map(|c| c.to_string()).collect());
                for row in cells {
                    line(row);
                }
            }
        }
    }
}

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

fn topic_name(text: &str) -> TopicName {
    TopicName(s(text))
}

#[derive(clap::Subcommand)]
pub enum TopicCommand {
    /// List topics with their partition counts.
    List,
    /// Partitions of a topic with their offsets, and its configs.
    Describe { topic: String },
    /// Create a topic.
    Create {
        topic: String,
        #[arg(long, default_value_t = 1)]
        partitions: i32,
        /// A topic config, e.g. `retention.ms=86400000`. Repeatable.
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
    },
    /// Delete a topic.
    Delete { topic: String },
    /// Delete the records of a partition before an offset (DeleteRecords): the log start
    /// offset moves there.
    DeleteRecords {
        topic: String,
        #[arg(long)]
        partition: i32,
        /// Records before this offset go; -1 means the high watermark (everything).
        #[arg(long, allow_negative_numbers = true)]
        before: i64,
    },
    /// Set (or with --delete remove) topic configs.
    AlterConfig {
        topic: String,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        #[arg(long = "delete", value_name = "KEY")]
        delete: Vec<String>,
    },
}

#[derive(clap::Subcommand)]
pub enum GroupCommand {
    /// List consumer groups.
    List,
    /// A group's state, members, and committed offsets with lag per partition.
    Describe { group: String },
    /// Delete an empty group and its offsets.
    Delete { group: String },
    /// Move an empty group's committed offsets on a topic (a dry run unless --execute).
    ResetOffsets {
        group: String,
        #[arg(long)]
        topic: String,
        #[arg(long, conflicts_with_all = ["to_latest", "to_offset"])]
        to_earliest: bool,
        #[arg(long, conflicts_with = "to_offset")]
        to_latest: bool,
        #[arg(long)]
        to_offset: Option<i64>,
        /// Apply the change (without it, only show the plan).
        #[arg(long)]
        execute: bool,
    },
}

#[derive(clap::Subcommand)]
pub enum TxnCommand {
    /// List transactional ids (every broker's coordinator).
    List {
        /// Only these states (Ongoing, PrepareCommit, CompleteAbort, ...). Repeatable.
        #[arg(long = "state")]
        states: Vec<String>,
    },
    /// One transactional id: producer, state, age, partitions.
    Describe { transactional_id: String },
    /// The producers a partition remembers, with their open transaction's first offset.
    Producers { topic: String, partition: i32 },
    /// Open transactions idle longer than a duration (since their producer's last write,
    /// as Kafka's tool measures), or holding back at least N records from read_committed
    /// consumers, on any partition (or one topic's).
    FindHanging {
        #[arg(long)]
        topic: Option<String>,
        /// Report transactions whose producer last wrote at least this long ago (seconds).
        #[arg(long, default_value_t = 60)]
        older_than_secs: u64,
        /// Also report younger ones that hold back at least this many records.
        #[arg(long, value_name = "N")]
        held_back: Option<i64>,
    },
    /// Abort an open (hanging) transaction by writing its abort marker, as
    /// `kafka-transactions.sh abort` does. Exacta aborts the producer's whole transaction
    /// through its coordinator (fencing the producer) when it knows it.
    Abort {
        #[arg(long)]
        topic: String,
        #[arg(long)]
        partition: i32,
        #[arg(long)]
        producer_id: i64,
    },
}

pub async fn topic(
    cluster: &mut Cluster,
    command: TopicCommand,
    output: Output,
) -> anyhow::Result<()> {
    match command {
        TopicCommand::List => {
            let metadata = cluster.metadata(None).await?;
            let mut rows = Rows::new(&["TOPIC", "PARTITIONS", "INTERNAL"]);
            let mut topics: Vec<_> = metadata.topics.iter().collect();
            topics.sort_by_key(|t| t.name.as_ref().map(|n| n.to_string()));
            for t in topics {
                rows.push(vec![
                    json!(t.name.as_ref().map(|n| n.as_str()).unwrap_or_default()),
                    json!(t.partitions.len()),
                    json!(t.is_internal),
                ]);
            }
            rows.print(output);
        }
        TopicCommand::Describe { topic } => {
            let metadata = cluster.metadata(Some(std::slice::from_ref(&topic))).await?;
            let t = metadata.topics.first().context("no metadata returned")?;
            KafkaError::check(t.error_code, None)?;
            let mut rows = Rows::new(&[
                "PARTITION",
                "LEADER",
                "START",
                "END",
                "LSO",
                "LSO LAG",
                "SIZE",
            ]);
            let mut partitions: Vec<_> = t.partitions.iter().collect();
            partitions.sort_by_key(|p| p.partition_index);
            let sizes = log_sizes(cluster, &topic).await?;
            for p in partitions {
                let i = p.partition_index;
                let start = list_offset(cluster, &topic, i, -2, 0).await?;
                let end = list_offset(cluster, &topic, i, -1, 0).await?;
                let lso = list_offset(cluster, &topic, i, -1, 1).await?;
                rows.push(vec![
                    json!(i),
                    json!(p.leader_id.0),
                    json!(start),
                    json!(end),
                    json!(lso),
                    json!(end - lso),
                    json!(sizes.get(&i)),
                ]);
            }
            let configs = describe_configs(cluster, &topic).await?;
            let mut config_rows = Rows::new(&["CONFIG", "VALUE", "DEFAULT"]);
            for (name, (value, default)) in configs {
                config_rows.push(vec![json!(name), json!(value), json!(default)]);
            }
            if output == Output::Json {
                println!(
                    "{}",
                    json!({"partitions": rows.to_json(), "configs": config_rows.to_json()})
                );
            } else {
                rows.print(output);
                println!();
                config_rows.print(output);
            }
        }
        TopicCommand::Create {
            topic,
            partitions,
            configs,
        } => {
            let mut creatable = CreatableTopic::default()
                .with_name(topic_name(&topic))
                .with_num_partitions(partitions)
                .with_replication_factor(-1);
            for c in &configs {
                let (k, v) = c
                    .split_once('=')
                    .with_context(|| format!("'{c}' is not KEY=VALUE"))?;
                creatable.configs.push(
                    CreatableTopicConfig::default()
                        .with_name(s(k))
                        .with_value(Some(s(v))),
                );
            }
            let request = CreateTopicsRequest::default()
                .with_topics(vec![creatable])
                .with_timeout_ms(30_000);
            let response = cluster.any().await?.send(&request).await?;
            for t in &response.topics {
                KafkaError::check(t.error_code, t.error_message.as_ref())?;
            }
            println!("created topic {topic} with {partitions} partition(s)");
        }
        TopicCommand::Delete { topic } => {
            let conn = cluster.any().await?;
            let version = conn.version_of::<DeleteTopicsRequest>().unwrap_or(0);
            let mut request = DeleteTopicsRequest::default().with_timeout_ms(30_000);
            if version >= 6 {
                request.topics = vec![delete_topics_request::DeleteTopicState::default()
                    .with_name(Some(topic_name(&topic)))];
            } else {
                request.topic_names = vec![topic_name(&topic)];
            }
            let response = conn.send(&request).await?;
            for r in &response.responses {
                KafkaError::check(r.error_code, r.error_message.as_ref())?;
            }
            println!("deleted topic {topic}");
        }
        TopicCommand::DeleteRecords {
            topic,
            partition,
            before,
        } => {
            use delete_records_request::{DeleteRecordsPartition, DeleteRecordsTopic};
            let request = DeleteRecordsRequest::default()
                .with_timeout_ms(30_000)
                .with_topics(vec![DeleteRecordsTopic::default()
                    .with_name(topic_name(&topic))
                    .with_partitions(vec![DeleteRecordsPartition::default()
                        .with_partition_index(partition)
                        .with_offset(before)])]);
            let response = cluster
                .leader(&topic, partition)
                .await?
                .send(&request)
                .await?;
            let p = response
                .topics
                .first()
                .and_then(|t| t.partitions.first())
                .context("empty DeleteRecords response")?;
            KafkaError::check(p.error_code, None)?;
            println!(
                "deleted the records of {topic}-{partition} before offset {}",
                p.low_watermark
            );
        }
        TopicCommand::AlterConfig { topic, set, delete } => {
            use incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
            let mut resource = AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s(&topic));
            for c in &set {
                let (k, v) = c
                    .split_once('=')
                    .with_context(|| format!("'{c}' is not KEY=VALUE"))?;
                resource.configs.push(
                    AlterableConfig::default()
                        .with_name(s(k))
                        .with_config_operation(0)
                        .with_value(Some(s(v))),
                );
            }
            for k in &delete {
                resource.configs.push(
                    AlterableConfig::default()
                        .with_name(s(k))
                        .with_config_operation(1),
                );
            }
            if resource.configs.is_empty() {
                bail!("nothing to change: give --set KEY=VALUE or --delete KEY");
            }
            let request = IncrementalAlterConfigsRequest::default().with_resources(vec![resource]);
            let response = cluster.any().await?.send(&request).await?;
            for r in &response.responses {
                KafkaError::check(r.error_code, r.error_message.as_ref())?;
            }
            println!("updated the configs of topic {topic}");
        }
    }
    Ok(())
}

/// Bytes on disk per partition of `topic` (DescribeLogDirs of every broker).
async fn log_sizes(cluster: &mut Cluster, topic: &str) -> anyhow::Result<BTreeMap<i32, i64>> {
    // Null topics: every partition of the broker (a list would have to name partitions).
    let request = DescribeLogDirsRequest::default().with_topics(None);
    let mut sizes = BTreeMap::new();
    for (_, address) in cluster.brokers().await? {
        let response = cluster.broker(&address).await?.send(&request).await?;
        for dir in &response.results {
            for t in dir.topics.iter().filter(|t| t.name.as_str() == topic) {
                for p in &t.partitions {
                    *sizes.entry(p.partition_index).or_insert(0) += p.partition_size;
                }
            }
        }
    }
    Ok(sizes)
}

/// ListOffsets for one partition: `timestamp` -1 latest, -2 earliest; `isolation` 1 for
/// read_committed (the LSO).
pub(crate) async fn list_offset(
    cluster: &mut Cluster,
    topic: &str,
    partition: i32,
    timestamp: i64,
    isolation: i8,
) -> anyhow::Result<i64> {
    let request = ListOffsetsRequest::default()
        .with_replica_id((-1).into())
        .with_isolation_level(isolation)
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(partition)
                .with_timestamp(timestamp)])]);
    let response = cluster
        .leader(topic, partition)
        .await?
        .send(&request)
        .await?;
    let p = response
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .context("empty ListOffsets response")?;
    KafkaError::check(p.error_code, None)?;
    Ok(p.offset)
}

async fn describe_configs(
    cluster: &mut Cluster,
    topic: &str,
) -> anyhow::Result<BTreeMap<String, (String, bool)>> {
    let request = DescribeConfigsRequest::default().with_resources(vec![
        describe_configs_request::DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(s(topic))
            .with_configuration_keys(None),
    ]);
    let response = cluster.any().await?.send(&request).await?;
    let r = response
        .results
        .first()
        .context("empty DescribeConfigs response")?;
    KafkaError::check(r.error_code, r.error_message.as_ref())?;
    Ok(r.configs
        .iter()
        .map(|c| {
            (
                c.name.to_string(),
                (
                    c.value.as_ref().map(|v| v.to_string()).unwrap_or_default(),
                    c.config_source != 1,
                ),
            )
        })
        .collect())
}

/// One line about a group: a new-protocol group (ConsumerGroupDescribe) with its epoch
/// and assignor, else a classic one (DescribeGroups) with its protocol.
async fn describe_group_header(
    conn: &mut exacta_client::Connection,
    group: &str,
) -> anyhow::Result<String> {
    if conn.version_of::<ConsumerGroupDescribeRequest>().is_some() {
        let described = conn
            .send(&ConsumerGroupDescribeRequest::default().with_group_ids(vec![GroupId(s(group))]))
            .await?;
        let g = described
            .groups
            .first()
            .context("empty ConsumerGroupDescribe response")?;
        if g.error_code == 0 {
            return Ok(format!(
                "group {group}: consumer protocol, state {}, epoch {}, assignor {}, {} member(s)",
                g.group_state.as_str(),
                g.group_epoch,
                g.assignor_name.as_str(),
                g.members.len()
            ));
        }
    }
    let described = conn
        .send(&DescribeGroupsRequest::default().with_groups(vec![GroupId(s(group))]))
        .await?;
    let g = described
        .groups
        .first()
        .context("empty DescribeGroups response")?;
    KafkaError::check(g.error_code, None)?;
    Ok(format!(
        "group {group}: classic protocol, state {}, {} member(s), protocol {}",
        g.group_state.as_str(),
        g.members.len(),
        g.protocol_data.as_str()
    ))
}

pub async fn group(
    cluster: &mut Cluster,
    command: GroupCommand,
    output: Output,
) -> anyhow::Result<()> {
    match command {
        GroupCommand::List => {
            let mut rows = Rows::new(&["GROUP", "TYPE", "STATE", "PROTOCOL TYPE"]);
            for (_, address) in cluster.brokers().await? {
                let response = cluster
                    .broker(&address)
                    .await?
                    .send(&ListGroupsRequest::default())
                    .await?;
                KafkaError::check(response.error_code, None)?;
                for g in response.groups {
                    rows.push(vec![
                        json!(g.group_id.as_str()),
                        json!(g.group_type.as_str()),
                        json!(g.group_state.as_str()),
                        json!(g.protocol_type.as_str()),
                    ]);
                }
            }
            rows.print(output);
        }
        GroupCommand::Describe { group } => {
            let conn = cluster.coordinator(&group, GROUP).await?;
            let header = describe_group_header(conn, &group).await?;
            let version = conn.version_of::<OffsetFetchRequest>().unwrap_or(1);
            let mut request = OffsetFetchRequest::default();
            if version >= 8 {
                request.groups = vec![offset_fetch_request::OffsetFetchRequestGroup::default()
                    .with_group_id(GroupId(s(&group)))
                    .with_topics(None)];
            } else {
                request.group_id = GroupId(s(&group));
                request.topics = None;
            }
            let fetched = conn.send(&request).await?;
            let mut committed: Vec<(String, i32, i64)> = Vec::new();
            if version >= 8 {
                for gr in &fetched.groups {
                    KafkaError::check(gr.error_code, None)?;
                    for t in &gr.topics {
                        for p in &t.partitions {
                            committed.push((
                                t.name.to_string(),
                                p.partition_index,
                                p.committed_offset,
                            ));
                        }
                    }
                }
            } else {
                KafkaError::check(fetched.error_code, None)?;
                for t in &fetched.topics {
                    for p in &t.partitions {
                        committed.push((t.name.to_string(), p.partition_index, p.committed_offset));
                    }
                }
            }
            committed.sort();
            if output == Output::Table {
                println!("{header}");
            }
            let mut rows = Rows::new(&["TOPIC", "PARTITION", "COMMITTED", "END", "LAG"]);
            for (topic, partition, offset) in committed {
                let end = list_offset(cluster, &topic, partition, -1, 0).await?;
                rows.push(vec![
                    json!(topic),
                    json!(partition),
                    json!(offset),
                    json!(end),
                    json!(end - offset.max(0)),
                ]);
            }
            rows.print(output);
        }
        GroupCommand::ResetOffsets {
            group,
            topic,
            to_earliest,
            to_latest,
            to_offset,
            execute,
        } => {
            if !to_earliest && !to_latest && to_offset.is_none() {
                bail!("say where to: --to-earliest, --to-latest or --to-offset N");
            }
            let metadata = cluster.metadata(Some(std::slice::from_ref(&topic))).await?;
            let t = metadata.topics.first().context("no metadata returned")?;
            KafkaError::check(t.error_code, None)?;
            let mut indexes: Vec<i32> = t.partitions.iter().map(|p| p.partition_index).collect();
            indexes.sort_unstable();
            let mut plan = Vec::new();
            for (done, &i) in indexes.iter().enumerate() {
                let start = list_offset(cluster, &topic, i, -2, 0).await?;
                let end = list_offset(cluster, &topic, i, -1, 0).await?;
                let target = match to_offset {
                    Some(o) => o.clamp(start, end),
                    None if to_earliest => start,
                    None => end,
                };
                plan.push((i, target));
                if output == Output::Table && indexes.len() > 20 {
                    eprint!("\rplanning {}/{} partitions", done + 1, indexes.len());
                }
            }
            if output == Output::Table && indexes.len() > 20 {
                eprintln!();
            }
            if execute {
                use offset_commit_request::{
                    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
                };
                let request = OffsetCommitRequest::default()
                    .with_group_id(GroupId(s(&group)))
                    .with_generation_id_or_member_epoch(-1)
                    .with_member_id(s(""))
                    .with_topics(vec![OffsetCommitRequestTopic::default()
                        .with_name(topic_name(&topic))
                        .with_partitions(
                            plan.iter()
                                .map(|&(i, o)| {
                                    OffsetCommitRequestPartition::default()
                                        .with_partition_index(i)
                                        .with_committed_offset(o)
                                })
                                .collect(),
                        )]);
                let response = cluster
                    .coordinator(&group, GROUP)
                    .await?
                    .send(&request)
                    .await?;
                for t in &response.topics {
                    for p in &t.partitions {
                        KafkaError::check(p.error_code, None).with_context(|| {
                            format!(
                                "resetting {topic}-{} (the group must have no active members)",
                                p.partition_index
                            )
                        })?;
                    }
                }
            }
            let mut rows = Rows::new(&["TOPIC", "PARTITION", "NEW OFFSET"]);
            for (i, o) in plan {
                rows.push(vec![json!(topic), json!(i), json!(o)]);
            }
            rows.print(output);
            if !execute && output == Output::Table {
                println!("(dry run: add --execute to apply)");
            }
        }
        GroupCommand::Delete { group } => {
            let conn = cluster.coordinator(&group, GROUP).await?;
            let response = conn
                .send(&DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s(&group))]))
                .await?;
            for r in &response.results {
                KafkaError::check(r.error_code, None)?;
            }
            println!("deleted group {group}");
        }
    }
    Ok(())
}

pub async fn txn(cluster: &mut Cluster, command: TxnCommand, output: Output) -> anyhow::Result<()> {
    match command {
        TxnCommand::List { states } => {
            let mut rows = Rows::new(&["TRANSACTIONAL ID", "PRODUCER ID", "STATE"]);
            for (_, address) in cluster.brokers().await? {
                let request = ListTransactionsRequest::default()
                    .with_state_filters(states.iter().map(|x| s(x)).collect());
                let response = cluster.broker(&address).await?.send(&request).await?;
                KafkaError::check(response.error_code, None)?;
                for t in response.transaction_states {
                    rows.push(vec![
                        json!(t.transactional_id.as_str()),
                        json!(t.producer_id.0),
                        json!(t.transaction_state.as_str()),
                    ]);
                }
            }
            rows.print(output);
        }
        TxnCommand::Describe { transactional_id } => {
            let conn = cluster.coordinator(&transactional_id, TRANSACTION).await?;
            let response = conn
                .send(
                    &DescribeTransactionsRequest::default()
                        .with_transactional_ids(vec![TransactionalId(s(&transactional_id))]),
                )
                .await?;
            let t = response
                .transaction_states
                .first()
                .context("empty DescribeTransactions response")?;
            KafkaError::check(t.error_code, None)?;
            let now = now_ms();
            let partitions: Vec<String> = t
                .topics
                .iter()
                .flat_map(|d| {
                    d.partitions
                        .iter()
                        .map(move |p| format!("{}-{p}", d.topic.as_str()))
                })
                .collect();
            let mut rows = Rows::new(&[
                "TRANSACTIONAL ID",
                "PRODUCER ID",
                "EPOCH",
                "STATE",
                "TIMEOUT MS",
                "AGE MS",
                "PARTITIONS",
            ]);
            rows.push(vec![
                json!(transactional_id),
                json!(t.producer_id.0),
                json!(t.producer_epoch),
                json!(t.transaction_state.as_str()),
                json!(t.transaction_timeout_ms),
                if t.transaction_start_time_ms >= 0 {
                    json!(now - t.transaction_start_time_ms)
                } else {
                    Value::Null
                },
                json!(partitions.join(",")),
            ]);
            rows.print(output);
        }
        TxnCommand::Producers { topic, partition } => {
            let mut rows = Rows::new(&[
                "PRODUCER ID",
                "EPOCH",
                "LAST SEQUENCE",
                "LAST TIMESTAMP",
                "COORDINATOR EPOCH",
                "TXN START OFFSET",
            ]);
            for p in producers(cluster, &topic, partition).await? {
                rows.push(vec![
                    json!(p.producer_id.0),
                    json!(p.producer_epoch),
                    json!(p.last_sequence),
                    json!(p.last_timestamp),
                    json!(p.coordinator_epoch),
                    if p.current_txn_start_offset >= 0 {
                        json!(p.current_txn_start_offset)
                    } else {
                        Value::Null
                    },
                ]);
            }
            rows.print(output);
        }
        TxnCommand::FindHanging {
            topic,
            older_than_secs,
            held_back,
        } => {
            let metadata = cluster
                .metadata(topic.as_ref().map(std::slice::from_ref))
                .await?;
            let now = now_ms();
            let mut rows = Rows::new(&[
                "TOPIC",
                "PARTITION",
                "PRODUCER ID",
                "EPOCH",
                "START OFFSET",
                "AGE MS",
                "HELD BACK",
            ]);
            for t in &metadata.topics {
                let Some(name) = t.name.as_ref().map(|n| n.to_string()) else {
                    continue;
                };
                KafkaError::check(t.error_code, None)?;
                for p in &t.partitions {
                    let i = p.partition_index;
                    for producer in producers(cluster, &name, i).await? {
                        let age = now - producer.last_timestamp;
                        if producer.current_txn_start_offset < 0 {
                            continue;
                        }
                        let end = list_offset(cluster, &name, i, -1, 0).await?;
                        let holds = end - producer.current_txn_start_offset;
                        if age < older_than_secs as i64 * 1000
                            && held_back.is_none_or(|n| holds < n)
                        {
                            continue;
                        }
                        rows.push(vec![
                            json!(name),
                            json!(i),
                            json!(producer.producer_id.0),
                            json!(producer.producer_epoch),
                            json!(producer.current_txn_start_offset),
                            json!(age),
                            json!(holds),
                        ]);
                    }
                }
            }
            rows.print(output);
        }
        TxnCommand::Abort {
            topic,
            partition,
            producer_id,
        } => {
            let producer = producers(cluster, &topic, partition)
                .await?
                .into_iter()
                .find(|p| p.producer_id.0 == producer_id)
                .with_context(|| format!("{topic}-{partition} has no producer {producer_id} (see `exacta txn producers {topic} {partition}`)"))?;
            if producer.current_txn_start_offset < 0 {
                bail!("producer {producer_id} has no open transaction on {topic}-{partition}");
            }
            let marker = WritableTxnMarker::default()
                .with_producer_id(ProducerId(producer_id))
                .with_producer_epoch(producer.producer_epoch as i16)
                .with_transaction_result(false)
                .with_coordinator_epoch(producer.coordinator_epoch)
                .with_topics(vec![WritableTxnMarkerTopic::default()
                    .with_name(topic_name(&topic))
                    .with_partition_indexes(vec![partition])]);
            let response = cluster
                .leader(&topic, partition)
                .await?
                .send(&WriteTxnMarkersRequest::default().with_markers(vec![marker]))
                .await?;
            for m in &response.markers {
                for t in &m.topics {
                    for p in &t.partitions {
                        KafkaError::check(p.error_code, None)?;
                    }
                }
            }
            println!("aborted the open transaction of producer {producer_id} (epoch {}) starting at {topic}-{partition} offset {}", producer.producer_epoch, producer.current_txn_start_offset);
        }
    }
    Ok(())
}

async fn producers(
    cluster: &mut Cluster,
    topic: &str,
    partition: i32,
) -> anyhow::Result<Vec<describe_producers_response::ProducerState>> {
    let request = DescribeProducersRequest::default().with_topics(vec![TopicRequest::default()
        .with_name(topic_name(topic))
        .with_partition_indexes(vec![partition])]);
    let response = cluster
        .leader(topic, partition)
        .await?
        .send(&request)
        .await?;
    let p = response
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .context("empty DescribeProducers response")?;
    KafkaError::check(p.error_code, p.error_message.as_ref())?;
    Ok(p.active_producers.clone())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
