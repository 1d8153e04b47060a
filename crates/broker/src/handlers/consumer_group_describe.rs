//! ConsumerGroupDescribe (key 69, KIP-848): a new-protocol group with its epochs, assignor
//! and members (subscriptions, current and target assignments). A classic or unknown group
//! is GROUP_ID_NOT_FOUND, as on Kafka.

use exacta_coordinator::consumer::Assignment;
use exacta_types::ErrorCode;
use kafka_protocol::messages::consumer_group_describe_response::{
    self, DescribedGroup, Member, TopicPartitions,
};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::groups::GroupRuntime;
use crate::partitions::Broker;

/// `member_type` of a member of the consumer protocol (v1+).
const CONSUMER_MEMBER: i8 = 1;

fn assignment(broker: &Broker, a: Assignment) -> consumer_group_describe_response::Assignment {
    consumer_group_describe_response::Assignment::default().with_topic_partitions(
        a.into_iter()
            .map(|(id, ps)| {
                let name = broker
                    .topic_by_id(id)
                    .map(|t| t.name.clone())
                    .unwrap_or_default();
                TopicPartitions::default()
                    .with_topic_id(id)
                    .with_topic_name(TopicName(StrBytes::from_string(name)))
                    .with_partitions(ps.into_iter().collect())
            })
            .collect(),
    )
}

pub fn handle(
    broker: &Broker,
    groups: &GroupRuntime,
    request: ConsumerGroupDescribeRequest,
) -> ConsumerGroupDescribeResponse {
    let mut response = ConsumerGroupDescribeResponse::default();
    for id in request.group_ids {
        let described = groups.with_group(&id, |c| {
            c.describe_consumer_group(&id)
                .ok_or_else(|| c.has_group(&id))
        });
        let mut g = DescribedGroup::default()
            .with_group_id(id.clone())
            .with_authorized_operations(i32::MIN);
        let described = match described {
            Ok(d) => d,
            Err(code) => {
                response.groups.push(g.with_error_code(code.code()));
                continue;
            }
        };
        match described {
            Err(exists) => {
                g.error_code = ErrorCode::GroupIdNotFound.code();
                g.error_message = Some(StrBytes::from_string(if exists {
                    format!("Group {} is not a consumer group.", id.0)
                } else {
                    format!("Group {} not found.", id.0)
                }));
            }
            Ok(d) => {
                g.group_state = StrBytes::from_static_str(d.state.name());
                g.group_epoch = d.group_epoch;
                g.assignment_epoch = d.assignment_epoch;
                g.assignor_name = StrBytes::from_string(d.assignor);
                g.members = d
                    .members
                    .into_iter()
                    .map(|m| {
                        let v = m.value;
                        Member::default()
                            .with_member_id(StrBytes::from_string(v.member_id))
                            .with_instance_id(v.instance_id.map(StrBytes::from_string))
                            .with_rack_id(v.rack_id.map(StrBytes::from_string))
                            .with_member_epoch(v.member_epoch)
                            .with_client_id(StrBytes::from_string(v.client_id))
                            .with_client_host(StrBytes::from_string(v.client_host))
                            .with_subscribed_topic_names(
                                v.subscribed_names
                                    .into_iter()
                                    .map(|n| TopicName(StrBytes::from_string(n)))
                                    .collect(),
                            )
                            .with_subscribed_topic_regex(
                                v.subscribed_regex.map(StrBytes::from_string),
                            )
                            .with_assignment(assignment(broker, v.assigned))
                            .with_target_assignment(assignment(broker, m.target))
                            .with_member_type(CONSUMER_MEMBER)
                    })
                    .collect();
            }
        }
        response.groups.push(g);
    }
    response
}
