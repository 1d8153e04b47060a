//! The sink's state and its one move: commit the records gathered since the last commit
//! (a batch) with its partitions' next offsets in one PostgreSQL transaction, refusing
//! bad records, retrying PostgreSQL, and giving up partitions another instance claimed.
//! Kafka's committed offsets are written afterwards, for `exacta group describe` only.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, info, warn};

use crate::batch::{self, Batch, Partition};
use crate::config::{Delivery, SinkConfig};
use crate::dead_letter::DeadLetters;
use crate::metrics::Metrics;
use crate::offsets::{Advance, Claim, Offsets, NONE};
use crate::pg::{classify, Backoff, Failure, Pg};
use crate::rebalance::Ctx;
use crate::record::{Record, Row};
use crate::table::Table;
use crate::SinkError;

/// A record to the rows it becomes (zero or more), or why it cannot become any.
pub type Mapper = dyn Fn(&Record) -> Result<Vec<Row>, String> + Send + Sync;

/// The sink's state, shared by the poll loop and the rebalance callback (which runs
/// inside `poll`, on the same thread).
pub(crate) struct Core {
    pub(crate) config: SinkConfig,
    pub(crate) owner: String,
    pub(crate) pg: Pg,
    pub(crate) offsets: Offsets,
    pub(crate) table: Table,
    pub(crate) mapper: Arc<Mapper>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) dead: Option<DeadLetters>,
    pub(crate) owned: HashMap<Partition, Claim>,
    pub(crate) buffer: Vec<Record>,
    /// An error met inside the rebalance callback, for the loop to return.
    pub(crate) fatal: Option<SinkError>,
    /// A bad record stopped the sink: no more commits.
    pub(crate) stopped: bool,
    pub(crate) stop: Arc<AtomicBool>,
}

enum Written {
    Committed(u64),
    AlreadyCommitted,
    Fenced(Vec<Partition>),
}

impl Core {
    pub(crate) fn exactly_once(&self) -> bool {
        self.config.delivery == Delivery::ExactlyOnce
    }

    /// Claim newly assigned PARTITIONS, retrying while PostgreSQL is away.
    pub(crate) fn claim(&mut self, partitions: &[Partition]) -> Result<Vec<Claim>, SinkError> {
        if !self.exactly_once() {
            return Ok(vec![
                Claim {
                    token: 0,
                    next: NONE
                };
                partitions.len()
            ]);
        }
        let mut backoff = Backoff::new();
        loop {
            let attempt = self
                .pg
                .client()
                .and_then(|c| self.offsets.claim(c, &self.owner, partitions));
            match attempt {
                Ok(claims) => return Ok(claims),
                Err(e) if classify(&e) == Failure::Fatal => {
                    return Err(SinkError::postgres("claiming partitions", e))
                }
                Err(e) => {
                    self.metrics
                        .postgres_retries
                        .fetch_add(1, Ordering::Relaxed);
                    warn!("claiming partitions failed, retrying: {e}");
                    self.pg.forget_if_closed();
                    if self.stop.load(Ordering::Relaxed) {
                        return Err(SinkError::postgres("claiming partitions", e));
                    }
                    backoff.wait();
                }
            }
        }
    }

    pub(crate) fn assigned(&mut self, partitions: &[Partition], claims: &[Claim]) {
        for (p, c) in partitions.iter().zip(claims) {
            self.owned.insert(p.clone(), *c);
        }
        let shown: Vec<String> = partitions
            .iter()
            .zip(claims)
            .map(|((t, p), c)| match c.next {
                NONE => format!("{t}/{p} (new)"),
                n => format!("{t}/{p}@{n}"),
            })
            .collect();
        info!("assigned {}", shown.join(", "));
    }

    /// Forget PARTITIONS and their buffered records.
    pub(crate) fn release(&mut self, partitions: &HashSet<Partition>) {
        self.owned.retain(|p, _| !partitions.contains(p));
        self.buffer
            .retain(|r| !partitions.contains(&(r.topic.clone(), r.partition)));
    }

    /// Commit the buffered records (of ONLY, when given) and the offsets they reach. With
    /// ATTEMPTS, give up after that many PostgreSQL failures (the batch is dropped and
    /// will be consumed again from the offsets table).
    pub(crate) fn flush(
        &mut self,
        consumer: &BaseConsumer<Ctx>,
        only: Option<&HashSet<Partition>>,
        attempts: Option<u32>,
    ) -> Result<(), SinkError> {
        if self.stopped {
            return Ok(());
        }
        let result = self.flush_batch(consumer, only, attempts);
        if result.is_err() && only.is_none() {
            // The batch's records are gone from the buffer but not in the table: commit
            // nothing more (the positions are past them). A revoke releases its partitions.
            self.stopped = true;
        }
        result
    }

