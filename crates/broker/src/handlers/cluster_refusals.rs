//! Requests a cluster does not take yet (docs/cluster.md): each would change one
//! broker's copy only, so every resource in them is refused with INVALID_REQUEST and a
//! message, instead of letting the replicas diverge.

use exacta_types::ErrorCode;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest,
    AlterConfigsResponse, CreatePartitionsRequest, CreatePartitionsResponse, DeleteRecordsRequest,
    DeleteRecordsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};

use super::message;

const CODE: ErrorCode = ErrorCode::InvalidRequest;

fn why(what: &str) -> String {
    format!("{what} is not available in a cluster yet")
}

pub fn create_partitions(request: CreatePartitionsRequest) -> CreatePartitionsResponse {
    CreatePartitionsResponse::default().with_results(
        request
            .topics
            .into_iter()
            .map(|t| {
                CreatePartitionsTopicResult::default()
                    .with_name(t.name)
                    .with_error_code(CODE.code())
                    .with_error_message(message(why("CreatePartitions")))
            })
            .collect(),
    )
}

pub fn alter_configs(request: AlterConfigsRequest) -> AlterConfigsResponse {
    AlterConfigsResponse::default().with_responses(
        request
            .resources
            .into_iter()
            .map(|r| {
                alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_resource_type(r.resource_type)
                    .with_resource_name(r.resource_name)
                    .with_error_code(CODE.code())
                    .with_error_message(message(why("AlterConfigs")))
            })
            .collect(),
    )
}

pub fn incremental_alter_configs(
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    IncrementalAlterConfigsResponse::default().with_responses(
        request
            .resources
            .into_iter()
            .map(|r| {
                incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_resource_type(r.resource_type)
                    .with_resource_name(r.resource_name)
                    .with_error_code(CODE.code())
                    .with_error_message(message(why("IncrementalAlterConfigs")))
            })
            .collect(),
    )
}

/// DeleteRecords has no error message field: the code alone.
pub fn delete_records(request: DeleteRecordsRequest) -> DeleteRecordsResponse {
    tracing::info!("{}", why("DeleteRecords"));
    DeleteRecordsResponse::default().with_topics(
        request
            .topics
            .into_iter()
            .map(|t| {
                DeleteRecordsTopicResult::default()
                    .with_name(t.name)
                    .with_partitions(
                        t.partitions
                            .into_iter()
                            .map(|p| {
                                DeleteRecordsPartitionResult::default()
                                    .with_partition_index(p.partition_index)
                                    .with_low_watermark(-1)
                                    .with_error_code(CODE.code())
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}
