//! `exacta-verify` (run): seeds the input, runs the copiers (restarting and, if asked,
//! SIGKILLing them), reads the output live, reads it all once more at the end, and judges
//! the history with [`crate::check`].

use std::collections::HashSet;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::check::{check, Report};
use crate::copier::{drain, send};
use crate::history::{self, now_ms, parse_output_value, Event, Meta, Recorder};

#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Broker to verify (any Kafka-compatible broker; a proxy in front of it works too).
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub bootstrap_server: String,
    /// Input records to seed and copy.
    #[arg(long, default_value_t = 100_000)]
    pub records: u64,
    #[arg(long, default_value_t = 2)]
    pub input_partitions: i32,
    #[arg(long, default_value_t = 3)]
    pub output_partitions: i32,
    /// Replication factor of the input and output topics (-1: the broker's default,
    /// 1 on a single node).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub replication_factor: i32,
    /// Records a copier reads per transaction (at most).
    #[arg(long, default_value_t = 750)]
    pub records_per_txn: usize,
    /// Fraction of transactions the copiers abort on purpose (then rewind and redo).
    #[arg(long, default_value_t = 0.33)]
    pub abort_rate: f64,
    /// Concurrent copier processes (one consumer group, one transactional id each).
    #[arg(long, default_value_t = 1)]
    pub copiers: usize,
    /// SIGKILL a random copier this many times during the run; it is restarted with the
    /// same transactional id, which fences its predecessor.
    #[arg(long, default_value_t = 0)]
    pub copier_kills: u64,
    /// Copiers sleep this long inside each transaction (paces a run so faults land
    /// mid-transaction).
    #[arg(long, default_value_t = 0)]
    pub txn_pause_ms: u64,
    /// Time between copier kills.
    #[arg(long, default_value_t = 3000)]
    pub kill_interval_ms: u64,
    #[arg(long, default_value_t = 10_000)]
    pub transaction_timeout_ms: u64,
    /// Restart a copier whose history has not grown for this long while records remain
    /// (a client stuck in a call, e.g. librdkafka #5456); reported as a stall.
    #[arg(long, default_value_t = 60)]
    pub stall_secs: u64,
    /// Seed of the abort and kill decisions.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Give up (and fail) after this long.
    #[arg(long, default_value_t = 900)]
    pub timeout_secs: u64,
    /// Topic name prefix [default: verify-<time>]; topics <prefix>-input/-output.
    #[arg(long)]
    pub topic_prefix: Option<String>,
    /// Directory for the history (kept); by default a temporary one, kept only on failure.
    #[arg(long)]
    pub history: Option<PathBuf>,
    /// Run this command as the copier instead of the built-in librdkafka one (split on
    /// spaces; it gets the flags of `exacta-verify copy` and must keep its contract, see
    /// tests/interop/verify_copier_kafka_python.py), e.g. to verify another client library.
    #[arg(long, value_name = "COMMAND")]
    pub copier_command: Option<String>,
    /// Consumer group protocol of the built-in copiers: `classic`, or `consumer` (KIP-848:
    /// the broker assigns partitions and checks member epochs on the transactional offset
    /// commits). Passed on as `--group-protocol` only when not `classic`.
    #[arg(long, default_value = "classic", value_parser = ["classic", "consumer"])]
    pub group_protocol: String,
    /// Isolation level of the live reader: read_committed, or read_uncommitted to watch
    /// the checker report aborted reads.
    #[arg(long, default_value = "read_committed")]
    pub reader_isolation: String,
    /// Break the copiers on purpose, to show the checker catches it: `no-rewind` (skip
    /// the rewind after an abort: records are lost).
    #[arg(long, hide = true)]
    pub copier_bug: Option<String>,
    /// Print the report as JSON on stdout after the verdict line.
    #[arg(long)]
    pub json: bool,
}

