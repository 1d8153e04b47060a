//! JoinGroup (key 11): the classic rebalance protocol's join phase; the answer waits until
//! the generation is complete.

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};
use kafka_protocol::protocol::StrBytes;

use crate::groups::GroupRuntime;
use exacta_coordinator::group::{JoinRequest, Reply};

pub async fn handle(
    groups: &GroupRuntime,
    request: JoinGroupRequest,
    version: i16,
    client_id: String,
    client_host: String,
) -> JoinGroupResponse {
    let req = JoinRequest {
        group_id: request.group_id.to_string(),
        member_id: request.member_id.to_string(),
        instance_id: request.group_instance_id.map(|i| i.to_string()),
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata))
            .collect(),
        session_timeout_ms: request.session_timeout_ms,
        // v0 has no rebalance timeout: Kafka uses the session timeout.
        rebalance_timeout_ms: if version >= 1 {
            request.rebalance_timeout_ms
        } else {
            request.session_timeout_ms
        },
        client_id,
        client_host,
        require_known_member_id: version >= 4,
    };
    let group = req.group_id.clone();
    let reply = groups.call(&group, |c, id, now| c.join(req, id, now)).await;
    let r = match reply {
        Ok(Reply::Join(r)) => r,
        Ok(_) => {
            return JoinGroupResponse::default()
                .with_error_code(exacta_types::ErrorCode::UnknownServerError.code())
        }
        Err(code) => return JoinGroupResponse::default().with_error_code(code.code()),
    };
    JoinGroupResponse::default()
        .with_error_code(r.error.code())
        .with_generation_id(r.generation)
        .with_protocol_type(r.protocol_type.map(StrBytes::from_string))
        .with_protocol_name(
            r.protocol_name
                .map(StrBytes::from_string)
                .or_else(|| (version < 7).then(StrBytes::default)),
        )
        .with_leader(StrBytes::from_string(r.leader))
        .with_skip_assignment(r.skip_assignment && version >= 9)
        .with_member_id(StrBytes::from_string(r.member_id))
        .with_members(
            r.members
                .into_iter()
                .map(|(id, instance, metadata)| {
                    JoinGroupResponseMember::default()
                        .with_member_id(StrBytes::from_string(id))
                        .with_group_instance_id(instance.map(StrBytes::from_string))
                        .with_metadata(metadata)
                })
                .collect(),
        )
}
