//! Prometheus metrics (`exacta serve --metrics-listen HOST:PORT`, text format 0.0.4 at
//! `/metrics`). Counters and histograms are process-wide atomics updated where things
//! happen; per-partition and per-transaction gauges are read from the live state at
//! scrape time. The names are listed in docs/operations.md.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use kafka_protocol::messages::ApiKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::Node;

/// Histogram bucket upper bounds, in seconds.
const BOUNDS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];
const API_KEYS: usize = 128;

pub struct Histogram {
    buckets: [AtomicU64; BOUNDS.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    const fn new() -> Self {
        Self {
            buckets: [const { AtomicU64::new(0) }; BOUNDS.len()],
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BOUNDS.iter().position(|&b| secs <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns
            .fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }

    pub(crate) fn render(&self, out: &mut String, name: &str, labels: &str) {
        let count = self.count.load(Ordering::Relaxed);
        if count == 0 && !labels.is_empty() {
            return;
        }
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, bucket) in BOUNDS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let braces = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                format!("{{{s}}}")
            }
        };
        let _ = writeln!(out, "{name}_sum{} {sum}", braces(labels));
        let _ = writeln!(out, "{name}_count{} {count}", braces(labels));
    }
}

/// The process-wide counters.
pub struct Metrics {
    requests: [AtomicU64; API_KEYS],
    request_seconds: [Histogram; API_KEYS],
    pub bad_requests: AtomicU64,
    /// Bytes of requests read or being read and not yet answered (the request budget).
    pub request_bytes_queued: AtomicU64,
    /// Frames that had to wait for the request budget.
    pub request_budget_waits: AtomicU64,
    /// Connections closed by the read or idle timeout.
    pub connections_timed_out: AtomicU64,
    /// Connections refused at `connections_max`.
    pub connections_refused: AtomicU64,
    pub produce_bytes: AtomicU64,
    pub fetch_bytes: AtomicU64,
    pub fsync_seconds: Histogram,
    pub marker_seconds: Histogram,
    /// Milliseconds each coordinator took to load its log at start (group, transaction).
    pub group_load_ms: AtomicU64,
    pub txn_load_ms: AtomicU64,
    pub txns_committed: AtomicU64,
    pub txns_aborted: AtomicU64,
    pub txns_timed_out: AtomicU64,
    pub fencings: AtomicU64,
    /// A cluster node: partition leaderships taken (a new leader epoch here).
    pub leader_changes: AtomicU64,
    /// A cluster node: metadata changes proposed here until the quorum committed them.
    pub quorum_commit_seconds: Histogram,
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    requests: [const { AtomicU64::new(0) }; API_KEYS],
    request_seconds: [const { Histogram::new() }; API_KEYS],
    bad_requests: AtomicU64::new(0),
    request_bytes_queued: AtomicU64::new(0),
    request_budget_waits: AtomicU64::new(0),
    connections_timed_out: AtomicU64::new(0),
    connections_refused: AtomicU64::new(0),
    produce_bytes: AtomicU64::new(0),
    fetch_bytes: AtomicU64::new(0),
    fsync_seconds: Histogram::new(),
    marker_seconds: Histogram::new(),
    group_load_ms: AtomicU64::new(0),
    txn_load_ms: AtomicU64::new(0),
    txns_committed: AtomicU64::new(0),
    txns_aborted: AtomicU64::new(0),
    txns_timed_out: AtomicU64::new(0),
    fencings: AtomicU64::new(0),
    leader_changes: AtomicU64::new(0),
    quorum_commit_seconds: Histogram::new(),
});

impl Metrics {
    /// A request of `api_key` answered after `elapsed` (from its arrival to its response).
    pub fn request(&self, api_key: i16, elapsed: Duration) {
        if let Ok(i) = usize::try_from(api_key) {
            if i < API_KEYS {
                self.requests[i].fetch_add(1, Ordering::Relaxed);
                self.request_seconds[i].observe(elapsed);
            }
        }
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

pub(crate) fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
    );
}

pub(crate) fn gauge_header(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
}

