//! The cleaner thread: compacts the logs of `cleanup.policy=compact` topics in the
//! background (Kafka's `LogCleaner` with one thread).
//!
//! Each round measures every compacted partition, picks the dirtiest one that is due
//! (dirty ratio above `min.cleanable.dirty.ratio`, a dirty segment older than
//! `max.compaction.lag.ms`, or a kept tombstone or marker past its delete horizon) and
//! cleans it; with nothing due it sleeps `cleaner_backoff_ms`. It runs on its own OS
//! thread with blocking I/O limited to `cleaner_io_max_bytes_per_second`, takes a
//! partition's lock only to snapshot it and to install the result, and stops between
//! batches when the broker shuts down. A partition whose cleaning fails (a corrupt batch)
//! is logged, counted and left alone until the next start.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use exacta_log::cleaner::{assess, Cleaner};

use crate::partitions::{Broker, Partition};

/// What the cleaner exposes as metrics.
#[derive(Debug, Default)]
struct CleanerMetrics {
    runs: AtomicU64,
    failures: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    last_run_ms: AtomicU64,
    last_duration_ms: AtomicU64,
    max_delay_ms: AtomicU64,
    /// Dirty ratio per (topic, partition) at the last measurement.
    ratios: Mutex<BTreeMap<(String, i32), f64>>,
    uncleanable: AtomicU64,
}

static METRICS: LazyLock<CleanerMetrics> = LazyLock::new(CleanerMetrics::default);

/// The running cleaner; dropping it does not stop it, [`CleanerThread::stop`] does.
#[derive(Debug)]
pub struct CleanerThread {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl CleanerThread {
    /// Starts the cleaner if `cleaner_enable`.
    pub fn start(broker: Arc<Broker>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let handle = broker.config.cleaner_enable.then(|| {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("exacta-cleaner".into())
                .spawn(move || run(&broker, &stop))
                .expect("spawning the cleaner thread")
        });
        Self { stop, handle }
    }

