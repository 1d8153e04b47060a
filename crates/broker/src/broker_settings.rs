//! The broker's settings under Kafka's names: what DescribeConfigs shows for the BROKER
//! resource, and the dynamic ones IncrementalAlterConfigs / AlterConfigs change while the
//! broker runs.
//!
//! Every [`BrokerConfig`] field is listed ([`SETTINGS`]) under its Kafka name where Kafka
//! has one, else under `exacta.<toml key>`, with a few fixed facts of a single node
//! (`default.replication.factor`, `process.roles`, ...). A setting is *static* (the config
//! file or a command-line flag; changing it needs a restart) or *dynamic*. Dynamic values
//! come in Kafka's two layers, the cluster-wide default (resource name `""`) and this
//! node's (resource name = node id), the node's winning; both are kept in
//! `dynamic-configs.toml` in the data directory (written atomically before they apply)
//! and laid over the static settings at start; [`Broker::alter_dynamic_configs`] checks
//! and applies a change, [`Broker::live`] is what the broker reads.
//!
//! The dynamic settings are the broker defaults of topic configs (retention, segments,
//! compaction, sizes, timestamps, compression, `min.insync.replicas`): a change applies at
//! once to every topic without its own override, as on Kafka. Plus `max.connections` and
//! `producer.id.expiration.ms`, which the broker reads as it goes.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use exacta_types::ErrorCode;

use serde::{Deserialize, Serialize};

use crate::config::{BrokerConfig, FlushPolicy};
use crate::partitions::{ApiError, Broker};
use crate::topic_config::catalogue::ConfigType;
use crate::topic_config::{validate_topic_configs, TopicConfigs};

/// The file holding the dynamic settings, in the data directory.
pub const DYNAMIC_CONFIGS_FILE: &str = "dynamic-configs.toml";

type Get = fn(&BrokerConfig) -> Option<String>;
type Set = fn(&mut BrokerConfig, &str) -> Result<(), String>;

/// One broker setting.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// The Kafka name.
    pub name: &'static str,
    pub kind: ConfigType,
    /// The TOML key it is read from; `None` for a fact or a derived value.
    pub key: Option<&'static str>,
    /// The topic config it is the broker default of (its synonym), if any.
    pub topic: Option<&'static str>,
    get: Get,
    /// How a dynamic value is applied; `None` for a static setting.
    set: Option<Set>,
}

impl Setting {
    pub fn value(&self, config: &BrokerConfig) -> Option<String> {
        (self.get)(config)
    }

    pub fn is_dynamic(&self) -> bool {
        self.set.is_some()
    }
}

fn parse<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, String> {
    value
        .trim()
        .parse()
        .map_err(|_| format!("Invalid value {value} for configuration {name}"))
}

/// Checks `value` as the topic config the broker setting `name` is the default of; the
/// error names the broker setting.
fn as_topic(name: &str, topic_name: &str, value: &str) -> Result<(), String> {
    crate::topic_config::validate_topic_config(topic_name, value).map_err(|e| {
        e.replace(
            &format!("configuration {topic_name}:"),
            &format!("configuration {name}:"),
        )
    })
}

macro_rules! fixed {
    ($name:literal, $kind:ident, $value:expr) => {
        Setting {
            name: $name,
            kind: ConfigType::$kind,
            key: None,
            topic: None,
            get: |_| Some($value.to_string()),
            set: None,
        }
    };
}

macro_rules! stat {
    ($name:literal, $kind:ident, $key:ident) => {
        Setting {
            name: $name,
            kind: ConfigType::$kind,
            key: Some(stringify!($key)),
            topic: None,
            get: |c| Some(c.$key.to_string()),
            set: None,
        }
    };
    ($name:literal, $kind:ident, $key:ident, $get:expr) => {
        Setting {
            name: $name,
            kind: ConfigType::$kind,
            key: Some(stringify!($key)),
            topic: None,
            get: $get,
            set: None,
        }
    };
}

/// A dynamic setting that is the broker default of topic config `$topic`.
macro_rules! topic_default {
    ($name:literal, $topic:literal, $kind:ident, $key:ident) => {
        Setting {
            name: $name,
            kind: ConfigType::$kind,
            key: Some(stringify!($key)),
            topic: Some($topic),
            get: |c| Some(c.$key.to_string()),
            set: Some(|c, v| {
                as_topic($name, $topic, v)?;
                c.$key = parse($name, v)?;
                Ok(())
            }),
        }
    };
}

