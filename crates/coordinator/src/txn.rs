//! The transaction coordinator as a state machine (Kafka's `TransactionCoordinator`).
//!
//! Per `transactional.id`: producer id and epoch, state, the partitions in the open
//! transaction, its timeout and start. Every change is a [`TxnRecord`] for
//! `__transaction_state`; [`TxnCoordinator::apply`] rebuilds the state from them.
//!
//! Ending a transaction is three steps the runtime performs in order, each durable before
//! the next: the Prepare record ([`TxnCoordinator::begin_end`]), a marker in every
//! partition of the transaction, the Complete record ([`TxnCoordinator::complete`]). A
//! coordinator that restarts in Prepare* finishes the job ([`TxnCoordinator::unfinished`]).
//! While markers are being written the transactional id answers CONCURRENT_TRANSACTIONS.
//!
//! Fencing: InitProducerId bumps the epoch; a transaction still open is first aborted with
//! a bumped epoch, so the previous instance's markers, produces and commits are refused.
//! A transaction open longer than its timeout is aborted the same way by [`TxnCoordinator::tick`].

use std::collections::{BTreeMap, BTreeSet, HashMap};

use exacta_types::ErrorCode;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    PrepareEpochFence,
    Dead,
}

impl TxnState {
    /// Kafka's name (ListTransactions, DescribeTransactions).
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
            TxnState::Dead => "Dead",
        }
    }

    fn is_prepare(self) -> bool {
        matches!(
            self,
            TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence
        )
    }
}

/// Limits of the transaction coordinator.
#[derive(Debug, Clone)]
pub struct TxnConfig {
    /// `transaction.max.timeout.ms`
    pub max_timeout_ms: i32,
    /// `transactional.id.expiration.ms`
    pub id_expiration_ms: i64,
}

impl Default for TxnConfig {
    fn default() -> Self {
        Self {
            max_timeout_ms: 900_000,
            id_expiration_ms: 7 * 24 * 3600 * 1000,
        }
    }
}

/// A transactional id's durable state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnMetadata {
    pub producer_id: i64,
    pub last_producer_id: i64,
    pub epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: BTreeSet<(String, i32)>,
    pub start_ms: i64,
    pub last_update_ms: i64,
    /// The current transaction uses protocol v2 (KIP-890): the epoch is bumped by every
    /// EndTxn, so nothing sent with an older epoch can join a later transaction.
    #[serde(default)]
    pub v2: bool,
    /// v2: the epoch before the last EndTxn's bump, to answer its retries.
    #[serde(default = "no_epoch")]
    pub previous_epoch: i16,
}

fn no_epoch() -> i16 {
    -1
}

/// One record of `__transaction_state`; `None` is a tombstone (expired id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnRecord {
    pub transactional_id: String,
    pub value: Option<TxnMetadata>,
}

impl TxnRecord {
    pub fn to_key_value(&self) -> (Vec<u8>, Option<Vec<u8>>) {
        let key = serde_json::json!({"type": "txn", "id": self.transactional_id});
        let value = self
            .value
            .as_ref()
            .map(|v| serde_json::to_vec(v).unwrap_or_default());
        (key.to_string().into_bytes(), value)
    }

    pub fn from_key_value(key: &[u8], value: Option<&[u8]>) -> Result<TxnRecord, String> {
        #[derive(Deserialize)]
        struct Key {
            id: String,
        }
        let key: Key = serde_json::from_slice(key).map_err(|e| e.to_string())?;
        let value = match value {
            Some(v) => Some(serde_json::from_slice(v).map_err(|e| e.to_string())?),
            None => None,
        };
        Ok(TxnRecord {
            transactional_id: key.id,
            value,
        })
    }
}

/// The markers to write to end a transaction, and what to write after them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndPlan {
    pub transactional_id: String,
    pub producer_id: i64,
    /// Epoch of the markers (bumped when the coordinator aborts on its own).
    pub epoch: i16,
    pub commit: bool,
    pub partitions: Vec<(String, i32)>,
    /// The Prepare record, to be durable before any marker.
    pub prepare: TxnRecord,
}

/// What InitProducerId needs done.
#[derive(Debug)]
pub enum InitOutcome {
    /// Write `record`, then answer with the id and epoch.
    Ready {
        record: TxnRecord,
        producer_id: i64,
        epoch: i16,
    },
    /// An open transaction must be aborted first (fencing its producer); run the plan,
    /// then call again.
    AbortFirst(EndPlan),
    Error(ErrorCode),
}

/// What EndTxn needs done.
#[derive(Debug)]
pub enum EndOutcome {
    /// A retry of an EndTxn that already completed: answer success.
    AlreadyDone,
    Run(EndPlan),
}

