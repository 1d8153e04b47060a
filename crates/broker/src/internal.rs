//! Internal topics (`__consumer_offsets`, `__transaction_state`): compacted, never
//! deleted by age or size, and replayed record by record to rebuild a coordinator.
//!
//! To ensure correctness: the coordinators' records are keyed (a group, a group's offset
//! for a partition, a transactional id) and later records supersede earlier ones, so
//! compaction keeps exactly the live state and a restart replays that, not the history.
//! Retention would drop live state, so the configs that decide deletion are pinned
//! ([`PINNED_CONFIGS`]) and [`check_configs`] refuses any alteration that would change
//! them or shrink segments below sane minimums; retention never runs on these topics.

use std::collections::BTreeMap;
use std::sync::Arc;

use exacta_types::ErrorCode;
use exacta_wire::kafka_protocol::records::{Record, RecordBatchDecoder};

use crate::partitions::{ApiError, Broker, Partition, Topic};

/// The topic, created with `partitions` if missing, with the pinned configs and segments
/// of `segment_bytes` (`offsets.topic.segment.bytes` / `transaction.state.log.segment.bytes`:
/// only closed segments are compacted, so this bounds what a restart replays beyond the
/// live state). A data directory from before compaction gets them added.
pub fn open_topic(
    broker: &Broker,
    name: &str,
    partitions: i32,
    segment_bytes: u64,
) -> Result<Arc<Topic>, ApiError> {
    let mut wanted = pinned_configs();
    wanted.insert("segment.bytes".into(), segment_bytes.to_string());
    let Some(topic) = broker.topic(name) else {
        return broker.create_topic(name, partitions, wanted, false);
    };
    let missing = PINNED_CONFIGS
        .iter()
        .any(|(k, v)| topic.configs.get(*k).map(String::as_str) != Some(*v))
        || !topic.configs.contains_key("segment.bytes");
    if !missing {
        return Ok(topic);
    }
    tracing::info!(
        topic = name,
        "pinning the internal topic's configs (compaction on)"
    );
    let pin = |c: &mut BTreeMap<String, String>| {
        for (k, v) in wanted {
            if PINNED_CONFIGS.iter().any(|(p, _)| *p == k) || !c.contains_key(&k) {
                c.insert(k, v);
            }
        }
        Ok(())
    };
    broker.alter_topic_configs(name, pin, false)?;
    broker
        .topic(name)
        .ok_or_else(|| ApiError::new(ErrorCode::UnknownTopicOrPartition, name))
}

/// Config overrides every internal topic has and keeps: compacted, nothing deleted by age
/// or size.
pub const PINNED_CONFIGS: &[(&str, &str)] = &[
    ("cleanup.policy", "compact"),
    ("retention.ms", "-1"),
    ("retention.bytes", "-1"),
];

/// Smallest `segment.bytes` an internal topic may be given (a segment per few records
/// would mean a file per few records).
pub const SEGMENT_BYTES_MIN: i64 = 1 << 20;
/// Smallest `segment.ms` an internal topic may be given.
pub const SEGMENT_MS_MIN: i64 = 3_600_000;

/// The pinned overrides as a config map.
pub fn pinned_configs() -> BTreeMap<String, String> {
    PINNED_CONFIGS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Checks the overrides an alteration would leave on internal topic `name`: the pinned
/// configs unchanged, no flush override, segments not below the minimums.
/// Other configs (`max.message.bytes`, `exacta.write.guarantee`) are free: they concern
/// client writes, which internal topics never take.
pub fn check_configs(name: &str, configs: &BTreeMap<String, String>) -> Result<(), ApiError> {
    let refuse = |why: String| {
        Err(ApiError::new(
            ErrorCode::PolicyViolation,
            format!("{name} is an internal topic holding coordinator state: {why}"),
        ))
    };
    for (key, pinned) in PINNED_CONFIGS {
        if configs.get(*key).map(String::as_str) != Some(*pinned) {
            return refuse(format!(
                "{key} must stay {pinned} (compacted, never deleted by age or size)"
            ));
        }
    }
    // Coordinator state is as durable as the broker's flush policy makes it, never less.
    for key in ["flush.messages", "flush.ms"] {
        if configs.contains_key(key) {
            return refuse(format!(
                "{key} cannot be overridden: coordinator state follows the broker's flush_policy"
            ));
        }
    }
    let at_least = |key: &str, min: i64| -> Result<(), ApiError> {
        match configs.get(key).map(|v| v.parse::<i64>()) {
            Some(Ok(v)) if v < min => refuse(format!("{key} must be at least {min}, got {v}")),
            _ => Ok(()),
        }
    };
    at_least("segment.bytes", SEGMENT_BYTES_MIN)?;
    at_least("segment.ms", SEGMENT_MS_MIN)
}

/// Calls `apply` with every record of every partition of `topic`, in log order.
pub fn replay(topic: &Topic, mut apply: impl FnMut(Record)) -> Result<(), ApiError> {
    replay_partitions(topic, |_, record| apply(record))
}

/// As [`replay`], with the index of the partition each record is in.
pub fn replay_partitions(
    topic: &Topic,
    mut apply: impl FnMut(i32, Record),
) -> Result<(), ApiError> {
    for partition in &topic.partitions {
        replay_partition(partition, |record| apply(partition.index, record))?;
    }
    Ok(())
}

/// Calls `apply` with every record of one partition below its high watermark, in log
/// order (a coordinator taking over the partition's state).
pub fn replay_partition(
    partition: &Partition,
    mut apply: impl FnMut(Record),
) -> Result<(), ApiError> {
    let mut offset = partition.log_start_offset();
    loop {
        let (read, hw) = partition.read(offset, 8 << 20)?;
        if read.records.is_empty() {
            break;
        }
        let mut buf = read.records.clone();
        let sets = RecordBatchDecoder::decode_all(&mut buf).map_err(|e| {
            ApiError::new(
                ErrorCode::CorruptMessage,
                format!("{}-{}: {e}", partition.topic, partition.index),
            )
        })?;
        for record in sets.into_iter().flat_map(|s| s.records) {
            offset = record.offset + 1;
            apply(record);
        }
        if offset >= hw {
            break;
        }
    }
    Ok(())
}
