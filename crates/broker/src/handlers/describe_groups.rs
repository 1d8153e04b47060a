//! DescribeGroups (key 15): state, protocol and members with their metadata and assignment.
//! An unknown group, or a group of the new consumer protocol, is reported as "Dead" with no
//! members, as Kafka does; from v6 (KIP-1043) also with GROUP_ID_NOT_FOUND and a message.

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};
use kafka_protocol::protocol::StrBytes;

use crate::groups::GroupRuntime;

pub fn handle(
    groups: &GroupRuntime,
    request: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let mut response = DescribeGroupsResponse::default();
    for id in request.groups {
        let mut g = DescribedGroup::default()
            .with_group_id(id.clone())
            .with_authorized_operations(i32::MIN);
        let (described, consumer) =
            match groups.with_group(&id, |c| (c.describe(&id), c.is_consumer_group(&id))) {
                Ok(found) => found,
                Err(code) => {
                    g.error_code = code.code();
                    response.groups.push(g);
                    continue;
                }
            };
        match described {
            None => {
                g.group_state = StrBytes::from_static_str("Dead");
                if version >= 6 {
                    g.error_code = exacta_types::ErrorCode::GroupIdNotFound.code();
                    g.error_message = Some(StrBytes::from_string(if consumer {
                        format!("Group {} is not a classic group.", id.0)
                    } else {
                        format!("Group {} not found.", id.0)
                    }));
                }
            }
            Some(d) => {
                g.group_state = StrBytes::from_static_str(d.state.name());
                g.protocol_type = StrBytes::from_string(d.protocol_type);
                g.protocol_data = StrBytes::from_string(d.protocol);
                g.members = d
                    .members
                    .into_iter()
                    .map(|m| {
                        DescribedGroupMember::default()
                            .with_member_id(StrBytes::from_string(m.member_id))
                            .with_group_instance_id(m.instance_id.map(StrBytes::from_string))
                            .with_client_id(StrBytes::from_string(m.client_id))
                            .with_client_host(StrBytes::from_string(m.client_host))
                            .with_member_metadata(m.metadata)
                            .with_member_assignment(m.assignment)
                    })
                    .collect();
            }
        }
        response.groups.push(g);
    }
    response
}
