//! Every topic-level config Kafka 4.x knows, with its type, Kafka's default (or the broker
//! setting it defaults to), Kafka's validation, and whether Exacta acts on it.
//!
//! Configs Exacta has no use for on one node (tiered storage, replication throttles,
//! preallocation, ...) are still accepted with Kafka's validation, stored and described,
//! so that tools which set them when they create topics (Kafka Streams, Connect, Terraform
//! providers) work unchanged; [`TopicConfigDef::honoured`] says which ones have an effect.

use crate::config::{BrokerConfig, FlushPolicy, WriteGuarantee};

/// Kafka's config types, with the codes DescribeConfigs v3+ reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Short = 4,
    Long = 5,
    Double = 6,
    List = 7,
}

/// How a value is checked (Kafka's `ConfigDef` validators).
#[derive(Debug, Clone, Copy)]
enum Check {
    /// An integer in `min..=max`.
    Range(i64, i64),
    /// `compression.gzip.level`: -1 (the codec's default) or 1..=9.
    GzipLevel,
    /// A double in `min..=max`.
    Between(f64, f64),
    Bool,
    /// One of these strings.
    OneOf(&'static [&'static str]),
    /// A list whose every item is one of these (and at least one item).
    ListOf(&'static [&'static str]),
    /// `*`, or `partition:broker` pairs (Kafka's `ThrottledReplicaListValidator`).
    ThrottledReplicas,
    /// `exacta.write.guarantee`.
    Guarantee,
}

/// One topic config.
#[derive(Debug, Clone, Copy)]
pub struct TopicConfigDef {
    pub name: &'static str,
    pub kind: ConfigType,
    check: Check,
    /// Exacta acts on it; otherwise it is stored and described with no effect.
    pub honoured: bool,
}

const fn def(name: &'static str, kind: ConfigType, check: Check, honoured: bool) -> TopicConfigDef {
    TopicConfigDef {
        name,
        kind,
        check,
        honoured,
    }
}

const I32: i64 = i32::MAX as i64;
const I64: i64 = i64::MAX;

/// The codecs `compression.type` names; `producer` keeps what the producer sent.
pub const COMPRESSION_TYPES: &[&str] =
    &["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"];
/// The policies `cleanup.policy` lists.
pub const CLEANUP_POLICIES: &[&str] = &["compact", "delete"];
/// The values of `message.timestamp.type`.
pub const TIMESTAMP_TYPES: &[&str] = &["CreateTime", "LogAppendTime"];

use Check as C;
use ConfigType as T;

/// Every topic config, sorted by name (Kafka 4.x's `LogConfig` plus
/// `exacta.write.guarantee`).
pub const TOPIC_CONFIGS: &[TopicConfigDef] = &[
    def("cleanup.policy", T::List, C::ListOf(CLEANUP_POLICIES), true),
    def("compression.gzip.level", T::Int, C::GzipLevel, false),
    def("compression.lz4.level", T::Int, C::Range(1, 17), false),
    def(
        "compression.type",
        T::String,
        C::OneOf(COMPRESSION_TYPES),
        true,
    ),
    def(
        "compression.zstd.level",
        T::Int,
        C::Range(-131_072, 22),
        false,
    ),
    def("delete.retention.ms", T::Long, C::Range(0, I64), true),
    def("exacta.write.guarantee", T::String, C::Guarantee, true),
    def("file.delete.delay.ms", T::Long, C::Range(0, I64), false),
    def("flush.messages", T::Long, C::Range(1, I64), true),
    def("flush.ms", T::Long, C::Range(0, I64), true),
    def(
        "follower.replication.throttled.replicas",
        T::List,
        C::ThrottledReplicas,
        false,
    ),
    def("index.interval.bytes", T::Int, C::Range(0, I32), true),
    def(
        "leader.replication.throttled.replicas",
        T::List,
        C::ThrottledReplicas,
        false,
    ),
    def("local.retention.bytes", T::Long, C::Range(-2, I64), false),
    def("local.retention.ms", T::Long, C::Range(-2, I64), false),
    def("max.compaction.lag.ms", T::Long, C::Range(1, I64), true),
    def("max.message.bytes", T::Int, C::Range(0, I32), true),
    def(
        "message.timestamp.after.max.ms",
        T::Long,
        C::Range(0, I64),
        true,
    ),
    def(
        "message.timestamp.before.max.ms",
        T::Long,
        C::Range(0, I64),
        true,
    ),
    def(
        "message.timestamp.type",
        T::String,
        C::OneOf(TIMESTAMP_TYPES),
        true,
    ),
    def(
        "min.cleanable.dirty.ratio",
        T::Double,
        C::Between(0.0, 1.0),
        true,
    ),
    def("min.compaction.lag.ms", T::Long, C::Range(0, I64), true),
    def("min.insync.replicas", T::Int, C::Range(1, I32), true),
    def("preallocate", T::Boolean, C::Bool, false),
    def("remote.log.copy.disable", T::Boolean, C::Bool, false),
    def("remote.log.delete.on.disable", T::Boolean, C::Bool, false),
    def("remote.storage.enable", T::Boolean, C::Bool, false),
    def("retention.bytes", T::Long, C::Range(i64::MIN, I64), true),
    def("retention.ms", T::Long, C::Range(-1, I64), true),
    // Kafka's minimum is 14 bytes (one legacy record); a segment per record would mean a
    // file per record here, so Exacta asks for at least 1 KiB.
    def("segment.bytes", T::Int, C::Range(1024, I32), true),
    def("segment.index.bytes", T::Int, C::Range(4, I32), false),
    def("segment.jitter.ms", T::Long, C::Range(0, I64), false),
    def("segment.ms", T::Long, C::Range(1, I64), true),
    def("unclean.leader.election.enable", T::Boolean, C::Bool, false),
];

