//! ListTransactions (key 66, KIP-664): transactional ids with their producer and state,
//! filtered by state, producer id, minimum open duration (v1) and id pattern (v2).
//!
//! The pattern is a regular expression that must match the whole id, compiled with the
//! bounds of [`exacta_coordinator::pattern`] (INVALID_REQUEST past them,
//! INVALID_REGULAR_EXPRESSION when it does not parse).
//!
//! To ensure correctness (of everyone else): only a copy of each transaction's id,
//! producer and state is taken under the coordinator lock; filtering by client-sized
//! inputs (filter lists, the pattern) happens after the lock is released.

use std::collections::HashSet;

use exacta_coordinator::pattern::compile_pattern;
use kafka_protocol::messages::list_transactions_response::TransactionState;
use kafka_protocol::messages::{
    ListTransactionsRequest, ListTransactionsResponse, ProducerId, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;

use crate::Node;

const STATES: &[&str] = &[
    "Empty",
    "Ongoing",
    "PrepareCommit",
    "PrepareAbort",
    "CompleteCommit",
    "CompleteAbort",
    "PrepareEpochFence",
    "Dead",
];

/// What is copied of one transaction under the coordinator lock.
struct Listed {
    transactional_id: String,
    producer_id: i64,
    state: &'static str,
    start_ms: i64,
}

pub fn handle(node: &Node, request: ListTransactionsRequest) -> ListTransactionsResponse {
    let now = crate::now_ms();
    let mut response = ListTransactionsResponse::default();
    let pattern = match request
        .transactional_id_pattern
        .as_ref()
        .filter(|p| !p.is_empty())
        .map(|p| compile_pattern(p, "transactional id pattern"))
        .transpose()
    {
        Ok(pattern) => pattern,
        Err(e) => {
            tracing::debug!(error = %e.message, "ListTransactions refused");
            response.error_code = e.code.code();
            return response;
        }
    };
    response.unknown_state_filters = request
        .state_filters
        .iter()
        .filter(|s| !STATES.contains(&s.as_str()))
        .cloned()
        .collect();
    let states: HashSet<&str> = request.state_filters.iter().map(|s| s.as_str()).collect();
    let producers: HashSet<i64> = request.producer_id_filters.iter().map(|p| p.0).collect();
    let listed: Vec<Listed> = node
        .txns
        .each(|c| {
            c.all()
                .map(|(id, m)| Listed {
                    transactional_id: id.clone(),
                    producer_id: m.producer_id,
                    state: m.state.name(),
                    start_ms: m.start_ms,
                })
                .collect::<Vec<_>>()
        })
        .into_iter()
        .flatten()
        .collect();
    response.transaction_states = listed
        .into_iter()
        .filter(|t| states.is_empty() || states.contains(t.state))
        .filter(|t| producers.is_empty() || producers.contains(&t.producer_id))
        .filter(|t| {
            request.duration_filter < 0
                || (t.start_ms >= 0 && now.saturating_sub(t.start_ms) >= request.duration_filter)
        })
        .filter(|t| {
            pattern
                .as_ref()
                .is_none_or(|p| p.is_match(&t.transactional_id))
        })
        .map(|t| {
            TransactionState::default()
                .with_transactional_id(TransactionalId(StrBytes::from_string(t.transactional_id)))
                .with_producer_id(ProducerId(t.producer_id))
                .with_transaction_state(StrBytes::from_static_str(t.state))
        })
        .collect();
    response
}
