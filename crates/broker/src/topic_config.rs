//! Topic-level configs, with Kafka's names, defaults and validation: each value on its own
//! ([`validate_topic_config`]), the set as a whole ([`validate_topic_configs`]), and the
//! values in force over the broker's defaults ([`TopicConfigs`]).

use std::collections::BTreeMap;

use exacta_log::LogConfig;

use crate::config::{BrokerConfig, WriteGuarantee};

/// Topic-level configs Exacta supports, with Kafka's names.
pub const TOPIC_CONFIG_NAMES: &[&str] = &[
    "cleanup.policy",
    "delete.retention.ms",
    "exacta.write.guarantee",
    "max.compaction.lag.ms",
    "max.message.bytes",
    "message.timestamp.after.max.ms",
    "message.timestamp.before.max.ms",
    "min.cleanable.dirty.ratio",
    "min.compaction.lag.ms",
    "retention.bytes",
    "retention.ms",
    "segment.bytes",
    "segment.ms",
];

/// The policies `cleanup.policy` lists.
pub const CLEANUP_POLICIES: [&str; 2] = ["compact", "delete"];

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
            ..LogConfig::default()
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
        }
    }
}

/// The broker's default for a topic config.
pub fn default_value(b: &BrokerConfig, name: &str) -> Option<String> {
    Some(match name {
        "cleanup.policy" => b.cleanup_policy.clone(),
        "delete.retention.ms" => b.delete_retention_ms.to_string(),
        "exacta.write.guarantee" => b.default_write_guarantee.name().to_string(),
        "max.compaction.lag.ms" => b.max_compaction_lag_ms.to_string(),
        "max.message.bytes" => b.message_max_bytes.to_string(),
        "message.timestamp.after.max.ms" => b.message_timestamp_after_max_ms.to_string(),
        "message.timestamp.before.max.ms" => b.message_timestamp_before_max_ms.to_string(),
        "min.cleanable.dirty.ratio" => b.min_cleanable_dirty_ratio.to_string(),
        "min.compaction.lag.ms" => b.min_compaction_lag_ms.to_string(),
        "retention.bytes" => b.retention_bytes.to_string(),
        "retention.ms" => b.retention_ms.to_string(),
        "segment.bytes" => b.segment_bytes.to_string(),
        "segment.ms" => b.segment_ms.to_string(),
        _ => return None,
    })
}

/// The entries of a list value (`compact,delete`; spaces and brackets tolerated).
pub fn list_items(value: &str) -> impl Iterator<Item = &str> {
    value
        .trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
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
}

/// Checks one topic config value; the error says why, for the client.
pub fn validate_topic_config(name: &str, value: &str) -> Result<(), String> {
    let number = |min: i64, max: i64| -> Result<(), String> {
        let v: i64 = value
            .parse()
            .map_err(|_| format!("{name} must be an integer, got '{value}'"))?;
        if v < min || v > max {
            return Err(format!("{name} must be in {min}..={max}, got {v}"));
        }
        Ok(())
    };
    match name {
        "cleanup.policy" => {
            let listed: Vec<&str> = list_items(value).collect();
            match listed.iter().find(|p| !CLEANUP_POLICIES.contains(p)) {
                Some(bad) => Err(format!(
                    "cleanup.policy '{bad}' is not one of {}",
                    CLEANUP_POLICIES.join(", ")
                )),
                None if listed.is_empty() => Err(format!(
                    "cleanup.policy must list at least one of {}",
                    CLEANUP_POLICIES.join(", ")
                )),
                None => Ok(()),
            }
        }
        "exacta.write.guarantee" if WriteGuarantee::parse(value).is_some() => Ok(()),
        "exacta.write.guarantee" => Err(format!(
            "exacta.write.guarantee must be one of {}, got '{value}'",
            WriteGuarantee::NAMES.join(", ")
        )),
        "min.cleanable.dirty.ratio" => match value.parse::<f64>() {
            Ok(v) if (0.0..=1.0).contains(&v) => Ok(()),
            Ok(v) => Err(format!(
                "min.cleanable.dirty.ratio must be in [0, 1], got {v}"
            )),
            Err(_) => Err(format!(
                "min.cleanable.dirty.ratio must be a number, got '{value}'"
            )),
        },
        "delete.retention.ms" | "min.compaction.lag.ms" => number(0, i64::MAX),
        "max.compaction.lag.ms" => number(1, i64::MAX),
        "max.message.bytes" => number(64, i32::MAX as i64),
        "message.timestamp.after.max.ms" | "message.timestamp.before.max.ms" => number(0, i64::MAX),
        "retention.bytes" | "retention.ms" => number(-1, i64::MAX),
        "segment.bytes" => number(1024, i32::MAX as i64),
        "segment.ms" => number(1, i64::MAX),
        other => Err(format!(
            "unknown or unsupported topic config '{other}'; supported: {}",
            TOPIC_CONFIG_NAMES.join(", ")
        )),
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
        assert!(validate_topic_config("unclean.leader.election.enable", "true").is_err());
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
