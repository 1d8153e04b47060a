//! The runtime around the transaction coordinator: `__transaction_state`, marker writing,
//! timeouts, recovery, and the check that a transactional write belongs to an open
//! transaction.
//!
//! The state is split in one [`TxnCoordinator`] per `__transaction_state` partition (a
//! transactional id lives in the partition its name hashes to, as on Kafka), each behind
//! its own lock: producers whose ids live in different partitions never wait for each
//! other. A producer id is mapped to its partition through a cache filled on InitProducerId
//! and at load (a producer id belongs to one transactional id for good, so a cached entry
//! is never wrong; a miss asks every partition).
//!
//! To ensure correctness: ending a transaction is Prepare record durable → a marker in every
//! partition durable → Complete record appended → answer (a lost Complete is redone from
//! the Prepare at restart). A transactional produce is checked and appended under the lock
//! of its transactional id's partition, where that id's Prepare record is also written, so
//! it either precedes the Prepare record (and is covered by the markers) or is refused; it
//! can never land after a marker and start a hanging transaction. Records are appended
//! under the same lock, so each partition's log order is its state order.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use bytes::BytesMut;
use exacta_coordinator::group::partition_for;
use exacta_coordinator::txn::{
    EndOutcome, EndPlan, InitOutcome, TxnConfig, TxnCoordinator, TxnRecord,
};
use exacta_types::ErrorCode;
use exacta_wire::batch::KeyedRecord;

use crate::groups::{GroupRuntime, OFFSETS_TOPIC};
use crate::metrics::{Metrics, METRICS};
use crate::partitions::{ApiError, Broker, Partition};

/// A partition and the offset that must be durable (below its high watermark).
pub type Durable = (Arc<Partition>, i64);

/// Name of the internal transaction-state topic.
pub const TXN_TOPIC: &str = "__transaction_state";

/// The transaction coordinator of this broker.
pub struct TxnRuntime {
    broker: Arc<Broker>,
    groups: Arc<GroupRuntime>,
    partitions: i32,
    /// One coordinator per `__transaction_state` partition, indexed by partition.
    shards: Vec<Mutex<TxnCoordinator>>,
    /// Producer id → shard (a cache, see the module docs).
    producer_shards: RwLock<HashMap<i64, usize>>,
}

impl std::fmt::Debug for TxnRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxnRuntime")
            .field("partitions", &self.partitions)
            .finish()
    }
}

