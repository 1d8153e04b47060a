//! EndTxn (key 26): commit or abort. Answered once the Prepare record, every marker and the
//! Complete record are durable; a retry of a completed end succeeds.

use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse, ProducerId};

use crate::Node;

pub async fn handle(node: &Node, request: EndTxnRequest) -> EndTxnResponse {
    let result = node
        .txns
        .end_txn(
            &request.transactional_id,
            request.producer_id.0,
            request.producer_epoch,
            request.committed,
        )
        .await;
    if let Err(e) = result {
        tracing::debug!(transactional_id = %request.transactional_id.as_str(), error = %e, "EndTxn refused");
    }
    EndTxnResponse::default()
        .with_error_code(result.err().map_or(0, |e| e.code()))
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1)
}
