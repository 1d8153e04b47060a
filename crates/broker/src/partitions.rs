//! The partition manager: topics, their partition logs and high watermarks.
//!
//! The high watermark (HW) is the offset below which consumers may read. On this single
//! node it is the log end offset, except on a partition whose flush rule fsyncs every
//! append (`flush.messages=1`, the default under `flush_policy = "always"`), where it is
//! the *flushed* offset: a consumer never sees a record that a power loss could take back.
//! Other partitions are fsynced in the background after `flush.messages` records or once
//! their oldest unflushed record is `flush.ms` old ([`Broker::flush_due`]).
//!
//! Topic metadata changes (create, delete, add partitions, alter configs) are serialized
//! by one admin lock and persisted before they become visible.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use exacta_log::topics::{TopicMetadata, TopicStore};
use exacta_log::{AppendInfo, LogError, PartitionLog, ReadResult};
use exacta_types::{validate_topic_name, ErrorCode};
use tokio::sync::watch;
use uuid::Uuid;

use exacta_coordinator::producer_ids::ProducerIdManager;

use crate::broker_settings::DynamicConfigs;
use crate::config::BrokerConfig;
use crate::flusher::Flusher;
use crate::topic_config::{validate_topic_configs, TopicConfigs, WriteRules};

/// Name of the marker a clean shutdown leaves in the data directory.
pub const CLEAN_SHUTDOWN_MARKER: &str = ".exacta-clean-shutdown";
const LOCK_FILE: &str = ".exacta-lock";

/// A refused admin or data operation: the Kafka error and a message for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<LogError> for ApiError {
    fn from(e: LogError) -> Self {
        use exacta_log::producer_state::SequenceError;
        let code = match &e {
            LogError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
            LogError::Producer(SequenceError::OutOfOrderSequence { .. }) => {
                ErrorCode::OutOfOrderSequenceNumber
            }
            LogError::Producer(SequenceError::InvalidProducerEpoch { .. }) => {
                ErrorCode::InvalidProducerEpoch
            }
            LogError::Producer(SequenceError::UnknownProducerId { .. }) => {
                ErrorCode::UnknownProducerId
            }
            LogError::Producer(SequenceError::InvalidTxnState { .. }) => ErrorCode::InvalidTxnState,
            LogError::Producer(SequenceError::CoordinatorFenced { .. }) => {
                ErrorCode::TransactionCoordinatorFenced
            }
            other => {
                tracing::error!(error = %other, "storage error");
                ErrorCode::KafkaStorageError
            }
        };
        ApiError::new(code, e.to_string())
    }
}

/// What a fetch sees of a partition.
#[derive(Debug)]
pub struct IsolatedRead {
    pub result: ReadResult,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    /// `read_committed` only: aborted transactions overlapping the returned records.
    pub aborted: Option<Vec<exacta_log::producer_state::AbortedTxn>>,
}

/// One partition: its log and its high watermark.
#[derive(Debug)]
pub struct Partition {
    pub topic: String,
    pub index: i32,
    log: Mutex<PartitionLog>,
    pub(crate) high_watermark: watch::Sender<i64>,
    /// Bumped whenever any HW moves; long-polling fetches wait on it.
    arrivals: Arc<watch::Sender<u64>>,
    flush_queued: AtomicBool,
    /// Offset below which the log is fsynced.
    flushed_offset: AtomicI64,
    /// When the oldest unflushed append happened (ms), 0 when all is flushed.
    dirty_since_ms: AtomicI64,
    /// What a produced batch must satisfy (from the topic's configs).
    rules: RwLock<WriteRules>,
    flusher: Flusher,
    /// This replica's part in a cluster (see `replication`); `Single` on a single node.
    pub(crate) role: Mutex<crate::replication::Role>,
    /// Whether `role` is anything but `Single` (the single-node path never locks it).
    pub(crate) replicated: AtomicBool,
    /// Offset below which the log is durable here by the flush rule (a leader's own part
    /// of the high watermark).
    pub(crate) local_durable: AtomicI64,
    /// Bumped by every append; replica fetches wait on it.
    appends: Arc<watch::Sender<u64>>,
    /// Transactional writes being checked with their coordinator, per producer id (see
    /// `txns::verify`); taken with the log lock held.
    pub(crate) txn_guards: Mutex<HashMap<i64, crate::txns::verify::Guard>>,
}