/// The definition of topic config `name`.
pub fn find(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// The broker's default for a topic config: the broker setting it follows, or Kafka's
/// constant default.
pub fn default_value(b: &BrokerConfig, name: &str) -> Option<String> {
    Some(match name {
        "cleanup.policy" => b.cleanup_policy.clone(),
        "compression.gzip.level" => "-1".into(),
        "compression.lz4.level" => "9".into(),
        "compression.type" => b.compression_type.clone(),
        "compression.zstd.level" => "3".into(),
        "delete.retention.ms" => b.delete_retention_ms.to_string(),
        "exacta.write.guarantee" => b.default_write_guarantee.name().to_string(),
        "file.delete.delay.ms" => "60000".into(),
        // The broker's flush policy, as the two per-topic settings that express it.
        "flush.messages" => match b.flush_policy {
            FlushPolicy::Always => "1".into(),
            _ => I64.to_string(),
        },
        "flush.ms" => match b.flush_policy {
            FlushPolicy::Interval => b.flush_interval_ms.to_string(),
            _ => I64.to_string(),
        },
        "follower.replication.throttled.replicas" | "leader.replication.throttled.replicas" => {
            String::new()
        }
        "index.interval.bytes" => "4096".into(),
        "local.retention.bytes" | "local.retention.ms" => "-2".into(),
        "max.compaction.lag.ms" => b.max_compaction_lag_ms.to_string(),
        "max.message.bytes" => b.message_max_bytes.to_string(),
        "message.timestamp.after.max.ms" => b.message_timestamp_after_max_ms.to_string(),
        "message.timestamp.before.max.ms" => b.message_timestamp_before_max_ms.to_string(),
        "message.timestamp.type" => b.message_timestamp_type.clone(),
        "min.cleanable.dirty.ratio" => b.min_cleanable_dirty_ratio.to_string(),
        "min.compaction.lag.ms" => b.min_compaction_lag_ms.to_string(),
        "min.insync.replicas" => b.min_insync_replicas.to_string(),
        "preallocate"
        | "remote.log.copy.disable"
        | "remote.log.delete.on.disable"
        | "remote.storage.enable"
        | "unclean.leader.election.enable" => "false".into(),
        "retention.bytes" => b.retention_bytes.to_string(),
        "retention.ms" => b.retention_ms.to_string(),
        "segment.bytes" => b.segment_bytes.to_string(),
        "segment.index.bytes" => "10485760".into(),
        "segment.jitter.ms" => "0".into(),
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

/// A boolean as Kafka parses one (`true`/`false`, any case, spaces trimmed).
pub fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// Checks one topic config value; the error reads as Kafka's
/// (`Invalid value X for configuration Y: ...`).
pub fn validate_topic_config(name: &str, value: &str) -> Result<(), String> {
    let Some(def) = find(name) else {
        return Err(format!("Unknown topic config name: {name}"));
    };
    let invalid = |why: String| {
        Err(format!(
            "Invalid value {value} for configuration {name}: {why}"
        ))
    };
    let trimmed = value.trim();
    match def.check {
        C::Range(min, max) => match trimmed.parse::<i64>() {
            Ok(v) if v < min => invalid(format!("Value must be at least {min}")),
            Ok(v) if v > max => invalid(format!("Value must be no more than {max}")),
            Ok(_) => Ok(()),
            Err(_) => invalid(
                if def.kind == T::Int {
                    "Not a number of type INT"
                } else {
                    "Not a number of type LONG"
                }
                .into(),
            ),
        },
        C::GzipLevel => match trimmed.parse::<i64>() {
            Ok(-1) | Ok(1..=9) => Ok(()),
            Ok(_) => invalid("Value must be between 1 and 9, or -1 for the default".into()),
            Err(_) => invalid("Not a number of type INT".into()),
        },
        C::Between(min, max) => match trimmed.parse::<f64>() {
            Ok(v) if (min..=max).contains(&v) => Ok(()),
            Ok(_) => invalid(format!("Value must be between {min} and {max}")),
            Err(_) => invalid("Not a number of type DOUBLE".into()),
        },
        C::Bool if parse_bool(value).is_some() => Ok(()),
        C::Bool => invalid("Expected value to be either true or false".into()),
        C::OneOf(allowed) if allowed.contains(&trimmed) => Ok(()),
        C::OneOf(allowed) => invalid(format!("String must be one of: {}", allowed.join(", "))),
        C::ListOf(allowed) => {
            let items: Vec<&str> = list_items(value).collect();
            match items.iter().find(|p| !allowed.contains(p)) {
                Some(bad) => Err(format!(
                    "Invalid value {bad} for configuration {name}: String must be one of: {}",
                    allowed.join(", ")
                )),
                None if items.is_empty() => {
                    invalid(format!("must list at least one of {}", allowed.join(", ")))
                }
                None => Ok(()),
            }
        }
        C::ThrottledReplicas => {
            let items: Vec<&str> = list_items(value).collect();
            let pair = |item: &str| {
                item.split_once(':').is_some_and(|(p, b)| {
                    p.trim().parse::<u32>().is_ok() && b.trim().parse::<u32>().is_ok()
                })
            };
            if items == ["*"] || items.iter().all(|i| pair(i)) {
                Ok(())
            } else {
                invalid("must be the literal '*' or a list of replicas in the following format: [partitionId]:[brokerId],[partitionId]:[brokerId],...".into())
            }
        }
        C::Guarantee if WriteGuarantee::parse(value).is_some() => Ok(()),
        C::Guarantee => invalid(format!(
            "must be one of {}",
            WriteGuarantee::NAMES.join(", ")
        )),
    }
}

/// The codec number of a `compression.type` (`None` for `producer`).
pub fn codec(compression_type: &str) -> Option<i16> {
    match compression_type.trim() {
        "uncompressed" => Some(0),
        "gzip" => Some(1),
        "snappy" => Some(2),
        "lz4" => Some(3),
        "zstd" => Some(4),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalogue_is_sorted_and_every_config_has_a_valid_default() {
        let names: Vec<&str> = TOPIC_CONFIGS.iter().map(|d| d.name).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        let broker = BrokerConfig::default();
        for d in TOPIC_CONFIGS {
            let v = default_value(&broker, d.name).unwrap_or_else(|| panic!("{}", d.name));
            // The empty throttled-replica list is Kafka's default, not a value one sets.
            if !v.is_empty() {
                validate_topic_config(d.name, &v).unwrap_or_else(|e| panic!("{e}"));
            }
        }
    }

    #[test]
    fn values_are_checked_as_kafka_does() {
        for (name, value) in [
            ("compression.type", "zstd"),
            ("compression.gzip.level", "-1"),
            ("compression.gzip.level", "9"),
            ("compression.zstd.level", "-5"),
            ("message.timestamp.type", "LogAppendTime"),
            ("min.insync.replicas", "2"),
            ("preallocate", "TRUE"),
            ("unclean.leader.election.enable", "false"),
            ("leader.replication.throttled.replicas", "*"),
            ("follower.replication.throttled.replicas", "0:1,1:2"),
            ("retention.bytes", "-7"),
            ("local.retention.ms", "-2"),
            ("flush.messages", "1"),
            ("flush.ms", "0"),
        ] {
            assert!(validate_topic_config(name, value).is_ok(), "{name}={value}");
        }
        for (name, value, says) in [
            ("compression.type", "brotli", "String must be one of"),
            ("compression.gzip.level", "0", "between 1 and 9"),
            ("compression.lz4.level", "18", "no more than 17"),
            (
                "message.timestamp.type",
                "logappendtime",
                "String must be one of",
            ),
            ("min.insync.replicas", "0", "at least 1"),
            ("preallocate", "yes", "true or false"),
            (
                "leader.replication.throttled.replicas",
                "0-1",
                "[partitionId]:[brokerId]",
            ),
            ("local.retention.ms", "-3", "at least -2"),
            ("flush.messages", "0", "at least 1"),
            ("segment.index.bytes", "x", "type INT"),
            (
                "no.such.config",
                "1",
                "Unknown topic config name: no.such.config",
            ),
        ] {
            let e = validate_topic_config(name, value).unwrap_err();
            assert!(e.contains(says), "{name}={value}: {e}");
        }
    }
}
