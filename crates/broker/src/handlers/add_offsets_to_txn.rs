//! AddOffsetsToTxn (key 25): adds the group's `__consumer_offsets` partition to the
//! transaction, so its offsets commit or abort with it.

use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse};

use crate::Node;

/// AddOffsetsToTxn v2 is the first to know PRODUCER_FENCED (KIP-588).
const PRODUCER_FENCED_MIN_VERSION: i16 = 2;

pub async fn handle(
    node: &Node,
    request: AddOffsetsToTxnRequest,
    version: i16,
) -> AddOffsetsToTxnResponse {
    let partition = node.txns.offsets_partition(&request.group_id);
    let result = node
        .txns
        .add_partitions(
            &request.transactional_id,
            request.producer_id.0,
            request.producer_epoch,
            &[partition],
        )
        .await;
    AddOffsetsToTxnResponse::default().with_error_code(result.err().map_or(0, |e| {
        e.fenced_for(version, PRODUCER_FENCED_MIN_VERSION).code()
    }))
}
