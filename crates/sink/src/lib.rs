//! `exacta-sink`: records from Kafka topics into a PostgreSQL table exactly once.
//!
//! Each batch of records consumed with `read_committed` is written in one PostgreSQL
//! transaction together with the next offset of each of its partitions, in an offsets
//! table (`exacta_sink_offsets`: group, topic, partition, next offset, owner token). The
//! consumer starts every assigned partition from that table, so a crash at any instant
//! neither loses nor repeats a row: either the rows and their offsets committed, or
//! neither did. An owner token per partition, raised when an instance is assigned the
//! partition and checked in every batch's transaction, refuses the late commit of an
//! instance that lost the partition (a zombie after a pause or a partition).
//!
//! The `exacta sink postgres` command is built on [`Sink`]; a Rust application gives it
//! its own mapping from a record to rows:
//!
//! ```no_run
//! use exacta_sink::{Row, Sink, SinkConfig};
//! use serde_json::json;
//!
//! let config = SinkConfig::new(
//!     "127.0.0.1:9092",
//!     &["payments"],
//!     "payments-to-postgres",
//!     "postgres://app@127.0.0.1:5432/ledger",
//!     "payments",
//! );
//! // CREATE TABLE payments (id bigint, account text, cents bigint)
//! let sink = Sink::new(config, |record| {
//!     let value = record.value.as_deref().ok_or("no value")?;
//!     let text = std::str::from_utf8(value).map_err(|e| e.to_string())?;
//!     let (account, cents) = text.split_once(':').ok_or("expected ACCOUNT:CENTS")?;
//!     let mut row = Row::new();
//!     row.insert("id".into(), json!(record.offset));
//!     row.insert("account".into(), json!(account));
//!     row.insert("cents".into(), json!(cents.parse::<i64>().map_err(|e| e.to_string())?));
//!     Ok(vec![row])
//! });
//! sink.run()?;
//! # Ok::<(), exacta_sink::SinkError>(())
//! ```
//!
//! Modules: [`config`] (what a sink is told), `sink` (set-up and the poll loop), `engine`
//! (committing a batch), `rebalance` (claims and releases),
//! `batch` (a batch's rows, refusals and offsets), `offsets` (the offsets table and owner
//! tokens), `table` (the target table's columns and checks), [`record`] (records and the
//! json and raw row formats), `dead_letter`, `pg` (reconnects and retries), [`metrics`].

mod batch;
pub mod config;
mod dead_letter;
mod engine;
pub mod metrics;
mod offsets;
mod pg;
mod rebalance;
pub mod record;
mod sink;
mod table;

pub use config::{Delivery, Mode, SinkConfig, StartFrom};
pub use engine::Mapper;
pub use metrics::Metrics;
pub use record::{json_row, raw_row, Record, Row, RAW_COLUMNS};
pub use sink::Sink;

/// Why a sink stopped.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The configuration, the table or a topic is not what the sink needs.
    #[error("{0}")]
    Config(String),
    /// A record that cannot become a row, without a dead-letter topic: the rows and
    /// offsets before it are committed.
    #[error("bad record at {coordinates}: {reason} (rows before it are committed; fix it, or pass a dead-letter topic)")]
    BadRecord { coordinates: String, reason: String },
    #[error("{context}: {source}")]
    Postgres {
        context: String,
        #[source]
        source: postgres::Error,
    },
    #[error("{context}: {source}")]
    Kafka {
        context: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
}

impl SinkError {
    pub(crate) fn postgres(context: impl Into<String>, source: postgres::Error) -> Self {
        Self::Postgres {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn kafka(context: impl Into<String>, source: rdkafka::error::KafkaError) -> Self {
        Self::Kafka {
            context: context.into(),
            source,
        }
    }
}