impl Partition {
    pub(crate) fn log(&self) -> MutexGuard<'_, PartitionLog> {
        // A poisoned lock means a panic mid-append; the log itself is consistent on disk
        // (recovery would rescan it), so keep serving rather than cascade the panic.
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends validated batches and applies the partition's flush rule.
    /// An append that rolls the segment (fsyncs) runs off the async worker.
    pub fn append(self: &Arc<Self>, batches: &mut [u8]) -> Result<AppendInfo, ApiError> {
        self.append_as_leader(batches).map(|(info, _)| info)
    }

    /// [`Partition::append`], also returning the leader epoch the batches were appended
    /// under. In a cluster the leadership is checked under the log lock, so a broker that
    /// has just become a follower never appends a producer's batch.
    pub fn append_as_leader(
        self: &Arc<Self>,
        batches: &mut [u8],
    ) -> Result<(AppendInfo, i32), ApiError> {
        match self.append_unless(batches, |_| Ok(None::<std::convert::Infallible>))? {
            Ok(appended) => Ok(appended),
            Err(never) => match never {},
        }
    }

    /// [`Partition::append_as_leader`] after CHECK, made under the log lock: `Some(r)`
    /// stops the append and is returned as `Err(r)`; an error appends nothing.
    pub(crate) fn append_unless<R>(
        self: &Arc<Self>,
        batches: &mut [u8],
        check: impl FnOnce(&PartitionLog) -> Result<Option<R>, ApiError>,
    ) -> Result<Result<(AppendInfo, i32), R>, ApiError> {
        let under_lock = |log: &mut PartitionLog, batches: &mut [u8]| {
            let epoch = self.check_leader(-1)?;
            if let Some(stop) = check(log)? {
                return Ok(Err(stop));
            }
            Ok::<_, ApiError>(Ok((log.append(batches)?, epoch)))
        };
        let appended = {
            let mut log = self.log();
            if log.append_rolls(batches) {
                drop(log);
                crate::blocking(|| under_lock(&mut self.log(), batches))?
            } else {
                under_lock(&mut log, batches)?
            }
        };
        if let Ok((info, _)) = &appended {
            if !info.duplicate {
                self.after_append(info.last_offset);
            }
        }
        Ok(appended)
    }

    /// Called by the flusher: takes the file to fsync and the LEO it covers.
    pub(crate) fn take_flush_target(&self) -> (Arc<File>, i64) {
        self.flush_queued.store(false, Ordering::Release);
        self.dirty_since_ms.store(0, Ordering::Release);
        self.log().flush_target()
    }

    /// Called by the flusher after the fsync of [`Partition::take_flush_target`].
    pub(crate) fn flushed(&self, offset: i64) {
        self.log().mark_flushed(offset);
        self.flushed_offset.fetch_max(offset, Ordering::AcqRel);
        self.durable_here(offset);
    }

    /// Everything below OFFSET is durable here by the flush rule: on a single node that is
    /// the high watermark; a leader also waits for its in-sync followers.
    fn durable_here(&self, offset: i64) {
        if !self.replicated.load(Ordering::Acquire) {
            self.advance_high_watermark(offset);
            return;
        }
        self.local_durable.fetch_max(offset, Ordering::AcqRel);
        self.recompute_high_watermark();
    }