/// Runs the verification; returns the report (printing is the caller's).
pub fn run(args: &RunArgs) -> anyhow::Result<(Report, PathBuf)> {
    if args.copiers == 0
        || args.records == 0
        || args.input_partitions < 1
        || args.output_partitions < 1
    {
        bail!("--copiers, --records and the partition counts must be at least 1");
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout_secs);
    let prefix = args
        .topic_prefix
        .clone()
        .unwrap_or_else(|| format!("verify-{}", now_ms()));
    let dir = match &args.history {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("exacta-verify-{prefix}")),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let input = format!("{prefix}-input");
    let output = format!("{prefix}-output");
    let group = format!("{prefix}-copier");
    let progress = Progress::new(started);

    create_topics(
        args,
        &[
            (&input, args.input_partitions),
            (&output, args.output_partitions),
        ],
    )?;
    progress.say(&format!("seeding {} records into {input}", args.records));
    seed(args, &input, &dir)?;
    let input_end = end_offsets(&args.bootstrap_server, &input, args.input_partitions)?;

    // The live reader.
    let stop_reader = Arc::new(AtomicBool::new(false));
    let live_reads = Arc::new(AtomicU64::new(0));
    let reader = {
        let (bootstrap, output, dir) = (args.bootstrap_server.clone(), output.clone(), dir.clone());
        let (stop, count, partitions) = (
            Arc::clone(&stop_reader),
            Arc::clone(&live_reads),
            args.output_partitions,
        );
        let isolation = args.reader_isolation.clone();
        std::thread::spawn(move || {
            read_output(
                &bootstrap,
                &output,
                partitions,
                "live",
                &isolation,
                &dir.join("reader.jsonl"),
                &count,
                &stop,
                None,
            )
        })
    };

    let stop_file = dir.join("stop");
    let _ = std::fs::remove_file(&stop_file);
    let mut copiers = Copiers {
        args,
        input: &input,
        output: &output,
        group: &group,
        dir: &dir,
        stop_file: &stop_file,
        children: Vec::new(),
        instances: vec![0; args.copiers],
        progress: vec![(0, Instant::now()); args.copiers],
        kills: 0,
        restarts: 0,
        stalls: 0,
    };
    for i in 0..args.copiers {
        let child = copiers.spawn(i)?;
        copiers.children.push(Some(child));
    }
    let offsets = offset_reader(&args.bootstrap_server, &group)?;
    let mut rng = exacta_chaos::Rng::new(args.seed ^ 0x6b69_6c6c);
    let mut next_kill = Instant::now() + Duration::from_millis(args.kill_interval_ms);
    let mut committed = vec![-1; args.input_partitions as usize];
    let done = loop {
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(250));
        copiers.restart_exited()?;
        copiers.restart_stalled(Duration::from_secs(args.stall_secs))?;
        if copiers.kills < args.copier_kills && Instant::now() >= next_kill {
            let i = (rng.next() % args.copiers as u64) as usize;
            copiers.kill_and_restart(i)?;
            next_kill = Instant::now() + Duration::from_millis(args.kill_interval_ms);
        }
        if let Ok(c) = committed_offsets(&offsets, &input, args.input_partitions) {
            committed = c;
        }
        let copied: i64 = committed.iter().map(|&o| o.max(0)).sum();
        progress.update(&format!(
            "committed {copied}/{} input records, {} live reads, copier kills {}/{}, restarts {}",
            args.records,
            live_reads.load(Ordering::Relaxed),
            copiers.kills,
            args.copier_kills,
            copiers.restarts
        ));
        if committed == input_end && copiers.kills >= args.copier_kills {
            break true;
        }
    };
    progress.done();
    std::fs::write(&stop_file, b"").context("writing the stop file")?;
    copiers.stop();
    stop_reader.store(true, Ordering::SeqCst);
    match reader.join() {
        Ok(result) => result.context("live reader")?,
        Err(_) => bail!("the live reader panicked"),
    }
    if !done {
        eprintln!(
            "exacta verify: timed out after {} s; checking what happened",
            args.timeout_secs
        );
    }
    if let Ok(c) = committed_offsets(&offsets, &input, args.input_partitions) {
        committed = c;
    }

    // A transaction left open (by a copier that died mid-transaction and whose successor
    // never initialized, say) holds back the output's last stable offset until the
    // coordinator aborts it on timeout; committed records past it are not yet readable.
    // Judge the final state only once no transaction is open (or the wait runs out, in
    // which case the final read shows what is missing).
    wait_for_no_open_transactions(
        &args.bootstrap_server,
        &output,
        args.output_partitions,
        Duration::from_millis(args.transaction_timeout_ms) + Duration::from_secs(30),
    );

    // The final read: everything read_committed shows, to the end of every partition.
    let final_reads = AtomicU64::new(0);
    let never = AtomicBool::new(false);
    read_output(
        &args.bootstrap_server,
        &output,
        args.output_partitions,
        "final",
        "read_committed",
        &dir.join("final.jsonl"),
        &final_reads,
        &never,
        Some(Instant::now() + Duration::from_secs(120)),
    )
    .context("final read")?;

    let (kills, restarts, stalls) = (copiers.kills, copiers.restarts, copiers.stalls);
    drop(copiers);
    let meta = Recorder::create(&dir.join("meta.jsonl"))?;
    meta.record(&Event::Meta(Meta {
        records: args.records,
        input_topic: input,
        output_topic: output,
        group,
        input_partitions: args.input_partitions,
        output_partitions: args.output_partitions,
        input_end,
        committed,
        copier_kills: kills,
        copier_restarts: restarts,
        copier_stalls: stalls,
    }))?;
    meta.flush()?;
    let report = check(&history::load(&dir)?);
    Ok((report, dir))
}

