//! InitProducerId (key 22). Without a transactional id: a new producer id at epoch 0, or
//! an epoch bump for an id the client already holds (v3+, KIP-360); ids come from durable
//! blocks. With a transactional id: the transaction coordinator's id and a bumped epoch,
//! fencing any previous instance (its open transaction is aborted first).

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::Node;

/// InitProducerId v4 is the first to know PRODUCER_FENCED (KIP-588).
const PRODUCER_FENCED_MIN_VERSION: i16 = 4;

pub async fn handle(
    node: &Node,
    request: InitProducerIdRequest,
    version: i16,
) -> InitProducerIdResponse {
    let mut response = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let result = match &request.transactional_id {
        Some(id) => {
            let expected = (request.producer_id.0 >= 0)
                .then_some((request.producer_id.0, request.producer_epoch));
            node.txns
                .init_producer_id(id, request.transaction_timeout_ms, expected)
                .await
        }
        None => match &node.cluster {
            Some(cluster) => cluster
                .init_producer_id(request.producer_id.0, request.producer_epoch)
                .await
                .map_err(|e| e.code),
            None => node
                .broker
                .init_producer_id(request.producer_id.0, request.producer_epoch)
                .map_err(|e| e.code),
        },
    };
    match result {
        Ok((id, epoch)) => {
            response.producer_id = ProducerId(id);
            response.producer_epoch = epoch;
        }
        Err(code) => {
            tracing::debug!(error = %code, "InitProducerId refused");
            response.error_code = code.fenced_for(version, PRODUCER_FENCED_MIN_VERSION).code();
        }
    }
    response
}
