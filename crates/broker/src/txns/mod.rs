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
//! the Prepare at restart). On a single node a transactional produce is checked and
//! appended under the lock of its transactional id's partition, where that id's Prepare
//! record is also written, so it either precedes the Prepare record (and is covered by the
//! markers) or is refused; it can never land after a marker and start a hanging
//! transaction (a cluster gets the same guarantee from [`verify`]). Records are appended
//! under the same lock, so each partition's log order is its state order. Timeouts and
//! the completion of transactions prepared before a restart: [`tick`].
//!
//! In a cluster a shard is served only by the leader of its `__transaction_state`
//! partition ([`load`]), markers go to each partition's leader ([`markers`]), and a
//! partition leader checks a transactional write with the coordinator before appending it
//! ([`verify`]).

mod load;
pub mod markers;
mod tick;
pub mod verify;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use bytes::BytesMut;
use exacta_coordinator::group::partition_for;
use exacta_coordinator::txn::{
    EndOutcome, EndPlan, InitOutcome, TxnConfig, TxnCoordinator, TxnRecord,
};
use exacta_types::ErrorCode;
use exacta_wire::batch::KeyedRecord;

use crate::cluster::ClusterRuntime;
use crate::groups::{GroupRuntime, OFFSETS_TOPIC};
use crate::metrics::{Metrics, METRICS};
use crate::partitions::{ApiError, Broker, Partition};
use crate::serving::Serving;

/// A partition, the offset that must be committed (below its high watermark) and the
/// leader epoch it was written under.
pub type Durable = (Arc<Partition>, i64, i32);

/// One `__transaction_state` partition's coordinator, and whether it is served here.
pub(crate) struct TxnShard {
    coordinator: TxnCoordinator,
    serving: Serving,
}

impl std::ops::Deref for TxnShard {
    type Target = TxnCoordinator;
    fn deref(&self) -> &TxnCoordinator {
        &self.coordinator
    }
}

impl std::ops::DerefMut for TxnShard {
    fn deref_mut(&mut self) -> &mut TxnCoordinator {
        &mut self.coordinator
    }
}

/// Name of the internal transaction-state topic.
pub const TXN_TOPIC: &str = "__transaction_state";

/// The transaction coordinator of this broker.
pub struct TxnRuntime {
    broker: Arc<Broker>,
    groups: Arc<GroupRuntime>,
    partitions: i32,
    /// One coordinator per `__transaction_state` partition, indexed by partition.
    shards: Vec<Mutex<TxnShard>>,
    config: TxnConfig,
    /// This broker's cluster membership (markers go to other leaders); `None` on a
    /// single node.
    cluster: Option<Arc<ClusterRuntime>>,
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
    /// cluster the topic comes from the quorum and each shard starts unserved until this
    /// broker leads its partition ([`load`]).
    pub fn open(
        broker: Arc<Broker>,
        groups: Arc<GroupRuntime>,
        config: TxnConfig,
        partitions: i32,
        cluster: Option<Arc<ClusterRuntime>>,
    ) -> Result<Self, ApiError> {
        let clustered = cluster.is_some();
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
        let serving = if clustered {
            Serving::No
        } else {
            Serving::Leader(0)
        };
        let wrap = |shards: Vec<TxnCoordinator>| {
            shards
                .into_iter()
                .map(|coordinator| {
                    Mutex::new(TxnShard {
                        coordinator,
                        serving,
                    })
                })
                .collect()
        };
        let Some(topic) = topic else {
            return Ok(Self {
                broker,
                groups,
                partitions: shard_count as i32,
                shards: wrap(shards),
                config,
                cluster,
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
            shards: wrap(shards),
            config,
            cluster,
            producer_shards: RwLock::new(producer_shards),
        })
    }

    /// The shard of a transactional id.
    fn shard_of(&self, transactional_id: &str) -> usize {
        partition_for(transactional_id, self.partitions) as usize
    }

    fn lock(&self, shard: usize) -> MutexGuard<'_, TxnShard> {
        self.shards[shard].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The shard's lock if it is served here, else NOT_COORDINATOR or
    /// COORDINATOR_LOAD_IN_PROGRESS.
    fn lock_serving(&self, shard: usize) -> Result<MutexGuard<'_, TxnShard>, ErrorCode> {
        let state = self.lock(shard);
        match state.serving {
            // Also checked against the partition: the leadership may have moved a moment
            // before this shard was told.
            // A single node always leads: no lookup on its transactional produce path.
            Serving::Leader(_) if self.cluster.is_none() => Ok(state),
            Serving::Leader(epoch) => match self.broker.partition(TXN_TOPIC, shard as i32) {
                Some(p) if p.check_leader(epoch).is_ok() => Ok(state),
                _ => Err(ErrorCode::NotCoordinator),
            },
            Serving::Loading(_) => Err(ErrorCode::CoordinatorLoadInProgress),
            Serving::No => Err(ErrorCode::NotCoordinator),
        }
    }

