//! DeleteGroups (key 42): empty groups only (NON_EMPTY_GROUP otherwise); their offsets and
//! metadata are tombstoned.

use exacta_coordinator::group::Output;
use exacta_types::ErrorCode;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use crate::groups::GroupRuntime;

pub async fn handle(groups: &GroupRuntime, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut response = DeleteGroupsResponse::default();
    for id in request.groups_names {
        let mut verdict = ErrorCode::None;
        let written = groups
            .run(&id, |c, _now| match c.delete_group(&id) {
                Ok(records) => Output {
                    records,
                    replies: Vec::new(),
                },
                Err(e) => {
                    verdict = e;
                    Output::default()
                }
            })
            .await;
        let code = written.err().map_or(verdict, |e| e.code);
        response.results.push(
            DeletableGroupResult::default()
                .with_group_id(id)
                .with_error_code(code.code()),
        );
    }
    response
}