    fn flush_batch(
        &mut self,
        consumer: &BaseConsumer<Ctx>,
        only: Option<&HashSet<Partition>>,
        attempts: Option<u32>,
    ) -> Result<(), SinkError> {
        let wanted = |p: &Partition| only.is_none_or(|o| o.contains(p));
        let mut batch = Batch::default();
        let exactly_once = self.exactly_once();
        for r in std::mem::take(&mut self.buffer) {
            let p = (r.topic.clone(), r.partition);
            if !wanted(&p) {
                self.buffer.push(r);
            } else if let Some(c) = self.owned.get(&p) {
                if !exactly_once || r.offset >= c.next {
                    batch.records.push(r);
                }
            }
        }
        for r in &batch.records {
            let to = batch
                .advance
                .entry((r.topic.clone(), r.partition))
                .or_insert(0);
            *to = (*to).max(r.offset + 1);
        }
        // The position also steps over what read_committed skips (transaction markers,
        // aborted records), so that the stored offset reaches the end of the partition.
        if let Ok(positions) = consumer.position() {
            for e in positions.elements() {
                let p = (e.topic().to_string(), e.partition());
                if let (Offset::Offset(pos), Some(c)) = (e.offset(), self.owned.get(&p)) {
                    if wanted(&p) && pos > c.next {
                        let to = batch.advance.entry(p).or_insert(0);
                        *to = (*to).max(pos);
                    }
                }
            }
        }
        let mut bad = Vec::new();
        for (i, r) in batch.records.iter().enumerate() {
            let rows = (self.mapper)(r).and_then(|rows| {
                rows.iter().try_for_each(|row| self.table.check_row(row))?;
                Ok(rows)
            });
            match rows {
                Ok(rows) => batch.rows.extend(rows.into_iter().map(|row| (i, row))),
                Err(reason) => bad.push((i, reason)),
            }
        }
        for (i, reason) in bad {
            self.metrics.bad_records.fetch_add(1, Ordering::Relaxed);
            batch.reject(i, reason, self.dead.is_some());
        }
        let owned = &self.owned;
        batch
            .advance
            .retain(|p, to| owned.get(p).is_some_and(|c| *to > c.next));
        if batch.advance.is_empty() && batch.rows.is_empty() && batch.dead.is_empty() {
            return self.stop_at(&batch);
        }
        let mut backoff = Backoff::new();
        let mut failures = 0;
        let rows = loop {
            if batch.dead_sent < batch.dead.len() {
                let dead = self.dead.as_ref().expect("dead letters only with a topic");
                let pending: Vec<(&Record, &str)> = batch.dead[batch.dead_sent..]
                    .iter()
                    .map(|(i, reason)| (&batch.records[*i], reason.as_str()))
                    .collect();
                dead.send(&pending)?;
                self.metrics
                    .dead_lettered
                    .fetch_add(pending.len() as u64, Ordering::Relaxed);
                batch.dead_sent = batch.dead.len();
            }
            match self.write(&batch, failures > 0) {
                Ok(Written::Committed(rows)) => break rows,
                Ok(Written::AlreadyCommitted) => {
                    self.metrics
                        .already_committed
                        .fetch_add(1, Ordering::Relaxed);
                    info!("the previous attempt of this batch had committed");
                    break 0;
                }
                Ok(Written::Fenced(lost)) => self.lose(consumer, &mut batch, lost),
                Err(e) => match classify(&e) {
                    Failure::Data => {
                        let refused = self.locate(&batch)?;
                        if refused.is_empty() {
                            return Err(SinkError::postgres("writing a batch", e));
                        }
                        for (i, reason) in refused {
                            self.metrics.bad_records.fetch_add(1, Ordering::Relaxed);
                            batch.reject(i, reason, self.dead.is_some());
                        }
                    }
                    Failure::Fatal => return Err(SinkError::postgres("writing a batch", e)),
                    Failure::Retry => {
                        self.metrics
                            .postgres_retries
                            .fetch_add(1, Ordering::Relaxed);
                        self.pg.forget_if_closed();
                        failures += 1;
                        // Told to stop while PostgreSQL is away: the batch is not
                        // committed, and is consumed again from the offsets table.
                        if attempts.is_some_and(|a| failures >= a)
                            || self.stop.load(Ordering::Relaxed)
                        {
                            return Err(SinkError::postgres("writing a batch", e));
                        }
                        warn!("writing a batch failed, retrying: {e}");
                        backoff.wait();
                    }
                },
            }
        };
        let committed: usize = batch
            .records
            .iter()
            .filter(|r| batch.advance.contains_key(&(r.topic.clone(), r.partition)))
            .count();
        self.metrics.batches.fetch_add(1, Ordering::Relaxed);
        self.metrics.rows.fetch_add(rows, Ordering::Relaxed);
        self.metrics
            .records
            .fetch_add(committed as u64, Ordering::Relaxed);
        let mut tpl = TopicPartitionList::new();
        for (p, to) in &batch.advance {
            if let Some(c) = self.owned.get_mut(p) {
                c.next = *to;
                let _ = tpl.add_partition_offset(&p.0, p.1, Offset::Offset(*to));
            }
        }
        if tpl.count() > 0 {
            // Exactly once: for `exacta group describe`. At least once: the offsets.
            let mode = if exactly_once {
                CommitMode::Async
            } else {
                CommitMode::Sync
            };
            if let Err(e) = consumer.commit(&tpl, mode) {
                warn!("committing offsets to Kafka failed: {e}");
            }
        }
        self.stop_at(&batch)
    }

