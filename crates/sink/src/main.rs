//! `exacta-sink`, run as `exacta sink postgres ...`: the command line of the exactly-once
//! PostgreSQL sink. Flags and a TOML file (`--config`) carry the same keys; flags win.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use exacta_sink::{json_row, metrics, raw_row, Sink, SinkConfig, RAW_COLUMNS};
use serde::Deserialize as _;

#[derive(Parser)]
#[command(name = "exacta sink", about = "Exactly-once sinks from Kafka topics")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Records into a PostgreSQL table, the offsets in the same transaction (docs/sink.md).
    Postgres(PostgresArgs),
}

#[derive(Clone, Copy, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Format {
    /// The value is a JSON object; its fields name columns.
    Json,
    /// Columns topic, partition, offset, key, value, headers, timestamp.
    Raw,
}

#[derive(clap::Args)]
struct PostgresArgs {
    /// TOML file with the same keys (bootstrap_server, topics, group, dsn, table, format,
    /// mode, key_column, batch_records, batch_ms, dead_letter_topic, offsets_table,
    /// delivery, start_from, session_timeout_ms, metrics_listen, [consumer]).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Kafka bootstrap addresses [default: 127.0.0.1:9092].
    #[arg(long)]
    bootstrap_server: Option<String>,
    /// A topic to consume (repeatable).
    #[arg(long = "topic", value_name = "TOPIC")]
    topics: Vec<String>,
    /// The consumer group the instances share.
    #[arg(long)]
    group: Option<String>,
    /// postgres://USER[:PASSWORD]@HOST:PORT/DB
    #[arg(long)]
    dsn: Option<String>,
    /// The target table (optionally schema.table).
    #[arg(long)]
    table: Option<String>,
    /// How a record becomes a row [default: json].
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// insert, or upsert on --key-column [default: insert].
    #[arg(long, value_parser = ["insert", "upsert"])]
    mode: Option<String>,
    #[arg(long, value_name = "COLUMN")]
    key_column: Option<String>,
    /// Commit after this many records [default: 5000].
    #[arg(long, value_name = "N")]
    batch_records: Option<u64>,
    /// ... or after this long [default: 200].
    #[arg(long, value_name = "MS")]
    batch_ms: Option<u64>,
    /// Bad records go to this topic (with coordinates and the error) instead of stopping.
    #[arg(long, value_name = "TOPIC")]
    dead_letter_topic: Option<String>,
    /// [default: exacta_sink_offsets]
    #[arg(long, value_name = "TABLE")]
    offsets_table: Option<String>,
    /// exactly-once, or at-least-once (offsets in Kafka, for comparison) [default: exactly-once].
    #[arg(long, value_parser = ["exactly-once", "at-least-once"])]
    delivery: Option<String>,
    /// Where a partition without a stored offset starts [default: earliest].
    #[arg(long, value_parser = ["earliest", "latest"])]
    start_from: Option<String>,
    /// The consumer's session timeout [default: 10000].
    #[arg(long, value_name = "MS")]
    session_timeout_ms: Option<u64>,
    /// A librdkafka consumer property (repeatable).
    #[arg(long = "consumer-property", value_name = "KEY=VALUE")]
    consumer_properties: Vec<String>,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics.
    #[arg(long, value_name = "HOST:PORT")]
    metrics_listen: Option<String>,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("exacta sink: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("EXACTA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_ansi(false)
        .init();
    let Command::Postgres(args) = Cli::parse().command;
    let mut settings = match &args.config {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading {}", path.display()))?
            .parse::<toml::Table>()
            .with_context(|| format!("parsing {}", path.display()))?,
        None => toml::Table::new(),
    };
    args.overlay(&mut settings)?;
    settings
        .entry("bootstrap_server")
        .or_insert_with(|| "127.0.0.1:9092".into());
    let format = match settings.remove("format") {
        Some(v) => Format::deserialize(v).context("format")?,
        None => Format::Json,
    };
    let metrics_listen = settings
        .remove("metrics_listen")
        .map(|v| {
            v.as_str()
                .map(str::to_string)
                .context("metrics_listen is text")
        })
        .transpose()?;
    let config: SinkConfig = toml::Value::Table(settings)
        .try_into()
        .context("the sink configuration")?;
    config.validate().map_err(anyhow::Error::msg)?;
    let sink = match format {
        Format::Json => Sink::new(config, json_row),
        Format::Raw => Sink::new(config, raw_row).require_columns(&RAW_COLUMNS),
    };
    if let Some(addr) = metrics_listen {
        let listener =
            TcpListener::bind(&addr).with_context(|| format!("metrics listener on {addr}"))?;
        tracing::info!("metrics listening on {}", listener.local_addr()?);
        metrics::serve(listener, sink.metrics());
    }
    stop_on_signal(sink.stopper())?;
    sink.run()?;
    Ok(())
}

impl PostgresArgs {
    /// Put the flags that were given over the file's keys.
    fn overlay(&self, t: &mut toml::Table) -> anyhow::Result<()> {
        let mut set = |k: &str, v: toml::Value| {
            t.insert(k.to_string(), v);
        };
        let text = [
            ("bootstrap_server", &self.bootstrap_server),
            ("group", &self.group),
            ("dsn", &self.dsn),
            ("table", &self.table),
            ("mode", &self.mode),
            ("key_column", &self.key_column),
            ("dead_letter_topic", &self.dead_letter_topic),
            ("offsets_table", &self.offsets_table),
            ("delivery", &self.delivery),
            ("start_from", &self.start_from),
            ("metrics_listen", &self.metrics_listen),
        ];
        for (k, v) in text {
            if let Some(v) = v {
                set(k, v.clone().into());
            }
        }
        for (k, v) in [
            ("batch_records", self.batch_records),
            ("batch_ms", self.batch_ms),
            ("session_timeout_ms", self.session_timeout_ms),
        ] {
            if let Some(v) = v {
                set(
                    k,
                    toml::Value::Integer(i64::try_from(v).context(k.to_string())?),
                );
            }
        }
        if let Some(f) = self.format {
            let name = match f {
                Format::Json => "json",
                Format::Raw => "raw",
            };
            set("format", name.into());
        }
        if !self.topics.is_empty() {
            set("topics", self.topics.clone().into());
        }
        if !self.consumer_properties.is_empty() {
            let mut props: BTreeMap<String, toml::Value> = BTreeMap::new();
            for kv in &self.consumer_properties {
                let (k, v) = kv
                    .split_once('=')
                    .with_context(|| format!("--consumer-property {kv}: expected KEY=VALUE"))?;
                props.insert(k.to_string(), v.into());
            }
            let consumer = t
                .entry("consumer")
                .or_insert_with(|| toml::Table::new().into());
            if let Some(table) = consumer.as_table_mut() {
                table.extend(props);
            }
        }
        Ok(())
    }
}

/// SIGTERM or SIGINT: commit what is in flight, leave the group, exit.
fn stop_on_signal(stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the signal runtime")?;
    std::thread::spawn(move || {
        runtime.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::info!("stopping: committing the batch in flight");
            stop.store(true, Ordering::Relaxed);
        });
    });
    Ok(())
}
