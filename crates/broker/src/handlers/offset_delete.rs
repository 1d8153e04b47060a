//! OffsetDelete (key 47): removes committed offsets of partitions the group does not
//! consume (GROUP_SUBSCRIBED_TO_TOPIC otherwise).

use exacta_coordinator::group::Output;
use exacta_types::ErrorCode;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

use crate::groups::GroupRuntime;

pub async fn handle(groups: &GroupRuntime, request: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let partitions: Vec<(String, i32)> = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.name.to_string(), p.partition_index))
        })
        .collect();
    let mut verdict = Err(ErrorCode::UnknownServerError);
    let written = groups
        .run(&request.group_id, |c, _now| {
            verdict = c.delete_offsets(&request.group_id, &partitions);
            let records = match &verdict {
                Ok(rs) => rs.iter().filter_map(|(_, r)| r.clone()).collect(),
                Err(_) => Vec::new(),
            };
            Output {
                records,
                replies: Vec::new(),
            }
        })
        .await;
    let mut response = OffsetDeleteResponse::default();
    let codes: Vec<ErrorCode> = match (written, verdict) {
        (Err(e), _) => {
            response.error_code = e.code.code();
            return response;
        }
        (Ok(()), Err(e)) => {
            response.error_code = e.code();
            return response;
        }
        (Ok(()), Ok(rs)) => rs.into_iter().map(|(e, _)| e).collect(),
    };
    let mut codes = codes.into_iter();
    for topic in request.topics {
        let mut t = OffsetDeleteResponseTopic::default().with_name(topic.name);
        for p in topic.partitions {
            t.partitions.push(
                OffsetDeleteResponsePartition::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(codes.next().unwrap_or(ErrorCode::None).code()),
            );
        }
        response.topics.push(t);
    }
    response
}