/// Every broker setting, by Kafka name.
pub const SETTINGS: &[Setting] = &[
    stat!("advertised.listeners", String, advertised_listener, |c| {
        Some(format!("PLAINTEXT://{}", c.advertised()))
    }),
    stat!("auto.create.topics.enable", Boolean, auto_create_topics),
    stat!("broker.id", Int, node_id),
    stat!("broker.session.timeout.ms", Long, broker_session_timeout_ms),
    topic_default!(
        "compression.type",
        "compression.type",
        String,
        compression_type
    ),
    stat!("connections.max.idle.ms", Long, connections_max_idle_ms),
    stat!("controller.quorum.voters", String, voters, |c| Some(
        c.voters.clone().unwrap_or_default()
    )),
    // A single node has one replica, whatever the setting says.
    stat!(
        "default.replication.factor",
        Int,
        default_replication_factor,
        |c| Some(
            if c.voters.is_some() {
                c.default_replication_factor
            } else {
                1
            }
            .to_string()
        )
    ),
    fixed!("delete.topic.enable", Boolean, true),
    stat!("exacta.cluster.id", String, cluster_id, |c| Some(
        c.cluster_id.clone()
    )),
    stat!("exacta.cluster.listen", String, cluster_listen, |c| Some(
        c.cluster_listen.clone().unwrap_or_default()
    )),
    stat!(
        "exacta.default.write.guarantee",
        String,
        default_write_guarantee,
        |c| Some(c.default_write_guarantee.name().to_string())
    ),
    stat!("exacta.flush.interval.ms", Long, flush_interval_ms),
    stat!("exacta.flush.policy", String, flush_policy, |c| {
        Some(format!("{:?}", c.flush_policy).to_lowercase())
    }),
    stat!("exacta.groups.max", Int, groups_max),
    stat!("exacta.in.flight.requests.max", Int, in_flight_requests_max),
    stat!("exacta.metrics.listen", String, metrics_listen, |c| c
        .metrics_listen
        .clone()),
    stat!(
        "exacta.partitions.max.per.topic",
        Int,
        partitions_max_per_topic
    ),
    stat!(
        "exacta.request.read.timeout.ms",
        Long,
        request_read_timeout_ms
    ),
    stat!("exacta.shutdown.timeout.ms", Long, shutdown_timeout_ms),
    stat!("fetch.max.bytes", Int, fetch_bytes_max),
    stat!(
        "group.consumer.assignors",
        List,
        group_consumer_assignors,
        |c| Some(c.group_consumer_assignors.join(","))
    ),
    stat!(
        "group.consumer.heartbeat.interval.ms",
        Int,
        group_consumer_heartbeat_interval_ms
    ),
    stat!("group.consumer.max.size", Int, group_max_size),
    stat!(
        "group.consumer.session.timeout.ms",
        Int,
        group_consumer_session_timeout_ms
    ),
    fixed!(
        "group.coordinator.rebalance.protocols",
        List,
        "classic,consumer"
    ),
    stat!(
        "group.initial.rebalance.delay.ms",
        Int,
        group_initial_rebalance_delay_ms
    ),
    stat!(
        "group.max.session.timeout.ms",
        Int,
        group_max_session_timeout_ms
    ),
    stat!("group.max.size", Int, group_max_size),
    stat!(
        "group.min.session.timeout.ms",
        Int,
        group_min_session_timeout_ms
    ),
    stat!("listeners", String, listen, |c| Some(format!(
        "PLAINTEXT://{}",
        c.listen
    ))),
    stat!("log.cleaner.backoff.ms", Long, cleaner_backoff_ms),
    stat!(
        "log.cleaner.dedupe.buffer.size",
        Long,
        cleaner_dedupe_buffer_bytes
    ),
    topic_default!(
        "log.cleaner.delete.retention.ms",
        "delete.retention.ms",
        Long,
        delete_retention_ms
    ),
    stat!("log.cleaner.enable", Boolean, cleaner_enable),
    stat!(
        "log.cleaner.io.max.bytes.per.second",
        Double,
        cleaner_io_max_bytes_per_second
    ),
    topic_default!(
        "log.cleaner.max.compaction.lag.ms",
        "max.compaction.lag.ms",
        Long,
        max_compaction_lag_ms
    ),
    topic_default!(
        "log.cleaner.min.cleanable.ratio",
        "min.cleanable.dirty.ratio",
        Double,
        min_cleanable_dirty_ratio
    ),
    topic_default!(
        "log.cleaner.min.compaction.lag.ms",
        "min.compaction.lag.ms",
        Long,
        min_compaction_lag_ms
    ),
    fixed!("log.cleaner.threads", Int, 1),
    topic_default!("log.cleanup.policy", "cleanup.policy", List, cleanup_policy),
    stat!("log.dirs", String, data_dir, |c| Some(
        c.data_dir.display().to_string()
    )),
    // The flush policy as Kafka's two settings express it.
    stat!("log.flush.interval.messages", Long, flush_policy, |c| {
        crate::topic_config::default_value(c, "flush.messages")
    }),
    stat!("log.flush.interval.ms", Long, flush_interval_ms, |c| {
        Some(match c.flush_policy {
            FlushPolicy::Interval => c.flush_interval_ms.to_string(),
            _ => i64::MAX.to_string(),
        })
    }),
    topic_default!(
        "log.message.timestamp.after.max.ms",
        "message.timestamp.after.max.ms",
        Long,
        message_timestamp_after_max_ms
    ),
    topic_default!(
        "log.message.timestamp.before.max.ms",
        "message.timestamp.before.max.ms",
        Long,
        message_timestamp_before_max_ms
    ),
    topic_default!(
        "log.message.timestamp.type",
        "message.timestamp.type",
        String,
        message_timestamp_type
    ),
    topic_default!(
        "log.retention.bytes",
        "retention.bytes",
        Long,
        retention_bytes
    ),
    stat!(
        "log.retention.check.interval.ms",
        Long,
        retention_check_interval_ms
    ),
    topic_default!("log.retention.ms", "retention.ms", Long, retention_ms),
    topic_default!("log.roll.ms", "segment.ms", Long, segment_ms),
    topic_default!("log.segment.bytes", "segment.bytes", Int, segment_bytes),
    Setting {
        name: "max.connections",
        kind: ConfigType::Int,
        key: Some("connections_max"),
        topic: None,
        get: |c| Some(c.connections_max.to_string()),
        set: Some(|c, v| {
            let n: usize = parse("max.connections", v)?;
            if n == 0 {
                return Err(format!(
                    "Invalid value {v} for configuration max.connections: Value must be at least 1"
                ));
            }
            c.connections_max = n;
            Ok(())
        }),
    },
    topic_default!(
        "message.max.bytes",
        "max.message.bytes",
        Int,
        message_max_bytes
    ),
    topic_default!(
        "min.insync.replicas",
        "min.insync.replicas",
        Int,
        min_insync_replicas
    ),
    stat!("node.id", Int, node_id),
    stat!("num.partitions", Int, num_partitions),
    stat!("offset.metadata.max.bytes", Int, offset_metadata_max_bytes),
    stat!("offsets.retention.minutes", Int, offsets_retention_minutes),
    stat!(
        "offsets.topic.num.partitions",
        Int,
        offsets_topic_partitions
    ),
    fixed!("offsets.topic.replication.factor", Short, 1),
    stat!(
        "offsets.topic.segment.bytes",
        Int,
        offsets_topic_segment_bytes
    ),
    fixed!("process.roles", List, "broker,controller"),
    Setting {
        name: "producer.id.expiration.ms",
        kind: ConfigType::Int,
        key: Some("producer_id_expiration_ms"),
        topic: None,
        get: |c| Some(c.producer_id_expiration_ms.to_string()),
        set: Some(|c, v| {
            let ms: i64 = parse("producer.id.expiration.ms", v)?;
            if ms < 1 {
                return Err(format!("Invalid value {v} for configuration producer.id.expiration.ms: Value must be at least 1"));
            }
            c.producer_id_expiration_ms = ms;
            Ok(())
        }),
    },
    stat!("queued.max.request.bytes", Long, queued_request_bytes_max),
    stat!("replica.lag.time.max.ms", Long, replica_lag_time_max_ms),
    stat!("socket.request.max.bytes", Int, frame_bytes_max),
    stat!(
        "transaction.max.timeout.ms",
        Int,
        transaction_max_timeout_ms
    ),
    fixed!("transaction.state.log.min.isr", Int, 1),
    stat!(
        "transaction.state.log.num.partitions",
        Int,
        transaction_state_partitions
    ),
    fixed!("transaction.state.log.replication.factor", Short, 1),
    stat!(
        "transaction.state.log.segment.bytes",
        Int,
        transaction_state_segment_bytes
    ),
    stat!(
        "transactional.id.expiration.ms",
        Int,
        transactional_id_expiration_ms
    ),
    fixed!("unclean.leader.election.enable", Boolean, false),
];

