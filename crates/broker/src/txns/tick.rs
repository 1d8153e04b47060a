//! The transaction coordinator's clock: at start, the completion of transactions a restart
//! left prepared (a single node; in a cluster a new leader does that when it loads a shard,
//! see `load`), then every 100 ms the abort of transactions past their timeout (with an
//! epoch bump that fences their producer) and the expiry of idle transactional ids, for
//! each shard served here.

use std::sync::Arc;
use std::time::Duration;

use exacta_coordinator::txn::{EndPlan, TxnRecord};
use exacta_types::ErrorCode;

use super::TxnRuntime;
use crate::metrics::{Metrics, METRICS};
use crate::serving::Serving;

impl TxnRuntime {
    /// Finishes transactions left in Prepare* by a restart, then times out open ones and
    /// expires idle ids, every 100 ms.
    pub async fn tick_loop(self: Arc<Self>) {
        // In a cluster a new leader of a shard does this when it loads it.
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
                if matches!(self.lock(shard).serving, Serving::Leader(_)) {
                    self.tick_shard(shard).await;
                }
            }
        }
    }

    /// Times out open transactions and expires idle ids of one shard.
    pub(super) async fn tick_shard(&self, shard: usize) {
        let work = {
            let Ok(mut state) = self.lock_serving(shard) else {
                return;
            };
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
                if Self::durable(waits).await.is_err() {
                    return; // The shard moved: its new coordinator finishes the plans.
                }
                for plan in plans {
                    match self.finish(plan).await {
                        Ok(_) => Metrics::add(&METRICS.txns_timed_out, 1),
                        Err(e) => {
                            tracing::error!(error = %e, "could not abort a timed-out transaction")
                        }
                    }
                }
            }
            Err(e) if e.code == ErrorCode::NotCoordinator => {}
            Err(e) => {
                tracing::error!(error = %e.message, "transaction coordinator tick could not write")
            }
        }
    }
}
