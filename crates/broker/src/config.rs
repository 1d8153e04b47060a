//! Broker configuration: a TOML file, overridden by command-line flags.
//!
//! Every limit the broker enforces is here, with Kafka's default where Kafka has one.
//! Topic-level configs (`retention.ms`, ...) are resolved over these defaults by
//! [`crate::topic_config::TopicConfigs`].

use std::path::PathBuf;

use exacta_log::LogConfig;
use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// Which producers may write to a topic (`exacta.write.guarantee`; broker default
/// `default_write_guarantee`). Others are refused with POLICY_VIOLATION.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum WriteGuarantee {
    /// Any producer (Kafka's behaviour).
    #[default]
    None,
    /// Idempotent or transactional producers only: no duplicates from retries.
    Idempotent,
    /// Transactional producers only.
    Transactional,
}

impl WriteGuarantee {
    pub const NAMES: [&'static str; 3] = ["none", "idempotent", "transactional"];

    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "none" => Some(Self::None),
            "idempotent" => Some(Self::Idempotent),
            "transactional" => Some(Self::Transactional),
            _ => None,
        }
    }
}

/// When the broker fsyncs the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FlushPolicy {
    /// fsync before acknowledging acks=all and before a record becomes visible to
    /// consumers; concurrent appends share one fsync (group commit). The default.
    Always,
    /// fsync every `flush_interval_ms`; acknowledgements do not wait for it.
    Interval,
    /// never fsync during operation (only on segment roll and clean shutdown).
    Never,
}