impl TxnRuntime {
    /// Creates `__transaction_state` if needed and rebuilds the state from it. In a
    /// cluster (CLUSTERED) the topic comes from the quorum and this coordinator holds
    /// nothing: transactions are not served in a cluster yet (docs/cluster.md).
    pub fn open(
        broker: Arc<Broker>,
        groups: Arc<GroupRuntime>,
        config: TxnConfig,
        partitions: i32,
        clustered: bool,
    ) -> Result<Self, ApiError> {
        let started = std::time::Instant::now();
        let topic = if clustered {
            None
        } else {
            Some(crate::internal::open_topic(
                &broker,
                TXN_TOPIC,
                partitions,
                broker.config.transaction_state_segment_bytes,
            )?)
        };
        let shard_count = topic
            .as_ref()
            .map_or(partitions as usize, |t| t.partitions.len());
        let mut shards: Vec<TxnCoordinator> = (0..shard_count)
            .map(|_| TxnCoordinator::new(config.clone()))
            .collect();
        let mut loaded = 0usize;
        let Some(topic) = topic else {
            return Ok(Self {
                broker,
                groups,
                partitions: shard_count as i32,
                shards: shards.into_iter().map(Mutex::new).collect(),
                producer_shards: RwLock::new(HashMap::new()),
            });
        };
        crate::internal::replay(&topic, |record| {
            let Some(key) = record.key else { return };
            match TxnRecord::from_key_value(&key, record.value.as_deref()) {
                Ok(r) => {
                    let shard = partition_for(&r.transactional_id, shard_count as i32) as usize;
                    shards[shard].apply(&r);
                    loaded += 1;
                }
                Err(e) => {
                    tracing::warn!(offset = record.offset, error = %e, "skipping unreadable transaction record")
                }
            }
        })?;
        let mut producer_shards = HashMap::new();
        for (shard, coordinator) in shards.iter().enumerate() {
            for (_, meta) in coordinator.all() {
                producer_shards.insert(meta.producer_id, shard);
            }
        }
        tracing::info!(
            transactional_ids = shards.iter().map(|c| c.all().count()).sum::<usize>(),
            records = loaded,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "transaction coordinator loaded"
        );
        METRICS.txn_load_ms.store(
            started.elapsed().as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(Self {
            broker,
            groups,
            partitions: shard_count as i32,
            shards: shards.into_iter().map(Mutex::new).collect(),
            producer_shards: RwLock::new(producer_shards),
        })
    }

    /// The shard of a transactional id.
    fn shard_of(&self, transactional_id: &str) -> usize {
        partition_for(transactional_id, self.partitions) as usize
    }

    fn lock(&self, shard: usize) -> MutexGuard<'_, TxnCoordinator> {
        self.shards[shard].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The lock of the shard holding `producer_id`, if any shard does.
    fn lock_producer(&self, producer_id: i64) -> Option<MutexGuard<'_, TxnCoordinator>> {
        let cached = self
            .producer_shards
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&producer_id)
            .copied();
        if let Some(shard) = cached {
            return Some(self.lock(shard));
        }
        for shard in 0..self.shards.len() {
            let state = self.lock(shard);
            if state.knows_producer(producer_id) {
                self.remember_producer(producer_id, shard);
                return Some(state);
            }
        }
        None
    }

    fn remember_producer(&self, producer_id: i64, shard: usize) {
        self.producer_shards
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(producer_id, shard);
    }

    /// Runs `f` on the coordinator of `transactional_id`.
    pub fn with_id<T>(&self, transactional_id: &str, f: impl FnOnce(&TxnCoordinator) -> T) -> T {
        f(&self.lock(self.shard_of(transactional_id)))
    }

    /// Runs `f` on every shard's coordinator in turn (one lock at a time) and collects the
    /// results.
    pub fn each<T>(&self, mut f: impl FnMut(&TxnCoordinator) -> T) -> Vec<T> {
        (0..self.shards.len()).map(|s| f(&self.lock(s))).collect()
    }

    /// Appends records (call with the lock held, so log order is state order).
    fn append(&self, records: &[TxnRecord]) -> Result<Vec<Durable>, ApiError> {
        let now = crate::now_ms();
        let mut by_partition: BTreeMap<i32, Vec<KeyedRecord>> = BTreeMap::new();
        for r in records {
            by_partition
                .entry(partition_for(&r.transactional_id, self.partitions))
                .or_default()
                .push(r.to_key_value());
        }
        let mut waits = Vec::new();
        for (index, entries) in by_partition {
            let partition = self.broker.partition(TXN_TOPIC, index).ok_or_else(|| {
                ApiError::new(
                    ErrorCode::CoordinatorNotAvailable,
                    format!("{TXN_TOPIC}-{index} is missing"),
                )
            })?;
            let mut batch =
                BytesMut::from(&exacta_wire::batch::build_keyed_batch(&entries, now, None)[..]);
            let info = partition.append(&mut batch)?;
            waits.push((partition, info.last_offset));
        }
        Ok(waits)
    }

    async fn durable(waits: Vec<Durable>) {
        for (partition, last) in waits {
            partition.wait_for_high_watermark(last).await;
        }
    }

    /// InitProducerId with a transactional id.
    pub async fn init_producer_id(
        &self,
        id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
    ) -> Result<(i64, i16), ErrorCode> {
        enum Step {
            Done(Vec<Durable>, i64, i16),
            AbortFirst(EndPlan, Vec<Durable>),
        }
        // At most one abort of an open transaction, then the epoch bump.
        for _ in 0..3 {
            let step = {
                let shard = self.shard_of(id);
                let mut state = self.lock(shard);
                let broker = &self.broker;
                let mut allocate = || {
                    broker
                        .init_producer_id(-1, -1)
                        .map(|(id, _)| id)
                        .map_err(|e| e.code)
                };
                match state.init_producer_id(
                    id,
                    timeout_ms,
                    expected,
                    crate::now_ms(),
                    &mut allocate,
                ) {
                    InitOutcome::Ready {
                        record,
                        producer_id,
                        epoch,
                    } => {
                        self.remember_producer(producer_id, shard);
                        Step::Done(
                            self.append(&[record]).map_err(|e| e.code)?,
                            producer_id,
                            epoch,
                        )
                    }
                    InitOutcome::AbortFirst(plan) => {
                        let waits = self
                            .append(std::slice::from_ref(&plan.prepare))
                            .map_err(|e| e.code)?;
                        Step::AbortFirst(plan, waits)
                    }
                    InitOutcome::Error(e) => return Err(e),
                }
            };
            match step {
                Step::Done(waits, producer_id, epoch) => {
                    Self::durable(waits).await;
                    return Ok((producer_id, epoch));
                }
                Step::AbortFirst(plan, waits) => {
                    tracing::info!(
                        transactional_id = id,
                        "fencing the previous producer: aborting its open transaction"
                    );
                    Metrics::add(&METRICS.fencings, 1);
                    Self::durable(waits).await;
                    self.finish(plan).await?;
                }
            }
        }
        Err(ErrorCode::ConcurrentTransactions)
    }

    /// AddPartitionsToTxn and AddOffsetsToTxn.
    pub async fn add_partitions(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
    ) -> Result<(), ErrorCode> {
        let waits = {
            let mut state = self.lock(self.shard_of(id));
            match state.add_partitions(id, producer_id, epoch, partitions, crate::now_ms())? {
                Some(record) => self.append(&[record]).map_err(|e| e.code)?,
                None => Vec::new(),
            }
        };
        Self::durable(waits).await;
        Ok(())
    }

    /// AddPartitionsToTxn v4+ `verify_only`: see [`TxnCoordinator::verify_partitions`].
    pub fn verify_partitions(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
    ) -> Result<Vec<ErrorCode>, ErrorCode> {
        self.lock(self.shard_of(id))
            .verify_partitions(id, producer_id, epoch, partitions)
    }

    /// EndTxn: prepare, markers, complete; a retry of a completed end succeeds. Returns the
    /// producer id and epoch the client continues with (bumped with `v2`, KIP-890).
    pub async fn end_txn(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        v2: bool,
    ) -> Result<(i64, i16), ErrorCode> {
        let (plan, waits) = {
            let mut state = self.lock(self.shard_of(id));
            match state.begin_end(id, producer_id, epoch, commit, v2, crate::now_ms())? {
                EndOutcome::AlreadyDone => {
                    return state
                        .producer_of(id)
                        .ok_or(ErrorCode::InvalidProducerIdMapping)
                }
                EndOutcome::Run(plan) => {
                    let waits = self
                        .append(std::slice::from_ref(&plan.prepare))
                        .map_err(|e| e.code)?;
                    (plan, waits)
                }
            }
        };
        Self::durable(waits).await;
        let (producer_id, epoch) = (plan.producer_id, plan.epoch);
        self.finish(plan).await?;
        Ok((producer_id, epoch))
    }

    /// Writes the markers of a prepared plan, then the Complete record.
    async fn finish(&self, plan: EndPlan) -> Result<(), ErrorCode> {
        if std::env::var_os("EXACTA_TEST_CRASH_AFTER_PREPARE").is_some() {
            // Test hook: die like kill -9 with the Prepare record durable and no marker
            // written, to prove that a restart completes the transaction.
            tracing::error!(transactional_id = %plan.transactional_id, "EXACTA_TEST_CRASH_AFTER_PREPARE: exiting");
            std::process::exit(137);
        }
        let started = std::time::Instant::now();
        let mut waits = Vec::new();
        let mut offsets_partitions = false;
        for (topic, index) in &plan.partitions {
            let Some(partition) = self.broker.partition(topic, *index) else {
                tracing::warn!(topic = %topic, partition = index, "transaction partition no longer exists; skipping its marker");
                continue;
            };
            let offset = match partition.append_marker(plan.producer_id, plan.epoch, plan.commit) {
                Ok(offset) => offset,
                // A marker with a newer epoch already ended this producer's transaction here.
                Err(e) if e.code == ErrorCode::InvalidProducerEpoch => {
                    tracing::warn!(topic = %topic, partition = index, error = %e.message, "skipping a stale transaction marker");
                    continue;
                }
                Err(e) => {
                    tracing::error!(topic = %topic, partition = index, error = %e.message, "writing a transaction marker failed");
                    return Err(e.code);
                }
            };
            offsets_partitions |= topic == OFFSETS_TOPIC;
            waits.push((partition, offset));
        }
        Self::durable(waits).await;
        METRICS.marker_seconds.observe(started.elapsed());
        Metrics::add(
            if plan.commit {
                &METRICS.txns_committed
            } else {
                &METRICS.txns_aborted
            },
            1,
        );
        if offsets_partitions {
            self.groups.end_txn(plan.producer_id, plan.commit);
        }
        // The outcome is decided and every marker is durable: the answer need not wait for
        // the Complete record. If it is lost, the log ends at Prepare and a restart writes
        // the (idempotent) markers again and completes; anything appended later to this
        // transactional id's log comes after it, so it cannot survive without it.
        {
            let mut state = self.lock(self.shard_of(&plan.transactional_id));
            if let Some(record) = state.complete(&plan.transactional_id, crate::now_ms()) {
                self.append(&[record]).map_err(|e| e.code)?;
            }
        }
        tracing::debug!(transactional_id = %plan.transactional_id, commit = plan.commit, partitions = plan.partitions.len(), "transaction ended");
        Ok(())
    }

    /// Runs `append` only if `producer_id`/`epoch` has the partition in its open
    /// transaction, holding the coordinator lock throughout. With `implicit` (Produce v12,
    /// TxnOffsetCommit v5: KIP-890) the partition first joins the transaction; the returned
    /// wait (if any) is that change's record, to be durable before the answer.
    pub fn verified<T>(
        &self,
        producer_id: i64,
        epoch: i16,
        topic: &str,
        partition: i32,
        implicit: bool,
        append: impl FnOnce() -> Result<T, ApiError>,
    ) -> Result<(T, Vec<Durable>), ApiError> {
        let mut state = self.lock_producer(producer_id).ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidProducerIdMapping,
                format!("producer {producer_id} belongs to no transactional id"),
            )
        })?;
        let mut waits = Vec::new();
        if implicit {
            let added = state
                .add_partition_implicitly(producer_id, epoch, (topic.to_string(), partition), crate::now_ms())
                .map_err(|code| ApiError::new(code, format!("producer {producer_id} epoch {epoch} cannot add {topic}-{partition} to a transaction")))?;
            if let Some(record) = added {
                waits = self.append(&[record])?;
            }
        }
        state
            .partition_in_txn(producer_id, epoch, topic, partition)
            .map_err(|code| {
                ApiError::new(
                    code,
                    format!("producer {producer_id} epoch {epoch} has no open transaction containing {topic}-{partition}"),
                )
            })?;
        Ok((append()?, waits))
    }

    /// Waits until records written by [`TxnRuntime::verified`] are durable.
    pub async fn durable_records(waits: Vec<Durable>) {
        Self::durable(waits).await
    }

    /// The `__consumer_offsets` partition of a group, as AddOffsetsToTxn adds it.
    pub fn offsets_partition(&self, group: &str) -> (String, i32) {
        (OFFSETS_TOPIC.to_string(), self.groups.partition_of(group))
    }

    /// Aborts `producer_id`'s open transaction on an operator's request (see
    /// [`TxnCoordinator::abort_producer`]); `None` when it has none.
    pub async fn abort_producer(&self, producer_id: i64) -> Option<Result<(), ErrorCode>> {
        let (plan, waits) = {
            let mut state = self.lock_producer(producer_id)?;
            let plan = state.abort_producer(producer_id, crate::now_ms())?;
            match self.append(std::slice::from_ref(&plan.prepare)) {
                Ok(waits) => (plan, waits),
                Err(e) => return Some(Err(e.code)),
            }
        };
        Metrics::add(&METRICS.fencings, 1);
        Self::durable(waits).await;
        Some(self.finish(plan).await)
    }

    /// Finishes transactions left in Prepare* by a restart, then times out open ones and
    /// expires idle ids, every 100 ms.
    pub async fn tick_loop(self: Arc<Self>) {
        let unfinished: Vec<EndPlan> = self
            .each(|s| s.unfinished())
            .into_iter()
            .flatten()
            .collect();
        for plan in unfinished {
            tracing::info!(transactional_id = %plan.transactional_id, commit = plan.commit, "completing a transaction prepared before the restart");
            if let Err(e) = self.finish(plan).await {
                tracing::error!(error = %e, "could not complete a prepared transaction");
            }
        }
        let mut every = tokio::time::interval(Duration::from_millis(100));
        loop {
            every.tick().await;
            for shard in 0..self.shards.len() {
                self.tick_shard(shard).await;
            }
        }
    }

    /// Times out open transactions and expires idle ids of one shard.
    async fn tick_shard(&self, shard: usize) {
        let work = {
            let mut state = self.lock(shard);
            let (plans, tombstones) = state.tick(crate::now_ms());
            if !tombstones.is_empty() {
                // Expired ids take their producer ids with them: so does the cache.
                self.producer_shards
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .retain(|pid, s| *s != shard || state.knows_producer(*pid));
            }
            let mut records: Vec<TxnRecord> = plans.iter().map(|p| p.prepare.clone()).collect();
            records.extend(tombstones);
            if records.is_empty() {
                return;
            }
            self.append(&records).map(|waits| (plans, waits))
        };
        match work {
            Ok((plans, waits)) => {
                // Each plan aborts a timed-out transaction with an epoch bump. The timeout is
                // counted once its abort is complete (markers durable), as aborts are, so a
                // scrape never shows a timeout whose abort is not yet counted.
                Metrics::add(&METRICS.fencings, plans.len() as u64);
                Self::durable(waits).await;
                for plan in plans {
                    match self.finish(plan).await {
                        Ok(_) => Metrics::add(&METRICS.txns_timed_out, 1),
                        Err(e) => {
                            tracing::error!(error = %e, "could not abort a timed-out transaction")
                        }
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e.message, "transaction coordinator tick could not write")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::config::BrokerConfig;

    fn runtime(dir: &std::path::Path) -> Arc<TxnRuntime> {
        runtime_with(BrokerConfig {
            data_dir: dir.to_path_buf(),
            ..BrokerConfig::default()
        })
    }

    fn runtime_with(config: BrokerConfig) -> Arc<TxnRuntime> {
        let (group_config, txn_config) = (config.group_config(), config.txn_config());
        let broker = Broker::open(config).unwrap();
        let groups =
            Arc::new(GroupRuntime::open(Arc::clone(&broker), group_config, 4, false).unwrap());
        Arc::new(TxnRuntime::open(broker, groups, txn_config, 4, false).unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn transactional_ids_of_different_partitions_do_not_wait_for_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime(dir.path());
        let a = "id-a".to_string();
        let b = (0..)
            .map(|i| format!("id-b-{i}"))
            .find(|b| rt.shard_of(b) != rt.shard_of(&a))
            .unwrap();
        let same = (0..)
            .map(|i| format!("id-a-{i}"))
            .find(|s| rt.shard_of(s) == rt.shard_of(&a))
            .unwrap();
        // Something holds id-a's partition for a second.
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let holder = {
            let rt = Arc::clone(&rt);
            std::thread::spawn(move || {
                rt.with_id(&a, |_| {
                    held_tx.send(()).unwrap();
                    std::thread::sleep(Duration::from_secs(1));
                })
            })
        };
        held_rx.recv().unwrap();
        let started = Instant::now();
        let (pid, _) = rt.init_producer_id(&b, 60_000, None).await.unwrap();
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "another partition's id waited {:?}",
            started.elapsed()
        );
        rt.init_producer_id(&same, 60_000, None).await.unwrap();
        assert!(
            started.elapsed() >= Duration::from_millis(900),
            "an id of the held partition must wait for it"
        );
        holder.join().unwrap();
        // The producer id finds its partition (cached, and by asking every partition).
        rt.producer_shards.write().unwrap().clear();
        let verified = rt.verified(pid, 0, "t", 0, false, || Ok(()));
        assert_eq!(verified.unwrap_err().code, ErrorCode::InvalidTxnState);
        let unknown = rt.verified(pid + 1000, 0, "t", 0, false, || Ok(()));
        assert_eq!(
            unknown.unwrap_err().code,
            ErrorCode::InvalidProducerIdMapping
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn expired_ids_leave_the_producer_cache() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime_with(BrokerConfig {
            data_dir: dir.path().to_path_buf(),
            transactional_id_expiration_ms: 1,
            ..BrokerConfig::default()
        });
        let (pid, _) = rt
            .init_producer_id("short-lived", 60_000, None)
            .await
            .unwrap();
        assert!(rt.producer_shards.read().unwrap().contains_key(&pid));
        tokio::time::sleep(Duration::from_millis(20)).await;
        rt.tick_shard(rt.shard_of("short-lived")).await;
        assert!(rt.with_id("short-lived", |c| c.get("short-lived").is_none()));
        assert!(!rt.producer_shards.read().unwrap().contains_key(&pid));
    }
}
