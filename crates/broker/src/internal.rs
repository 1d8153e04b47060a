//! Internal topics (`__consumer_offsets`, `__transaction_state`): created at start with
//! retention disabled, and replayed record by record to rebuild a coordinator.

use std::collections::BTreeMap;
use std::sync::Arc;

use exacta_types::ErrorCode;
use exacta_wire::kafka_protocol::records::{Record, RecordBatchDecoder};

use crate::partitions::{ApiError, Broker, Topic};

/// The topic, created with `partitions` if missing. Its records are never deleted by age
/// or size: without compaction, retention would drop live state.
pub fn open_topic(broker: &Broker, name: &str, partitions: i32) -> Result<Arc<Topic>, ApiError> {
    if let Some(topic) = broker.topic(name) {
        return Ok(topic);
    }
    let keep_forever: BTreeMap<String, String> =
        [("retention.ms", "-1"), ("retention.bytes", "-1")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    broker.create_topic(name, partitions, keep_forever, false)
}

/// Calls `apply` with every record of every partition of `topic`, in log order.
pub fn replay(topic: &Topic, mut apply: impl FnMut(Record)) -> Result<(), ApiError> {
    for partition in &topic.partitions {
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
                    format!("{}-{}: {e}", topic.name, partition.index),
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
    }
    Ok(())
}