/// The broker's settings. Field names are the TOML keys; DescribeConfigs shows them under
/// their Kafka names (`crate::broker_settings`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// The TOML keys set in the config file or by a command-line flag (the others have
    /// their defaults): DescribeConfigs reports those as static settings.
    #[serde(skip)]
    pub explicit: BTreeSet<String>,
    /// Address to listen on.
    pub listen: String,
    /// Address clients are told to connect to (Metadata); defaults to `listen`.
    pub advertised_listener: Option<String>,
    /// Address of the Prometheus endpoint (`GET /metrics`); none by default.
    pub metrics_listen: Option<String>,
    /// Which producers may write to topics without an `exacta.write.guarantee` override.
    pub default_write_guarantee: WriteGuarantee,
    /// Directory holding the logs and metadata.
    pub data_dir: PathBuf,
    pub node_id: i32,
    pub cluster_id: String,
    // A cluster (docs/cluster.md); all unset on a single node.
    /// The metadata quorum's voters, `ID@HOST:PORT,...` (the same list on every node);
    /// none: a single node.
    pub voters: Option<String>,
    /// Address of the cluster port (quorum and broker sessions); defaults to this node's
    /// address in `voters`.
    pub cluster_listen: Option<String>,
    /// A broker the controller has not heard from for this long loses its leaderships
    /// (`broker.session.timeout.ms`).
    pub broker_session_timeout_ms: u64,
    /// A follower that has not caught up with its leader's log end for this long leaves
    /// the ISR (`replica.lag.time.max.ms`).
    pub replica_lag_time_max_ms: i64,
    /// Replicas of a topic created without a replication factor in a cluster
    /// (`default.replication.factor`, capped by the brokers registered).
    pub default_replication_factor: i32,
    /// Create a topic when a client asks for its metadata (`auto.create.topics.enable`).
    pub auto_create_topics: bool,
    /// Partitions of an auto-created topic, or of CreateTopics with -1 (`num.partitions`).
    pub num_partitions: i32,
    pub flush_policy: FlushPolicy,
    pub flush_interval_ms: u64,
    // Defaults for topic configs.
    pub segment_bytes: u64,
    pub segment_ms: i64,
    pub retention_ms: i64,
    pub retention_bytes: i64,
    /// `log.cleanup.policy`: `delete`, `compact` or `compact,delete`.
    pub cleanup_policy: String,
    /// `log.cleaner.min.cleanable.ratio`.
    pub min_cleanable_dirty_ratio: f64,
    /// `log.cleaner.min.compaction.lag.ms`.
    pub min_compaction_lag_ms: i64,
    /// `log.cleaner.max.compaction.lag.ms`.
    pub max_compaction_lag_ms: i64,
    /// `log.cleaner.delete.retention.ms`: how long tombstones and emptied transaction
    /// markers stay once the cleaner has seen them.
    pub delete_retention_ms: i64,
    // The log cleaner.
    /// Run the cleaner (`log.cleaner.enable`); without it compacted topics only grow.
    pub cleaner_enable: bool,
    /// Memory for the cleaner's key map (`log.cleaner.dedupe.buffer.size`); a cleaning
    /// covers as much of the dirty log as the map holds keys for.
    pub cleaner_dedupe_buffer_bytes: u64,
    /// Bytes per second the cleaner reads plus writes (`log.cleaner.io.max.bytes.per.second`).
    pub cleaner_io_max_bytes_per_second: f64,
    /// Pause when no log needs cleaning (`log.cleaner.backoff.ms`).
    pub cleaner_backoff_ms: u64,
    /// Largest batch a producer may send (`message.max.bytes`).
    pub message_max_bytes: i32,
    /// Oldest create time a produced record may carry, relative to the broker's clock
    /// (`log.message.timestamp.before.max.ms`); older batches get INVALID_TIMESTAMP.
    pub message_timestamp_before_max_ms: i64,
    /// Furthest-future create time a produced record may carry
    /// (`log.message.timestamp.after.max.ms`, one hour as in Kafka 4.0).
    pub message_timestamp_after_max_ms: i64,
    /// Codec batches are stored with (`compression.type`): `producer` keeps the producer's,
    /// any other codec makes the broker recompress batches that use another.
    pub compression_type: String,
    /// `CreateTime` or `LogAppendTime` (`log.message.timestamp.type`).
    pub message_timestamp_type: String,
    /// In-sync replicas an `acks=all` write needs (`min.insync.replicas`); a single node
    /// has one, so more refuses acks=all writes with NOT_ENOUGH_REPLICAS, as on Kafka.
    pub min_insync_replicas: i32,
    /// How often retention (and producer-id expiry) runs (`log.retention.check.interval.ms`).
    pub retention_check_interval_ms: u64,
    /// Forget an idempotent producer's state this long after its last batch's timestamp
    /// (`producer.id.expiration.ms`).
    pub producer_id_expiration_ms: i64,
    // Limits.
    /// Largest request frame accepted (`socket.request.max.bytes`).
    pub frame_bytes_max: u32,
    /// Bytes of requests being read or waiting for their answer, over all connections
    /// (Kafka's `queued.max.request.bytes`, on by default here). Past it the broker stops
    /// reading from sockets until earlier requests are answered.
    pub queued_request_bytes_max: u64,
    /// A request frame whose size has arrived must arrive whole within this time, or its
    /// connection is closed (slow senders cannot hold a share of the request budget).
    pub request_read_timeout_ms: u64,
    /// A connection that sends no request for this long is closed
    /// (`connections.max.idle.ms`).
    pub connections_max_idle_ms: u64,
    /// Largest Fetch answer, whatever `max_bytes` the client asks for (`fetch.max.bytes`).
    pub fetch_bytes_max: i32,
    pub connections_max: usize,
    /// Requests read from one connection before the first of them is answered.
    pub in_flight_requests_max: usize,
    pub partitions_max_per_topic: i32,
    /// How long a graceful shutdown waits for in-flight requests.
    pub shutdown_timeout_ms: u64,
    // Consumer groups.
    /// Partitions of `__consumer_offsets` (`offsets.topic.num.partitions`), fixed once created.
    pub offsets_topic_partitions: i32,
    /// Segment size of `__consumer_offsets` (`offsets.topic.segment.bytes`): the active
    /// segment is never compacted, so a restart replays up to this much beyond live state.
    pub offsets_topic_segment_bytes: u64,
    pub group_min_session_timeout_ms: i32,
    pub group_max_session_timeout_ms: i32,
    /// Wait for more members before an empty group's first generation.
    pub group_initial_rebalance_delay_ms: i64,
    /// Members per group (`group.max.size`, also `group.consumer.max.size`).
    pub group_max_size: usize,
    /// New-protocol (KIP-848) members are fenced this long after their last heartbeat
    /// (`group.consumer.session.timeout.ms`).
    pub group_consumer_session_timeout_ms: i32,
    /// How often new-protocol members heartbeat (`group.consumer.heartbeat.interval.ms`);
    /// they learn of a new assignment at their next heartbeat.
    pub group_consumer_heartbeat_interval_ms: i32,
    /// Server-side assignors (`group.consumer.assignors`): `uniform`, `range`; the first
    /// is the default.
    pub group_consumer_assignors: Vec<String>,
    /// Groups the coordinator holds; a request for a new group past it is answered
    /// COORDINATOR_NOT_AVAILABLE (retriable) until empty groups expire.
    pub groups_max: usize,
    /// Offsets of an empty group are deleted this long after it became empty.
    pub offsets_retention_minutes: i64,
    pub offset_metadata_max_bytes: usize,
    // Transactions.
    /// Partitions of `__transaction_state`, fixed once created.
    pub transaction_state_partitions: i32,
    /// Segment size of `__transaction_state` (`transaction.state.log.segment.bytes`).
    pub transaction_state_segment_bytes: u64,
    /// Largest `transaction.timeout.ms` a producer may ask for (`transaction.max.timeout.ms`).
    pub transaction_max_timeout_ms: i32,
    /// Forget a transactional id idle this long (`transactional.id.expiration.ms`).
    pub transactional_id_expiration_ms: i64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        let log = LogConfig::default();
        Self {
            explicit: BTreeSet::new(),
            listen: "127.0.0.1:9092".into(),
            advertised_listener: None,
            metrics_listen: None,
            default_write_guarantee: WriteGuarantee::None,
            data_dir: PathBuf::from("./exacta-data"),
            node_id: 0,
            cluster_id: "exacta-cluster-0".into(),
            voters: None,
            cluster_listen: None,
            broker_session_timeout_ms: 600,
            replica_lag_time_max_ms: 10_000,
            default_replication_factor: 3,
            auto_create_topics: true,
            num_partitions: 1,
            flush_policy: FlushPolicy::Always,
            flush_interval_ms: 1000,
            segment_bytes: log.segment_bytes,
            segment_ms: log.segment_ms,
            retention_ms: log.retention_ms,
            retention_bytes: log.retention_bytes,
            cleanup_policy: "delete".into(),
            min_cleanable_dirty_ratio: log.min_cleanable_dirty_ratio,
            min_compaction_lag_ms: log.min_compaction_lag_ms,
            max_compaction_lag_ms: log.max_compaction_lag_ms,
            delete_retention_ms: log.delete_retention_ms,
            cleaner_enable: true,
            cleaner_dedupe_buffer_bytes: 128 << 20,
            cleaner_io_max_bytes_per_second: 20_000_000.0,
            cleaner_backoff_ms: 15_000,
            message_max_bytes: 1_048_588,
            message_timestamp_before_max_ms: i64::MAX,
            message_timestamp_after_max_ms: 3_600_000,
            compression_type: "producer".into(),
            message_timestamp_type: "CreateTime".into(),
            min_insync_replicas: 1,
            retention_check_interval_ms: 300_000,
            producer_id_expiration_ms: 86_400_000,
            frame_bytes_max: 104_857_600,
            queued_request_bytes_max: 256 << 20,
            request_read_timeout_ms: 60_000,
            connections_max_idle_ms: 600_000,
            fetch_bytes_max: 57_671_680,
            connections_max: 10_000,
            in_flight_requests_max: 64,
            partitions_max_per_topic: 10_000,
            shutdown_timeout_ms: 30_000,
            offsets_topic_partitions: 16,
            offsets_topic_segment_bytes: 100 << 20,
            group_min_session_timeout_ms: 6_000,
            group_max_session_timeout_ms: 1_800_000,
            group_initial_rebalance_delay_ms: 3_000,
            group_max_size: 10_000,
            group_consumer_session_timeout_ms: 45_000,
            group_consumer_heartbeat_interval_ms: 5_000,
            group_consumer_assignors: exacta_coordinator::consumer::assignor::ASSIGNORS
                .iter()
                .map(|a| a.to_string())
                .collect(),
            groups_max: 100_000,
            offsets_retention_minutes: 7 * 24 * 60,
            offset_metadata_max_bytes: 4096,
            transaction_state_partitions: 8,
            transaction_state_segment_bytes: 100 << 20,
            transaction_max_timeout_ms: 900_000,
            transactional_id_expiration_ms: 7 * 24 * 3600 * 1000,
        }
    }
}

