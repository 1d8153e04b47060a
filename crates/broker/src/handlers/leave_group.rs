//! LeaveGroup (key 13): one member (v0-v2) or a batch of members, static ones by instance
//! id (v3+).

use exacta_types::ErrorCode;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use crate::groups::GroupRuntime;

pub async fn handle(
    groups: &GroupRuntime,
    request: LeaveGroupRequest,
    version: i16,
) -> LeaveGroupResponse {
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        request
            .members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|i| i.to_string()),
                )
            })
            .collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    let mut errors = Vec::new();
    let written = groups
        .run(&request.group_id, |c, now| {
            let (e, out) = c.leave(&request.group_id, &members, now);
            errors = e;
            out
        })
        .await;
    let mut response = LeaveGroupResponse::default();
    if let Err(e) = written {
        response.error_code = e.code.code();
        return response;
    }
    if version >= 3 {
        response.members = request
            .members
            .into_iter()
            .zip(errors)
            .map(|(m, e)| {
                MemberResponse::default()
                    .with_member_id(m.member_id)
                    .with_group_instance_id(m.group_instance_id)
                    .with_error_code(e.code())
            })
            .collect();
    } else {
        response.error_code = errors.first().copied().unwrap_or(ErrorCode::None).code();
    }
    response
}
