//! ConsumerGroupHeartbeat (key 68, KIP-848): joins, heartbeats and leaves of the new
//! consumer group protocol. The state machine is `GroupCoordinator::consumer_heartbeat`;
//! the answer goes out once the records it wrote are durable.

use exacta_coordinator::consumer::{Assignment, HeartbeatRequest};
use exacta_coordinator::group::Output;
use exacta_types::ErrorCode;
use kafka_protocol::messages::consumer_group_heartbeat_response::{self, TopicPartitions};
use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse};
use kafka_protocol::protocol::StrBytes;

use crate::groups::GroupRuntime;
use crate::partitions::Broker;

pub async fn handle(
    broker: &Broker,
    groups: &GroupRuntime,
    request: ConsumerGroupHeartbeatRequest,
    version: i16,
    client_id: String,
    client_host: String,
) -> ConsumerGroupHeartbeatResponse {
    let owned = request.topic_partitions.map(|tps| {
        let mut owned = Assignment::new();
        for tp in tps {
            owned.entry(tp.topic_id).or_default().extend(tp.partitions);
        }
        owned
    });
    let req = HeartbeatRequest {
        group_id: request.group_id.to_string(),
        member_id: request.member_id.to_string(),
        member_epoch: request.member_epoch,
        instance_id: request.instance_id.map(|s| s.to_string()),
        rack_id: request.rack_id.map(|s| s.to_string()),
        rebalance_timeout_ms: request.rebalance_timeout_ms,
        subscribed_topic_names: request
            .subscribed_topic_names
            .map(|names| names.into_iter().map(|n| n.to_string()).collect()),
        subscribed_topic_regex: request.subscribed_topic_regex.map(|s| s.to_string()),
        server_assignor: request.server_assignor.map(|s| s.to_string()),
        owned,
        client_id,
        client_host,
        version,
    };
    let mut answer = None;
    let written = groups
        .run(&req.group_id, |c, now| {
            let (response, records) = c.consumer_heartbeat(&req, broker, now);
            answer = Some(response);
            Output {
                records,
                replies: Vec::new(),
            }
        })
        .await;
    let mut response = ConsumerGroupHeartbeatResponse::default();
    match (written, answer) {
        (Err(e), _) => {
            response.error_code = e.code.code();
            response.error_message = Some(StrBytes::from_string(e.message));
        }
        (Ok(()), None) => response.error_code = ErrorCode::UnknownServerError.code(),
        (Ok(()), Some(a)) => {
            response.error_code = a.error.code();
            response.error_message = a.message.map(StrBytes::from_string);
            response.member_id = a.member_id.map(StrBytes::from_string);
            response.member_epoch = a.member_epoch;
            response.heartbeat_interval_ms = a.heartbeat_interval_ms;
            response.assignment = a.assignment.map(|assigned| {
                consumer_group_heartbeat_response::Assignment::default().with_topic_partitions(
                    assigned
                        .into_iter()
                        .map(|(topic, ps)| {
                            TopicPartitions::default()
                                .with_topic_id(topic)
                                .with_partitions(ps.into_iter().collect())
                        })
                        .collect(),
                )
            });
        }
    }
    response
}
