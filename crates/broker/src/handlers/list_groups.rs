//! ListGroups (key 16), with the state (v4+) and type (v5+) filters.

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};
use kafka_protocol::protocol::StrBytes;

use crate::groups::GroupRuntime;

pub fn handle(groups: &GroupRuntime, request: ListGroupsRequest) -> ListGroupsResponse {
    let mut listed: Vec<_> = groups
        .each(|c| c.list_groups())
        .into_iter()
        .flatten()
        .collect();
    listed.sort_by(|a, b| a.group_id.cmp(&b.group_id));
    let mut response = ListGroupsResponse::default();
    response.groups = listed
        .into_iter()
        .filter(|g| {
            request.states_filter.is_empty()
                || request
                    .states_filter
                    .iter()
                    .any(|s| s.eq_ignore_ascii_case(g.state))
        })
        .filter(|g| {
            request.types_filter.is_empty()
                || request
                    .types_filter
                    .iter()
                    .any(|t| t.eq_ignore_ascii_case(g.group_type))
        })
        .map(|g| {
            ListedGroup::default()
                .with_group_id(GroupId(StrBytes::from_string(g.group_id)))
                .with_protocol_type(StrBytes::from_string(g.protocol_type))
                .with_group_state(StrBytes::from_static_str(g.state))
                .with_group_type(StrBytes::from_static_str(g.group_type))
        })
        .collect();
    response
}
