//! The runtime around the group coordinator state machine: it owns the
//! `__consumer_offsets` partitions, replays them on start, appends the records the state
//! machine emits and delivers its replies once those records are durable.
//!
//! To ensure correctness: records are appended while the state lock is held, so the log
//! order is the order of state changes; offset records are applied to the visible state
//! only once the partition's high watermark (durable under `flush_policy = "always"`)
//! passes them, in log order. A reply that depends on records is sent only after they are
//! durable; if they cannot be written the reply is an error.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::BytesMut;
use exacta_coordinator::group::{
    partition_for, GroupConfig, GroupCoordinator, JoinResponse, Output, Record, Reply, ReplyId,
    SyncResponse,
};
use exacta_types::ErrorCode;
use exacta_wire::batch::KeyedRecord;
use tokio::sync::oneshot;

use crate::partitions::{ApiError, Broker, Partition};

/// The partition and last offset to wait for (if anything was written), and a code per
/// partition of a TxnOffsetCommit.
pub type TxnOffsetsAppended = (Option<(Arc<Partition>, i64)>, Vec<ErrorCode>);

/// Name of the internal offsets topic.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

struct Inner {
    coordinator: GroupCoordinator,
    /// Per offsets partition, offset records appended but not yet durable, in log order.
    pending: BTreeMap<i32, VecDeque<(i64, Vec<Record>)>>,
    /// Offsets committed inside a transaction, per producer id, until its marker.
    txn_offsets: HashMap<i64, Vec<Record>>,
}

