//! InitProducerId (key 22) for idempotent producers: a new producer id at epoch 0, or an
//! epoch bump for an id the client already holds (v3+, KIP-360). Ids come from durable
//! blocks, so a restart never reuses one. Transactional ids arrive with transactions.

use exacta_types::ErrorCode;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::partitions::Broker;

pub fn handle(broker: &Broker, request: InitProducerIdRequest) -> InitProducerIdResponse {
    let mut response = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if request.transactional_id.is_some() {
        response.error_code = ErrorCode::InvalidRequest.code();
        tracing::debug!("InitProducerId with a transactional id: transactions are not served yet");
        return response;
    }
    match broker.init_producer_id(request.producer_id.0, request.producer_epoch) {
        Ok((id, epoch)) => {
            response.producer_id = ProducerId(id);
            response.producer_epoch = epoch;
        }
        Err(e) => {
            tracing::debug!(error = %e.message, "InitProducerId refused");
            response.error_code = e.code.code();
        }
    }
    response
}
