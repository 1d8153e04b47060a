//! Topic-level configs, with Kafka's names, defaults and validation: the catalogue of
//! every config ([`catalogue`]), the set as a whole ([`validate_topic_configs`]), and the
//! values in force over the broker's defaults ([`TopicConfigs`]).

pub mod catalogue;

use std::collections::BTreeMap;

use exacta_log::LogConfig;

pub use catalogue::{default_value, list_items, validate_topic_config, TOPIC_CONFIGS};

use crate::config::{BrokerConfig, WriteGuarantee};

/// A topic's config overrides resolved over the broker defaults.
#[derive(Debug, Clone)]
pub struct TopicConfigs<'a> {
    pub overrides: &'a BTreeMap<String, String>,
    pub broker: &'a BrokerConfig,
}

impl TopicConfigs<'_> {
    /// The value in force and whether it is the default.
    pub fn value(&self, name: &str) -> Option<(String, bool)> {
        if let Some(v) = self.overrides.get(name) {
            return Some((v.clone(), false));
        }
        Some((default_value(self.broker, name)?, true))
    }

    fn number(&self, name: &str) -> i64 {
        self.value(name)
            .and_then(|(v, _)| v.parse().ok())
            .unwrap_or_default()
    }

    /// Whether `cleanup.policy` lists `policy`.
    pub fn has_policy(&self, policy: &str) -> bool {
        self.value("cleanup.policy")
            .is_some_and(|(v, _)| list_items(&v).any(|p| p == policy))
    }

    pub fn log_config(&self) -> LogConfig {
        LogConfig {
            segment_bytes: self.number("segment.bytes") as u64,
            segment_ms: self.number("segment.ms"),
            retention_ms: self.number("retention.ms"),
            retention_bytes: self.number("retention.bytes"),
            delete: self.has_policy("delete"),
            compact: self.has_policy("compact"),
            min_cleanable_dirty_ratio: self
                .value("min.cleanable.dirty.ratio")
                .and_then(|(v, _)| v.parse().ok())
                .unwrap_or(0.5),
            min_compaction_lag_ms: self.number("min.compaction.lag.ms"),
            max_compaction_lag_ms: self.number("max.compaction.lag.ms"),
            delete_retention_ms: self.number("delete.retention.ms"),
            index_interval_bytes: self
                .number("index.interval.bytes")
                .clamp(0, i32::MAX as i64) as u32,
        }
    }

    /// What a produced batch must satisfy on this topic.
    pub fn write_rules(&self) -> WriteRules {
        WriteRules {
            max_message_bytes: self.number("max.message.bytes"),
            write_guarantee: self
                .value("exacta.write.guarantee")
                .and_then(|(v, _)| WriteGuarantee::parse(&v))
                .unwrap_or_default(),
            timestamp_before_max_ms: self.number("message.timestamp.before.max.ms"),
            timestamp_after_max_ms: self.number("message.timestamp.after.max.ms"),
            keys_required: self.has_policy("compact"),
            codec: self
                .value("compression.type")
                .and_then(|(v, _)| catalogue::codec(&v)),
            log_append_time: self
                .value("message.timestamp.type")
                .is_some_and(|(v, _)| v.trim() == "LogAppendTime"),
            min_insync_replicas: self.number("min.insync.replicas") as i32,
            flush: FlushRule {
                messages: self.number("flush.messages"),
                ms: self.number("flush.ms"),
            },
        }
    }
}

/// A topic's rules for produced batches, resolved from its configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteRules {
    /// Largest batch (`max.message.bytes`).
    pub max_message_bytes: i64,
    /// Which producers may write (`exacta.write.guarantee`).
    pub write_guarantee: WriteGuarantee,
    /// How far in the past a record's create time may be (`message.timestamp.before.max.ms`).
    pub timestamp_before_max_ms: i64,
    /// How far in the future a record's create time may be (`message.timestamp.after.max.ms`).
    pub timestamp_after_max_ms: i64,
    /// Every record needs a key (the topic is compacted).
    pub keys_required: bool,
    /// The codec batches are stored with (`compression.type`); `None` keeps the producer's.
    pub codec: Option<i16>,
    /// The broker stamps batches with its clock (`message.timestamp.type=LogAppendTime`).
    pub log_append_time: bool,
    /// In-sync replicas an `acks=all` write needs (`min.insync.replicas`); one node has one.
    pub min_insync_replicas: i32,
    /// When the partition is fsynced (`flush.messages`, `flush.ms`).
    pub flush: FlushRule,
}

/// When a partition's appends are fsynced: after `messages` unflushed records or once the
/// oldest unflushed one is `ms` old. `messages = 1` is the broker's `always` policy: every
/// append is fsynced (group commit) before it is acknowledged or visible. Otherwise records
/// are visible and acknowledged at once, and fsynced in the background by these bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushRule {
    pub messages: i64,
    pub ms: i64,
}