    /// The lock of the shard holding `producer_id`, if a shard served here does.
    fn lock_producer(&self, producer_id: i64) -> Option<MutexGuard<'_, TxnShard>> {
        let cached = self
            .producer_shards
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&producer_id)
            .copied();
        if let Some(shard) = cached {
            return self.lock_serving(shard).ok();
        }
        for shard in 0..self.shards.len() {
            let Ok(state) = self.lock_serving(shard) else {
                continue;
            };
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

    /// Runs `f` on the coordinator of `transactional_id`, or says why it is not here.
    pub fn with_id<T>(
        &self,
        transactional_id: &str,
        f: impl FnOnce(&TxnCoordinator) -> T,
    ) -> Result<T, ErrorCode> {
        let state = self.lock_serving(self.shard_of(transactional_id))?;
        Ok(f(&state))
    }

    /// Runs `f` on every served shard's coordinator in turn (one lock at a time) and
    /// collects the results.
    pub fn each<T>(&self, mut f: impl FnMut(&TxnCoordinator) -> T) -> Vec<T> {
        (0..self.shards.len())
            .filter_map(|s| self.lock_serving(s).ok().map(|state| f(&state)))
            .collect()
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
            let (info, epoch) = partition.append_as_leader(&mut batch).map_err(|e| {
                if e.code == ErrorCode::NotLeaderOrFollower {
                    ApiError::new(ErrorCode::NotCoordinator, e.message)
                } else {
                    e
                }
            })?;
            waits.push((partition, info.last_offset, epoch));
        }
        Ok(waits)
    }

    /// Waits until WAITS are committed; NOT_COORDINATOR if a partition's leadership moved
    /// first (the records may be gone: the new coordinator decides from its log).
    async fn durable(waits: Vec<Durable>) -> Result<(), ErrorCode> {
        for (partition, last, epoch) in waits {
            if !partition.committed_at(last, epoch).await {
                return Err(ErrorCode::NotCoordinator);
            }
        }
        Ok(())
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
        // In a cluster producer ids come from the quorum's blocks (asynchronously, so one
        // is taken before the lock; an unused one is simply skipped).
        let spare = match &self.cluster {
            Some(c) => Some(c.init_producer_id(-1, -1).await.map_err(|e| e.code)?.0),
            None => None,
        };
        // At most one abort of an open transaction, then the epoch bump.
        for _ in 0..3 {
            let step = {
                let shard = self.shard_of(id);
                let mut state = self.lock_serving(shard)?;
                let broker = &self.broker;
                let mut spare = spare;
                let mut allocate = || match spare.take() {
                    Some(id) => Ok(id),
                    None => broker
                        .init_producer_id(-1, -1)
                        .map(|(id, _)| id)
                        .map_err(|e| e.code),
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
                    Self::durable(waits).await?;
                    return Ok((producer_id, epoch));
                }
                Step::AbortFirst(plan, waits) => {
                    tracing::info!(
                        transactional_id = id,
                        "fencing the previous producer: aborting its open transaction"
                    );
                    Metrics::add(&METRICS.fencings, 1);
                    Self::durable(waits).await?;
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
            let mut state = self.lock_serving(self.shard_of(id))?;
            match state.add_partitions(id, producer_id, epoch, partitions, crate::now_ms())? {
                Some(record) => self.append(&[record]).map_err(|e| e.code)?,
                None => Vec::new(),
            }
        };
        Self::durable(waits).await
    }

    /// A partition leader's first transactional write with protocol v2 (KIP-890): adds
    /// PARTITION to the transaction and waits until that is committed.
    pub async fn add_implicitly(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        partition: &(String, i32),
    ) -> Result<(), ErrorCode> {
        let waits = {
            let mut state = self.lock_serving(self.shard_of(id))?;
            if state.get(id).map(|m| m.producer_id) != Some(producer_id) {
                return Err(ErrorCode::InvalidProducerIdMapping);
            }
            match state.add_partition_implicitly(
                producer_id,
                epoch,
                partition.clone(),
                crate::now_ms(),
            )? {
                Some(record) => self.append(&[record]).map_err(|e| e.code)?,
                None => Vec::new(),
            }
        };
        Self::durable(waits).await
    }

    /// How many `__transaction_state` partitions (shards) there are.
    pub fn partitions(&self) -> i32 {
        self.partitions
    }

    /// AddPartitionsToTxn v4+ `verify_only`: see [`TxnCoordinator::verify_partitions`].
    pub fn verify_partitions(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
    ) -> Result<Vec<ErrorCode>, ErrorCode> {
        self.lock_serving(self.shard_of(id))?
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
            let mut state = self.lock_serving(self.shard_of(id))?;
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
        Self::durable(waits).await?;
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
        self.write_markers(&plan).await?;
        METRICS.marker_seconds.observe(started.elapsed());
        Metrics::add(
            if plan.commit {
                &METRICS.txns_committed
            } else {
                &METRICS.txns_aborted
            },
            1,
        );
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

    /// Waits until records written by [`TxnRuntime::verified`] are committed.
    pub async fn durable_records(waits: Vec<Durable>) -> Result<(), ErrorCode> {
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
        if let Err(e) = Self::durable(waits).await {
            return Some(Err(e));
        }
        Some(self.finish(plan).await)
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
        Arc::new(TxnRuntime::open(broker, groups, txn_config, 4, None).unwrap())
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
        holder.join().unwrap().unwrap();
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
        assert_eq!(
            rt.with_id("short-lived", |c| c.get("short-lived").is_none()),
            Ok(true)
        );
        assert!(!rt.producer_shards.read().unwrap().contains_key(&pid));
    }
}
