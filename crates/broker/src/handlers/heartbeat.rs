//! Heartbeat (key 12): keeps a member's session alive; REBALANCE_IN_PROGRESS tells it to
//! rejoin.

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use crate::groups::GroupRuntime;

pub fn handle(groups: &GroupRuntime, request: HeartbeatRequest) -> HeartbeatResponse {
    let now = crate::now_ms();
    let error = groups
        .with_group(&request.group_id, |c| {
            c.heartbeat(
                &request.group_id,
                request.generation_id,
                &request.member_id,
                request.group_instance_id.as_deref(),
                now,
            )
        })
        .unwrap_or_else(|not_here| not_here);
    HeartbeatResponse::default().with_error_code(error.code())
}