/// The setting named `name`.
pub fn find(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.name == name)
}

/// The dynamic settings in force: the cluster-wide defaults and this node's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DynamicConfigs {
    #[serde(default)]
    pub cluster_default: BTreeMap<String, String>,
    #[serde(default)]
    pub node: BTreeMap<String, String>,
}

/// Which layer a request names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Resource name `""`: the default for every broker.
    ClusterDefault,
    /// Resource name = this node's id.
    Node,
}

impl DynamicConfigs {
    pub fn layer(&self, scope: Scope) -> &BTreeMap<String, String> {
        match scope {
            Scope::ClusterDefault => &self.cluster_default,
            Scope::Node => &self.node,
        }
    }

    pub fn layer_mut(&mut self, scope: Scope) -> &mut BTreeMap<String, String> {
        match scope {
            Scope::ClusterDefault => &mut self.cluster_default,
            Scope::Node => &mut self.node,
        }
    }

    /// Reads the file in `data_dir` (none yet: no dynamic settings).
    pub fn load(data_dir: &Path) -> Result<Self, String> {
        let path = data_dir.join(DYNAMIC_CONFIGS_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => String::from_utf8(bytes)
                .map_err(|e| e.to_string())
                .and_then(|text| toml::from_str(&text).map_err(|e| e.to_string()))
                .map_err(|e| format!("parsing {}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(format!("reading {}: {e}", path.display())),
        }
    }

    /// Writes the file in `data_dir` atomically (and durably).
    pub fn save(&self, data_dir: &Path) -> Result<(), exacta_log::LogError> {
        let text = toml::to_string(self).expect("string maps serialize");
        exacta_log::write_atomically(&data_dir.join(DYNAMIC_CONFIGS_FILE), text.as_bytes())
    }

    /// `base` with the cluster defaults, then the node's values, applied and validated.
    /// The error names the setting.
    pub fn apply(&self, base: &BrokerConfig) -> Result<BrokerConfig, String> {
        let mut config = base.clone();
        for (name, value) in self.cluster_default.iter().chain(&self.node) {
            let setting =
                find(name).ok_or_else(|| format!("Unknown broker config name: {name}"))?;
            let set = setting.set.ok_or_else(|| {
                format!("Cannot update these configs dynamically: [{name}] (a static setting: set it in the config file and restart)")
            })?;
            set(&mut config, value)?;
        }
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }

    /// Where the value of `name` in force comes from (a DescribeConfigs source code).
    pub fn source(&self, name: &str, base: &BrokerConfig) -> i8 {
        if self.node.contains_key(name) {
            SOURCE_DYNAMIC_BROKER
        } else if self.cluster_default.contains_key(name) {
            SOURCE_DYNAMIC_DEFAULT_BROKER
        } else if find(name)
            .and_then(|s| s.key)
            .is_some_and(|k| base.explicit.contains(k))
        {
            SOURCE_STATIC_BROKER
        } else {
            SOURCE_DEFAULT
        }
    }
}

impl Broker {
    /// The settings in force: the static ones with the dynamic ones laid over them.
    pub fn live(&self) -> Arc<BrokerConfig> {
        Arc::clone(&self.live.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The dynamic settings (both layers).
    pub fn dynamic_configs(&self) -> DynamicConfigs {
        self.dynamic
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Edits one layer of the dynamic settings: the result is checked as a whole (each
    /// value, the settings together, every topic's overrides over the new defaults), then
    /// persisted and applied to every topic at once.
    pub fn alter_dynamic_configs(
        &self,
        scope: Scope,
        edit: impl FnOnce(&mut BTreeMap<String, String>) -> Result<(), ApiError>,
        validate_only: bool,
    ) -> Result<(), ApiError> {
        let _admin = self.admin_lock();
        let mut dynamic = self.dynamic_configs();
        edit(dynamic.layer_mut(scope))?;
        let invalid = |m: String| ApiError::new(ErrorCode::InvalidConfig, m);
        let live = Arc::new(dynamic.apply(&self.config).map_err(invalid)?);
        let topics = self.topics();
        for topic in &topics {
            validate_topic_configs(&topic.configs, &live)
                .map_err(|m| invalid(format!("topic {}: {m}", topic.name)))?;
        }
        if validate_only {
            return Ok(());
        }
        dynamic.save(&self.data_dir)?;
        *self.dynamic.lock().unwrap_or_else(|p| p.into_inner()) = dynamic.clone();
        *self.live.write().unwrap_or_else(|p| p.into_inner()) = Arc::clone(&live);
        for topic in &topics {
            let resolved = TopicConfigs {
                overrides: &topic.configs,
                broker: &live,
            };
            for p in &topic.partitions {
                p.set_topic_configs(&resolved);
            }
        }
        tracing::info!(scope = ?scope, configs = ?dynamic.layer(scope), "altered dynamic broker configs");
        Ok(())
    }
}

/// DescribeConfigs sources (Kafka's `ConfigSource`).
pub const SOURCE_TOPIC: i8 = 1;
pub const SOURCE_DYNAMIC_BROKER: i8 = 2;
pub const SOURCE_DYNAMIC_DEFAULT_BROKER: i8 = 3;
pub const SOURCE_STATIC_BROKER: i8 = 4;
pub const SOURCE_DEFAULT: i8 = 5;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_sorted_unique_and_cover_every_toml_key() {
        let names: Vec<&str> = SETTINGS.iter().map(|s| s.name).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(names, sorted, "sorted by name, no duplicates");
        // Every TOML key has a Kafka (or exacta.) name: a new setting cannot be forgotten.
        let keys: Vec<&str> = SETTINGS.iter().filter_map(|s| s.key).collect();
        let all = BrokerConfig::toml_keys();
        assert!(all.len() > 40, "{all:?}");
        for key in &all {
            assert!(
                keys.contains(&key.as_str()),
                "TOML key {key} has no broker setting"
            );
        }
        let config = BrokerConfig::default();
        for s in SETTINGS {
            if s.name != "exacta.metrics.listen" {
                assert!(s.value(&config).is_some(), "{}", s.name);
            }
        }
    }

    #[test]
    fn dynamic_values_are_layered_checked_and_refused_when_static() {
        let base = BrokerConfig::default();
        let mut d = DynamicConfigs::default();
        d.cluster_default
            .insert("log.retention.ms".into(), "1000".into());
        d.node.insert("log.retention.ms".into(), "2000".into());
        d.node.insert("compression.type".into(), "zstd".into());
        let c = d.apply(&base).unwrap();
        assert_eq!(c.retention_ms, 2000);
        assert_eq!(c.compression_type, "zstd");
        assert_eq!(d.source("log.retention.ms", &base), SOURCE_DYNAMIC_BROKER);
        assert_eq!(d.source("log.segment.bytes", &base), SOURCE_DEFAULT);
        d.node.insert("compression.type".into(), "brotli".into());
        assert!(d
            .apply(&base)
            .unwrap_err()
            .contains("String must be one of"));
        d.node.remove("compression.type");
        d.node.insert("num.partitions".into(), "3".into());
        assert!(d.apply(&base).unwrap_err().contains("Cannot update"));
        d.node.remove("num.partitions");
        d.node.insert("no.such".into(), "3".into());
        assert!(d
            .apply(&base)
            .unwrap_err()
            .contains("Unknown broker config"));
        d.node.remove("no.such");
        // Checked as a whole: the compaction lags must stay ordered.
        d.node
            .insert("log.cleaner.min.compaction.lag.ms".into(), "10".into());
        d.node
            .insert("log.cleaner.max.compaction.lag.ms".into(), "5".into());
        assert!(d.apply(&base).is_err());
    }
}
