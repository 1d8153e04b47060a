//! Produce's transactional writes in a cluster: the first write of a transaction to a
//! partition is checked with the transaction's coordinator (`txns::verify`), then appended
//! under the guard set for it; later writes of the same transaction go straight in.
//! Answered as Kafka answers it: a coordinator that cannot be reached or has moved is
//! NOT_ENOUGH_REPLICAS (retriable for every client version), a partition that is not in the
//! transaction INVALID_TXN_STATE, a fenced producer its fencing error.

use std::sync::Arc;

use bytes::Bytes;
use exacta_types::ErrorCode;
use kafka_protocol::messages::ProduceResponse;

use super::{answer, append, Appended, Wait, Written, V2_MIN_VERSION};
use crate::partitions::ApiError;
use crate::txns::verify::Guard;
use crate::Node;

/// A transactional batch held back for its coordinator's check.
pub struct Check {
    pub guard: Guard,
    pub records: Bytes,
}

/// A held-back batch and where its answer goes in the response.
pub struct Pending {
    pub ti: usize,
    pub pi: usize,
    pub topic: String,
    pub index: i32,
    pub check: Check,
}

/// Checks each held-back batch, appends those the coordinator confirms and fills in every
/// answer; WAITS gets the appends acks=all waits for.
pub async fn run(
    node: &Arc<Node>,
    transactional_id: Option<&str>,
    pending: Vec<Pending>,
    version: i16,
    response: &mut ProduceResponse,
    waits: &mut Vec<Wait>,
) {
    for p in pending {
        let result = check_and_append(node, transactional_id, &p, version).await;
        let pr = &mut response.responses[p.ti].partition_responses[p.pi];
        match result {
            Ok(appended) => {
                answer(pr, Ok(&appended));
                if appended.wait_for_fsync {
                    waits.push(appended.wait(p.ti, p.pi));
                }
            }
            Err(e) => {
                tracing::debug!(topic = %p.topic, partition = p.index, error = %e.message, "transactional produce refused");
                answer(pr, Err(e));
            }
        }
    }
}

async fn check_and_append(
    node: &Arc<Node>,
    transactional_id: Option<&str>,
    p: &Pending,
    version: i16,
) -> Result<Appended, ApiError> {
    let Some(id) = transactional_id else {
        return Err(ApiError::new(
            ErrorCode::InvalidTxnState,
            "a transactional batch needs the request's transactional id",
        ));
    };
    let g = p.check.guard;
    let implicit = version >= V2_MIN_VERSION;
    let code = crate::txns::verify::check(
        node,
        id,
        g.producer_id,
        g.epoch,
        &p.topic,
        p.index,
        implicit,
    )
    .await;
    let refused = |code: ErrorCode, why: &str| Err(ApiError::new(code, why.to_string()));
    match code {
        ErrorCode::None => {}
        ErrorCode::NotCoordinator
        | ErrorCode::CoordinatorNotAvailable
        | ErrorCode::CoordinatorLoadInProgress
        | ErrorCode::ConcurrentTransactions
        | ErrorCode::RequestTimedOut => {
            return refused(
                ErrorCode::NotEnoughReplicas,
                "the transaction coordinator has not confirmed this write yet; retry",
            )
        }
        ErrorCode::TransactionAbortable | ErrorCode::InvalidTxnState => {
            return refused(
                ErrorCode::InvalidTxnState,
                "the partition is not in the producer's open transaction",
            )
        }
        other => {
            return refused(
                other.fenced_for(version, i16::MAX),
                "the transaction coordinator refused this write",
            )
        }
    }
    let mut none = Vec::new();
    let records = p.check.records.clone();
    match append(
        node,
        &p.topic,
        p.index,
        records,
        version,
        -1,
        &mut none,
        Some(g),
    )? {
        Written::Appended(appended) => Ok(appended),
        Written::Check(_) => refused(
            ErrorCode::InvalidTxnState,
            "the transaction changed while this write was checked",
        ),
    }
}
