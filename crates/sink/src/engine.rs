//! The exactly-once loop: consume with `read_committed` in a consumer group, gather a batch
//! (records or time), and commit its rows together with its partitions' next offsets in
//! one PostgreSQL transaction. Partitions are claimed in the offsets table when assigned
//! and the consumer starts where that table says; a revoked partition's batch in flight is
//! committed (or, failing that, dropped) before it is released. Kafka's committed offsets
//! are written afterwards, for `exacta group describe` only.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tracing::{debug, error, info, warn};

use crate::batch::{self, Batch, Partition};
use crate::config::{Delivery, SinkConfig, StartFrom};
use crate::dead_letter::DeadLetters;
use crate::metrics::Metrics;
use crate::offsets::{Advance, Claim, Offsets, NONE};
use crate::pg::{classify, Backoff, Failure, Pg};
use crate::record::{Record, Row};
use crate::table::Table;
use crate::SinkError;

/// A record to the rows it becomes (zero or more), or why it cannot become any.
pub type Mapper = dyn Fn(&Record) -> Result<Vec<Row>, String> + Send + Sync;

/// The sink's state, shared by the poll loop and the rebalance callback (which runs
/// inside `poll`, on the same thread).
struct Core {
    config: SinkConfig,
    owner: String,
    pg: Pg,
    offsets: Offsets,
    table: Table,
    mapper: Arc<Mapper>,
    metrics: Arc<Metrics>,
    dead: Option<DeadLetters>,
    owned: HashMap<Partition, Claim>,
    buffer: Vec<Record>,
    /// An error met inside the rebalance callback, for the loop to return.
    fatal: Option<SinkError>,
    /// A bad record stopped the sink: no more commits.
    stopped: bool,
    stop: Arc<AtomicBool>,
}

enum Written {
    Committed(u64),
    AlreadyCommitted,
    Fenced(Vec<Partition>),
}

impl Core {
    fn exactly_once(&self) -> bool {
        self.config.delivery == Delivery::ExactlyOnce
    }