struct Copiers<'a> {
    args: &'a RunArgs,
    input: &'a str,
    output: &'a str,
    group: &'a str,
    dir: &'a Path,
    stop_file: &'a Path,
    children: Vec<Option<Child>>,
    /// Instances started per copier (the restart count, part of transaction names).
    instances: Vec<u64>,
    /// Per copier: its history's size and when it last changed.
    progress: Vec<(u64, Instant)>,
    kills: u64,
    restarts: u64,
    stalls: u64,
}

impl Copiers<'_> {
    fn spawn(&mut self, i: usize) -> anyhow::Result<Child> {
        let n = self.instances[i];
        self.instances[i] += 1;
        let name = format!("copier-{i}-{n}");
        let log = std::fs::File::create(self.dir.join(format!("{name}.log")))?;
        let a = self.args;
        let mut command = match &a.copier_command {
            Some(line) => {
                let mut words = line.split_whitespace();
                let program = words.next().context("--copier-command is empty")?;
                let mut command = Command::new(program);
                command.args(words);
                command
            }
            None => {
                let mut command =
                    Command::new(std::env::current_exe().context("locating exacta-verify")?);
                command.arg("copy");
                command
            }
        };
        command
            .args(["--bootstrap-server", &a.bootstrap_server])
            .args([
                "--input",
                self.input,
                "--output",
                self.output,
                "--group",
                self.group,
            ])
            .args(["--output-partitions", &a.output_partitions.to_string()])
            .args(["--transactional-id", &format!("{}-{i}", self.group)])
            .args(["--tag", &format!("c{i}.{n}")])
            .args(["--records-per-txn", &a.records_per_txn.to_string()])
            .args(["--abort-rate", &a.abort_rate.to_string()])
            .args(["--pause-ms", &a.txn_pause_ms.to_string()])
            .args(["--seed", &(a.seed ^ ((i as u64) << 32) ^ n).to_string()])
            .args([
                "--transaction-timeout-ms",
                &a.transaction_timeout_ms.to_string(),
            ])
            .arg("--history")
            .arg(self.dir.join(format!("{name}.jsonl")))
            .arg("--stop-file")
            .arg(self.stop_file)
            .args(a.copier_bug.iter().flat_map(|bug| ["--bug", bug.as_str()]))
            .args(
                Some(a.group_protocol.as_str())
                    .filter(|p| *p != "classic")
                    .into_iter()
                    .flat_map(|p| ["--group-protocol", p]),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting a copier")
    }

    fn restart_exited(&mut self) -> anyhow::Result<()> {
        for i in 0..self.children.len() {
            let exited = match self.children[i].as_mut() {
                Some(child) => child.try_wait()?.is_some(),
                None => true,
            };
            if exited {
                self.restarts += 1;
                let child = self.spawn(i)?;
                self.children[i] = Some(child);
            }
        }
        Ok(())
    }

    fn history_of(&self, i: usize) -> PathBuf {
        let n = self.instances[i].saturating_sub(1);
        self.dir.join(format!("copier-{i}-{n}.jsonl"))
    }

    /// SIGKILLs and restarts a copier whose history has not grown for `limit` in the middle
    /// of a transaction (an idle copier, e.g. one without partitions, is left alone).
    fn restart_stalled(&mut self, limit: Duration) -> anyhow::Result<()> {
        for i in 0..self.children.len() {
            let size = std::fs::metadata(self.history_of(i)).map_or(0, |m| m.len());
            if size != self.progress[i].0 {
                self.progress[i] = (size, Instant::now());
            } else if self.progress[i].1.elapsed() > limit && in_transaction(&self.history_of(i)) {
                eprintln!(
                    "copier {i} made no progress for {} s: restarting it (a stuck client call)",
                    limit.as_secs()
                );
                if let Some(mut child) = self.children[i].take() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                self.stalls += 1;
                let child = self.spawn(i)?;
                self.children[i] = Some(child);
                self.progress[i] = (0, Instant::now());
            }
        }
        Ok(())
    }

    fn kill_and_restart(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
            self.kills += 1;
        }
        let child = self.spawn(i)?;
        self.children[i] = Some(child);
        Ok(())
    }

    /// Waits (up to 30 s) for the copiers to see the stop file, then kills the rest.
    fn stop(&mut self) {
        let until = Instant::now() + Duration::from_secs(30);
        for child in self.children.iter_mut().flatten() {
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > until => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
    }
}

