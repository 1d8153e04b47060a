//! The follower side of replication: one fetcher task per leader broker this broker
//! follows partitions of. Each one, over its own connection to that leader:
//!
//! 1. once per leader epoch, asks OffsetForLeaderEpoch where the leader's log ends for
//!    this replica's newest epoch and cuts its own log there (the KIP-101/279 rule: what a
//!    follower has beyond its leader's log for that epoch was never committed);
//! 2. fetches from its log end offset as a replica (Fetch with its broker id), appends the
//!    leader's batches as they are, fsyncs them when the topic's flush rule fsyncs every
//!    append, and only then fetches again: the fetch offset tells the leader what is
//!    durable here, which is what moves the leader's high watermark;
//! 3. takes the leader's high watermark, capped by its own log end.
//!
//! A task ends when no partition follows its leader any more; [`Fetchers::refresh`]
//! starts the tasks the current roles need and wakes the running ones, so a partition
//! that just began following a leader is fetched at once rather than after the long poll
//! in flight (a new leader's high watermark, and so its coordinators' loading, waits for
//! that first fetch).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use exacta_client::Connection;
use exacta_types::ErrorCode;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ReplicaState};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, OffsetForLeaderEpochRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::Role;
use crate::cluster::ClusterRuntime;
use crate::partitions::{Broker, Partition};

/// How long a replica fetch waits at the leader for new records.
const FETCH_WAIT_MS: i32 = 500;
/// Bytes per partition per fetch.
const PARTITION_BYTES: i32 = 1 << 20;
/// Pause after a failed round (connection refused, leader not ready).
const BACKOFF: Duration = Duration::from_millis(50);

/// The running fetcher tasks, by leader broker id.
pub struct Fetchers {
    broker: Arc<Broker>,
    cluster: Arc<ClusterRuntime>,
    tasks: HashMap<i32, (JoinHandle<()>, Arc<Notify>)>,
}

impl Fetchers {
    pub fn new(broker: Arc<Broker>, cluster: Arc<ClusterRuntime>) -> Self {
        Self {
            broker,
            cluster,
            tasks: HashMap::new(),
        }
    }

    /// Starts a fetcher for every leader some local partition follows and has none.
    pub fn refresh(&mut self) {
        self.tasks.retain(|_, (task, _)| !task.is_finished());
        if self.cluster.stopping() {
            return;
        }
        for (_, changed) in self.tasks.values() {
            changed.notify_one();
        }
        let mut leaders: Vec<i32> = following(&self.broker, None)
            .iter()
            .filter_map(|p| match p.role_now() {
                Role::Follower(f) => Some(f.leader),
                _ => None,
            })
            .collect();
        leaders.sort_unstable();
        leaders.dedup();
        for leader in leaders {
            if self.tasks.contains_key(&leader) {
                continue;
            }
            let broker = Arc::clone(&self.broker);
            let cluster = Arc::clone(&self.cluster);
            tracing::debug!(leader, "starting a replica fetcher");
            let changed = Arc::new(Notify::new());
            let task = tokio::spawn(fetch_from(broker, cluster, leader, Arc::clone(&changed)));
            self.tasks.insert(leader, (task, changed));
        }
    }
}

/// Local partitions that follow LEADER (any leader when `None`).
fn following(broker: &Broker, leader: Option<i32>) -> Vec<Arc<Partition>> {
    broker
        .topics()
        .iter()
        .flat_map(|t| t.partitions.iter().cloned())
        .filter(|p| match p.role_now() {
            Role::Follower(f) => leader.is_none_or(|l| l == f.leader),
            _ => false,
        })
        .collect()
}

async fn fetch_from(
    broker: Arc<Broker>,
    cluster: Arc<ClusterRuntime>,
    leader: i32,
    changed: Arc<Notify>,
) {
    let mut connection: Option<Connection> = None;
    loop {
        if cluster.stopping() {
            tracing::debug!(leader, "stopping the replica fetcher: shutting down");
            return;
        }
        let partitions = following(&broker, Some(leader));
        if partitions.is_empty() {
            tracing::debug!(leader, "no partition follows this leader any more");
            return;
        }
        if connection.is_none() {
            let address = cluster.brokers().into_iter().find(|(id, _)| *id == leader);
            let Some((_, address)) = address else {
                tokio::time::sleep(BACKOFF).await;
                continue;
            };
            match Connection::connect(&address).await {
                Ok(c) => connection = Some(c),
                Err(e) => {
                    tracing::debug!(leader, error = %e, "connecting to the leader");
                    tokio::time::sleep(BACKOFF).await;
                    continue;
                }
            }
        }
        let conn = connection.as_mut().expect("connected above");
        let round = async {
            truncate(conn, cluster.me, &partitions).await?;
            fetch(conn, &broker, cluster.me, &partitions).await
        };
        tokio::select! {
            done = round => if let Err(e) = done {
                tracing::debug!(leader, error = %e, "replica fetch round failed");
                connection = None;
                tokio::time::sleep(BACKOFF).await;
            },
            () = changed.notified() => {
                // Roles changed: fetch the new set now. The answer to the abandoned
                // request would arrive on this connection, so it goes too.
                connection = None;
            }
        }
    }
}

/// The follower role of P if it still follows at EPOCH.
fn still_following(p: &Partition, epoch: i32) -> bool {
    matches!(p.role_now(), Role::Follower(f) if f.epoch == epoch)
}

