//! DeleteRecords (key 21): moves a partition's log start offset forward (durably; whole
//! segments below it are deleted). An offset of -1 means the high watermark; past the
//! high watermark is OFFSET_OUT_OF_RANGE; internal topics refuse it (their records are
//! coordinator state), as on Kafka. The answer carries each partition's low watermark.

use exacta_types::ErrorCode;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use crate::partitions::{ApiError, Broker};

pub fn handle(broker: &Broker, request: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let mut response = DeleteRecordsResponse::default();
    for topic in request.topics {
        let name = topic.name.to_string();
        let mut result = DeleteRecordsTopicResult::default().with_name(topic.name.clone());
        for p in topic.partitions {
            let outcome = if exacta_types::is_internal_topic(&name) {
                Err(ApiError::new(
                    ErrorCode::InvalidTopicException,
                    format!("cannot delete records of internal topic {name}"),
                ))
            } else {
                match broker.partition(&name, p.partition_index) {
                    Some(partition) => partition.delete_records(p.offset),
                    None => Err(ApiError::new(
                        ErrorCode::UnknownTopicOrPartition,
                        format!("unknown partition {name}-{}", p.partition_index),
                    )),
                }
            };
            let mut answer =
                DeleteRecordsPartitionResult::default().with_partition_index(p.partition_index);
            match outcome {
                Ok(low_watermark) => {
                    tracing::info!(topic = %name, partition = p.partition_index, low_watermark, "records deleted");
                    answer.low_watermark = low_watermark;
                }
                Err(e) => {
                    // The response has no message field: the reason goes to the log.
                    tracing::info!(topic = %name, partition = p.partition_index, offset = p.offset, error = %e.message, "DeleteRecords refused");
                    answer.low_watermark = -1;
                    answer.error_code = e.code.code();
                }
            }
            result.partitions.push(answer);
        }
        response.topics.push(result);
    }
    response
}