    /// A bad record without a dead-letter topic: the error that stops the sink (and
    /// nothing more is committed: the records after it were consumed but not written).
    fn stop_at(&mut self, batch: &Batch) -> Result<(), SinkError> {
        match &batch.stop {
            None => Ok(()),
            Some((i, reason)) => Err(SinkError::BadRecord {
                coordinates: batch.records[*i].coordinates(),
                reason: reason.clone(),
            })
            .inspect_err(|_| self.stopped = true),
        }
    }

    /// Another instance claimed LOST: drop them from the batch and stop fetching them
    /// until the group hands them back.
    fn lose(&mut self, consumer: &BaseConsumer<Ctx>, batch: &mut Batch, lost: Vec<Partition>) {
        let mut tpl = TopicPartitionList::new();
        for p in &lost {
            warn!(
                "{}/{}: another instance owns this partition now; the batch for it is rolled back",
                p.0, p.1
            );
            self.metrics.fenced.fetch_add(1, Ordering::Relaxed);
            self.owned.remove(p);
            batch.advance.remove(p);
            tpl.add_partition(&p.0, p.1);
        }
        let records = &batch.records;
        batch
            .rows
            .retain(|(i, _)| !lost.contains(&(records[*i].topic.clone(), records[*i].partition)));
        let _ = consumer.pause(&tpl);
    }

    /// One attempt at BATCH's transaction. Normally the rows go first and the offsets
    /// with their owner check last (the offsets rows stay locked only at the end; a stale
    /// owner learns it is one at the last statement and everything rolls back). After a
    /// failed attempt (OFFSETS_FIRST) the offsets go first: if that attempt's commit
    /// landed with its answer lost, the retry must see so before its rows collide with
    /// the committed ones on a unique key.
    fn write(&mut self, batch: &Batch, offsets_first: bool) -> Result<Written, postgres::Error> {
        let started = Instant::now();
        let exactly_once = self.exactly_once();
        let Self {
            pg,
            offsets,
            table,
            owned,
            metrics,
            ..
        } = self;
        let mut tx = pg.client()?.transaction()?;
        let rows = batch.rows_to_write(table);
        let mut written = 0;
        if !offsets_first {
            written = batch::insert(&mut tx, table, &rows)?;
        }
        if exactly_once {
            let mut fenced = Vec::new();
            for (p, to) in &batch.advance {
                match offsets.advance(&mut tx, &p.0, p.1, owned[p], *to)? {
                    Advance::Done => {}
                    Advance::Fenced => fenced.push(p.clone()),
                    Advance::AlreadyCommitted => {
                        tx.rollback()?;
                        return Ok(Written::AlreadyCommitted);
                    }
                }
            }
            if !fenced.is_empty() {
                tx.rollback()?;
                return Ok(Written::Fenced(fenced));
            }
        }
        if offsets_first {
            written = batch::insert(&mut tx, table, &rows)?;
        }
        tx.commit()?;
        let took = started.elapsed();
        metrics.observe_commit(took);
        debug!(
            rows = written,
            micros = took.as_micros() as u64,
            "batch committed"
        );
        Ok(Written::Committed(written))
    }

    fn locate(&mut self, batch: &Batch) -> Result<Vec<(usize, String)>, SinkError> {
        let pg = |e| SinkError::postgres("finding the refused record", e);
        let Self {
            pg: conn, table, ..
        } = self;
        let mut tx = conn.client().and_then(|c| c.transaction()).map_err(pg)?;
        let refused = batch::locate(&mut tx, table, batch).map_err(pg)?;
        tx.rollback().map_err(pg)?;
        Ok(refused)
    }
}