/// A configuration the broker refuses to start with.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing config {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("invalid config: {0}")]
    Invalid(String),
}

impl BrokerConfig {
    pub fn from_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let parse_error = |source| ConfigError::Parse {
            path: path.to_path_buf(),
            source: Box::new(source),
        };
        let mut config: Self = toml::from_str(&text).map_err(parse_error)?;
        let table: toml::Table = toml::from_str(&text).map_err(parse_error)?;
        config.explicit = table.keys().cloned().collect();
        Ok(config)
    }

    /// Every TOML key, for checks that each one is described.
    pub fn toml_keys() -> Vec<String> {
        match toml::Value::try_from(Self::default()) {
            Ok(toml::Value::Table(t)) => t.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }

    /// Checks values that would otherwise fail later, far from their cause.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.num_partitions < 1 || self.num_partitions > self.partitions_max_per_topic {
            return bad(format!(
                "num_partitions {} out of range",
                self.num_partitions
            ));
        }
        if self.segment_bytes < 1024 || self.segment_bytes > i32::MAX as u64 {
            return bad(format!(
                "segment_bytes {} must be in 1024..=2147483647",
                self.segment_bytes
            ));
        }
        if self.message_max_bytes < 64 {
            return bad(format!(
                "message_max_bytes {} is too small",
                self.message_max_bytes
            ));
        }
        if (self.frame_bytes_max as i64) < self.message_max_bytes as i64 {
            return bad("frame_bytes_max must be at least message_max_bytes".into());
        }
        let (_, large_frames) = crate::frames::RequestBudget::pools(self.queued_request_bytes_max);
        if large_frames < u64::from(self.frame_bytes_max) {
            return bad(format!(
                "queued_request_bytes_max {} leaves {large_frames} bytes for large frames \
                 (an eighth is kept for small ones): less than frame_bytes_max {}",
                self.queued_request_bytes_max, self.frame_bytes_max
            ));
        }
        if self.request_read_timeout_ms == 0 || self.connections_max_idle_ms == 0 {
            return bad(
                "request_read_timeout_ms and connections_max_idle_ms must be positive".into(),
            );
        }
        if self.fetch_bytes_max < 1024 {
            return bad(format!(
                "fetch_bytes_max {} is too small",
                self.fetch_bytes_max
            ));
        }
        if self.message_timestamp_before_max_ms < 0 || self.message_timestamp_after_max_ms < 0 {
            return bad("message_timestamp_before_max_ms and message_timestamp_after_max_ms must not be negative".into());
        }
        for (name, value) in [
            ("cleanup.policy", self.cleanup_policy.clone()),
            (
                "min.cleanable.dirty.ratio",
                self.min_cleanable_dirty_ratio.to_string(),
            ),
            (
                "min.compaction.lag.ms",
                self.min_compaction_lag_ms.to_string(),
            ),
            (
                "max.compaction.lag.ms",
                self.max_compaction_lag_ms.to_string(),
            ),
            ("delete.retention.ms", self.delete_retention_ms.to_string()),
            ("compression.type", self.compression_type.clone()),
            (
                "message.timestamp.type",
                self.message_timestamp_type.clone(),
            ),
            ("min.insync.replicas", self.min_insync_replicas.to_string()),
        ] {
            crate::topic_config::validate_topic_config(name, &value)
                .map_err(|e| ConfigError::Invalid(format!("broker default: {e}")))?;
        }
        if self.max_compaction_lag_ms < self.min_compaction_lag_ms {
            return bad("max_compaction_lag_ms must be at least min_compaction_lag_ms".into());
        }
        if self.cleaner_dedupe_buffer_bytes < 1 << 20 || self.cleaner_backoff_ms == 0 {
            return bad("cleaner_dedupe_buffer_bytes must be at least 1 MiB and cleaner_backoff_ms positive".into());
        }
        if self.cleaner_io_max_bytes_per_second.is_nan()
            || self.cleaner_io_max_bytes_per_second <= 0.0
        {
            return bad("cleaner_io_max_bytes_per_second must be positive (inf: no limit)".into());
        }
        for (name, bytes) in [
            (
                "offsets_topic_segment_bytes",
                self.offsets_topic_segment_bytes,
            ),
            (
                "transaction_state_segment_bytes",
                self.transaction_state_segment_bytes,
            ),
        ] {
            let min = crate::internal::SEGMENT_BYTES_MIN as u64;
            if bytes < min || bytes > i32::MAX as u64 {
                return bad(format!("{name} must be in {min}..=2147483647, got {bytes}"));
            }
        }
        if self.groups_max == 0 {
            return bad("groups_max must be positive".into());
        }
        if self.in_flight_requests_max == 0 || self.connections_max == 0 {
            return bad("in_flight_requests_max and connections_max must be positive".into());
        }
        if self.flush_policy == FlushPolicy::Interval && self.flush_interval_ms == 0 {
            return bad(
                "flush_interval_ms must be positive with flush_policy = \"interval\"".into(),
            );
        }
        if self.offsets_topic_partitions < 1 || self.offsets_topic_partitions > 1000 {
            return bad(format!(
                "offsets_topic_partitions {} must be in 1..=1000",
                self.offsets_topic_partitions
            ));
        }
        if self.group_min_session_timeout_ms < 1
            || self.group_min_session_timeout_ms > self.group_max_session_timeout_ms
        {
            return bad("group_min_session_timeout_ms must be positive and at most group_max_session_timeout_ms".into());
        }
        if self.group_consumer_heartbeat_interval_ms < 1
            || self.group_consumer_heartbeat_interval_ms >= self.group_consumer_session_timeout_ms
        {
            return bad(format!(
                "group_consumer_heartbeat_interval_ms {} must be positive and below group_consumer_session_timeout_ms {}",
                self.group_consumer_heartbeat_interval_ms, self.group_consumer_session_timeout_ms
            ));
        }
        let known = exacta_coordinator::consumer::assignor::ASSIGNORS;
        if self.group_consumer_assignors.is_empty()
            || self
                .group_consumer_assignors
                .iter()
                .any(|a| !known.contains(&a.as_str()))
        {
            return bad(format!(
                "group_consumer_assignors {:?} must name one or more of {}",
                self.group_consumer_assignors,
                known.join(", ")
            ));
        }
        if self.group_max_size == 0 || self.offsets_retention_minutes < 1 {
            return bad("group_max_size and offsets_retention_minutes must be positive".into());
        }
        crate::advertised_host_port(self.advertised()).map_err(ConfigError::Invalid)?;
        if let Some(voters) = &self.voters {
            let me = u64::try_from(self.node_id).map_err(|_| {
                ConfigError::Invalid(format!("node_id {} is negative", self.node_id))
            })?;
            exacta_cluster::voters::parse(voters, me).map_err(ConfigError::Invalid)?;
        }
        if self.broker_session_timeout_ms < 100 || self.replica_lag_time_max_ms < 100 {
            return bad(
                "broker_session_timeout_ms and replica_lag_time_max_ms must be at least 100".into(),
            );
        }
        if self.default_replication_factor < 1 {
            return bad("default_replication_factor must be at least 1".into());
        }
        Ok(())
    }

    /// The transaction coordinator's settings.
    pub fn txn_config(&self) -> exacta_coordinator::txn::TxnConfig {
        exacta_coordinator::txn::TxnConfig {
            max_timeout_ms: self.transaction_max_timeout_ms,
            id_expiration_ms: self.transactional_id_expiration_ms,
        }
    }

    /// The group coordinator's settings.
    pub fn group_config(&self) -> exacta_coordinator::group::GroupConfig {
        exacta_coordinator::group::GroupConfig {
            min_session_timeout_ms: self.group_min_session_timeout_ms,
            max_session_timeout_ms: self.group_max_session_timeout_ms,
            initial_rebalance_delay_ms: self.group_initial_rebalance_delay_ms,
            max_size: self.group_max_size,
            offset_metadata_max_bytes: self.offset_metadata_max_bytes,
            offsets_retention_ms: self.offsets_retention_minutes * 60_000,
            groups_max: self.groups_max,
            consumer_session_timeout_ms: self.group_consumer_session_timeout_ms,
            consumer_heartbeat_interval_ms: self.group_consumer_heartbeat_interval_ms,
            consumer_assignors: self.group_consumer_assignors.clone(),
            ..exacta_coordinator::group::GroupConfig::default()
        }
    }

    /// The address given to clients.
    pub fn advertised(&self) -> &str {
        self.advertised_listener.as_deref().unwrap_or(&self.listen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_kafka() {
        let c = BrokerConfig::default();
        c.validate().unwrap();
        assert_eq!(c.listen, "127.0.0.1:9092");
        assert_eq!(c.flush_policy, FlushPolicy::Always);
        assert_eq!(c.message_max_bytes, 1_048_588);
    }

    #[test]
    fn toml_overrides_and_rejects_unknown_keys() {
        let c: BrokerConfig =
            toml::from_str("listen = \"127.0.0.1:1\"\nflush_policy = \"never\"").unwrap();
        assert_eq!(c.listen, "127.0.0.1:1");
        assert_eq!(c.flush_policy, FlushPolicy::Never);
        assert!(toml::from_str::<BrokerConfig>("no_such_key = 1").is_err());
        assert!(toml::from_str::<BrokerConfig>("flush_policy = \"sometimes\"").is_err());
    }
}
