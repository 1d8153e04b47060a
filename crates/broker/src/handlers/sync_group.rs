//! SyncGroup (key 14): the leader hands in the assignment; every member gets its part once
//! the group record is durable.

use exacta_coordinator::group::{Reply, SyncRequest};
use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};
use kafka_protocol::protocol::StrBytes;

use crate::groups::GroupRuntime;

pub async fn handle(groups: &GroupRuntime, request: SyncGroupRequest) -> SyncGroupResponse {
    let req = SyncRequest {
        group_id: request.group_id.to_string(),
        generation: request.generation_id,
        member_id: request.member_id.to_string(),
        instance_id: request.group_instance_id.map(|i| i.to_string()),
        protocol_type: request.protocol_type.map(|p| p.to_string()),
        protocol_name: request.protocol_name.map(|p| p.to_string()),
        assignments: request
            .assignments
            .into_iter()
            .map(|a| (a.member_id.to_string(), a.assignment))
            .collect(),
    };
    let group = req.group_id.clone();
    let r = match groups.call(&group, |c, id, now| c.sync(req, id, now)).await {
        Ok(Reply::Sync(r)) => r,
        Ok(_) => {
            return SyncGroupResponse::default()
                .with_error_code(exacta_types::ErrorCode::UnknownServerError.code())
        }
        Err(code) => return SyncGroupResponse::default().with_error_code(code.code()),
    };
    SyncGroupResponse::default()
        .with_error_code(r.error.code())
        .with_protocol_type(r.protocol_type.map(StrBytes::from_string))
        .with_protocol_name(r.protocol_name.map(StrBytes::from_string))
        .with_assignment(r.assignment)
}