    pub(crate) fn advance_high_watermark(&self, offset: i64) {
        let moved = self.high_watermark.send_if_modified(|hw| {
            if offset > *hw {
                *hw = offset;
                true
            } else {
                false
            }
        });
        if moved {
            self.arrivals.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    pub fn high_watermark(&self) -> i64 {
        *self.high_watermark.borrow()
    }

    /// Resolves once the HW passes `offset` (the record at `offset` is durable and visible).
    pub async fn wait_for_high_watermark(&self, offset: i64) {
        let mut rx = self.high_watermark.subscribe();
        let _ = rx.wait_for(|&hw| hw > offset).await;
    }

    /// Reads whole batches below the HW (`read_uncommitted`).
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<(ReadResult, i64), ApiError> {
        let read = self.read_isolated(offset, max_bytes, false)?;
        Ok((read.result, read.high_watermark))
    }

    /// Reads whole batches below the HW, or below the last stable offset for
    /// `read_committed`, with the aborted transactions overlapping what was returned. Data,
    /// LSO and aborted list come from one view of the log (one lock).
    pub fn read_isolated(
        &self,
        offset: i64,
        max_bytes: usize,
        committed: bool,
    ) -> Result<IsolatedRead, ApiError> {
        let hw = self.high_watermark();
        let log = self.log();
        let lso = log.last_stable_offset(hw);
        let upper = if committed { lso } else { hw };
        let result = if offset > upper && offset <= log.log_end_offset() {
            // Written but not yet visible: nothing to return yet, not an error.
            ReadResult {
                records: Default::default(),
                log_start_offset: log.log_start_offset(),
                log_end_offset: log.log_end_offset(),
            }
        } else {
            log.read(offset, max_bytes, upper)?
        };
        let aborted = if committed {
            let end = exacta_wire::batch::Batches::new(&result.records)
                .last()
                .map_or(offset, |(_, h)| h.last_offset() + 1);
            Some(log.producer_state().aborted_between(offset, end))
        } else {
            None
        };
        Ok(IsolatedRead {
            result,
            high_watermark: hw,
            last_stable_offset: lso,
            aborted,
        })
    }

    /// The last stable offset (the high watermark when no transaction is open).
    pub fn last_stable_offset(&self) -> i64 {
        let hw = self.high_watermark();
        self.log().last_stable_offset(hw)
    }

    /// Appends batches a coordinator writes for a producer (transactional offsets), after
    /// CHECK under the log lock; returns the leader epoch too (in a cluster only the leader
    /// appends).
    pub fn append_from_coordinator(
        self: &Arc<Self>,
        batches: &mut [u8],
        check: impl FnOnce(&PartitionLog) -> Result<(), ApiError>,
    ) -> Result<(exacta_log::AppendInfo, i32), ApiError> {
        let (info, epoch) = {
            let mut log = self.log();
            let epoch = self.check_leader(-1)?;
            check(&log)?;
            (log.append_from_coordinator(batches)?, epoch)
        };
        self.after_append(info.last_offset);
        Ok((info, epoch))
    }

    /// Writes a transaction marker and applies the partition's flush rule. Returns the
    /// marker's offset (committed once the HW passes it) and the leader epoch it was
    /// written under; in a cluster only the leader writes one. The producer's verified
    /// transactional writes not yet appended are refused from now on (see
    /// `txns::verify`).
    pub fn append_marker(
        self: &Arc<Self>,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
    ) -> Result<(i64, i32), ApiError> {
        let (offset, leader_epoch) = {
            let mut log = self.log();
            let leader_epoch = self.check_leader(-1)?;
            let offset = log.append_marker(
                producer_id,
                epoch,
                commit,
                coordinator_epoch,
                crate::now_ms(),
            )?;
            self.txn_guards().remove(&producer_id);
            (offset, leader_epoch)
        };
        self.after_append(offset);
        Ok((offset, leader_epoch))
    }

    pub(crate) fn after_append(self: &Arc<Self>, last_offset: i64) {
        if self.replicated.load(Ordering::Acquire) {
            // Wakes the followers' long-polling fetches.
            self.appends.send_modify(|n| *n = n.wrapping_add(1));
        }
        let rule = self.write_rules().flush;
        if rule.per_append() {
            // Visible and acknowledged once the group fsync that covers it is done.
            self.queue_flush();
            return;
        }
        self.durable_here(last_offset + 1);
        let _ = self.dirty_since_ms.compare_exchange(
            0,
            crate::now_ms().max(1),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        if last_offset + 1 - self.flushed_offset.load(Ordering::Acquire) >= rule.messages {
            self.queue_flush();
        }
    }

    pub(crate) fn queue_flush(self: &Arc<Self>) {
        if !self.flush_queued.swap(true, Ordering::AcqRel) {
            self.flusher.enqueue(Arc::clone(self));
        }
    }

    /// Queues a background fsync if the oldest unflushed append is `flush.ms` old.
    fn flush_if_due(self: &Arc<Self>, now_ms: i64) {
        let since = self.dirty_since_ms.load(Ordering::Acquire);
        if since != 0 && now_ms.saturating_sub(since) >= self.write_rules().flush.ms {
            self.queue_flush();
        }
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log().log_start_offset()
    }

    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>, ApiError> {
        let hw = self.high_watermark();
        Ok(self
            .log()
            .offset_for_timestamp(timestamp)?
            .filter(|&(offset, _)| offset < hw))
    }

    pub fn max_timestamp_offset(&self) -> Result<Option<(i64, i64)>, ApiError> {
        Ok(self.log().max_timestamp_offset()?)
    }

    /// What a produced batch must satisfy here (the topic's configs).
    pub fn write_rules(&self) -> WriteRules {
        *self.rules.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn apply_retention(&self, now_ms: i64) -> Result<usize, LogError> {
        self.log().apply_retention(now_ms)
    }

    /// Whether the topic is compacted (`cleanup.policy` has `compact`).
    pub fn is_compacted(&self) -> bool {
        self.log().config().compact
    }

    /// What the cleaner needs, below the last stable offset; `None` while another
    /// cleaning of this log is under way.
    pub fn clean_view(&self) -> Option<exacta_log::cleaner::CleanView> {
        let hw = self.high_watermark();
        self.log().clean_view(hw)
    }

    /// Installs a finished cleaning (a short hold of the log lock: files were swapped).
    pub fn install_cleaned(
        &self,
        view: exacta_log::cleaner::CleanView,
        outcome: &exacta_log::cleaner::Outcome,
    ) -> Result<(), LogError> {
        self.log().install_cleaned(view, outcome)
    }

    /// DeleteRecords: the log start offset becomes `offset` (-1: the high watermark).
    /// Past the high watermark is OFFSET_OUT_OF_RANGE. Returns the new low watermark.
    pub fn delete_records(&self, offset: i64) -> Result<i64, ApiError> {
        let hw = self.high_watermark();
        let target = if offset == -1 { hw } else { offset };
        if target < 0 || target > hw {
            return Err(ApiError::new(
                ErrorCode::OffsetOutOfRange,
                format!(
                    "cannot delete records of {}-{} before offset {offset}: \
                     it is outside [0, {hw}] (the high watermark)",
                    self.topic, self.index
                ),
            ));
        }
        Ok(crate::blocking(|| {
            self.log().delete_records_before(target)
        })?)
    }

    /// Segment count and bytes on disk.
    pub fn log_size(&self) -> (usize, u64) {
        let log = self.log();
        (log.segment_count(), log.size_bytes())
    }

    /// The idempotent producers this partition remembers.
    pub fn producers(&self) -> Vec<exacta_log::producer_state::ProducerEntry> {
        self.log().producer_state().producers().cloned().collect()
    }

    pub fn remove_expired_producers(&self, now_ms: i64, expiration_ms: i64) -> usize {
        self.log().remove_expired_producers(now_ms, expiration_ms)
    }

    fn close(&self) -> Result<(), LogError> {
        self.log().close()
    }

    pub(crate) fn set_topic_configs(&self, configs: &TopicConfigs<'_>) {
        self.log().set_config(configs.log_config());
        *self.rules.write().unwrap_or_else(|p| p.into_inner()) = configs.write_rules();
    }

    pub fn size_bytes(&self) -> u64 {
        self.log().size_bytes()
    }
}

/// A topic as currently known; replaced whole when its metadata changes.
#[derive(Debug)]
pub struct Topic {
    pub name: String,
    pub id: Uuid,
    pub partitions: Vec<Arc<Partition>>,
    pub configs: BTreeMap<String, String>,
}

impl Topic {
    /// What is persisted about the topic.
    pub fn metadata(&self) -> TopicMetadata {
        TopicMetadata {
            name: self.name.clone(),
            id: self.id,
            partitions: self.partitions.len() as i32,
            configs: self.configs.clone(),
        }
    }
}

#[derive(Debug, Default)]
struct Topics {
    by_name: HashMap<String, Arc<Topic>>,
    by_id: HashMap<Uuid, String>,
    /// Bumped by every change (created, deleted, grown, reconfigured).
    version: u64,
}

/// All partitions of the broker.
#[derive(Debug)]
pub struct Broker {
    /// The static settings (config file and flags); [`Broker::live`] has the dynamic
    /// ones laid over them.
    pub config: BrokerConfig,
    /// The settings in force and the dynamic layers (see `broker_settings`).
    pub(crate) live: RwLock<Arc<BrokerConfig>>,
    pub(crate) dynamic: Mutex<DynamicConfigs>,
    pub(crate) store: TopicStore,
    topics: RwLock<Topics>,
    /// Serializes topic metadata changes.
    admin: Mutex<()>,
    arrivals: Arc<watch::Sender<u64>>,
    /// Bumped by every append to any partition (replica fetches long-poll on it).
    appends: Arc<watch::Sender<u64>>,
    flusher: Flusher,
    producer_ids: Mutex<ProducerIdManager>,
    pub(crate) data_dir: PathBuf,
    _lock: File,
}

impl Broker {
    /// Opens the data directory: takes its lock, loads topics, recovers logs.
    ///
    /// Without the clean-shutdown marker, every partition's active segment is rescanned
    /// and its torn tail truncated. The marker is removed before any new write.
    pub fn open(config: BrokerConfig) -> Result<Arc<Self>, OpenError> {
        exacta_log::on_fsync_failure(crate::flusher::fatal_fsync_error);
        let data_dir = config.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(|e| OpenError::Io(data_dir.clone(), e))?;
        let lock_path = data_dir.join(LOCK_FILE);
        let lock = File::create(&lock_path).map_err(|e| OpenError::Io(lock_path.clone(), e))?;
        lock.try_lock()
            .map_err(|_| OpenError::Locked(data_dir.clone()))?;
        let marker = data_dir.join(CLEAN_SHUTDOWN_MARKER);
        // A data directory without topic metadata is new: nothing to recover.
        let fresh = !data_dir.join("__topics").exists();
        let clean = fresh || marker.exists();
        let store = TopicStore::open(&data_dir)?;
        let metas = store.load_all()?;
        store.remove_orphans(&metas)?;
        let arrivals = Arc::new(watch::channel(0u64).0);
        let dynamic = DynamicConfigs::load(&data_dir).map_err(OpenError::DynamicConfigs)?;
        let live = dynamic.apply(&config).map_err(|e| {
            OpenError::DynamicConfigs(format!(
                "{}: {e}",
                data_dir
                    .join(crate::broker_settings::DYNAMIC_CONFIGS_FILE)
                    .display()
            ))
        })?;
        let flusher = Flusher::start();
        let producer_ids = Mutex::new(ProducerIdManager::open(&data_dir)?);
        let broker = Self {
            config,
            live: RwLock::new(Arc::new(live)),
            dynamic: Mutex::new(dynamic),
            store,
            topics: RwLock::new(Topics::default()),
            admin: Mutex::new(()),
            arrivals,
            appends: Arc::new(watch::channel(0u64).0),
            flusher,
            producer_ids,
            data_dir: data_dir.clone(),
            _lock: lock,
        };
        let started = std::time::Instant::now();
        let mut rescanned = 0;
        let mut truncated = 0;
        for meta in metas {
            let mut partitions = Vec::new();
            for index in 0..meta.partitions {
                let (p, info) = broker.open_partition(&meta, index, clean)?;
                rescanned += info.segments_rescanned;
                truncated += info.bytes_truncated;
                partitions.push(p);
            }
            broker.install(Topic {
                name: meta.name.clone(),
                id: meta.id,
                partitions,
                configs: meta.configs,
            });
        }
        if marker.exists() {
            std::fs::remove_file(&marker).map_err(|e| OpenError::Io(marker.clone(), e))?;
            exacta_log::sync_dir(&data_dir)?;
        }
        tracing::info!(
            clean_shutdown = clean,
            topics = broker.topics().len(),
            segments_rescanned = rescanned,
            bytes_truncated = truncated,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "storage recovered"
        );
        Ok(Arc::new(broker))
    }

    pub(crate) fn open_partition(
        &self,
        meta: &TopicMetadata,
        index: i32,
        clean: bool,
    ) -> Result<(Arc<Partition>, exacta_log::log::RecoveryInfo), LogError> {
        let live = self.live();
        let configs = TopicConfigs {
            overrides: &meta.configs,
            broker: &live,
        };
        let dir = self.store.partition_dir(&meta.name, index);
        let (log, info) = PartitionLog::open(&dir, configs.log_config(), clean)?;
        let clustered = self.config.voters.is_some();
        // Everything on disk at open is durable here (see `PartitionLog::open`). On a
        // single node that is the high watermark; a cluster replica may hold records its
        // ISR never had, so it exposes nothing until the leader's watermark says so.
        let durable = log.log_end_offset();
        let hw = if clustered {
            log.log_start_offset()
        } else {
            durable
        };
        Ok((
            Arc::new(Partition {
                topic: meta.name.clone(),
                index,
                log: Mutex::new(log),
                high_watermark: watch::channel(hw).0,
                arrivals: Arc::clone(&self.arrivals),
                flush_queued: AtomicBool::new(false),
                flushed_offset: AtomicI64::new(durable),
                dirty_since_ms: AtomicI64::new(0),
                rules: RwLock::new(configs.write_rules()),
                flusher: self.flusher.clone(),
                // A cluster node serves a partition only once the metadata gives it a
                // role.
                role: Mutex::new(if clustered {
                    crate::replication::Role::Absent
                } else {
                    crate::replication::Role::Single
                }),
                replicated: AtomicBool::new(clustered),
                local_durable: AtomicI64::new(durable),
                appends: Arc::clone(&self.appends),
                txn_guards: Mutex::new(HashMap::new()),
            }),
            info,
        ))
    }

    pub(crate) fn install(&self, topic: Topic) -> Arc<Topic> {
        let topic = Arc::new(topic);
        let mut topics = self.topics.write().unwrap_or_else(|p| p.into_inner());
        topics.version += 1;
        topics.by_id.insert(topic.id, topic.name.clone());
        topics
            .by_name
            .insert(topic.name.clone(), Arc::clone(&topic));
        topic
    }

    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        let topics = self.topics.read().unwrap_or_else(|p| p.into_inner());
        topics.by_name.get(name).cloned()
    }

    pub fn topic_by_id(&self, id: Uuid) -> Option<Arc<Topic>> {
        let topics = self.topics.read().unwrap_or_else(|p| p.into_inner());
        topics
            .by_id
            .get(&id)
            .and_then(|n| topics.by_name.get(n))
            .cloned()
    }

    /// Changes whenever the set of topics or one of them changes.
    pub fn topics_version(&self) -> u64 {
        self.topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .version
    }

    /// Every topic, sorted by name.
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        let topics = self.topics.read().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<_> = topics.by_name.values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    pub fn partition(&self, topic: &str, index: i32) -> Option<Arc<Partition>> {
        let topic = self.topic(topic)?;
        usize::try_from(index)
            .ok()
            .and_then(|i| topic.partitions.get(i).cloned())
    }

    /// A receiver that sees a change whenever any high watermark moves.
    pub fn subscribe_arrivals(&self) -> watch::Receiver<u64> {
        self.arrivals.subscribe()
    }

    /// A receiver that sees a change whenever any partition is appended to.
    pub fn subscribe_appends(&self) -> watch::Receiver<u64> {
        self.appends.subscribe()
    }

    pub(crate) fn admin_lock(&self) -> MutexGuard<'_, ()> {
        self.admin.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates a topic (or only checks that it could be created).
    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<Arc<Topic>, ApiError> {
        validate_topic_name(name)
            .map_err(|m| ApiError::new(ErrorCode::InvalidTopicException, m))?;
        if partitions < 1 || partitions > self.config.partitions_max_per_topic {
            return Err(ApiError::new(
                ErrorCode::InvalidPartitions,
                format!(
                    "number of partitions must be in 1..={}, got {partitions}",
                    self.config.partitions_max_per_topic
                ),
            ));
        }
        validate_topic_configs(&configs, &self.live())
            .map_err(|m| ApiError::new(ErrorCode::InvalidConfig, m))?;
        let _admin = self.admin_lock();
        if self.topic(name).is_some() {
            return Err(ApiError::new(
                ErrorCode::TopicAlreadyExists,
                format!("topic '{name}' already exists"),
            ));
        }
        // Kafka forbids topics whose names differ only by '.' versus '_' (metric names collide).
        let normalized = name.replace('.', "_");
        if let Some(other) = self
            .topics()
            .iter()
            .find(|t| t.name.replace('.', "_") == normalized)
        {
            return Err(ApiError::new(
                ErrorCode::InvalidTopicException,
                format!(
                    "topic '{name}' collides with existing topic '{}'",
                    other.name
                ),
            ));
        }
        let meta = TopicMetadata {
            name: name.to_string(),
            id: Uuid::new_v4(),
            partitions,
            configs,
        };
        if validate_only {
            return Ok(Arc::new(Topic {
                name: meta.name,
                id: meta.id,
                partitions: Vec::new(),
                configs: meta.configs,
            }));
        }
        let mut opened = Vec::new();
        for index in 0..partitions {
            opened.push(self.open_partition(&meta, index, true)?.0);
        }
        exacta_log::sync_dir(&self.data_dir)?;
        self.store.save(&meta)?;
        tracing::info!(topic = name, partitions, id = %meta.id, "created topic");
        Ok(self.install(Topic {
            name: meta.name,
            id: meta.id,
            partitions: opened,
            configs: meta.configs,
        }))
    }

    /// The topic, or UNKNOWN_TOPIC_OR_PARTITION.
    fn existing(&self, name: &str) -> Result<Arc<Topic>, ApiError> {
        self.topic(name).ok_or_else(|| {
            ApiError::new(
                ErrorCode::UnknownTopicOrPartition,
                format!("unknown topic '{name}'"),
            )
        })
    }

    /// Deletes a topic and its data.
    pub fn delete_topic(&self, name: &str) -> Result<Arc<Topic>, ApiError> {
        refuse_internal(name)?;
        self.remove_topic(name)
    }

    /// Deletes a topic and its data, internal or not (a cluster's metadata dropped it).
    pub(crate) fn remove_topic(&self, name: &str) -> Result<Arc<Topic>, ApiError> {
        let _admin = self.admin_lock();
        let topic = self.existing(name)?;
        {
            let mut topics = self.topics.write().unwrap_or_else(|p| p.into_inner());
            topics.by_name.remove(name);
            topics.by_id.remove(&topic.id);
            topics.version += 1;
        }
        self.store.remove(&topic.metadata())?;
        tracing::info!(topic = name, "deleted topic");
        Ok(topic)
    }

    /// Grows a topic to `count` partitions.
    pub fn create_partitions(
        &self,
        name: &str,
        count: i32,
        validate_only: bool,
    ) -> Result<(), ApiError> {
        refuse_internal(name)?;
        let _admin = self.admin_lock();
        let topic = self.existing(name)?;
        let current = topic.partitions.len() as i32;
        if count <= current {
            return Err(ApiError::new(
                ErrorCode::InvalidPartitions,
                format!(
                    "topic '{name}' has {current} partitions; the new count {count} must be larger"
                ),
            ));
        }
        if count > self.config.partitions_max_per_topic {
            return Err(ApiError::new(
                ErrorCode::InvalidPartitions,
                format!(
                    "at most {} partitions per topic",
                    self.config.partitions_max_per_topic
                ),
            ));
        }
        if validate_only {
            return Ok(());
        }
        let meta = TopicMetadata {
            partitions: count,
            ..topic.metadata()
        };
        let mut partitions = topic.partitions.clone();
        for index in current..count {
            partitions.push(self.open_partition(&meta, index, true)?.0);
        }
        exacta_log::sync_dir(&self.data_dir)?;
        self.store.save(&meta)?;
        tracing::info!(topic = name, from = current, to = count, "added partitions");
        self.install(Topic {
            name: meta.name,
            id: meta.id,
            partitions,
            configs: meta.configs,
        });
        Ok(())
    }

    /// Replaces a topic's config overrides after validating every value.
    pub fn alter_topic_configs(
        &self,
        name: &str,
        edit: impl FnOnce(&mut BTreeMap<String, String>) -> Result<(), ApiError>,
        validate_only: bool,
    ) -> Result<(), ApiError> {
        let _admin = self.admin_lock();
        let topic = self.existing(name)?;
        let mut configs = topic.configs.clone();
        edit(&mut configs)?;
        if exacta_types::is_internal_topic(name) {
            crate::internal::check_configs(name, &configs)?;
        }
        validate_topic_configs(&configs, &self.live())
            .map_err(|m| ApiError::new(ErrorCode::InvalidConfig, m))?;
        if validate_only {
            return Ok(());
        }
        let meta = TopicMetadata {
            configs,
            ..topic.metadata()
        };
        self.store.save(&meta)?;
        let live = self.live();
        let resolved = TopicConfigs {
            overrides: &meta.configs,
            broker: &live,
        };
        for p in &topic.partitions {
            p.set_topic_configs(&resolved);
        }
        tracing::info!(topic = name, configs = ?meta.configs, "altered topic configs");
        self.install(Topic {
            name: meta.name,
            id: meta.id,
            partitions: topic.partitions.clone(),
            configs: meta.configs,
        });
        Ok(())
    }

    /// Queues a background fsync of every partition whose oldest unflushed append is
    /// older than its `flush.ms`.
    pub fn flush_due(&self) {
        let now = crate::now_ms();
        for topic in self.topics() {
            for p in &topic.partitions {
                p.flush_if_due(now);
            }
        }
    }

    /// Applies retention to every partition and expires idle producer ids; returns the
    /// number of segments deleted.
    pub fn apply_retention(&self) -> usize {
        let now = crate::now_ms();
        let mut deleted = 0;
        let mut expired = 0;
        for topic in self.topics() {
            // Coordinator state is never deleted (see `internal`), whatever the configs say.
            let internal = exacta_types::is_internal_topic(&topic.name);
            for p in &topic.partitions {
                if !internal {
                    match p.apply_retention(now) {
                        Ok(n) => deleted += n,
                        Err(e) => {
                            tracing::error!(topic = %p.topic, partition = p.index, error = %e, "retention failed")
                        }
                    }
                }
                expired += p.remove_expired_producers(now, self.live().producer_id_expiration_ms);
            }
        }
        if expired > 0 {
            tracing::info!(producers = expired, "expired idle producer ids");
        }
        deleted
    }

    /// InitProducerId for an idempotent producer (see [`ProducerIdManager::init`]).
    pub fn init_producer_id(&self, producer_id: i64, epoch: i16) -> Result<(i64, i16), ApiError> {
        use exacta_coordinator::producer_ids::ProducerIdError;
        let mut ids = self.producer_ids.lock().unwrap_or_else(|p| p.into_inner());
        ids.init(producer_id, epoch).map_err(|e| match e {
            ProducerIdError::UnknownProducerId(_) => {
                ApiError::new(ErrorCode::InvalidProducerIdMapping, e.to_string())
            }
            ProducerIdError::Storage(e) => ApiError::from(e),
        })
    }

    /// Clean shutdown: stops the flusher, seals every log, then writes the marker.
    pub fn close(&self) -> Result<(), LogError> {
        self.flusher.stop();
        for topic in self.topics() {
            for p in &topic.partitions {
                p.close()?;
            }
        }
        exacta_log::write_atomically(&self.data_dir.join(CLEAN_SHUTDOWN_MARKER), b"clean\n")?;
        tracing::info!(data_dir = %self.data_dir.display(), "storage closed cleanly");
        Ok(())
    }
}

fn refuse_internal(name: &str) -> Result<(), ApiError> {
    if exacta_types::is_internal_topic(name) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("{name} is an internal topic managed by the broker"),
        ));
    }
    Ok(())
}

/// Errors opening the data directory.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("data directory {0} is in use by another broker")]
    Locked(PathBuf),
    #[error(transparent)]
    Log(#[from] exacta_log::LogError),
    #[error("dynamic broker configs: {0}; fix or remove the file")]
    DynamicConfigs(String),
}