/// All transactional ids of the broker.
#[derive(Debug, Default)]
pub struct TxnCoordinator {
    txns: BTreeMap<String, TxnMetadata>,
    by_producer: HashMap<i64, String>,
    config: TxnConfig,
}

impl TxnCoordinator {
    pub fn new(config: TxnConfig) -> Self {
        Self {
            txns: BTreeMap::new(),
            by_producer: HashMap::new(),
            config,
        }
    }

    fn record(&self, id: &str) -> TxnRecord {
        TxnRecord {
            transactional_id: id.to_string(),
            value: self.txns.get(id).cloned(),
        }
    }

    fn set(&mut self, id: &str, meta: TxnMetadata) -> TxnRecord {
        self.by_producer.insert(meta.producer_id, id.to_string());
        self.txns.insert(id.to_string(), meta);
        self.record(id)
    }

    /// InitProducerId with a transactional id. `allocate` hands out a fresh producer id.
    pub fn init_producer_id(
        &mut self,
        id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
        now: i64,
        allocate: &mut dyn FnMut() -> Result<i64, ErrorCode>,
    ) -> InitOutcome {
        if id.is_empty() {
            return InitOutcome::Error(ErrorCode::InvalidRequest);
        }
        if timeout_ms <= 0 || timeout_ms > self.config.max_timeout_ms {
            return InitOutcome::Error(ErrorCode::InvalidTransactionTimeout);
        }
        let Some(meta) = self.txns.get(id).cloned() else {
            let producer_id = match allocate() {
                Ok(p) => p,
                Err(e) => return InitOutcome::Error(e),
            };
            let record = self.set(
                id,
                TxnMetadata {
                    producer_id,
                    last_producer_id: -1,
                    epoch: 0,
                    timeout_ms,
                    state: TxnState::Empty,
                    partitions: BTreeSet::new(),
                    start_ms: -1,
                    last_update_ms: now,
                    v2: false,
                    previous_epoch: -1,
                },
            );
            return InitOutcome::Ready {
                record,
                producer_id,
                epoch: 0,
            };
        };
        if let Some((pid, epoch)) = expected.filter(|(pid, _)| *pid >= 0) {
            if pid != meta.producer_id && pid != meta.last_producer_id {
                return InitOutcome::Error(ErrorCode::InvalidProducerIdMapping);
            }
            if pid == meta.producer_id && epoch < meta.epoch {
                return InitOutcome::Error(ErrorCode::ProducerFenced);
            }
        }
        match meta.state {
            s if s.is_prepare() => InitOutcome::Error(ErrorCode::ConcurrentTransactions),
            TxnState::Ongoing => InitOutcome::AbortFirst(self.prepare_abort_fenced(id, now)),
            _ => {
                let mut next = meta;
                if next.epoch >= i16::MAX - 1 {
                    next.last_producer_id = next.producer_id;
                    next.producer_id = match allocate() {
                        Ok(p) => p,
                        Err(e) => return InitOutcome::Error(e),
                    };
                    next.epoch = 0;
                } else {
                    next.epoch += 1;
                }
                next.timeout_ms = timeout_ms;
                next.state = TxnState::Empty;
                next.partitions.clear();
                next.start_ms = -1;
                next.last_update_ms = now;
                let (producer_id, epoch) = (next.producer_id, next.epoch);
                InitOutcome::Ready {
                    record: self.set(id, next),
                    producer_id,
                    epoch,
                }
            }
        }
    }

    /// Aborts the open transaction of `id` with a bumped epoch (fences its producer).
    fn prepare_abort_fenced(&mut self, id: &str, now: i64) -> EndPlan {
        let mut meta = self.txns[id].clone();
        meta.epoch = meta.epoch.saturating_add(1).min(i16::MAX - 1);
        meta.state = TxnState::PrepareAbort;
        meta.last_update_ms = now;
        let plan = EndPlan {
            transactional_id: id.to_string(),
            producer_id: meta.producer_id,
            epoch: meta.epoch,
            commit: false,
            partitions: meta.partitions.iter().cloned().collect(),
            prepare: TxnRecord {
                transactional_id: id.to_string(),
                value: None,
            },
        };
        let prepare = self.set(id, meta);
        EndPlan { prepare, ..plan }
    }

    fn check_producer(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
    ) -> Result<&TxnMetadata, ErrorCode> {
        let meta = self
            .txns
            .get(id)
            .ok_or(ErrorCode::InvalidProducerIdMapping)?;
        if meta.producer_id != producer_id {
            return Err(ErrorCode::InvalidProducerIdMapping);
        }
        if epoch != meta.epoch {
            return Err(ErrorCode::ProducerFenced);
        }
        Ok(meta)
    }

