//! The transactional copier, run as its own process (`exacta-verify copy`) so the verifier
//! can SIGKILL and restart it. It reads the input topic in a group with read_committed,
//! writes each record to the output topic and sends the input offsets in the same
//! transaction; it aborts a chosen fraction on purpose and rewinds to the committed
//! offsets after every abort. A restart with the same transactional id fences the previous
//! instance.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::history::{now_ms, output_value, Event, Recorder};

/// Exit code of a copier that must be restarted (fenced or otherwise unusable).
pub const EXIT_RESTART: i32 = 3;

#[derive(clap::Args, Debug, Clone)]
pub struct CopyArgs {
    #[arg(long)]
    pub bootstrap_server: String,
    #[arg(long)]
    pub input: String,
    #[arg(long)]
    pub output: String,
    #[arg(long)]
    pub output_partitions: i32,
    #[arg(long)]
    pub group: String,
    #[arg(long)]
    pub transactional_id: String,
    /// Prefix of this instance's transaction names (copier index and restart count).
    #[arg(long)]
    pub tag: String,
    #[arg(long)]
    pub records_per_txn: usize,
    #[arg(long)]
    pub abort_rate: f64,
    /// Sleep inside each transaction, before producing.
    #[arg(long, default_value_t = 0)]
    pub pause_ms: u64,
    #[arg(long)]
    pub seed: u64,
    #[arg(long)]
    pub transaction_timeout_ms: u64,
    /// History file to append to.
    #[arg(long)]
    pub history: PathBuf,
    /// The copier exits cleanly once this file exists.
    #[arg(long)]
    pub stop_file: PathBuf,
    /// A deliberate bug (`no-rewind`), to show the checker catches it.
    #[arg(long)]
    pub bug: Option<String>,
    /// `classic`, or `consumer` for the KIP-848 protocol (the broker's timeouts apply).
    #[arg(long, default_value = "classic", value_parser = ["classic", "consumer"])]
    pub group_protocol: String,
}

struct Delivery {
    id: u64,
    out_p: i32,
    txn: Arc<str>,
}

struct ProducerCtx(Arc<Recorder>);

impl ClientContext for ProducerCtx {}

impl ProducerContext for ProducerCtx {
    type DeliveryOpaque = Box<Delivery>;
    fn delivery(&self, result: &DeliveryResult<'_>, d: Self::DeliveryOpaque) {
        let (off, err) = match result {
            Ok(m) => (Some(m.offset()), None),
            Err((e, _)) => (None, Some(e.to_string())),
        };
        let _ = self.0.record(&Event::Ack {
            txn: d.txn.to_string(),
            id: d.id,
            out_p: d.out_p,
            off,
            err,
        });
    }
}

/// Notes revocations, so a batch read across a rebalance is dropped, not copied.
struct ConsumerCtx(Arc<AtomicBool>);

impl ClientContext for ConsumerCtx {}

impl ConsumerContext for ConsumerCtx {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if matches!(rebalance, Rebalance::Revoke(_)) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}

