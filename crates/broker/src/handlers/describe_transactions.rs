//! DescribeTransactions (key 65, KIP-664): state, timeout, start time, producer and
//! partitions of transactional ids; TRANSACTIONAL_ID_NOT_FOUND for unknown ones.

use std::collections::BTreeMap;

use exacta_types::ErrorCode;
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::{
    DescribeTransactionsRequest, DescribeTransactionsResponse, ProducerId, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::Node;

pub fn handle(node: &Node, request: DescribeTransactionsRequest) -> DescribeTransactionsResponse {
    let mut response = DescribeTransactionsResponse::default();
    for id in request.transactional_ids {
        let meta = node.txns.with_id(&id, |c| c.get(&id).cloned());
        let state = match meta {
            Err(code) => TransactionState::default()
                .with_transactional_id(id)
                .with_error_code(code.code())
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
            Ok(None) => TransactionState::default()
                .with_transactional_id(id)
                .with_error_code(ErrorCode::TransactionalIdNotFound.code())
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
            Ok(Some(m)) => {
                let mut topics: BTreeMap<String, Vec<i32>> = BTreeMap::new();
                for (t, p) in &m.partitions {
                    topics.entry(t.clone()).or_default().push(*p);
                }
                TransactionState::default()
                    .with_transactional_id(id)
                    .with_transaction_state(StrBytes::from_static_str(m.state.name()))
                    .with_transaction_timeout_ms(m.timeout_ms)
                    .with_transaction_start_time_ms(m.start_ms)
                    .with_producer_id(ProducerId(m.producer_id))
                    .with_producer_epoch(m.epoch)
                    .with_topics(
                        topics
                            .into_iter()
                            .map(|(t, ps)| {
                                TopicData::default()
                                    .with_topic(TopicName(StrBytes::from_string(t)))
                                    .with_partitions(ps)
                            })
                            .collect(),
                    )
            }
        };
        response.transaction_states.push(state);
    }
    response
}