    /// Stops the cleaner between two batches (a swap under way completes) and waits.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

fn run(broker: &Broker, stop: &Arc<AtomicBool>) {
    let config = &broker.config;
    let mut cleaner = Cleaner::new(
        config.cleaner_dedupe_buffer_bytes as usize,
        config.cleaner_io_max_bytes_per_second,
        Arc::clone(stop),
    );
    let mut uncleanable: HashSet<(String, i32)> = HashSet::new();
    tracing::info!("log cleaner started");
    while !stop.load(Ordering::Acquire) {
        let cleaned = clean_dirtiest(broker, &mut cleaner, &mut uncleanable);
        if !cleaned {
            let until = Instant::now() + Duration::from_millis(config.cleaner_backoff_ms);
            while Instant::now() < until && !stop.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    tracing::info!("log cleaner stopped");
}

/// One round: measure, pick, clean. Returns whether a log was cleaned.
fn clean_dirtiest(
    broker: &Broker,
    cleaner: &mut Cleaner,
    uncleanable: &mut HashSet<(String, i32)>,
) -> bool {
    let now = crate::now_ms();
    let mut ratios = BTreeMap::new();
    let mut max_delay = 0i64;
    let mut best: Option<(Arc<Partition>, f64)> = None;
    for topic in broker.topics() {
        for p in &topic.partitions {
            let id = (p.topic.clone(), p.index);
            if !p.is_compacted() || uncleanable.contains(&id) {
                continue;
            }
            let Some(view) = p.clean_view() else { continue };
            let a = assess(&view, now);
            ratios.insert(id, a.dirty_ratio);
            max_delay = max_delay.max(a.compaction_delay_ms);
            if a.due(&view.config) {
                // Late logs first, then the dirtiest (Kafka's order).
                let score = a.dirty_ratio + if a.compaction_delay_ms > 0 { 2.0 } else { 0.0 };
                if best.as_ref().is_none_or(|(_, s)| score > *s) {
                    best = Some((Arc::clone(p), score));
                }
            }
        }
    }
    *METRICS.ratios.lock().unwrap_or_else(|p| p.into_inner()) = ratios;
    METRICS
        .max_delay_ms
        .store(max_delay.max(0) as u64, Ordering::Relaxed);
    let Some((partition, _)) = best else {
        return false;
    };
    let Some(view) = partition.clean_view() else {
        return false;
    };
    let started = Instant::now();
    let result = cleaner.clean(&view, now).and_then(|outcome| match outcome {
        Some(outcome) => {
            let dir = view.dir.clone();
            partition.install_cleaned(view, &outcome)?;
            outcome.checkpoint.save(&dir)?;
            Ok(Some(outcome))
        }
        None => Ok(None),
    });
    let m = &*METRICS;
    match result {
        Ok(Some(outcome)) => {
            let s = &outcome.stats;
            m.runs.fetch_add(1, Ordering::Relaxed);
            m.bytes_read.fetch_add(s.bytes_read, Ordering::Relaxed);
            m.bytes_written
                .fetch_add(s.bytes_written, Ordering::Relaxed);
            m.last_run_ms.store(now.max(0) as u64, Ordering::Relaxed);
            m.last_duration_ms
                .store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
            let secs = s.elapsed.as_secs_f64().max(1e-6);
            tracing::info!(
                topic = %partition.topic,
                partition = partition.index,
                bytes_read = s.bytes_read,
                bytes_written = s.bytes_written,
                records_read = s.records_read,
                records_kept = s.records_kept,
                segments = format!("{} -> {}", s.segments_before, s.segments_after),
                mb_per_second = format!("{:.1}", s.bytes_read as f64 / secs / 1e6),
                map_utilization = format!("{:.3}", s.map_utilization),
                "cleaned log"
            );
            true
        }
        Ok(None) => false,
        Err(e) => {
            m.failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(topic = %partition.topic, partition = partition.index, error = %e, "cleaning failed; the partition is not cleaned again until a restart");
            uncleanable.insert((partition.topic.clone(), partition.index));
            m.uncleanable
                .store(uncleanable.len() as u64, Ordering::Relaxed);
            false
        }
    }
}

/// The cleaner's metrics in the Prometheus text format.
pub fn render_metrics(out: &mut String) {
    let m = &*METRICS;
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    metric(
        "exacta_cleaner_runs_total",
        "counter",
        "Logs cleaned.",
        load(&m.runs).to_string(),
    );
    metric(
        "exacta_cleaner_failures_total",
        "counter",
        "Cleanings that failed (the partition is then left alone until a restart).",
        load(&m.failures).to_string(),
    );
    metric(
        "exacta_cleaner_read_bytes_total",
        "counter",
        "Bytes of segments the cleaner read and rewrote.",
        load(&m.bytes_read).to_string(),
    );
    metric(
        "exacta_cleaner_written_bytes_total",
        "counter",
        "Bytes of cleaned segments written.",
        load(&m.bytes_written).to_string(),
    );
    let last = load(&m.last_run_ms) as i64;
    let since = if last == 0 {
        -1.0
    } else {
        (crate::now_ms() - last).max(0) as f64 / 1000.0
    };
    metric(
        "exacta_cleaner_seconds_since_last_run",
        "gauge",
        "Time since the last cleaning finished (-1: none yet).",
        since.to_string(),
    );
    metric(
        "exacta_cleaner_last_run_duration_seconds",
        "gauge",
        "How long the last cleaning took.",
        (load(&m.last_duration_ms) as f64 / 1000.0).to_string(),
    );
    metric(
        "exacta_cleaner_max_compaction_delay_seconds",
        "gauge",
        "How far past max.compaction.lag.ms the most overdue log is (0: none).",
        (load(&m.max_delay_ms) as f64 / 1000.0).to_string(),
    );
    metric(
        "exacta_cleaner_uncleanable_partitions",
        "gauge",
        "Partitions whose cleaning failed.",
        load(&m.uncleanable).to_string(),
    );
    let _ = writeln!(
        out,
        "# HELP exacta_cleaner_dirty_ratio Dirty share of a compacted log's cleanable bytes.\n# TYPE exacta_cleaner_dirty_ratio gauge"
    );
    for ((topic, partition), ratio) in m.ratios.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        let _ = writeln!(
            out,
            "exacta_cleaner_dirty_ratio{{topic=\"{}\",partition=\"{partition}\"}} {ratio}",
            crate::metrics::escape(topic)
        );
    }
}
