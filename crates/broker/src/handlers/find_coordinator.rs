//! FindCoordinator (key 10): this broker coordinates every group and transactional id.
//! Single (v0-v3) and batched (v4+) forms. In a cluster the coordinators are not
//! replicated yet, so every key is answered COORDINATOR_NOT_AVAILABLE (docs/cluster.md).

use exacta_types::ErrorCode;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::message;
use crate::partitions::Broker;

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

/// FindCoordinator v6 (KIP-932): the share coordinator.
const KEY_TYPE_SHARE: i8 = 2;

pub fn handle(
    broker: &Broker,
    request: FindCoordinatorRequest,
    version: i16,
    clustered: bool,
) -> FindCoordinatorResponse {
    let (host, port) = crate::advertised_host_port(broker.config.advertised()).unwrap_or_default();
    let node = BrokerId(broker.config.node_id);
    let answer = |key: &StrBytes| -> (i16, Option<StrBytes>) {
        match request.key_type {
            KEY_TYPE_GROUP if key.is_empty() => {
                return (ErrorCode::InvalidGroupId.code(), message("empty group id"))
            }
            KEY_TYPE_TRANSACTION if key.is_empty() => {
                return (
                    ErrorCode::InvalidRequest.code(),
                    message("empty transactional id"),
                )
            }
            KEY_TYPE_GROUP | KEY_TYPE_TRANSACTION if clustered => {
                return (
                    ErrorCode::CoordinatorNotAvailable.code(),
                    message("coordinators are not replicated in a cluster yet"),
                )
            }
            KEY_TYPE_GROUP | KEY_TYPE_TRANSACTION => {}
            KEY_TYPE_SHARE => {
                return (
                    ErrorCode::InvalidRequest.code(),
                    message("share groups (KIP-932) are not served"),
                )
            }
            other => {
                return (
                    ErrorCode::InvalidRequest.code(),
                    message(format!("unknown key type {other}")),
                )
            }
        }
        (ErrorCode::None.code(), None)
    };
    let mut response = FindCoordinatorResponse::default();
    if version >= 4 {
        response.coordinators = request
            .coordinator_keys
            .iter()
            .map(|key| {
                let (error_code, error_message) = answer(key);
                Coordinator::default()
                    .with_key(key.clone())
                    .with_node_id(if error_code == 0 { node } else { BrokerId(-1) })
                    .with_host(if error_code == 0 {
                        StrBytes::from_string(host.clone())
                    } else {
                        StrBytes::default()
                    })
                    .with_port(if error_code == 0 { port } else { -1 })
                    .with_error_code(error_code)
                    .with_error_message(error_message)
            })
            .collect();
    } else {
        let (error_code, error_message) = answer(&request.key);
        response.error_code = error_code;
        response.error_message = error_message;
        if error_code == 0 {
            response.node_id = node;
            response.host = StrBytes::from_string(host);
            response.port = port;
        } else {
            response.node_id = BrokerId(-1);
            response.port = -1;
        }
    }
    response
}