/// The group coordinator of this broker.
pub struct GroupRuntime {
    broker: Arc<Broker>,
    partitions: i32,
    inner: Mutex<Inner>,
    replies: Mutex<HashMap<ReplyId, oneshot::Sender<Reply>>>,
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
    /// Creates `__consumer_offsets` if needed and rebuilds the state from it.
    pub fn open(
        broker: Arc<Broker>,
        config: GroupConfig,
        partitions: i32,
    ) -> Result<Self, ApiError> {
        let started = std::time::Instant::now();
        let topic = crate::internal::open_topic(&broker, OFFSETS_TOPIC, partitions)?;
        let mut coordinator = GroupCoordinator::new(config);
        let mut txn_offsets: HashMap<i64, Vec<Record>> = HashMap::new();
        let now = crate::now_ms();
        let mut loaded = 0usize;
        crate::internal::replay(&topic, |record| {
            let Some(key) = record.key else { return };
            if record.control {
                // A transaction marker: its offsets become visible or vanish.
                let commit = key.len() >= 4 && i16::from_be_bytes([key[2], key[3]]) == 1;
                for r in txn_offsets.remove(&record.producer_id).unwrap_or_default() {
                    if commit {
                        coordinator.apply(&r, now);
                    }
                }
                return;
            }
            match Record::from_key_value(&key, record.value.as_deref()) {
                Ok(r) if record.transactional => {
                    txn_offsets.entry(record.producer_id).or_default().push(r);
                }
                Ok(r) => {
                    coordinator.apply(&r, now);
                    loaded += 1;
                }
                Err(e) => {
                    tracing::warn!(offset = record.offset, error = %e, "skipping unreadable group record")
                }
            }
        })?;
        tracing::info!(
            groups = coordinator.list_groups().len(),
            records = loaded,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "group coordinator loaded"
        );
        crate::metrics::METRICS.group_load_ms.store(
            started.elapsed().as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(Self {
            broker,
            partitions: topic.partitions.len() as i32,
            inner: Mutex::new(Inner {
                coordinator,
                pending: BTreeMap::new(),
                txn_offsets,
            }),
            replies: Mutex::new(HashMap::new()),
            next_reply: AtomicU64::new(1),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the state machine (describe, list, fetch offsets, heartbeat).
    pub fn with<T>(&self, f: impl FnOnce(&mut GroupCoordinator) -> T) -> T {
        f(&mut self.lock().coordinator)
    }

    fn register(&self) -> (ReplyId, oneshot::Receiver<Reply>) {
        let id = self.next_reply.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.replies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        (id, rx)
    }

    /// Runs `op` on the state machine with a fresh reply id and waits for its reply.
    pub async fn call(
        &self,
        op: impl FnOnce(&mut GroupCoordinator, ReplyId, i64) -> Output,
    ) -> Reply {
        let (id, rx) = self.register();
        // A failed write is reported through the reply itself (see `deliver`).
        let _ = self.run(|c, now| op(c, id, now)).await;
        rx.await.unwrap_or(Reply::Join(JoinResponse {
            error: ErrorCode::CoordinatorNotAvailable,
            generation: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: String::new(),
            members: Vec::new(),
            skip_assignment: false,
        }))
    }

    /// Runs an operation: appends its records under the lock, waits until they are
    /// durable, applies durable offsets, then delivers its replies.
    pub async fn run(
        &self,
        op: impl FnOnce(&mut GroupCoordinator, i64) -> Output,
    ) -> Result<(), ApiError> {
        let now = crate::now_ms();
        let (replies, waits, failed) = {
            let mut inner = self.lock();
            let out = op(&mut inner.coordinator, now);
            match self.append(&mut inner, out.records, now) {
                Ok(waits) => (out.replies, waits, None),
                Err(e) => (out.replies, Vec::new(), Some(e)),
            }
        };
        for (partition, last) in &waits {
            partition.wait_for_high_watermark(*last).await;
        }
        if !waits.is_empty() {
            self.apply_durable();
        }
        self.deliver(replies, failed.as_ref().map(|e| e.code));
        failed.map_or(Ok(()), Err)
    }

    /// Appends records grouped by offsets partition; remembers offset records to apply.
    fn append(
        &self,
        inner: &mut Inner,
        records: Vec<Record>,
        now: i64,
    ) -> Result<Vec<(Arc<Partition>, i64)>, ApiError> {
        let mut by_partition: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
        for r in records {
            by_partition
                .entry(partition_for(r.group_id(), self.partitions))
                .or_default()
                .push(r);
        }
        let mut waits = Vec::new();
        for (index, records) in by_partition {
            let partition = self.broker.partition(OFFSETS_TOPIC, index).ok_or_else(|| {
                ApiError::new(
                    ErrorCode::CoordinatorNotAvailable,
                    format!("{OFFSETS_TOPIC}-{index} is missing"),
                )
            })?;
            let entries: Vec<KeyedRecord> = records.iter().map(Record::to_key_value).collect();
            let mut batch =
                BytesMut::from(&exacta_wire::batch::build_keyed_batch(&entries, now, None)[..]);
            let info = partition.append(&mut batch)?;
            let offsets: Vec<Record> = records
                .into_iter()
                .filter(|r| matches!(r, Record::Offset { .. }))
                .collect();
            if !offsets.is_empty() {
                inner
                    .pending
                    .entry(index)
                    .or_default()
                    .push_back((info.last_offset, offsets));
            }
            waits.push((partition, info.last_offset));
        }
        Ok(waits)
    }

    /// Applies, in log order, every pending offset record now below its partition's HW.
    fn apply_durable(&self) {
        let now = crate::now_ms();
        let mut inner = self.lock();
        let Inner {
            coordinator,
            pending,
            ..
        } = &mut *inner;
        for (index, queue) in pending.iter_mut() {
            let Some(partition) = self.broker.partition(OFFSETS_TOPIC, *index) else {
                continue;
            };
            let hw = partition.high_watermark();
            while queue.front().is_some_and(|(last, _)| *last < hw) {
                if let Some((_, records)) = queue.pop_front() {
                    for r in &records {
                        coordinator.apply(r, now);
                    }
                }
            }
        }
    }

    fn deliver(&self, replies: Vec<(ReplyId, Reply)>, failed: Option<ErrorCode>) {
        let mut senders = self.replies.lock().unwrap_or_else(|p| p.into_inner());
        for (id, reply) in replies {
            let reply = match (failed, reply) {
                (None, r) => r,
                (Some(code), Reply::Join(r)) => Reply::Join(JoinResponse { error: code, ..r }),
                (Some(code), Reply::Sync(r)) => Reply::Sync(SyncResponse { error: code, ..r }),
            };
            if let Some(tx) = senders.remove(&id) {
                let _ = tx.send(reply);
            }
        }
    }

    /// Expires sessions and offsets; ends join phases whose time is up.
    pub async fn tick_loop(self: Arc<Self>) {
        let mut every = tokio::time::interval(Duration::from_millis(100));
        loop {
            every.tick().await;
            if let Err(e) = self.run(|c, now| c.tick(now)).await {
                tracing::warn!(error = %e.message, "group coordinator tick could not write its records");
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
    ) -> Result<TxnOffsetsAppended, ErrorCode> {
        let now = crate::now_ms();
        {
            let mut inner = self.lock();
            let (generation, member_id, instance) = member.unwrap_or((-1, String::new(), None));
            let results = inner.coordinator.validate_txn_commit(
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
            let info = partition
                .append_from_coordinator(&mut batch)
                .map_err(|e| e.code)?;
            inner
                .txn_offsets
                .entry(producer_id)
                .or_default()
                .extend(records);
            Ok((Some((partition, info.last_offset)), codes))
        }
    }

    /// After a transaction marker reached the offsets partition: commit makes the
    /// producer's pending offsets visible, abort drops them.
    pub fn end_txn(&self, producer_id: i64, commit: bool) {
        let now = crate::now_ms();
        let mut inner = self.lock();
        let records = inner.txn_offsets.remove(&producer_id).unwrap_or_default();
        if commit {
            for r in &records {
                inner.coordinator.apply(r, now);
            }
        }
    }

    /// Whether an open transaction holds an offset commit for the partition
    /// (OffsetFetch with `require_stable` answers UNSTABLE_OFFSET_COMMIT then).
    pub fn has_pending_txn_offset(&self, group: &str, topic: &str, partition: i32) -> bool {
        let inner = self.lock();
        inner.txn_offsets.values().flatten().any(|r| {
            matches!(r, Record::Offset { group: g, topic: t, partition: p, .. } if g == group && t == topic && *p == partition)
        })
    }
}