enum Failure {
    Deliberate,
    Kafka(KafkaError),
    Other(&'static str),
}

impl From<KafkaError> for Failure {
    fn from(e: KafkaError) -> Self {
        Failure::Kafka(e)
    }
}

fn is_fatal(e: &KafkaError) -> bool {
    matches!(e, KafkaError::Transaction(t) if t.is_fatal())
}

/// Runs until the stop file appears or the verifier exits (exit 0), or the producer is
/// fenced (exit [`EXIT_RESTART`]); other errors end it with a message (the verifier
/// restarts it).
pub fn run(args: &CopyArgs) -> anyhow::Result<i32> {
    let history = Arc::new(Recorder::create(&args.history)?);
    let revoked = Arc::new(AtomicBool::new(false));
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &args.bootstrap_server)
        .set("group.id", &args.group)
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "100");
    if args.group_protocol == "consumer" {
        config.set("group.protocol", "consumer");
    } else {
        config
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "500");
    }
    let consumer: BaseConsumer<ConsumerCtx> = config
        .create_with_context(ConsumerCtx(Arc::clone(&revoked)))
        .context("creating the consumer")?;
    consumer
        .subscribe(&[&args.input])
        .context("subscribing to the input")?;
    let producer: ThreadedProducer<ProducerCtx> = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap_server)
        .set("transactional.id", &args.transactional_id)
        .set(
            "transaction.timeout.ms",
            args.transaction_timeout_ms.to_string(),
        )
        .set("linger.ms", "2")
        .set("retry.backoff.ms", "20")
        .set("reconnect.backoff.ms", "10")
        .set("reconnect.backoff.max.ms", "200")
        .create_with_context(ProducerCtx(Arc::clone(&history)))
        .context("creating the producer")?;
    if let Err(e) = producer.init_transactions(Duration::from_secs(60)) {
        eprintln!("copier {}: init_transactions: {e}", args.tag);
        return Ok(EXIT_RESTART);
    }
    let mut rng = exacta_chaos::Rng::new(args.seed);
    let mut seq = 0u64;
    let parent = std::os::unix::process::parent_id();
    loop {
        if std::os::unix::process::parent_id() != parent {
            eprintln!("copier {}: the verifier is gone; exiting", args.tag);
            return Ok(0);
        }
        if args.stop_file.exists() {
            consumer.unsubscribe();
            return Ok(0);
        }
        let batch = read_batch(&consumer, args.records_per_txn);
        if revoked.swap(false, Ordering::SeqCst) {
            // Partitions moved while reading: the new owner starts from the committed
            // offsets, and so do we.
            if !rewind(&consumer, &args.tag) {
                return Ok(EXIT_RESTART);
            }
            continue;
        }
        if batch.is_empty() {
            continue;
        }
        seq += 1;
        let txn: Arc<str> = Arc::from(format!("{}.{seq}", args.tag));
        history.record(&Event::Begin {
            txn: txn.to_string(),
            t: now_ms(),
        })?;
        if let Err(e) = producer.begin_transaction() {
            eprintln!("copier {}: begin_transaction: {e}", args.tag);
            history.flush()?;
            return Ok(EXIT_RESTART);
        }
        let deliberate = rng.chance(args.abort_rate);
        match copy(
            args, &consumer, &producer, &history, &txn, &batch, deliberate,
        ) {
            Ok(()) => {}
            Err(Failure::Kafka(e)) if is_fatal(&e) => {
                eprintln!("copier {}: transaction {txn}: fatal: {e}", args.tag);
                history.flush()?;
                return Ok(EXIT_RESTART);
            }
            Err(failure) => {
                match &failure {
                    Failure::Kafka(e) => {
                        eprintln!("copier {}: transaction {txn}: {e}; aborting", args.tag)
                    }
                    Failure::Other(e) => {
                        eprintln!("copier {}: transaction {txn}: {e}; aborting", args.tag)
                    }
                    Failure::Deliberate => {}
                }
                history.record(&Event::Abort {
                    txn: txn.to_string(),
                    deliberate: matches!(failure, Failure::Deliberate),
                    t: now_ms(),
                })?;
                history.flush()?;
                if let Err(e) = abort(&producer) {
                    eprintln!("copier {}: abort of {txn}: {e}", args.tag);
                    return Ok(EXIT_RESTART);
                }
                if args.bug.as_deref() != Some("no-rewind") && !rewind(&consumer, &args.tag) {
                    return Ok(EXIT_RESTART);
                }
            }
        }
    }
}

/// Input records `(partition, offset, id)`: up to `max`, or what arrived within 200 ms.
fn read_batch(consumer: &BaseConsumer<ConsumerCtx>, max: usize) -> Vec<(i32, i64, u64)> {
    let mut batch = Vec::new();
    let deadline = Instant::now() + Duration::from_millis(200);
    while batch.len() < max {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match consumer.poll(left) {
            Some(Ok(m)) => {
                let id = m
                    .payload()
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .and_then(|v| v.parse::<u64>().ok());
                match id {
                    Some(id) => batch.push((m.partition(), m.offset(), id)),
                    None => eprintln!("skipping a non-numeric input record at {}", m.offset()),
                }
            }
            Some(Err(e)) => eprintln!("consumer: {e}"),
            None => {}
        }
    }
    batch
}