/// The whole exposition.
pub fn render(node: &Node) -> String {
    let m = &*METRICS;
    let mut out = String::with_capacity(16 << 10);
    let _ = writeln!(
        out,
        "# HELP exacta_requests_total Requests answered, by API.\n# TYPE exacta_requests_total counter"
    );
    for (i, n) in m.requests.iter().enumerate() {
        let n = n.load(Ordering::Relaxed);
        if n > 0 {
            let _ = writeln!(out, "exacta_requests_total{{api=\"{}\"}} {n}", api_name(i));
        }
    }
    let _ = writeln!(
        out,
        "# HELP exacta_request_duration_seconds From a request's arrival to its response being ready, by API.\n# TYPE exacta_request_duration_seconds histogram"
    );
    for (i, h) in m.request_seconds.iter().enumerate() {
        h.render(
            &mut out,
            "exacta_request_duration_seconds",
            &format!("api=\"{}\"", api_name(i)),
        );
    }
    render_errors(&mut out);
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    counter(
        &mut out,
        "exacta_bad_requests_total",
        "Connections closed for a frame or request that could not be served.",
        load(&m.bad_requests),
    );
    gauge_header(
        &mut out,
        "exacta_request_bytes_queued",
        "Bytes of requests being read or awaiting their answer (bounded by queued_request_bytes_max).",
    );
    let _ = writeln!(
        out,
        "exacta_request_bytes_queued {}",
        load(&m.request_bytes_queued)
    );
    counter(
        &mut out,
        "exacta_request_budget_waits_total",
        "Request frames that waited for the request budget (backpressure).",
        load(&m.request_budget_waits),
    );
    counter(
        &mut out,
        "exacta_connections_timed_out_total",
        "Connections closed by request_read_timeout_ms or connections_max_idle_ms.",
        load(&m.connections_timed_out),
    );
    counter(
        &mut out,
        "exacta_connections_refused_total",
        "Connections closed at once because connections_max were open.",
        load(&m.connections_refused),
    );
    counter(
        &mut out,
        "exacta_produce_request_bytes_total",
        "Bytes of Produce requests received.",
        load(&m.produce_bytes),
    );
    counter(
        &mut out,
        "exacta_fetch_response_bytes_total",
        "Bytes of Fetch responses sent.",
        load(&m.fetch_bytes),
    );
    let _ = writeln!(out, "# HELP exacta_fsync_duration_seconds Segment fsyncs of the group-commit flusher.\n# TYPE exacta_fsync_duration_seconds histogram");
    m.fsync_seconds
        .render(&mut out, "exacta_fsync_duration_seconds", "");
    let _ = writeln!(out, "# HELP exacta_txn_marker_duration_seconds Writing a transaction's markers until all are durable.\n# TYPE exacta_txn_marker_duration_seconds histogram");
    m.marker_seconds
        .render(&mut out, "exacta_txn_marker_duration_seconds", "");
    counter(
        &mut out,
        "exacta_transactions_committed_total",
        "Transactions committed (markers durable).",
        load(&m.txns_committed),
    );
    counter(
        &mut out,
        "exacta_transactions_aborted_total",
        "Transactions aborted, by the client, a timeout or a fencing.",
        load(&m.txns_aborted),
    );
    counter(
        &mut out,
        "exacta_transactions_timed_out_total",
        "Transactions aborted by the coordinator after transaction.timeout.ms.",
        load(&m.txns_timed_out),
    );
    counter(
        &mut out,
        "exacta_producer_fencings_total",
        "Epoch bumps that fenced a producer instance (a new instance or a timeout).",
        load(&m.fencings),
    );

    crate::cleaner::render_metrics(&mut out);
    gauge_header(
        &mut out,
        "exacta_coordinator_load_seconds",
        "Time each coordinator took to replay its log at start (in a cluster: its latest partition take-over).",
    );
    for (name, ms) in [("group", &m.group_load_ms), ("transaction", &m.txn_load_ms)] {
        let _ = writeln!(
            out,
            "exacta_coordinator_load_seconds{{coordinator=\"{name}\"}} {}",
            load(ms) as f64 / 1000.0
        );
    }
    let mut groups: Vec<_> = node
        .groups
        .each(|g| g.group_sizes())
        .into_iter()
        .flatten()
        .collect();
    groups.sort();
    gauge_header(
        &mut out,
        "exacta_group_members",
        "Members of a consumer group.",
    );
    for (group, members, _) in &groups {
        let _ = writeln!(
            out,
            "exacta_group_members{{group=\"{}\"}} {members}",
            escape(group)
        );
    }
    gauge_header(
        &mut out,
        "exacta_group_generation",
        "A group's generation: it grows by one per rebalance.",
    );
    for (group, _, generation) in &groups {
        let _ = writeln!(
            out,
            "exacta_group_generation{{group=\"{}\"}} {generation}",
            escape(group)
        );
    }

    // Transactions open now.
    let now = crate::now_ms();
    let (open, oldest_ms) = node
        .txns
        .each(|state| {
            let mut open = 0u64;
            let mut oldest = 0i64;
            for (_, meta) in state.all() {
                if meta.state.name() == "Ongoing" {
                    open += 1;
                    oldest = oldest.max(now.saturating_sub(meta.start_ms));
                }
            }
            (open, oldest)
        })
        .into_iter()
        .fold((0, 0), |(n, o), (shard_n, shard_o)| {
            (n + shard_n, o.max(shard_o))
        });
    gauge_header(
        &mut out,
        "exacta_transactions_open",
        "Transactions in the Ongoing state.",
    );
    let _ = writeln!(out, "exacta_transactions_open {open}");
    gauge_header(
        &mut out,
        "exacta_transaction_oldest_open_seconds",
        "Age of the oldest open transaction (0 when none).",
    );
    let _ = writeln!(
        out,
        "exacta_transaction_oldest_open_seconds {}",
        oldest_ms as f64 / 1000.0
    );

    // Partitions.
    let topics = node.broker.topics();
    for (name, help) in [
        (
            "exacta_partition_high_watermark",
            "High watermark (durable end) of a partition.",
        ),
        (
            "exacta_partition_last_stable_offset",
            "Last stable offset: read_committed consumers stop here.",
        ),
        (
            "exacta_partition_lso_lag",
            "High watermark minus last stable offset: records held back by open transactions.",
        ),
    ] {
        gauge_header(&mut out, name, help);
        for topic in &topics {
            for (index, partition) in topic.partitions.iter().enumerate() {
                let hw = partition.high_watermark();
                let lso = partition.last_stable_offset();
                let value = match name {
                    "exacta_partition_high_watermark" => hw,
                    "exacta_partition_last_stable_offset" => lso,
                    _ => hw - lso,
                };
                let _ = writeln!(
                    out,
                    "{name}{{topic=\"{}\",partition=\"{index}\"}} {value}",
                    escape(&topic.name)
                );
            }
        }
    }
    if let Some(cluster) = &node.cluster {
        crate::replication::metrics::render(&mut out, &node.broker, cluster);
    }
    out
}

