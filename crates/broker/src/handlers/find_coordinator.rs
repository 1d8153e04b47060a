//! FindCoordinator (key 10): a single node coordinates every group and transactional id.
//! In a cluster a group's coordinator is the leader of the `__consumer_offsets` partition
//! the group id hashes to, a transactional id's the leader of its `__transaction_state`
//! partition (COORDINATOR_NOT_AVAILABLE until the topic exists). Single (v0-v3) and
//! batched (v4+) forms.

use exacta_types::ErrorCode;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::message;
use crate::cluster::ClusterRuntime;
use crate::partitions::Broker;

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

/// FindCoordinator v6 (KIP-932): the share coordinator.
const KEY_TYPE_SHARE: i8 = 2;

/// Where a key's coordinator is: node, host and port.
type Found = (i32, String, i32);

/// The leader of the partition of internal topic NAME that KEY hashes to, as the cluster
/// has it.
fn coordinator(cluster: &ClusterRuntime, name: &str, key: &str) -> Result<Found, String> {
    let metadata = cluster.metadata();
    let Some(topic) = metadata.topics.get(name) else {
        return Err(format!("{name} is not created yet"));
    };
    let index = exacta_coordinator::group::partition_for(key, topic.partitions.len() as i32);
    let leader = topic.partitions[index as usize].leader;
    let address = metadata
        .brokers
        .get(&leader)
        .map(|b| b.address.clone())
        .ok_or_else(|| format!("the coordinator's broker {leader} is not registered"))?;
    let (host, port) = crate::advertised_host_port(&address)?;
    Ok((leader as i32, host, port))
}

pub fn handle(
    broker: &Broker,
    cluster: Option<&ClusterRuntime>,
    request: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let (host, port) = crate::advertised_host_port(broker.config.advertised()).unwrap_or_default();
    let here: Found = (broker.config.node_id, host, port);
    let answer = |key: &StrBytes| -> Result<Found, (i16, Option<StrBytes>)> {
        match request.key_type {
            KEY_TYPE_GROUP if key.is_empty() => {
                Err((ErrorCode::InvalidGroupId.code(), message("empty group id")))
            }
            KEY_TYPE_TRANSACTION if key.is_empty() => Err((
                ErrorCode::InvalidRequest.code(),
                message("empty transactional id"),
            )),
            KEY_TYPE_GROUP | KEY_TYPE_TRANSACTION => match cluster {
                None => Ok(here.clone()),
                Some(cluster) => {
                    let name = if request.key_type == KEY_TYPE_GROUP {
                        crate::groups::OFFSETS_TOPIC
                    } else {
                        crate::txns::TXN_TOPIC
                    };
                    coordinator(cluster, name, key)
                        .map_err(|why| (ErrorCode::CoordinatorNotAvailable.code(), message(why)))
                }
            },
            KEY_TYPE_SHARE => Err((
                ErrorCode::InvalidRequest.code(),
                message("share groups (KIP-932) are not served"),
            )),
            other => Err((
                ErrorCode::InvalidRequest.code(),
                message(format!("unknown key type {other}")),
            )),
        }
    };
    let mut response = FindCoordinatorResponse::default();
    if version >= 4 {
        response.coordinators = request
            .coordinator_keys
            .iter()
            .map(|key| {
                let c = Coordinator::default().with_key(key.clone());
                match answer(key) {
                    Ok((node, host, port)) => c
                        .with_node_id(BrokerId(node))
                        .with_host(StrBytes::from_string(host))
                        .with_port(port),
                    Err((code, why)) => c
                        .with_node_id(BrokerId(-1))
                        .with_port(-1)
                        .with_error_code(code)
                        .with_error_message(why),
                }
            })
            .collect();
    } else {
        match answer(&request.key) {
            Ok((node, host, port)) => {
                response.node_id = BrokerId(node);
                response.host = StrBytes::from_string(host);
                response.port = port;
            }
            Err((code, why)) => {
                response.error_code = code;
                response.error_message = why;
                response.node_id = BrokerId(-1);
                response.port = -1;
            }
        }
    }
    response
}