/// Whether a copier's history ends inside a transaction (its last event is not a commit
/// outcome or an abort).
fn in_transaction(path: &Path) -> bool {
    let Ok(text) = std::fs::read(path) else {
        return false;
    };
    let tail = &text[text.len().saturating_sub(4096)..];
    let last = tail
        .split(|&b| b == b'\n')
        .rev()
        .find(|line| !line.is_empty())
        .and_then(|line| serde_json::from_slice::<Event>(line).ok());
    matches!(
        last,
        Some(Event::Begin { .. } | Event::Send { .. } | Event::Ack { .. } | Event::Commit { .. })
    )
}

fn create_topics(args: &RunArgs, topics: &[(&str, i32)]) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap_server)
        .create()
        .context("creating the admin client")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, partitions)| {
            let replication = TopicReplication::Fixed(args.replication_factor);
            NewTopic::new(name, *partitions, replication)
        })
        .collect();
    let results = runtime.block_on(admin.create_topics(
        &new,
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
    ))?;
    for r in results {
        if let Err((name, e)) = r {
            bail!("creating topic {name}: {e} (use a new --topic-prefix)");
        }
    }
    Ok(())
}

struct SeedCtx {
    history: Recorder,
    failed: AtomicU64,
}

impl ClientContext for SeedCtx {}

impl ProducerContext for SeedCtx {
    type DeliveryOpaque = Box<u64>;
    fn delivery(&self, result: &DeliveryResult<'_>, id: Self::DeliveryOpaque) {
        match result {
            Ok(m) => {
                let _ = self.history.record(&Event::Seed {
                    id: *id,
                    p: m.partition(),
                    off: m.offset(),
                });
            }
            Err((e, _)) => {
                if self.failed.fetch_add(1, Ordering::Relaxed) < 5 {
                    eprintln!("seeding record {id}: {e}");
                }
            }
        }
    }
}

/// Writes records 0..N (value: the number) with an idempotent producer, record `i` to
/// input partition `i % partitions`.
fn seed(args: &RunArgs, input: &str, dir: &Path) -> anyhow::Result<()> {
    let producer: ThreadedProducer<SeedCtx> = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap_server)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "300000")
        .create_with_context(SeedCtx {
            history: Recorder::create(&dir.join("seed.jsonl"))?,
            failed: AtomicU64::new(0),
        })
        .context("creating the seeding producer")?;
    for id in 0..args.records {
        let value = id.to_string();
        let record = BaseRecord::with_opaque_to(input, Box::new(id))
            .payload(value.as_bytes())
            .key(&[] as &[u8])
            .partition((id % args.input_partitions as u64) as i32);
        send(&producer, record).context("seeding")?;
    }
    drain(&producer);
    let ctx = producer.context();
    ctx.history.flush()?;
    let failed = ctx.failed.load(Ordering::Relaxed);
    if failed > 0 {
        bail!("{failed} seed records were not acknowledged");
    }
    Ok(())
}

fn end_offsets(bootstrap: &str, topic: &str, partitions: i32) -> anyhow::Result<Vec<i64>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .context("creating a consumer")?;
    (0..partitions)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(30))
                .map(|(_, high)| high)
                .with_context(|| format!("end offset of {topic}/{p}"))
        })
        .collect()
}

