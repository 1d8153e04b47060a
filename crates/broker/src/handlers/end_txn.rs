//! EndTxn (key 26): commit or abort. Answered once the Prepare record, every marker and the
//! Complete record are durable; a retry of a completed end succeeds. From v5 (transaction
//! protocol v2, KIP-890) the epoch is bumped by every end and returned to the client.

use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse, ProducerId};

use crate::Node;

/// EndTxn v5+ is transaction protocol v2 (KIP-890): the epoch is bumped and returned.
pub const V2_MIN_VERSION: i16 = 5;

/// EndTxn v2 is the first to know PRODUCER_FENCED (KIP-588).
const PRODUCER_FENCED_MIN_VERSION: i16 = 2;

pub async fn handle(node: &Node, request: EndTxnRequest, version: i16) -> EndTxnResponse {
    let result = node
        .txns
        .end_txn(
            &request.transactional_id,
            request.producer_id.0,
            request.producer_epoch,
            request.committed,
            version >= V2_MIN_VERSION,
        )
        .await;
    match result {
        Ok((producer_id, epoch)) => EndTxnResponse::default()
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(epoch),
        Err(e) => {
            tracing::debug!(transactional_id = %request.transactional_id.as_str(), error = %e, "EndTxn refused");
            EndTxnResponse::default()
                .with_error_code(e.fenced_for(version, PRODUCER_FENCED_MIN_VERSION).code())
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
        }
    }
}