impl FlushRule {
    /// Every append waits for its fsync.
    pub fn per_append(&self) -> bool {
        self.messages <= 1
    }
}

/// Checks a topic's overrides: each value, then the rules between them (as Kafka's
/// `LogConfig.validateValues`), over the broker's defaults.
pub fn validate_topic_configs(
    overrides: &BTreeMap<String, String>,
    broker: &BrokerConfig,
) -> Result<(), String> {
    for (k, v) in overrides {
        validate_topic_config(k, v)?;
    }
    // Exacta has no tiered storage: Kafka's answer for a broker without it.
    if overrides
        .get("remote.storage.enable")
        .and_then(|v| catalogue::parse_bool(v))
        == Some(true)
    {
        return Err("Tiered Storage functionality is disabled in the broker. \
             Topic cannot be configured with remote log storage."
            .into());
    }
    let resolved = TopicConfigs { overrides, broker }.log_config();
    if resolved.max_compaction_lag_ms < resolved.min_compaction_lag_ms {
        return Err(format!(
            "conflict topic config setting max.compaction.lag.ms ({}) < min.compaction.lag.ms ({})",
            resolved.max_compaction_lag_ms, resolved.min_compaction_lag_ms
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_config_values_are_checked() {
        assert!(validate_topic_config("retention.ms", "-1").is_ok());
        assert!(validate_topic_config("retention.ms", "abc").is_err());
        assert!(validate_topic_config("segment.bytes", "10").is_err());
        assert!(validate_topic_config("cleanup.policy", "shred").is_err());
        assert!(validate_topic_config("exacta.write.guarantee", "transactional").is_ok());
        assert!(validate_topic_config("exacta.write.guarantee", "sometimes").is_err());
        let broker = BrokerConfig {
            default_write_guarantee: WriteGuarantee::Idempotent,
            ..BrokerConfig::default()
        };
        let mut overrides = BTreeMap::new();
        let configs = TopicConfigs {
            overrides: &overrides,
            broker: &broker,
        };
        assert_eq!(
            configs.write_rules().write_guarantee,
            WriteGuarantee::Idempotent
        );
        overrides.insert("exacta.write.guarantee".into(), "none".into());
        let configs = TopicConfigs {
            overrides: &overrides,
            broker: &broker,
        };
        assert_eq!(configs.write_rules().write_guarantee, WriteGuarantee::None);
        // Known to Kafka, stored with no effect on one node.
        assert!(validate_topic_config("unclean.leader.election.enable", "true").is_ok());
        assert!(validate_topic_config("unclean.leader.election.enable", "maybe").is_err());
        overrides.insert("remote.storage.enable".into(), "true".into());
        let e = validate_topic_configs(&overrides, &broker).unwrap_err();
        assert!(e.contains("Tiered Storage"), "{e}");
    }

    #[test]
    fn compaction_configs_are_checked_alone_and_together() {
        for (name, value) in [
            ("cleanup.policy", "compact"),
            ("cleanup.policy", "compact,delete"),
            ("cleanup.policy", "[delete, compact]"),
            ("min.cleanable.dirty.ratio", "0"),
            ("min.cleanable.dirty.ratio", "0.99"),
            ("delete.retention.ms", "0"),
            ("max.compaction.lag.ms", "1"),
        ] {
            assert!(validate_topic_config(name, value).is_ok(), "{name}={value}");
        }
        for (name, value) in [
            ("cleanup.policy", ""),
            ("cleanup.policy", "compact,shred"),
            ("min.cleanable.dirty.ratio", "-0.1"),
            ("min.cleanable.dirty.ratio", "1.5"),
            ("min.cleanable.dirty.ratio", "half"),
            ("min.compaction.lag.ms", "-1"),
            ("max.compaction.lag.ms", "0"),
            ("delete.retention.ms", "-5"),
        ] {
            assert!(
                validate_topic_config(name, value).is_err(),
                "{name}={value}"
            );
        }
        let broker = BrokerConfig::default();
        let mut overrides = BTreeMap::new();
        overrides.insert("min.compaction.lag.ms".to_string(), "100".to_string());
        assert!(validate_topic_configs(&overrides, &broker).is_ok());
        overrides.insert("max.compaction.lag.ms".to_string(), "99".to_string());
        let e = validate_topic_configs(&overrides, &broker).unwrap_err();
        assert!(e.contains("max.compaction.lag.ms"), "{e}");
        overrides.insert("cleanup.policy".to_string(), "compact,delete".to_string());
        overrides.remove("max.compaction.lag.ms");
        let configs = TopicConfigs {
            overrides: &overrides,
            broker: &broker,
        };
        let log = configs.log_config();
        assert!(log.compact && log.delete);
        assert!(configs.write_rules().keys_required);
    }
}