/// Waits until every partition of `topic` has its last stable offset at its high
/// watermark, at most `limit`; says so when it has to wait.
fn wait_for_no_open_transactions(bootstrap: &str, topic: &str, partitions: i32, limit: Duration) {
    let client = |isolation: &str| -> Option<BaseConsumer> {
        ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("isolation.level", isolation)
            .create()
            .ok()
    };
    let (Some(committed), Some(uncommitted)) =
        (client("read_committed"), client("read_uncommitted"))
    else {
        return;
    };
    let open = || -> Vec<(i32, i64, i64)> {
        (0..partitions)
            .filter_map(|p| {
                let timeout = Duration::from_secs(5);
                let (_, lso) = committed.fetch_watermarks(topic, p, timeout).ok()?;
                let (_, hw) = uncommitted.fetch_watermarks(topic, p, timeout).ok()?;
                (lso < hw).then_some((p, lso, hw))
            })
            .collect()
    };
    let started = Instant::now();
    let mut said = false;
    loop {
        let now_open = open();
        if now_open.is_empty() {
            if said {
                eprintln!(
                    "exacta verify: no transaction open on the output after {:.1} s",
                    started.elapsed().as_secs_f64()
                );
            }
            return;
        }
        if started.elapsed() > limit {
            eprintln!("exacta verify: transactions still open on the output (partition, last stable offset, high watermark): {now_open:?}");
            return;
        }
        if !said {
            eprintln!("exacta verify: waiting for transactions left open on the output to end (partition, last stable offset, high watermark): {now_open:?}");
            said = true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A consumer in the copiers' group that never joins it: it only fetches the committed
/// offsets (OffsetFetch).
fn offset_reader(bootstrap: &str, group: &str) -> anyhow::Result<BaseConsumer> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .context("creating the offset reader")
}

fn committed_offsets(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<Vec<i64>> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(5))?;
    Ok((0..partitions)
        .map(
            |p| match committed.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => -1,
            },
        )
        .collect())
}

/// Reads every output partition from the beginning (with `isolation`), recording each
/// record, until `stop` is set or (with `until_end`) every partition reached its end.
#[allow(clippy::too_many_arguments)]
fn read_output(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    name: &str,
    isolation: &str,
    path: &Path,
    count: &AtomicU64,
    stop: &AtomicBool,
    until_end: Option<Instant>,
) -> anyhow::Result<()> {
    let history = Recorder::create(path)?;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("{topic}-{name}-reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .set("enable.partition.eof", until_end.is_some().to_string())
        .set("fetch.wait.max.ms", "100")
        .create()
        .context("creating a reader")?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut at_end: HashSet<i32> = HashSet::new();
    let mut errors = 0u64;
    while !stop.load(Ordering::SeqCst) {
        if let Some(deadline) = until_end {
            if at_end.len() == partitions as usize {
                break;
            }
            if Instant::now() > deadline {
                bail!("{name} reader: the end of {topic} not reached in time");
            }
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                at_end.remove(&m.partition());
                let (id, txn) = m
                    .payload()
                    .and_then(parse_output_value)
                    .unwrap_or((u64::MAX, "?".to_string()));
                history.record(&Event::Read {
                    reader: name.to_string(),
                    p: m.partition(),
                    off: m.offset(),
                    id,
                    txn,
                    t: now_ms(),
                })?;
                count.fetch_add(1, Ordering::Relaxed);
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => {
                errors += 1;
                if errors <= 5 {
                    eprintln!("{name} reader: {e} (expected while a broker restarts)");
                }
            }
            None => {}
        }
    }
    history.flush()
}

/// A status line on a terminal (rewritten in place), a line every 10 s otherwise.
struct Progress {
    started: Instant,
    tty: bool,
    last: std::cell::Cell<Option<Instant>>,
}

impl Progress {
    fn new(started: Instant) -> Self {
        Self {
            started,
            tty: std::io::stderr().is_terminal(),
            last: std::cell::Cell::new(None),
        }
    }

    fn say(&self, line: &str) {
        eprintln!("[{:6.1}s] {line}", self.started.elapsed().as_secs_f64());
    }

    fn update(&self, line: &str) {
        let every = if self.tty {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(10)
        };
        if self.last.get().is_some_and(|t| t.elapsed() < every) {
            return;
        }
        self.last.set(Some(Instant::now()));
        if self.tty {
            eprint!(
                "\r\x1b[2K[{:6.1}s] {line}",
                self.started.elapsed().as_secs_f64()
            );
            let _ = std::io::stderr().flush();
        } else {
            self.say(line);
        }
    }

    fn done(&self) {
        if self.tty {
            eprintln!();
        }
    }
}
