//! A transaction coordinator shard in a cluster: loaded from its `__transaction_state`
//! partition when this broker becomes the partition's leader, dropped when the leadership
//! moves on. As with groups (`groups::load`), a new leader loads only once its high
//! watermark has reached the log end it had when it took the lead, and refuses every
//! request meanwhile (COORDINATOR_LOAD_IN_PROGRESS).
//!
//! To ensure correctness: a transaction whose Prepare record is in the loaded state but
//! whose Complete record is not had its outcome decided; the new coordinator writes its
//! markers again (to every partition, through their leaders) and completes it, as a single
//! node does after a restart. Producers retrying EndTxn meanwhile get
//! CONCURRENT_TRANSACTIONS and retry.

use std::sync::Arc;

use exacta_coordinator::group::partition_for;
use exacta_coordinator::txn::{TxnCoordinator, TxnRecord};
use exacta_types::ErrorCode;

use super::{TxnRuntime, TxnShard, TXN_TOPIC};
use crate::partitions::{ApiError, Partition};
use crate::serving::Serving;

impl TxnRuntime {
    /// This broker leads the shard's partition at EPOCH: loads it in the background,
    /// unless it is loaded or loading at that epoch already.
    pub fn lead(self: &Arc<Self>, shard: usize, epoch: i32) {
        {
            let mut state = self.lock(shard);
            if matches!(state.serving, Serving::Leader(e) | Serving::Loading(e) if e == epoch) {
                return;
            }
            self.reset(shard, &mut state, Serving::Loading(epoch));
        }
        let me = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(e) = me.load(shard, epoch).await {
                tracing::error!(partition = shard, epoch, error = %e.message, "loading transactions failed");
                let mut state = me.lock(shard);
                if state.serving == Serving::Loading(epoch) {
                    me.reset(shard, &mut state, Serving::No);
                }
            }
        });
    }

    /// Another broker leads the shard's partition (or none does): drops its state.
    pub fn resign(&self, shard: usize) {
        let mut state = self.lock(shard);
        if state.serving != Serving::No {
            tracing::info!(
                partition = shard,
                "no longer coordinating the transactions of {TXN_TOPIC}-{shard}"
            );
            self.reset(shard, &mut state, Serving::No);
        }
    }

    fn reset(&self, shard: usize, state: &mut TxnShard, serving: Serving) {
        *state = TxnShard {
            coordinator: TxnCoordinator::new(self.config.clone()),
            serving,
        };
        self.producer_shards
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, s| *s != shard);
    }

    async fn load(self: &Arc<Self>, shard: usize, epoch: i32) -> Result<(), ApiError> {
        let started = std::time::Instant::now();
        let Some(partition) = self.broker.partition(TXN_TOPIC, shard as i32) else {
            return Err(ApiError::new(
                ErrorCode::CoordinatorNotAvailable,
                format!("{TXN_TOPIC}-{shard} is missing"),
            ));
        };
        let still_loading = || self.lock(shard).serving == Serving::Loading(epoch);
        if !partition.committed_to_log_end(still_loading).await {
            return Ok(());
        }
        let loaded = crate::blocking(|| self.read_shard(&partition, shard))?;
        let unfinished = {
            let mut state = self.lock(shard);
            if state.serving != Serving::Loading(epoch) {
                return Ok(());
            }
            state.coordinator = loaded;
            state.serving = Serving::Leader(epoch);
            let mut cache = self
                .producer_shards
                .write()
                .unwrap_or_else(|p| p.into_inner());
            for (_, meta) in state.all() {
                cache.insert(meta.producer_id, shard);
            }
            tracing::info!(
                partition = shard,
                epoch,
                transactional_ids = state.all().count(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "coordinating the transactions of {TXN_TOPIC}-{shard}"
            );
            state.unfinished()
        };
        crate::metrics::METRICS.txn_load_ms.store(
            started.elapsed().as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        for plan in unfinished {
            let me = Arc::clone(self);
            tokio::spawn(async move {
                tracing::info!(transactional_id = %plan.transactional_id, commit = plan.commit, "completing a transaction prepared under the previous coordinator");
                if let Err(e) = me.finish(plan).await {
                    tracing::warn!(error = %e, "could not complete a prepared transaction");
                }
            });
        }
        Ok(())
    }

    /// The coordinator state PARTITION (shard SHARD) holds below its high watermark.
    fn read_shard(&self, partition: &Partition, shard: usize) -> Result<TxnCoordinator, ApiError> {
        let mut coordinator = TxnCoordinator::new(self.config.clone());
        crate::internal::replay_partition(partition, |record| {
            let Some(key) = record.key else { return };
            match TxnRecord::from_key_value(&key, record.value.as_deref()) {
                Ok(r) if partition_for(&r.transactional_id, self.partitions) as usize == shard => {
                    coordinator.apply(&r)
                }
                Ok(r) => {
                    tracing::warn!(transactional_id = %r.transactional_id, partition = shard, "skipping a transaction record of another partition")
                }
                Err(e) => {
                    tracing::warn!(offset = record.offset, error = %e, "skipping unreadable transaction record")
                }
            }
        })?;
        Ok(coordinator)
    }
}
