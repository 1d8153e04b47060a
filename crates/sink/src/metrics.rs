//! What the sink counts, for people (a progress line on stderr) and for Prometheus (text
//! format at `/metrics` on `metrics_listen`). Names are listed in docs/sink.md.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Commit latency bucket upper bounds, in seconds.
const BOUNDS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Default)]
pub struct Metrics {
    pub rows: AtomicU64,
    pub records: AtomicU64,
    pub batches: AtomicU64,
    pub bad_records: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub fenced: AtomicU64,
    pub postgres_retries: AtomicU64,
    pub already_committed: AtomicU64,
    commit_buckets: [AtomicU64; BOUNDS.len()],
    commit_count: AtomicU64,
    commit_sum_us: AtomicU64,
    /// Per "topic/partition": (next offset committed, high watermark).
    pub lag: Mutex<BTreeMap<(String, i32), (i64, i64)>>,
}

impl Metrics {
    pub fn observe_commit(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BOUNDS.iter().position(|&b| secs <= b) {
            self.commit_buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.commit_count.fetch_add(1, Ordering::Relaxed);
        self.commit_sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn total_lag(&self) -> i64 {
        let lag = self.lag.lock().unwrap_or_else(|p| p.into_inner());
        lag.values().map(|(next, high)| (high - next).max(0)).sum()
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let counters = [
            (
                "exacta_sink_rows_total",
                "Rows written to PostgreSQL.",
                &self.rows,
            ),
            (
                "exacta_sink_records_total",
                "Records consumed and committed (rows or dead letters).",
                &self.records,
            ),
            (
                "exacta_sink_batches_total",
                "PostgreSQL transactions committed.",
                &self.batches,
            ),
            (
                "exacta_sink_bad_records_total",
                "Records that could not become rows.",
                &self.bad_records,
            ),
            (
                "exacta_sink_dead_lettered_total",
                "Bad records sent to the dead-letter topic.",
                &self.dead_lettered,
            ),
            (
                "exacta_sink_fenced_total",
                "Batches refused because another instance owns a partition.",
                &self.fenced,
            ),
            (
                "exacta_sink_postgres_retries_total",
                "PostgreSQL attempts that failed and were retried.",
                &self.postgres_retries,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
        let name = "exacta_sink_commit_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time to write and commit one batch.\n# TYPE {name} histogram"
        );
        let mut cumulative = 0;
        for (bound, bucket) in BOUNDS.iter().zip(&self.commit_buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.commit_count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.commit_sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
        let name = "exacta_sink_lag_records";
        let _ = writeln!(
            out,
            "# HELP {name} High watermark minus the committed next offset.\n# TYPE {name} gauge"
        );
        let lag = self.lag.lock().unwrap_or_else(|p| p.into_inner());
        for ((topic, partition), (next, high)) in lag.iter() {
            let _ = writeln!(
                out,
                "{name}{{topic=\"{topic}\",partition=\"{partition}\"}} {}",
                (high - next).max(0)
            );
        }
        out
    }
}

/// Answer every HTTP request on LISTENER with the metrics, in a thread of its own.
pub fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            let body = metrics.render();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
}