fn copy(
    args: &CopyArgs,
    consumer: &BaseConsumer<ConsumerCtx>,
    producer: &ThreadedProducer<ProducerCtx>,
    history: &Recorder,
    txn: &Arc<str>,
    batch: &[(i32, i64, u64)],
    deliberate: bool,
) -> Result<(), Failure> {
    std::thread::sleep(Duration::from_millis(args.pause_ms));
    for &(in_p, in_off, id) in batch {
        let out_p = (id % args.output_partitions as u64) as i32;
        let _ = history.record(&Event::Send {
            txn: txn.to_string(),
            id,
            in_p,
            in_off,
            out_p,
        });
        let value = output_value(id, txn);
        let record = BaseRecord::with_opaque_to(
            &args.output,
            Box::new(Delivery {
                id,
                out_p,
                txn: Arc::clone(txn),
            }),
        )
        .payload(value.as_bytes())
        .key(&[] as &[u8])
        .partition(out_p);
        send(producer, record)?;
    }
    drain(producer);
    if deliberate {
        return Err(Failure::Deliberate);
    }
    let mut offsets = TopicPartitionList::new();
    let mut next: std::collections::BTreeMap<i32, i64> = std::collections::BTreeMap::new();
    for &(p, off, _) in batch {
        let e = next.entry(p).or_insert(off + 1);
        *e = (*e).max(off + 1);
    }
    for (&p, &off) in &next {
        offsets.add_partition_offset(&args.input, p, Offset::Offset(off))?;
    }
    let metadata = consumer
        .group_metadata()
        .ok_or(Failure::Other("the consumer has no group metadata"))?;
    let _ = history.record(&Event::Commit {
        txn: txn.to_string(),
        offsets: next.into_iter().collect(),
        t: now_ms(),
    });
    let _ = history.flush();
    producer.send_offsets_to_transaction(&offsets, &metadata, Duration::from_secs(30))?;
    let mut attempts = 0;
    loop {
        match producer.commit_transaction(Duration::from_secs(30)) {
            Ok(()) => break,
            Err(KafkaError::Transaction(e)) if e.is_retriable() && attempts < 20 => {
                attempts += 1;
                eprintln!("commit of {txn}: {e}; retrying");
            }
            Err(e) => {
                let _ = history.record(&Event::Committed {
                    txn: txn.to_string(),
                    ok: false,
                    err: Some(e.to_string()),
                    t: now_ms(),
                });
                return Err(e.into());
            }
        }
    }
    let _ = history.record(&Event::Committed {
        txn: txn.to_string(),
        ok: true,
        err: None,
        t: now_ms(),
    });
    Ok(())
}

fn abort(producer: &ThreadedProducer<ProducerCtx>) -> Result<(), KafkaError> {
    let mut attempts = 0;
    loop {
        match producer.abort_transaction(Duration::from_secs(30)) {
            Ok(()) => return Ok(()),
            Err(KafkaError::Transaction(e)) if e.is_retriable() && attempts < 20 => {
                attempts += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Seeks every assigned partition back to the group's committed offset; false when the
/// committed offsets could not be fetched (the copier must then start over: going on from
/// where it stands would skip the records of the aborted transaction). The fetch is retried
/// for a while: NOT_COORDINATOR while the group's coordinator moves to another broker is
/// answered at once, and librdkafka does not retry it itself.
fn rewind(consumer: &BaseConsumer<ConsumerCtx>, tag: &str) -> bool {
    let mut attempts = 0;
    let committed = loop {
        match consumer.committed(Duration::from_secs(30)) {
            Ok(c) => break c,
            Err(e) if attempts < 50 => {
                attempts += 1;
                eprintln!("copier {tag}: rewind: fetching committed offsets: {e}; retrying");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => {
                eprintln!("copier {tag}: rewind: fetching committed offsets: {e}; restarting");
                return false;
            }
        }
    };
    for tp in committed.elements() {
        let offset = match tp.offset() {
            Offset::Offset(o) => Offset::Offset(o),
            _ => Offset::Beginning,
        };
        if let Err(e) = consumer.seek(tp.topic(), tp.partition(), offset, Duration::from_secs(10)) {
            eprintln!(
                "copier {tag}: rewind: seeking {}/{}: {e}; restarting",
                tp.topic(),
                tp.partition()
            );
            return false;
        }
    }
    true
}

/// Sends a record, waiting while the producer's queue is full.
pub fn send<'a, C: ProducerContext>(
    producer: &ThreadedProducer<C>,
    mut record: BaseRecord<'a, [u8], [u8], C::DeliveryOpaque>,
) -> Result<(), KafkaError> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((
                KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                r,
            )) => {
                record = r;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Waits until every record sent is acknowledged or failed (see exacta-bench: a repeated
/// zero-timeout flush sends lingering batches at once without rust-rdkafka's 100 ms polls).
pub fn drain<C: ProducerContext>(producer: &ThreadedProducer<C>) {
    while producer.in_flight_count() > 0 {
        let _ = producer.flush(Duration::ZERO);
        std::thread::sleep(Duration::from_micros(100));
    }
}
