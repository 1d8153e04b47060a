//! The runtime around the group coordinator state machine: it owns the
//! `__consumer_offsets` partitions, replays them on start, appends the records the state
//! machine emits and delivers its replies once those records are durable.
//!
//! Groups are split in one [`GroupCoordinator`] per `__consumer_offsets` partition (a group
//! lives in the partition its id hashes to, as on Kafka), each with its own lock, so
//! members of groups in different partitions never wait for each other. `groups_max` is
//! one budget shared by all of them (each operation may use the room left; concurrent
//! operations on different partitions can overshoot it by at most one group each).
//!
//! To ensure correctness: records are appended while the partition's lock is held, so the
//! log order is the order of state changes; offset records are applied to the visible state
//! only once the partition's high watermark (durable under `flush_policy = "always"`)
//! passes them, in log order. A reply that depends on records is sent only after they are
//! durable; if they cannot be written the reply is an error.
//!
//! In a cluster a shard is served only by the leader of its partition ([`load`]): it loads
//! the partition's state once everything in its log is committed, and drops it when the
//! leadership moves; meanwhile its groups are answered COORDINATOR_LOAD_IN_PROGRESS or
//! NOT_COORDINATOR. A write is answered only once committed under the leader epoch it was
//! made in.

mod load;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::BytesMut;
use exacta_coordinator::consumer::TopicCatalog;
use exacta_coordinator::group::{
    partition_for, GroupConfig, GroupCoordinator, JoinResponse, Output, Record, Reply, ReplyId,
    SyncResponse,
};
use exacta_types::ErrorCode;
use exacta_wire::batch::KeyedRecord;
use tokio::sync::oneshot;

use crate::partitions::{ApiError, Broker, Partition};
use crate::serving::Serving;

/// The partition and last offset to wait for (if anything was written), and a code per
/// partition of a TxnOffsetCommit.
pub type TxnOffsetsAppended = (Option<(Arc<Partition>, i64, i32)>, Vec<ErrorCode>);

/// Topics as the new consumer protocol's coordinator sees them.
impl TopicCatalog for Broker {
    fn by_name(&self, name: &str) -> Option<(uuid::Uuid, i32)> {
        self.topic(name).map(|t| (t.id, t.partitions.len() as i32))
    }

    fn name_of(&self, id: uuid::Uuid) -> Option<String> {
        self.topic_by_id(id).map(|t| t.name.clone())
    }

    fn names(&self) -> Vec<String> {
        self.topics()
            .into_iter()
            .filter(|t| !exacta_types::is_internal_topic(&t.name))
            .map(|t| t.name.clone())
            .collect()
    }

    fn version(&self) -> u64 {
        self.topics_version()
    }
}

/// Name of the internal offsets topic.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// The groups of one `__consumer_offsets` partition.
struct Shard {
    coordinator: GroupCoordinator,
    /// Offset records appended but not yet durable, in log order.
    pending: VecDeque<(i64, Vec<Record>)>,
    /// Offsets committed inside a transaction, per producer id, until its marker.
    txn_offsets: HashMap<i64, Vec<Record>>,
    /// Whether this broker coordinates the shard's groups now.
    serving: Serving,
}

/// The group coordinator of this broker.
pub struct GroupRuntime {
    broker: Arc<Broker>,
    partitions: i32,
    /// One per `__consumer_offsets` partition, indexed by partition.
    shards: Vec<Mutex<Shard>>,
    /// Groups each shard holds (updated after every change), and the budget they share.
    group_counts: Vec<AtomicUsize>,
    groups_max: usize,
    /// Loaded shards keep every group their log holds (`groups_max` is checked per
    /// operation).
    config: GroupConfig,
    /// Waiting replies, with the shard whose state machine will send them.
    replies: Mutex<HashMap<ReplyId, (usize, oneshot::Sender<Reply>)>>,
    next_reply: AtomicU64,
}

impl std::fmt::Debug for GroupRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupRuntime")
            .field("partitions", &self.partitions)
            .finish()
    }
}