    /// Claim newly assigned PARTITIONS, retrying while PostgreSQL is away.
    fn claim(&mut self, partitions: &[Partition]) -> Result<Vec<Claim>, SinkError> {
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

    fn assigned(&mut self, partitions: &[Partition], claims: &[Claim]) {
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
    fn release(&mut self, partitions: &HashSet<Partition>) {
        self.owned.retain(|p, _| !partitions.contains(p));
        self.buffer
            .retain(|r| !partitions.contains(&(r.topic.clone(), r.partition)));
    }

    /// Commit the buffered records (of ONLY, when given) and the offsets they reach. With
    /// ATTEMPTS, give up after that many PostgreSQL failures (the batch is dropped and
    /// will be consumed again from the offsets table).
    fn flush(
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
            match self.write(&batch) {
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

    fn write(&mut self, batch: &Batch) -> Result<Written, postgres::Error> {
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
        // Rows first, then the offsets with their owner check: the offsets rows stay
        // locked only for the end of the transaction, and a stale owner learns it is one
        // at the last statement (then everything it wrote rolls back).
        let rows = batch.rows_to_write(table);
        let written = batch::insert(&mut tx, table, &rows)?;
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

pub(crate) struct Ctx {
    core: Arc<Mutex<Core>>,
}

fn lock(core: &Mutex<Core>) -> MutexGuard<'_, Core> {
    core.lock().unwrap_or_else(|p| p.into_inner())
}

impl ClientContext for Ctx {}

impl ConsumerContext for Ctx {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let mut core = lock(&self.core);
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let partitions: Vec<Partition> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                match core.claim(&partitions) {
                    Ok(claims) => {
                        for ((t, p), c) in partitions.iter().zip(&claims) {
                            let at = match c.next {
                                NONE => Offset::Invalid, // Kafka's committed offset, or start_from
                                n => Offset::Offset(n),
                            };
                            let _ = tpl.set_partition_offset(t, *p, at);
                        }
                        core.assigned(&partitions, &claims);
                    }
                    Err(e) => core.fatal = Some(e),
                }
                let result = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(e) = result {
                    error!("assigning partitions failed: {e}");
                }
                let _ = consumer.resume(tpl);
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let revoked: HashSet<Partition> = partitions.into_iter().collect();
                // Finish the batch in flight (one attempt); a lost assignment is already
                // someone else's, and the owner token would refuse it anyway.
                if !consumer.assignment_lost() {
                    match core.flush(consumer, Some(&revoked), Some(1)) {
                        Ok(()) => {}
                        Err(e @ SinkError::BadRecord { .. }) => core.fatal = Some(e),
                        Err(e) => {
                            warn!("the batch in flight for revoked partitions is rolled back: {e}")
                        }
                    }
                }
                core.release(&revoked);
                let result = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = result {
                    error!("releasing partitions failed: {e}");
                }
                info!("released {} partitions", revoked.len());
            }
            other => {
                error!("rebalance failed: {other:?}");
                let all: HashSet<Partition> = core.owned.keys().cloned().collect();
                core.release(&all);
                let _ = consumer.unassign();
            }
        }
    }
}

/// An exactly-once sink from Kafka topics into one PostgreSQL table.
pub struct Sink {
    config: SinkConfig,
    mapper: Arc<Mapper>,
    required: Vec<String>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
}

impl Sink {
    /// A sink writing the rows MAPPER makes of each record.
    pub fn new(
        config: SinkConfig,
        mapper: impl Fn(&Record) -> Result<Vec<Row>, String> + Send + Sync + 'static,
    ) -> Self {
        Self {
            config,
            mapper: Arc::new(mapper),
            required: Vec::new(),
            metrics: Arc::default(),
            stop: Arc::default(),
        }
    }

    /// Columns the table must have (checked at start, before anything is consumed).
    pub fn require_columns(mut self, columns: &[&str]) -> Self {
        self.required = columns.iter().map(|c| c.to_string()).collect();
        self
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// Set it to make `run` commit what it has, leave the group and return.
    pub fn stopper(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }

    /// Consume and write until stopped or an error that needs a person.
    pub fn run(self) -> Result<(), SinkError> {
        let config = self.config;
        config.validate().map_err(SinkError::Config)?;
        let mut pg = Pg::connect(&config.dsn, Duration::from_secs(30))?;
        let offsets = Offsets::new(&config.offsets_table, &config.group);
        let client = pg
            .client()
            .map_err(|e| SinkError::postgres("connecting to PostgreSQL", e))?;
        if config.delivery == Delivery::ExactlyOnce {
            offsets.ensure(client)?;
        }
        let table = Table::load(
            client,
            &config.table,
            config.mode,
            config.key_column.as_deref(),
        )?;
        let required: Vec<&str> = self.required.iter().map(String::as_str).collect();
        table.require(&required)?;
        let dead = match &config.dead_letter_topic {
            Some(t) => Some(DeadLetters::new(&config.bootstrap_server, t)?),
            None => None,
        };
        let owner = format!(
            "{}-{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "sink".into()),
            std::process::id()
        );
        let mut kafka = ClientConfig::new();
        kafka
            .set("bootstrap.servers", &config.bootstrap_server)
            .set("group.id", &config.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            .set("session.timeout.ms", config.session_timeout_ms.to_string())
            .set(
                "auto.offset.reset",
                match config.start_from {
                    StartFrom::Earliest => "earliest",
                    StartFrom::Latest => "latest",
                },
            );
        for (k, v) in &config.consumer {
            kafka.set(k, v);
        }
        let batch_records = config.batch_records;
        let batch_time = config.batch_time();
        let subscribed = config.topics.clone();
        let mut topics = subscribed.clone();
        topics.extend(config.dead_letter_topic.clone());
        let core = Arc::new(Mutex::new(Core {
            config,
            owner,
            pg,
            offsets,
            table,
            mapper: self.mapper,
            metrics: Arc::clone(&self.metrics),
            dead,
            owned: HashMap::new(),
            buffer: Vec::new(),
            fatal: None,
            stopped: false,
            stop: Arc::clone(&self.stop),
        }));
        let consumer: BaseConsumer<Ctx> = kafka
            .create_with_context(Ctx {
                core: Arc::clone(&core),
            })
            .map_err(|e| SinkError::kafka("creating the consumer", e))?;
        for topic in &topics {
            let metadata = consumer
                .fetch_metadata(Some(topic), Duration::from_secs(30))
                .map_err(|e| SinkError::kafka(format!("looking up topic {topic}"), e))?;
            let missing = metadata
                .topics()
                .iter()
                .all(|t| t.name() != topic || t.error().is_some() || t.partitions().is_empty());
            if missing {
                return Err(SinkError::Config(format!("topic {topic} does not exist")));
            }
        }
        let subscribed: Vec<&str> = subscribed.iter().map(String::as_str).collect();
        consumer
            .subscribe(&subscribed)
            .map_err(|e| SinkError::kafka("subscribing", e))?;
        let result = poll_loop(&consumer, &core, &self.stop, batch_records, batch_time);
        if result.is_ok() {
            let mut c = lock(&core);
            c.flush(&consumer, None, Some(3))?;
        }
        // Dropping the consumer leaves the group (its revoke callback runs here).
        drop(consumer);
        let fatal = lock(&core).fatal.take();
        result.and(fatal.map_or(Ok(()), Err))
    }
}

fn poll_loop(
    consumer: &BaseConsumer<Ctx>,
    core: &Mutex<Core>,
    stop: &AtomicBool,
    batch_records: usize,
    batch_time: Duration,
) -> Result<(), SinkError> {
    let mut last_flush = Instant::now();
    // The first progress line (and lag figures) a second in, then every 5 s.
    let mut last_progress = Instant::now()
        .checked_sub(Duration::from_secs(4))
        .unwrap_or_else(Instant::now);
    while !stop.load(Ordering::Relaxed) {
        let wait = batch_time
            .saturating_sub(last_flush.elapsed())
            .clamp(Duration::from_millis(1), Duration::from_millis(100));
        match consumer.poll(wait) {
            Some(Ok(m)) => {
                let r = Record::from_message(&m);
                lock(core).buffer.push(r);
            }
            Some(Err(KafkaError::MessageConsumption(
                RDKafkaErrorCode::UnknownTopicOrPartition,
            ))) => {
                return Err(SinkError::Config(
                    "a subscribed topic does not exist".into(),
                ));
            }
            Some(Err(e)) => warn!("consuming: {e}"),
            None => {}
        }
        let mut c = lock(core);
        if let Some(e) = c.fatal.take() {
            return Err(e);
        }
        if c.buffer.len() >= batch_records || last_flush.elapsed() >= batch_time {
            c.flush(consumer, None, None)?;
            last_flush = Instant::now();
        }
        drop(c);
        if last_progress.elapsed() >= Duration::from_secs(5) {
            progress(consumer, core);
            last_progress = Instant::now();
        }
    }
    Ok(())
}

/// Lag per partition (high watermark minus the next offset) into the metrics, and a line.
fn progress(consumer: &BaseConsumer<Ctx>, core: &Mutex<Core>) {
    let (owned, metrics, exactly_once) = {
        let c = lock(core);
        (c.owned.clone(), Arc::clone(&c.metrics), c.exactly_once())
    };
    let positions: HashMap<Partition, i64> = consumer
        .position()
        .map(|tpl| {
            tpl.elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(o) => Some(((e.topic().to_string(), e.partition()), o)),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let mut lag = HashMap::new();
    for (p, claim) in &owned {
        if let Ok((_, high)) = consumer.fetch_watermarks(&p.0, p.1, Duration::from_secs(2)) {
            let next = if exactly_once && claim.next != NONE {
                claim.next
            } else {
                positions.get(p).copied().unwrap_or(0)
            };
            lag.insert(p.clone(), (next, high));
        }
    }
    *metrics.lag.lock().unwrap_or_else(|p| p.into_inner()) = lag.into_iter().collect();
    info!(
        "progress: rows={} records={} batches={} partitions={} lag={}",
        metrics.rows.load(Ordering::Relaxed),
        metrics.records.load(Ordering::Relaxed),
        metrics.batches.load(Ordering::Relaxed),
        owned.len(),
        metrics.total_lag()
    );
}
