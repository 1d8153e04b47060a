//! ListTransactions (key 66, KIP-664): transactional ids with their producer and state,
//! filtered by state, producer id, minimum open duration (v1) and id pattern (v2).
//!
//! The pattern is a regular expression that must match the whole id, as Kafka's
//! `Pattern.matcher(id).matches()`. It runs on the `regex` crate, whose matching time is
//! linear in pattern and id length (no backtracking), so no pattern can freeze or crash the
//! broker. Patterns longer than [`PATTERN_BYTES_MAX`] or compiling past
//! [`PATTERN_COMPILED_BYTES_MAX`] are refused with INVALID_REQUEST; ones that do not parse
//! (including Java-only syntax: backreferences, lookaround) with
//! INVALID_REGULAR_EXPRESSION, as Kafka answers a `PatternSyntaxException`.
//!
//! To ensure correctness (of everyone else): only a copy of each transaction's id,
//! producer and state is taken under the coordinator lock; filtering by client-sized
//! inputs (filter lists, the pattern) happens after the lock is released.

use std::collections::HashSet;

use exacta_types::ErrorCode;
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

/// Longest `transactional_id_pattern` accepted, in bytes.
pub const PATTERN_BYTES_MAX: usize = 8 << 10;
/// Largest compiled program a pattern may produce, in bytes.
pub const PATTERN_COMPILED_BYTES_MAX: usize = 1 << 20;

/// A pattern the broker refuses, with the error code to answer.
#[derive(Debug, PartialEq, Eq)]
pub struct PatternError {
    pub code: ErrorCode,
    pub message: String,
}

/// Compiles a transactional-id pattern for whole-id matching.
pub fn compile_pattern(pattern: &str) -> Result<regex::Regex, PatternError> {
    if pattern.len() > PATTERN_BYTES_MAX {
        return Err(PatternError {
            code: ErrorCode::InvalidRequest,
            message: format!(
                "transactional id pattern of {} bytes exceeds the limit of {PATTERN_BYTES_MAX}",
                pattern.len()
            ),
        });
    }
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(PATTERN_COMPILED_BYTES_MAX)
        .dfa_size_limit(2 * PATTERN_COMPILED_BYTES_MAX)
        .nest_limit(64)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(limit) => PatternError {
                code: ErrorCode::InvalidRequest,
                message: format!(
                    "transactional id pattern compiles past the limit of {limit} bytes"
                ),
            },
            other => PatternError {
                code: ErrorCode::InvalidRegularExpression,
                message: format!("invalid transactional id pattern: {other}"),
            },
        })
}

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
        .map(|p| compile_pattern(p))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, id: &str) -> bool {
        compile_pattern(pattern).unwrap().is_match(id)
    }

    #[test]
    fn patterns_match_whole_ids_like_java_matches() {
        assert!(matches("orders-.*", "orders-eu-1"));
        assert!(matches("a.c", "abc"));
        assert!(!matches("orders-.*", "payments-1"));
        assert!(matches("exact", "exact"));
        assert!(!matches("exact", "exactly"));
        assert!(!matches("act", "exact"));
        assert!(matches("(orders|payments)-[0-9]+", "payments-42"));
        assert!(matches("a|b", "b"), "alternation is inside the anchors");
    }

    #[test]
    fn pathological_patterns_are_linear_or_refused() {
        // Catastrophic for a backtracking matcher: (a*)^12 against 40 a's and a b.
        let started = std::time::Instant::now();
        let id = format!("{}b", "a".repeat(40));
        assert!(!matches(&"a*".repeat(12), &id));
        assert!(!matches("(a+)+$", &id));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        // 200,000 repetitions: refused by length, not a stack overflow.
        let e = compile_pattern(&"a*".repeat(200_000)).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        // Short but huge once compiled.
        let e = compile_pattern("(((a{100}){100}){100})").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest, "{}", e.message);
        // Deep nesting is refused, not recursed into.
        let e = compile_pattern(&format!("{}a{}", "(".repeat(1000), ")".repeat(1000))).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRegularExpression, "{}", e.message);
    }

    #[test]
    fn invalid_and_java_only_syntax_is_invalid_regular_expression() {
        for bad in ["(", "a{2,1}", "(a)\\1", "(?=a)a"] {
            let e = compile_pattern(bad).expect_err(bad);
            assert_eq!(e.code, ErrorCode::InvalidRegularExpression, "{bad}");
        }
    }
}
