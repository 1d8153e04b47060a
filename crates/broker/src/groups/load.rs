//! A shard's state from its `__consumer_offsets` partition: read once at start on a single
//! node, and in a cluster whenever this broker becomes the partition's leader; dropped
//! when the leadership moves on.
//!
//! To ensure correctness: a new leader loads only once its high watermark has reached the
//! log end it had when it took the lead (everything the previous leader may have answered
//! is in the state), and the shard refuses every operation meanwhile, so nothing is
//! appended under a state that is not the log's. A shard given up drops its state and its
//! waiting replies (their members get NOT_COORDINATOR and find the new coordinator).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use exacta_coordinator::group::{GroupConfig, GroupCoordinator, Record};

use super::{GroupRuntime, Shard, OFFSETS_TOPIC};
use crate::partitions::{ApiError, Partition};
use crate::serving::Serving;

impl Shard {
    pub(super) fn empty(config: &GroupConfig, serving: Serving) -> Self {
        Shard {
            coordinator: GroupCoordinator::new(config.clone()),
            pending: VecDeque::new(),
            txn_offsets: HashMap::new(),
            serving,
        }
    }
}

/// The state PARTITION's log holds below its high watermark, and how many (not
/// transactional) records were applied to build it.
pub(super) fn read_shard(
    partition: &Partition,
    config: &GroupConfig,
    serving: Serving,
    now: i64,
) -> Result<(Shard, usize), ApiError> {
    let mut shard = Shard::empty(config, serving);
    let mut applied = 0usize;
    crate::internal::replay_partition(partition, |record| {
        let Some(key) = record.key else { return };
        if record.control {
            // A transaction marker: its offsets become visible or vanish.
            let commit = key.len() >= 4 && i16::from_be_bytes([key[2], key[3]]) == 1;
            for r in shard
                .txn_offsets
                .remove(&record.producer_id)
                .unwrap_or_default()
            {
                if commit {
                    shard.coordinator.apply(&r, now);
                }
            }
            return;
        }
        match Record::from_key_value(&key, record.value.as_deref()) {
            Ok(r) if record.transactional => {
                shard
                    .txn_offsets
                    .entry(record.producer_id)
                    .or_default()
                    .push(r);
            }
            Ok(r) => {
                shard.coordinator.apply(&r, now);
                applied += 1;
            }
            Err(e) => {
                tracing::warn!(partition = partition.index, offset = record.offset, error = %e, "skipping unreadable group record")
            }
        }
    })?;
    Ok((shard, applied))
}

impl GroupRuntime {
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
                tracing::error!(partition = shard, epoch, error = %e.message, "loading groups failed");
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
                "no longer coordinating the groups of {OFFSETS_TOPIC}-{shard}"
            );
            self.reset(shard, &mut state, Serving::No);
        }
    }

    /// Clears a shard and its waiting replies (call with its lock held).
    fn reset(&self, shard: usize, state: &mut Shard, serving: Serving) {
        *state = Shard::empty(&self.config, serving);
        self.count_groups(shard, state);
        self.replies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, (s, _)| *s != shard);
    }

    async fn load(&self, shard: usize, epoch: i32) -> Result<(), ApiError> {
        let started = std::time::Instant::now();
        let still_loading = || self.lock(shard).serving == Serving::Loading(epoch);
        let Some(partition) = self.broker.partition(OFFSETS_TOPIC, shard as i32) else {
            return Err(ApiError::new(
                exacta_types::ErrorCode::CoordinatorNotAvailable,
                format!("{OFFSETS_TOPIC}-{shard} is missing"),
            ));
        };
        if !partition.committed_to_log_end(still_loading).await {
            return Ok(());
        }
        let config = self.config.clone();
        let (loaded, records) = crate::blocking(|| {
            read_shard(&partition, &config, Serving::Leader(epoch), crate::now_ms())
        })?;
        let mut state = self.lock(shard);
        if state.serving != Serving::Loading(epoch) {
            return Ok(());
        }
        *state = loaded;
        self.count_groups(shard, &state);
        let elapsed = started.elapsed().as_millis() as u64;
        tracing::info!(
            partition = shard,
            epoch,
            groups = state.coordinator.group_count(),
            records,
            elapsed_ms = elapsed,
            "coordinating the groups of {OFFSETS_TOPIC}-{shard}"
        );
        crate::metrics::METRICS
            .group_load_ms
            .store(elapsed, Ordering::Relaxed);
        Ok(())
    }
}