    /// Produce v12 / TxnOffsetCommit v5 (KIP-890): the partition joins the producer's
    /// transaction implicitly, starting one if needed. Returns the record to write, if any.
    pub fn add_partition_implicitly(
        &mut self,
        producer_id: i64,
        epoch: i16,
        partition: (String, i32),
        now: i64,
    ) -> Result<Option<TxnRecord>, ErrorCode> {
        let id = self
            .by_producer
            .get(&producer_id)
            .cloned()
            .ok_or(ErrorCode::InvalidProducerIdMapping)?;
        let record = self.add_partitions(&id, producer_id, epoch, &[partition], now)?;
        if let Some(meta) = self.txns.get_mut(&id) {
            meta.v2 = true;
        }
        Ok(record.map(|_| self.record(&id)))
    }

    /// The producer id and epoch of a transactional id (EndTxn v5 answers with them).
    pub fn producer_of(&self, id: &str) -> Option<(i64, i16)> {
        self.txns.get(id).map(|m| (m.producer_id, m.epoch))
    }

    /// AddPartitionsToTxn v4+ with `verify_only` (KIP-890 part 1, sent by partition
    /// leaders): whether each partition is in `id`'s open transaction, as Kafka answers it:
    /// one error for the whole transaction when the producer is unknown, fenced or ending
    /// its transaction, else NONE or TRANSACTION_ABORTABLE per partition. Writes nothing.
    pub fn verify_partitions(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
    ) -> Result<Vec<ErrorCode>, ErrorCode> {
        let meta = self.check_producer(id, producer_id, epoch)?;
        if meta.state.is_prepare() {
            return Err(ErrorCode::ConcurrentTransactions);
        }
        Ok(partitions
            .iter()
            .map(|p| {
                if meta.state == TxnState::Ongoing && meta.partitions.contains(p) {
                    ErrorCode::None
                } else {
                    ErrorCode::TransactionAbortable
                }
            })
            .collect())
    }

    /// AddPartitionsToTxn / AddOffsetsToTxn: the record to write, if anything changed.
    pub fn add_partitions(
        &mut self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
        now: i64,
    ) -> Result<Option<TxnRecord>, ErrorCode> {
        let meta = self.check_producer(id, producer_id, epoch)?;
        if meta.state.is_prepare() {
            return Err(ErrorCode::ConcurrentTransactions);
        }
        if meta.state == TxnState::Ongoing && partitions.iter().all(|p| meta.partitions.contains(p))
        {
            return Ok(None);
        }
        let mut next = meta.clone();
        if next.state != TxnState::Ongoing {
            next.state = TxnState::Ongoing;
            next.partitions.clear();
            next.start_ms = now;
        }
        next.partitions.extend(partitions.iter().cloned());
        next.last_update_ms = now;
        Ok(Some(self.set(id, next)))
    }

