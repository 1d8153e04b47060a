//! What a sink is told: where to read (bootstrap, topics, group), where to write (DSN,
//! table, insert or upsert), how to batch, and what to do with bad records. The same keys
//! come from `exacta sink postgres` flags or its TOML file.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// How rows reach the table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// `INSERT`: every record's rows are added.
    #[default]
    Insert,
    /// `INSERT ... ON CONFLICT (key column) DO UPDATE`: the last record per key wins.
    Upsert,
}

/// Where the consumed offsets are kept, and so what a crash can do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// Offsets in the offsets table, in the same PostgreSQL transaction as the rows: a crash
    /// at any instant neither loses nor repeats a row.
    #[default]
    ExactlyOnce,
    /// Rows committed in PostgreSQL, then offsets committed to Kafka: a crash between the
    /// two repeats the batch (what Kafka Connect's JDBC sink does). For comparison only.
    AtLeastOnce,
}

/// Where a partition with no stored offset starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StartFrom {
    #[default]
    Earliest,
    Latest,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    pub bootstrap_server: String,
    pub topics: Vec<String>,
    pub group: String,
    /// `postgres://USER[:PASSWORD]@HOST:PORT/DB` or `host=... user=...`.
    pub dsn: String,
    /// The target table, optionally schema-qualified.
    pub table: String,
    #[serde(default)]
    pub mode: Mode,
    /// The conflict column of `Mode::Upsert`.
    #[serde(default)]
    pub key_column: Option<String>,
    #[serde(default = "defaults::batch_records")]
    pub batch_records: usize,
    #[serde(default = "defaults::batch_ms")]
    pub batch_ms: u64,
    /// Bad records go here (with their coordinates and the error) instead of stopping.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    #[serde(default = "defaults::offsets_table")]
    pub offsets_table: String,
    #[serde(default)]
    pub delivery: Delivery,
    #[serde(default)]
    pub start_from: StartFrom,
    #[serde(default = "defaults::session_timeout_ms")]
    pub session_timeout_ms: u32,
    /// Extra librdkafka consumer properties.
    #[serde(default)]
    pub consumer: BTreeMap<String, String>,
}

impl SinkConfig {
    pub fn new(bootstrap: &str, topics: &[&str], group: &str, dsn: &str, table: &str) -> Self {
        Self {
            bootstrap_server: bootstrap.into(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            group: group.into(),
            dsn: dsn.into(),
            table: table.into(),
            mode: Mode::default(),
            key_column: None,
            batch_records: defaults::batch_records(),
            batch_ms: defaults::batch_ms(),
            dead_letter_topic: None,
            offsets_table: defaults::offsets_table(),
            delivery: Delivery::default(),
            start_from: StartFrom::default(),
            session_timeout_ms: defaults::session_timeout_ms(),
            consumer: BTreeMap::new(),
        }
    }

    pub(crate) fn batch_time(&self) -> Duration {
        Duration::from_millis(self.batch_ms)
    }

    /// Refuse what cannot work before connecting anywhere.
    pub fn validate(&self) -> Result<(), String> {
        if self.topics.is_empty() {
            return Err("at least one topic is needed".into());
        }
        if self.group.is_empty() {
            return Err("the group must not be empty".into());
        }
        if self.batch_records == 0 {
            return Err("batch_records must be at least 1".into());
        }
        match (self.mode, &self.key_column) {
            (Mode::Upsert, None) => Err("upsert mode needs a key column".into()),
            (Mode::Insert, Some(_)) => Err("a key column is only used in upsert mode".into()),
            _ => Ok(()),
        }
    }
}

mod defaults {
    pub fn batch_records() -> usize {
        5000
    }
    pub fn batch_ms() -> u64 {
        200
    }
    pub fn offsets_table() -> String {
        "exacta_sink_offsets".into()
    }
    pub fn session_timeout_ms() -> u32 {
        10_000
    }
}
