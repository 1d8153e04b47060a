//! [`Sink`]: set up (PostgreSQL, the table, the offsets table, the consumer), then the poll
//! loop that gathers records and commits a batch every `batch_records` records or
//! `batch_ms`, with a progress line and lag figures every 5 s.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::Offset;
use tracing::{info, warn};

use crate::batch::Partition;
use crate::config::{Delivery, SinkConfig, StartFrom};
use crate::dead_letter::DeadLetters;
use crate::engine::{Core, Mapper};
use crate::metrics::Metrics;
use crate::offsets::{Offsets, NONE};
use crate::pg::Pg;
use crate::rebalance::{lock, Ctx};
use crate::record::{Record, Row};
use crate::table::Table;
use crate::SinkError;

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