/// A label value with backslashes, quotes and newlines escaped (Prometheus text format).
pub(crate) fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn api_name(key: usize) -> String {
    i16::try_from(key)
        .ok()
        .and_then(|k| ApiKey::try_from(k).ok())
        .map(|k| format!("{k:?}"))
        .unwrap_or_else(|| key.to_string())
}

/// Serves `GET /metrics` on `listener` (HTTP/1.1, one response per connection).
pub async fn serve(listener: TcpListener, node: Arc<Node>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let node = Arc::clone(&node);
        tokio::spawn(async move {
            let mut request = Vec::with_capacity(1024);
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
                match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => request.extend_from_slice(&buf[..n]),
                    _ => return,
                }
            }
            let line = request.split(|&b| b == b'\r').next().unwrap_or_default();
            let (status, body) = if line.starts_with(b"GET /metrics ") {
                ("200 OK", tokio::task::block_in_place(|| render(&node)))
            } else {
                ("404 Not Found", "only GET /metrics is served\n".to_string())
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

/// Errors by API and code, counted from the encoded responses when metrics are served.
static ERRORS: LazyLock<std::sync::Mutex<std::collections::BTreeMap<(i16, i16), u64>>> =
    LazyLock::new(Default::default);
static ERRORS_ENABLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Turns on error counting (it decodes each response once more, so only with a scraper).
pub fn enable_error_counting() {
    ERRORS_ENABLED.store(true, Ordering::Relaxed);
}

/// Counts the error codes in an encoded response frame (size prefix included) of the
/// APIs whose errors matter to operators.
pub fn count_errors(api_key: i16, version: i16, frame: &bytes::Bytes) {
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::Decodable;
    if !ERRORS_ENABLED.load(Ordering::Relaxed) || frame.len() < 8 {
        return;
    }
    let Ok(key) = ApiKey::try_from(api_key) else {
        return;
    };
    let mut body = frame.slice(4..);
    if ResponseHeader::decode(&mut body, key.response_header_version(version)).is_err() {
        return;
    }
    fn codes<T: Decodable>(
        body: &mut bytes::Bytes,
        version: i16,
        f: impl FnOnce(T) -> Vec<i16>,
    ) -> Vec<i16> {
        T::decode(body, version).map(f).unwrap_or_default()
    }
    let found: Vec<i16> = match key {
        ApiKey::Produce => codes(&mut body, version, |r: ProduceResponse| {
            r.responses
                .iter()
                .flat_map(|t| t.partition_responses.iter().map(|p| p.error_code))
                .collect()
        }),
        ApiKey::Fetch => codes(&mut body, version, |r: FetchResponse| {
            std::iter::once(r.error_code)
                .chain(
                    r.responses
                        .iter()
                        .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
                )
                .collect()
        }),
        ApiKey::ListOffsets => codes(&mut body, version, |r: ListOffsetsResponse| {
            r.topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
                .collect()
        }),
        ApiKey::Metadata => codes(&mut body, version, |r: MetadataResponse| {
            r.topics.iter().map(|t| t.error_code).collect()
        }),
        ApiKey::OffsetCommit => codes(&mut body, version, |r: OffsetCommitResponse| {
            r.topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
                .collect()
        }),
        ApiKey::TxnOffsetCommit => codes(&mut body, version, |r: TxnOffsetCommitResponse| {
            r.topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
                .collect()
        }),
        ApiKey::AddPartitionsToTxn => codes(&mut body, version, |r: AddPartitionsToTxnResponse| {
            std::iter::once(r.error_code)
                .chain(
                    r.results_by_topic_v3_and_below
                        .iter()
                        .chain(
                            r.results_by_transaction
                                .iter()
                                .flat_map(|t| &t.topic_results),
                        )
                        .flat_map(|t| {
                            t.results_by_partition
                                .iter()
                                .map(|p| p.partition_error_code)
                        }),
                )
                .collect()
        }),
        ApiKey::FindCoordinator => codes(&mut body, version, |r: FindCoordinatorResponse| {
            std::iter::once(r.error_code)
                .chain(r.coordinators.iter().map(|c| c.error_code))
                .collect()
        }),
        ApiKey::InitProducerId => codes(&mut body, version, |r: InitProducerIdResponse| {
            vec![r.error_code]
        }),
        ApiKey::AddOffsetsToTxn => codes(&mut body, version, |r: AddOffsetsToTxnResponse| {
            vec![r.error_code]
        }),
        ApiKey::EndTxn => codes(&mut body, version, |r: EndTxnResponse| vec![r.error_code]),
        ApiKey::JoinGroup => codes(&mut body, version, |r: JoinGroupResponse| {
            vec![r.error_code]
        }),
        ApiKey::SyncGroup => codes(&mut body, version, |r: SyncGroupResponse| {
            vec![r.error_code]
        }),
        ApiKey::Heartbeat => codes(&mut body, version, |r: HeartbeatResponse| {
            vec![r.error_code]
        }),
        ApiKey::LeaveGroup => codes(&mut body, version, |r: LeaveGroupResponse| {
            vec![r.error_code]
        }),
        ApiKey::CreateTopics => codes(&mut body, version, |r: CreateTopicsResponse| {
            r.topics.iter().map(|t| t.error_code).collect()
        }),
        _ => Vec::new(),
    };
    let mut errors = ERRORS.lock().unwrap_or_else(|p| p.into_inner());
    for code in found.into_iter().filter(|&c| c != 0) {
        *errors.entry((api_key, code)).or_default() += 1;
    }
}

fn render_errors(out: &mut String) {
    let _ = writeln!(
        out,
        "# HELP exacta_response_errors_total Error codes answered, by API and Kafka error name (per partition where the API answers per partition).\n# TYPE exacta_response_errors_total counter"
    );
    let errors = ERRORS.lock().unwrap_or_else(|p| p.into_inner());
    for (&(api, code), &n) in errors.iter() {
        let name = exacta_types::ErrorCode::from_code(code)
            .map(|e| e.name().to_string())
            .unwrap_or_else(|| code.to_string());
        let _ = writeln!(
            out,
            "exacta_response_errors_total{{api=\"{}\",error=\"{name}\"}} {n}",
            api_name(api as usize)
        );
    }
}
