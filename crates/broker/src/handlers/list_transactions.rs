//! ListTransactions (key 66, KIP-664): transactional ids with their producer and state,
//! filtered by state, producer id, minimum open duration (v1) and id pattern (v2, a
//! regular expression; `*` and `.` wildcards are honoured, anything fancier matches
//! literally).

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

/// `.*`-style matching: `.` any character, `*` repeats the previous one (enough for the
/// patterns operators type: `orders-.*`).
fn matches(pattern: &str, text: &str) -> bool {
    fn go(p: &[char], t: &[char]) -> bool {
        match p {
            [] => t.is_empty(),
            [c, '*', rest @ ..] => {
                go(rest, t) || (!t.is_empty() && (*c == '.' || *c == t[0]) && go(p, &t[1..]))
            }
            [c, rest @ ..] => !t.is_empty() && (*c == '.' || *c == t[0]) && go(rest, &t[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    go(&p, &t)
}

pub fn handle(node: &Node, request: ListTransactionsRequest) -> ListTransactionsResponse {
    let now = crate::now_ms();
    let mut response = ListTransactionsResponse::default();
    response.unknown_state_filters = request
        .state_filters
        .iter()
        .filter(|s| !STATES.contains(&s.as_str()))
        .cloned()
        .collect();
    response.transaction_states = node.txns.with(|c| {
        c.all()
            .filter(|(_, m)| {
                request.state_filters.is_empty()
                    || request
                        .state_filters
                        .iter()
                        .any(|s| s.as_str() == m.state.name())
            })
            .filter(|(_, m)| {
                request.producer_id_filters.is_empty()
                    || request
                        .producer_id_filters
                        .iter()
                        .any(|p| p.0 == m.producer_id)
            })
            .filter(|(_, m)| {
                request.duration_filter < 0
                    || (m.start_ms >= 0 && now - m.start_ms >= request.duration_filter)
            })
            .filter(|(id, _)| {
                request
                    .transactional_id_pattern
                    .as_ref()
                    .is_none_or(|p| p.is_empty() || matches(p, id))
            })
            .map(|(id, m)| {
                TransactionState::default()
                    .with_transactional_id(TransactionalId(StrBytes::from_string(id.clone())))
                    .with_producer_id(ProducerId(m.producer_id))
                    .with_transaction_state(StrBytes::from_static_str(m.state.name()))
            })
            .collect()
    });
    response
}

#[cfg(test)]
mod tests {
    #[test]
    fn patterns_match_like_simple_regexes() {
        assert!(super::matches("orders-.*", "orders-eu-1"));
        assert!(super::matches("a.c", "abc"));
        assert!(!super::matches("orders-.*", "payments-1"));
        assert!(super::matches("exact", "exact"));
        assert!(!super::matches("exact", "exactly"));
    }
}