/// Step 1 of the module docs, for the partitions not yet truncated in their epoch.
async fn truncate(
    conn: &mut Connection,
    me: i32,
    partitions: &[Arc<Partition>],
) -> Result<(), String> {
    let pending: Vec<(Arc<Partition>, i32)> = partitions
        .iter()
        .filter_map(|p| match p.role_now() {
            Role::Follower(f) if !f.truncated => Some((Arc::clone(p), f.epoch)),
            _ => None,
        })
        .collect();
    if pending.is_empty() {
        return Ok(());
    }
    let mut request = OffsetForLeaderEpochRequest::default().with_replica_id(BrokerId(me));
    for (p, epoch) in &pending {
        let latest = p.log().latest_epoch().unwrap_or(-1);
        request.topics.push(
            OffsetForLeaderTopic::default()
                .with_topic(TopicName(StrBytes::from_string(p.topic.clone())))
                .with_partitions(vec![OffsetForLeaderPartition::default()
                    .with_partition(p.index)
                    .with_current_leader_epoch(*epoch)
                    .with_leader_epoch(latest)]),
        );
    }
    let response = conn.send(&request).await.map_err(|e| e.to_string())?;
    for topic in response.topics {
        for answer in topic.partitions {
            let Some((p, epoch)) = pending
                .iter()
                .find(|(p, _)| p.topic == topic.topic.as_str() && p.index == answer.partition)
            else {
                continue;
            };
            if answer.error_code != 0 {
                tracing::debug!(topic = %p.topic, partition = p.index, code = answer.error_code, "OffsetForLeaderEpoch");
                continue;
            }
            let p = Arc::clone(p);
            let epoch = *epoch;
            let cut = tokio::task::spawn_blocking(move || {
                if !still_following(&p, epoch) {
                    return Ok(());
                }
                p.truncate_for_leader(epoch, answer.leader_epoch, answer.end_offset)
            })
            .await
            .map_err(|e| e.to_string())?;
            if let Err(e) = cut {
                tracing::error!(error = %e.message, "truncating a follower's log");
            }
        }
    }
    Ok(())
}

/// Step 2 and 3 of the module docs: one replica fetch for every truncated partition.
async fn fetch(
    conn: &mut Connection,
    broker: &Arc<Broker>,
    me: i32,
    partitions: &[Arc<Partition>],
) -> Result<(), String> {
    let version = conn
        .version_of::<FetchRequest>()
        .ok_or("the leader does not serve Fetch")?;
    let mut request = FetchRequest::default()
        .with_max_wait_ms(FETCH_WAIT_MS)
        .with_min_bytes(1)
        .with_max_bytes(broker.config.fetch_bytes_max)
        .with_session_epoch(-1);
    if version >= 15 {
        request.replica_state = ReplicaState::default()
            .with_replica_id(BrokerId(me))
            .with_replica_epoch(-1);
    } else {
        request.replica_id = BrokerId(me);
    }
    let mut asked: Vec<(Arc<Partition>, i32)> = Vec::new();
    for p in partitions {
        let Role::Follower(f) = p.role_now() else {
            continue;
        };
        if !f.truncated {
            continue;
        }
        let topic = broker.topic(&p.topic).ok_or("topic gone")?;
        let mut fetch_topic =
            FetchTopic::default().with_partitions(vec![FetchPartition::default()
                .with_partition(p.index)
                .with_current_leader_epoch(f.epoch)
                .with_fetch_offset(p.log_end_offset())
                .with_log_start_offset(-1)
                .with_partition_max_bytes(PARTITION_BYTES)]);
        if version >= 13 {
            fetch_topic.topic_id = topic.id;
        } else {
            fetch_topic.topic = TopicName(StrBytes::from_string(p.topic.clone()));
        }
        request.topics.push(fetch_topic);
        asked.push((Arc::clone(p), f.epoch));
    }
    if asked.is_empty() {
        // Every partition is waiting for its truncation (the leader did not answer it).
        tokio::time::sleep(BACKOFF).await;
        return Ok(());
    }
    let response = conn.send(&request).await.map_err(|e| e.to_string())?;
    let mut i = 0;
    for topic in response.responses {
        for data in topic.partitions {
            let Some((p, epoch)) = asked.get(i).cloned() else {
                return Err("more partitions in the answer than asked".into());
            };
            i += 1;
            if data.partition_index != p.index {
                return Err(format!(
                    "answer for partition {} where {} was asked",
                    data.partition_index, p.index
                ));
            }
            if data.error_code != 0 {
                let code = ErrorCode::from_code(data.error_code);
                tracing::debug!(topic = %p.topic, partition = p.index, ?code, "replica fetch error");
                if code == Some(ErrorCode::OffsetOutOfRange) {
                    tracing::warn!(topic = %p.topic, partition = p.index, leader_log_start = data.log_start_offset,
                        "this replica is behind its leader's log start; it cannot catch up by fetching");
                }
                continue;
            }
            let records = data.records.unwrap_or_default();
            let leader_hw = data.high_watermark;
            let appended = tokio::task::spawn_blocking(move || {
                p.append_from_leader(epoch, &records, leader_hw)
            })
            .await
            .map_err(|e| e.to_string())?;
            if let Err(e) = appended {
                // A gap or a corrupt batch: truncate again in this epoch before going on.
                tracing::warn!(error = %e.message, "appending fetched records");
                return Err(e.message);
            }
        }
    }
    Ok(())
}