impl GroupRuntime {
    /// Creates `__consumer_offsets` if needed and rebuilds the state from it. In a
    /// cluster (CLUSTERED) the topic comes from the quorum and every shard starts unserved
    /// until this broker leads its partition.
    pub fn open(
        broker: Arc<Broker>,
        config: GroupConfig,
        partitions: i32,
        clustered: bool,
    ) -> Result<Self, ApiError> {
        let started = std::time::Instant::now();
        let groups_max = config.groups_max;
        let config = GroupConfig {
            // Loading keeps every group the log holds.
            groups_max: usize::MAX,
            ..config
        };
        let mut loaded = 0usize;
        let shards: Vec<Shard> = if clustered {
            (0..partitions)
                .map(|_| Shard::empty(&config, Serving::No))
                .collect()
        } else {
            let topic = crate::internal::open_topic(
                &broker,
                OFFSETS_TOPIC,
                partitions,
                broker.config.offsets_topic_segment_bytes,
            )?;
            let now = crate::now_ms();
            topic
                .partitions
                .iter()
                .map(|p| {
                    load::read_shard(p, &config, Serving::Leader(0), now).map(|(shard, n)| {
                        loaded += n;
                        shard
                    })
                })
                .collect::<Result<_, _>>()?
        };
        let group_counts: Vec<AtomicUsize> = shards
            .iter()
            .map(|s| AtomicUsize::new(s.coordinator.group_count()))
            .collect();
        if !clustered {
            tracing::info!(
                groups = group_counts
                    .iter()
                    .map(|c| c.load(Ordering::Relaxed))
                    .sum::<usize>(),
                records = loaded,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "group coordinator loaded"
            );
            crate::metrics::METRICS.group_load_ms.store(
                started.elapsed().as_millis() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        Ok(Self {
            broker,
            partitions: shards.len() as i32,
            shards: shards.into_iter().map(Mutex::new).collect(),
            group_counts,
            groups_max,
            config,
            replies: Mutex::new(HashMap::new()),
            next_reply: AtomicU64::new(1),
        })
    }

    /// Records how many groups a shard holds now (call with its lock held).
    fn count_groups(&self, shard: usize, state: &Shard) {
        self.group_counts[shard].store(state.coordinator.group_count(), Ordering::Release);
    }

    fn shard_of(&self, group: &str) -> usize {
        partition_for(group, self.partitions) as usize
    }

    fn lock(&self, shard: usize) -> MutexGuard<'_, Shard> {
        self.shards[shard].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The shard's lock if its groups are coordinated here, else NOT_COORDINATOR or
    /// COORDINATOR_LOAD_IN_PROGRESS; with the leader epoch it is served at.
    fn lock_serving(&self, shard: usize) -> Result<(MutexGuard<'_, Shard>, i32), ApiError> {
        let state = self.lock(shard);
        let not_here = || {
            ApiError::new(
                ErrorCode::NotCoordinator,
                format!(
                    "this broker does not lead {OFFSETS_TOPIC}-{shard}; find the coordinator again"
                ),
            )
        };
        match state.serving {
            // Also checked against the partition itself: the leadership may have moved a
            // moment before this shard was told.
            // A single node always leads: no lookup.
            Serving::Leader(epoch) if self.broker.config.voters.is_none() => Ok((state, epoch)),
            Serving::Leader(epoch) => match self.broker.partition(OFFSETS_TOPIC, shard as i32) {
                Some(p) if p.check_leader(epoch).is_ok() => Ok((state, epoch)),
                _ => Err(not_here()),
            },
            Serving::Loading(_) => Err(ApiError::new(
                ErrorCode::CoordinatorLoadInProgress,
                format!("{OFFSETS_TOPIC}-{shard} is loading on this broker"),
            )),
            Serving::No => Err(not_here()),
        }
    }

    /// Runs `f` on the state machine holding `group` (describe, fetch offsets, heartbeat),
    /// or says why this broker does not coordinate it.
    pub fn with_group<T>(
        &self,
        group: &str,
        f: impl FnOnce(&mut GroupCoordinator) -> T,
    ) -> Result<T, ErrorCode> {
        let (mut state, _) = self
            .lock_serving(self.shard_of(group))
            .map_err(|e| e.code)?;
        Ok(f(&mut state.coordinator))
    }

    /// Runs `f` on every served partition's state machine in turn (one lock at a time)
    /// and collects the results (list groups, metrics).
    pub fn each<T>(&self, mut f: impl FnMut(&GroupCoordinator) -> T) -> Vec<T> {
        (0..self.shards.len())
            .filter_map(|s| {
                self.lock_serving(s)
                    .ok()
                    .map(|(state, _)| f(&state.coordinator))
            })
            .collect()
    }

    fn register(&self, shard: usize) -> (ReplyId, oneshot::Receiver<Reply>) {
        let id = self.next_reply.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.replies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, (shard, tx));
        (id, rx)
    }

    /// Runs `op` on the state machine of `group` with a fresh reply id and waits for its
    /// reply. NOT_COORDINATOR when the shard moved to another broker meanwhile.
    pub async fn call(
        &self,
        group: &str,
        op: impl FnOnce(&mut GroupCoordinator, ReplyId, i64) -> Output,
    ) -> Result<Reply, ErrorCode> {
        let (id, rx) = self.register(self.shard_of(group));
        // A failed write is reported through the reply itself (see `deliver`); an
        // operation that never ran has no reply to wait for.
        if let Err(e) = self.run(group, |c, now| op(c, id, now)).await {
            let pending = self
                .replies
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            if pending.is_some() {
                return Err(e.code);
            }
        }
        // The sender is dropped when the shard is given up (see `load`).
        rx.await.map_err(|_| ErrorCode::NotCoordinator)
    }

    /// Runs an operation on the state machine of `group`: appends its records under the
    /// lock, waits until they are durable, applies durable offsets, then delivers its
    /// replies.
    pub async fn run(
        &self,
        group: &str,
        op: impl FnOnce(&mut GroupCoordinator, i64) -> Output,
    ) -> Result<(), ApiError> {
        self.run_shard(self.shard_of(group), op).await
    }

    async fn run_shard(
        &self,
        shard: usize,
        op: impl FnOnce(&mut GroupCoordinator, i64) -> Output,
    ) -> Result<(), ApiError> {
        let now = crate::now_ms();
        let (replies, wait, mut failed, epoch) = {
            let (mut state, epoch) = self.lock_serving(shard)?;
            let held: usize = self
                .group_counts
                .iter()
                .map(|c| c.load(Ordering::Acquire))
                .sum();
            let room = self.groups_max.saturating_sub(held);
            let limit = state.coordinator.group_count().saturating_add(room);
            state.coordinator.set_groups_max(limit);
            let out = op(&mut state.coordinator, now);
            self.count_groups(shard, &state);
            match self.append(shard, &mut state, out.records, now) {
                Ok(wait) => (out.replies, wait, None, epoch),
                Err(e) => (out.replies, None, Some(e), epoch),
            }
        };
        if let Some((partition, last)) = &wait {
            if partition.committed_at(*last, epoch).await {
                self.apply_durable(shard);
            } else {
                failed = Some(ApiError::new(
                    ErrorCode::NotCoordinator,
                    format!("{OFFSETS_TOPIC}-{shard} moved to another leader before the write was committed"),
                ));
            }
        }
        self.deliver(replies, failed.as_ref().map(|e| e.code));
        failed.map_or(Ok(()), Err)
    }

    /// Appends a shard's records to its offsets partition; remembers offset records to
    /// apply once durable.
    fn append(
        &self,
        shard: usize,
        state: &mut Shard,
        records: Vec<Record>,
        now: i64,
    ) -> Result<Option<(Arc<Partition>, i64)>, ApiError> {
        if records.is_empty() {
            return Ok(None);
        }
        debug_assert!(records.iter().all(|r| self.shard_of(r.group_id()) == shard));
        let partition = self
            .broker
            .partition(OFFSETS_TOPIC, shard as i32)
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::CoordinatorNotAvailable,
                    format!("{OFFSETS_TOPIC}-{shard} is missing"),
                )
            })?;
        let entries: Vec<KeyedRecord> = records.iter().map(Record::to_key_value).collect();
        let mut batch =
            BytesMut::from(&exacta_wire::batch::build_keyed_batch(&entries, now, None)[..]);
        let info = partition.append(&mut batch).map_err(|e| {
            if e.code == ErrorCode::NotLeaderOrFollower {
                ApiError::new(ErrorCode::NotCoordinator, e.message)
            } else {
                e
            }
        })?;
        let offsets: Vec<Record> = records
            .into_iter()
            .filter(|r| matches!(r, Record::Offset { .. }))
            .collect();
        if !offsets.is_empty() {
            state.pending.push_back((info.last_offset, offsets));
        }
        Ok(Some((partition, info.last_offset)))
    }

    /// Applies, in log order, every pending offset record of a shard now below its
    /// partition's HW.
    fn apply_durable(&self, shard: usize) {
        let now = crate::now_ms();
        let Some(partition) = self.broker.partition(OFFSETS_TOPIC, shard as i32) else {
            return;
        };
        let mut state = self.lock(shard);
        let Shard {
            coordinator,
            pending,
            ..
        } = &mut *state;
        let hw = partition.high_watermark();
        while pending.front().is_some_and(|(last, _)| *last < hw) {
            if let Some((_, records)) = pending.pop_front() {
                for r in &records {
                    coordinator.apply(r, now);
                }
            }
        }
        self.count_groups(shard, &state);
    }

    fn deliver(&self, replies: Vec<(ReplyId, Reply)>, failed: Option<ErrorCode>) {
        let mut senders = self.replies.lock().unwrap_or_else(|p| p.into_inner());
        for (id, reply) in replies {
            let Some((_, tx)) = senders.remove(&id) else {
                continue;
            };
            let reply = match (failed, reply) {
                (None, r) => r,
                (Some(code), Reply::Join(r)) => Reply::Join(JoinResponse { error: code, ..r }),
                (Some(code), Reply::Sync(r)) => Reply::Sync(SyncResponse { error: code, ..r }),
            };
            let _ = tx.send(reply);
        }
    }

    /// Expires sessions and offsets; ends join phases whose time is up.
    pub async fn tick_loop(self: Arc<Self>) {
        let mut every = tokio::time::interval(Duration::from_millis(100));
        loop {
            every.tick().await;
            for shard in 0..self.shards.len() {
                if !matches!(self.lock(shard).serving, Serving::Leader(_)) {
                    continue;
                }
                let broker = Arc::clone(&self.broker);
                let tick = |c: &mut GroupCoordinator, now| {
                    let mut out = c.tick(now);
                    out.records.extend(c.consumer_tick(&*broker, now));
                    out
                };
                if let Err(e) = self.run_shard(shard, tick).await {
                    if matches!(
                        e.code,
                        ErrorCode::NotCoordinator | ErrorCode::CoordinatorLoadInProgress
                    ) {
                        continue; // The shard moved away meanwhile.
                    }
                    tracing::warn!(error = %e.message, "group coordinator tick could not write its records");
                }
            }
        }
    }

    pub fn partitions(&self) -> i32 {
        self.partitions
    }

    /// The offsets partition of a group.
    pub fn partition_of(&self, group: &str) -> i32 {
        partition_for(group, self.partitions)
    }

    /// TxnOffsetCommit: checks the member like OffsetCommit (when the client sent member
    /// information, KIP-447), then writes the offsets as a transactional batch of
    /// `producer_id`. They stay invisible until the transaction's marker.
    ///
    /// Appends only; the caller waits for `(partition, last offset)` to be durable.
    pub fn append_txn_offsets(
        &self,
        group: &str,
        producer_id: i64,
        epoch: i16,
        member: Option<(i32, String, Option<String>)>,
        partitions: &[exacta_coordinator::group::CommitPartition],
        check: impl FnOnce(&exacta_log::PartitionLog) -> Result<(), ApiError>,
    ) -> Result<TxnOffsetsAppended, ErrorCode> {
        let now = crate::now_ms();
        {
            let (mut state, _) = self
                .lock_serving(self.shard_of(group))
                .map_err(|e| e.code)?;
            let (generation, member_id, instance) = member.unwrap_or((-1, String::new(), None));
            let results = state.coordinator.validate_txn_commit(
                group,
                generation,
                &member_id,
                instance.as_deref(),
                partitions,
                now,
            )?;
            let records: Vec<Record> = results.iter().filter_map(|(_, r)| r.clone()).collect();
            let codes: Vec<ErrorCode> = results.iter().map(|(e, _)| *e).collect();
            if records.is_empty() {
                return Ok((None, codes));
            }
            let index = partition_for(group, self.partitions);
            let partition = self
                .broker
                .partition(OFFSETS_TOPIC, index)
                .ok_or(ErrorCode::CoordinatorNotAvailable)?;
            let entries: Vec<KeyedRecord> = records.iter().map(Record::to_key_value).collect();
            let mut batch = BytesMut::from(
                &exacta_wire::batch::build_keyed_batch(&entries, now, Some((producer_id, epoch)))[..],
            );
            let (info, leader_epoch) = partition
                .append_from_coordinator(&mut batch, check)
                .map_err(|e| match e.code {
                    ErrorCode::NotLeaderOrFollower => ErrorCode::NotCoordinator,
                    code => code,
                })?;
            state
                .txn_offsets
                .entry(producer_id)
                .or_default()
                .extend(records);
            Ok((Some((partition, info.last_offset, leader_epoch)), codes))
        }
    }

    /// After a transaction marker reached the offsets partition: commit makes the
    /// producer's pending offsets visible, abort drops them.
    pub fn end_txn(&self, producer_id: i64, commit: bool) {
        let now = crate::now_ms();
        for shard in 0..self.shards.len() {
            let mut state = self.lock(shard);
            let records = state.txn_offsets.remove(&producer_id).unwrap_or_default();
            if commit && !records.is_empty() {
                for r in &records {
                    state.coordinator.apply(r, now);
                }
                self.count_groups(shard, &state);
            }
        }
    }

    /// Whether an open transaction holds an offset commit for the partition
    /// (OffsetFetch with `require_stable` answers UNSTABLE_OFFSET_COMMIT then).
    pub fn has_pending_txn_offset(&self, group: &str, topic: &str, partition: i32) -> bool {
        let state = self.lock(self.shard_of(group));
        state.txn_offsets.values().flatten().any(|r| {
            matches!(r, Record::Offset { group: g, topic: t, partition: p, .. } if g == group && t == topic && *p == partition)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use exacta_coordinator::group::CommitPartition;

    use super::*;
    use crate::config::BrokerConfig;

    /// A simple-consumer commit of offset 1 for `group`; its error code.
    async fn commit(groups: &GroupRuntime, group: &str) -> ErrorCode {
        let mut verdict = ErrorCode::UnknownServerError;
        let partitions = [CommitPartition {
            topic: "t".into(),
            partition: 0,
            offset: 1,
            leader_epoch: -1,
            metadata: None,
        }];
        groups
            .run(group, |c, now| {
                match c.commit_offsets(group, -1, "", None, &partitions, 9, now) {
                    Ok(results) => {
                        verdict = results[0].0;
                        Output {
                            records: results.into_iter().filter_map(|(_, r)| r).collect(),
                            replies: Vec::new(),
                        }
                    }
                    Err(e) => {
                        verdict = e;
                        Output::default()
                    }
                }
            })
            .await
            .unwrap();
        verdict
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn groups_of_different_partitions_do_not_wait_and_share_one_budget() {
        let dir = tempfile::tempdir().unwrap();
        let config = BrokerConfig {
            data_dir: dir.path().to_path_buf(),
            groups_max: 3,
            ..BrokerConfig::default()
        };
        let group_config = config.group_config();
        let broker = Broker::open(config).unwrap();
        let groups = Arc::new(GroupRuntime::open(broker, group_config, 8, false).unwrap());
        let a = "group-a".to_string();
        let other: Vec<String> = (0..)
            .map(|i| format!("group-b-{i}"))
            .filter(|b| groups.shard_of(b) != groups.shard_of(&a))
            .take(3)
            .collect();
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let holder = {
            let groups = Arc::clone(&groups);
            std::thread::spawn(move || {
                groups.with_group(&a, |_| {
                    held_tx.send(()).unwrap();
                    std::thread::sleep(Duration::from_secs(1));
                })
            })
        };
        held_rx.recv().unwrap();
        let started = Instant::now();
        assert_eq!(commit(&groups, &other[0]).await, ErrorCode::None);
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "a group of another partition waited {:?}",
            started.elapsed()
        );
        holder.join().unwrap().unwrap();
        // groups_max counts every partition's groups together.
        assert_eq!(commit(&groups, &other[1]).await, ErrorCode::None);
        assert_eq!(commit(&groups, "group-a").await, ErrorCode::None);
        assert_eq!(
            commit(&groups, &other[2]).await,
            ErrorCode::CoordinatorNotAvailable
        );
        assert_eq!(
            commit(&groups, &other[0]).await,
            ErrorCode::None,
            "existing groups go on"
        );
        let listed: usize = groups.each(|c| c.list_groups().len()).into_iter().sum();
        assert_eq!(listed, 3);
    }
}