    /// EndTxn: the plan to run, or success for a retry of a completed end. With `v2`
    /// (EndTxn v5+, KIP-890) the Prepare bumps the epoch and the markers carry the new one,
    /// which the client uses from then on.
    pub fn begin_end(
        &mut self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        v2: bool,
        now: i64,
    ) -> Result<EndOutcome, ErrorCode> {
        if v2 {
            // A retry of the EndTxn that bumped the epoch: answer it again.
            if let Some(meta) = self.txns.get(id) {
                let done = matches!(
                    (meta.state, commit),
                    (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false)
                );
                if done
                    && meta.v2
                    && meta.producer_id == producer_id
                    && meta.previous_epoch == epoch
                {
                    return Ok(EndOutcome::AlreadyDone);
                }
            }
        }
        let meta = self.check_producer(id, producer_id, epoch)?;
        match (meta.state, commit) {
            (TxnState::Ongoing, _) => {
                let mut next = meta.clone();
                next.state = if commit {
                    TxnState::PrepareCommit
                } else {
                    TxnState::PrepareAbort
                };
                next.last_update_ms = now;
                next.v2 = v2;
                if v2 {
                    next.previous_epoch = next.epoch;
                    next.epoch = next.epoch.saturating_add(1).min(i16::MAX - 1);
                }
                let marker_epoch = next.epoch;
                let partitions = next.partitions.iter().cloned().collect();
                let prepare = self.set(id, next);
                Ok(EndOutcome::Run(EndPlan {
                    transactional_id: id.to_string(),
                    producer_id,
                    epoch: marker_epoch,
                    commit,
                    partitions,
                    prepare,
                }))
            }
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => {
                Ok(EndOutcome::AlreadyDone)
            }
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                Err(ErrorCode::ConcurrentTransactions)
            }
            (s, _) if s.is_prepare() => Err(ErrorCode::ConcurrentTransactions),
            _ => Err(ErrorCode::InvalidTxnState),
        }
    }

    /// After every marker of `id`'s plan is durable: the Complete record.
    pub fn complete(&mut self, id: &str, now: i64) -> Option<TxnRecord> {
        let mut next = self.txns.get(id)?.clone();
        next.state = match next.state {
            TxnState::PrepareCommit => TxnState::CompleteCommit,
            TxnState::PrepareAbort | TxnState::PrepareEpochFence => TxnState::CompleteAbort,
            _ => return None,
        };
        next.partitions.clear();
        next.last_update_ms = now;
        Some(self.set(id, next))
    }

    /// Transactions in Prepare* (after a restart): plans to finish them.
    pub fn unfinished(&self) -> Vec<EndPlan> {
        self.txns
            .iter()
            .filter(|(_, m)| m.state.is_prepare())
            .map(|(id, m)| EndPlan {
                transactional_id: id.clone(),
                producer_id: m.producer_id,
                epoch: m.epoch,
                commit: m.state == TxnState::PrepareCommit,
                partitions: m.partitions.iter().cloned().collect(),
                prepare: self.record(id),
            })
            .collect()
    }

    /// An operator's abort of `producer_id`'s open transaction (WriteTxnMarkers from an
    /// admin tool such as `exacta txn abort`): aborted as a timeout would be, with an
    /// epoch bump that fences the producer, on every partition of the transaction.
    /// `None` when that producer has no open transaction here.
    pub fn abort_producer(&mut self, producer_id: i64, now: i64) -> Option<EndPlan> {
        let id = self.by_producer.get(&producer_id)?.clone();
        if self.txns.get(&id)?.state != TxnState::Ongoing {
            return None;
        }
        tracing::info!(transactional_id = %id, producer_id, "aborting a transaction on an operator's request, with an epoch bump");
        Some(self.prepare_abort_fenced(&id, now))
    }

    /// Aborts transactions open longer than their timeout (bumping the epoch) and expires
    /// idle transactional ids. Returns abort plans and tombstones.
    pub fn tick(&mut self, now: i64) -> (Vec<EndPlan>, Vec<TxnRecord>) {
        let timed_out: Vec<String> = self
            .txns
            .iter()
            .filter(|(_, m)| {
                m.state == TxnState::Ongoing && now - m.start_ms > i64::from(m.timeout_ms)
            })
            .map(|(id, _)| id.clone())
            .collect();
        let plans = timed_out
            .iter()
            .map(|id| {
                tracing::info!(transactional_id = %id, "transaction timed out; aborting with an epoch bump");
                self.prepare_abort_fenced(id, now)
            })
            .collect();
        let expired: Vec<String> = self
            .txns
            .iter()
            .filter(|(_, m)| {
                matches!(
                    m.state,
                    TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
                ) && now - m.last_update_ms > self.config.id_expiration_ms
            })
            .map(|(id, _)| id.clone())
            .collect();
        let tombstones = expired
            .into_iter()
            .map(|id| {
                if let Some(m) = self.txns.remove(&id) {
                    self.by_producer.remove(&m.producer_id);
                }
                TxnRecord {
                    transactional_id: id,
                    value: None,
                }
            })
            .collect();
        (plans, tombstones)
    }

    /// Rebuilds state from a durable record.
    pub fn apply(&mut self, record: &TxnRecord) {
        match &record.value {
            Some(meta) => {
                self.set(&record.transactional_id, meta.clone());
            }
            None => {
                if let Some(m) = self.txns.remove(&record.transactional_id) {
                    self.by_producer.remove(&m.producer_id);
                }
            }
        }
    }

    /// Whether `producer_id` at `epoch` has `partition` in its open transaction.
    pub fn partition_in_txn(
        &self,
        producer_id: i64,
        epoch: i16,
        topic: &str,
        partition: i32,
    ) -> Result<(), ErrorCode> {
        let meta = self
            .by_producer
            .get(&producer_id)
            .and_then(|id| self.txns.get(id))
            .ok_or(ErrorCode::InvalidProducerIdMapping)?;
        if meta.producer_id != producer_id {
            return Err(ErrorCode::InvalidProducerIdMapping);
        }
        if epoch != meta.epoch {
            return Err(ErrorCode::InvalidProducerEpoch);
        }
        if meta.state != TxnState::Ongoing
            || !meta.partitions.contains(&(topic.to_string(), partition))
        {
            return Err(ErrorCode::InvalidTxnState);
        }
        Ok(())
    }

    pub fn get(&self, id: &str) -> Option<&TxnMetadata> {
        self.txns.get(id)
    }

    /// Whether a transactional id of this coordinator holds `producer_id`.
    pub fn knows_producer(&self, producer_id: i64) -> bool {
        self.by_producer.contains_key(&producer_id)
    }

    pub fn all(&self) -> impl Iterator<Item = (&String, &TxnMetadata)> {
        self.txns.iter()
    }
}
