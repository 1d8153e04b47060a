//! Admin APIs that move leaders and replicas or manage ACLs, answered as a single-node
//! Kafka 4.x cluster without an authorizer answers them, so that tools calling them get
//! Kafka's own answer rather than an unsupported API:
//!
//! - ElectLeaders (43): every partition's leader is already its preferred (and only)
//!   replica: ELECTION_NOT_NEEDED for each partition named; nothing for "all partitions".
//! - AlterPartitionReassignments (45): a partition can only be "moved" to the replicas it
//!   has (`[node id]`), which completes at once; other brokers are not registered
//!   (INVALID_REPLICA_ASSIGNMENT), a cancellation finds nothing in progress
//!   (NO_REASSIGNMENT_IN_PROGRESS).
//! - ListPartitionReassignments (46): none is ever in progress.
//! - DescribeAcls / CreateAcls / DeleteAcls (29-31): SECURITY_DISABLED, as a Kafka broker
//!   without `authorizer.class.name` answers.

use exacta_types::ErrorCode;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::DeleteAclsFilterResult;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, CreateAclsRequest,
    CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse, DescribeAclsRequest,
    DescribeAclsResponse, ElectLeadersRequest, ElectLeadersResponse,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
};

use super::message;
use crate::partitions::Broker;

const NO_AUTHORIZER: &str = "No Authorizer is configured on the broker";

/// An error code and message for one partition, or none.
fn partition_error(broker: &Broker, topic: &str, partition: i32) -> Option<(ErrorCode, String)> {
    broker.partition(topic, partition).is_none().then(|| {
        (
            ErrorCode::UnknownTopicOrPartition,
            format!("unknown topic or partition {topic}-{partition}"),
        )
    })
}

pub fn elect_leaders(broker: &Broker, request: ElectLeadersRequest) -> ElectLeadersResponse {
    let mut response = ElectLeadersResponse::default();
    // Null asks for every partition: Kafka lists only those it elected, here none.
    let Some(topics) = request.topic_partitions else {
        return response;
    };
    for topic in topics {
        let name = topic.topic.to_string();
        let partition_result = topic
            .partitions
            .iter()
            .map(|&p| {
                let (code, text) = if !matches!(request.election_type, 0 | 1) {
                    (
                        ErrorCode::InvalidRequest,
                        format!("unknown election type {}", request.election_type),
                    )
                } else if let Some(e) = partition_error(broker, &name, p) {
                    e
                } else {
                    (
                        ErrorCode::ElectionNotNeeded,
                        "Leader election not needed for topic partition.".into(),
                    )
                };
                PartitionResult::default()
                    .with_partition_id(p)
                    .with_error_code(code.code())
                    .with_error_message(message(text))
            })
            .collect();
        response.replica_election_results.push(
            ReplicaElectionResult::default()
                .with_topic(topic.topic)
                .with_partition_result(partition_result),
        );
    }
    response
}

pub fn alter_partition_reassignments(
    broker: &Broker,
    request: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let node = broker.config.node_id;
    let mut response = AlterPartitionReassignmentsResponse::default()
        .with_allow_replication_factor_change(request.allow_replication_factor_change);
    for topic in request.topics {
        let name = topic.name.to_string();
        let partitions = topic
            .partitions
            .iter()
            .map(|p| {
                let outcome = match (
                    partition_error(broker, &name, p.partition_index),
                    &p.replicas,
                ) {
                    (Some(e), _) => Err(e),
                    (None, None) => Err((
                        ErrorCode::NoReassignmentInProgress,
                        format!(
                            "no reassignment of {name}-{} is in progress",
                            p.partition_index
                        ),
                    )),
                    (None, Some(replicas)) => check_replicas(replicas, node),
                };
                let (code, text) = match outcome {
                    Ok(()) => (ErrorCode::None, None),
                    Err((code, text)) => (code, message(text)),
                };
                ReassignablePartitionResponse::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(code.code())
                    .with_error_message(text)
            })
            .collect();
        response.responses.push(
            ReassignableTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    response
}

/// A target replica list on one node: exactly this node (Kafka's manual-assignment checks).
fn check_replicas(
    replicas: &[kafka_protocol::messages::BrokerId],
    node: i32,
) -> Result<(), (ErrorCode, String)> {
    let invalid = |m: String| Err((ErrorCode::InvalidReplicaAssignment, m));
    if replicas.is_empty() {
        return invalid("The manual partition assignment includes an empty replica list.".into());
    }
    for (i, r) in replicas.iter().enumerate() {
        if replicas[..i].contains(r) {
            return invalid(format!(
                "The manual partition assignment includes the broker {} more than once.",
                r.0
            ));
        }
        if r.0 != node {
            return invalid(format!(
                "The manual partition assignment includes broker {}, but no such broker is registered.",
                r.0
            ));
        }
    }
    // The replicas it already has: done at once.
    Ok(())
}

pub fn list_partition_reassignments(
    _request: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    ListPartitionReassignmentsResponse::default()
}

pub fn describe_acls(_request: DescribeAclsRequest) -> DescribeAclsResponse {
    DescribeAclsResponse::default()
        .with_error_code(ErrorCode::SecurityDisabled.code())
        .with_error_message(message(NO_AUTHORIZER))
}

pub fn create_acls(request: CreateAclsRequest) -> CreateAclsResponse {
    CreateAclsResponse::default().with_results(
        request
            .creations
            .iter()
            .map(|_| {
                AclCreationResult::default()
                    .with_error_code(ErrorCode::SecurityDisabled.code())
                    .with_error_message(message(NO_AUTHORIZER))
            })
            .collect(),
    )
}

pub fn delete_acls(request: DeleteAclsRequest) -> DeleteAclsResponse {
    DeleteAclsResponse::default().with_filter_results(
        request
            .filters
            .iter()
            .map(|_| {
                DeleteAclsFilterResult::default()
                    .with_error_code(ErrorCode::SecurityDisabled.code())
                    .with_error_message(message(NO_AUTHORIZER))
            })
            .collect(),
    )
}
