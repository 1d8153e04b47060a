//! Error responses the proxy answers in the broker's place (the request is not forwarded),
//! as a broker that is not the coordinator, is loading, or timed out would answer.

use bytes::Bytes;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use exacta_wire::frame::{decode_request, encode_response, Request};

/// Error names accepted in rules, besides numeric codes.
const NAMES: &[(&str, i16)] = &[
    ("UNKNOWN_SERVER_ERROR", -1),
    ("NOT_LEADER_OR_FOLLOWER", 6),
    ("REQUEST_TIMED_OUT", 7),
    ("NETWORK_EXCEPTION", 13),
    ("COORDINATOR_LOAD_IN_PROGRESS", 14),
    ("COORDINATOR_NOT_AVAILABLE", 15),
    ("NOT_COORDINATOR", 16),
    ("NOT_ENOUGH_REPLICAS", 19),
    ("CONCURRENT_TRANSACTIONS", 51),
];

/// Parses an error name from [`NAMES`] or a number.
pub fn parse_error_code(text: &str) -> Result<i16, String> {
    if let Ok(code) = text.parse::<i16>() {
        return Ok(code);
    }
    NAMES
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(text))
        .map(|&(_, code)| code)
        .ok_or_else(|| {
            let known: Vec<&str> = NAMES.iter().map(|(n, _)| *n).collect();
            format!(
                "unknown error '{text}' (a number, or one of {})",
                known.join(", ")
            )
        })
}

/// Whether the proxy can answer this API with an error.
pub fn injectable(key: ApiKey) -> bool {
    matches!(
        key,
        ApiKey::Produce
            | ApiKey::FindCoordinator
            | ApiKey::InitProducerId
            | ApiKey::AddPartitionsToTxn
            | ApiKey::AddOffsetsToTxn
            | ApiKey::EndTxn
            | ApiKey::TxnOffsetCommit
            | ApiKey::OffsetCommit
            | ApiKey::JoinGroup
            | ApiKey::SyncGroup
            | ApiKey::Heartbeat
    )
}

/// The response frame (size prefix included) answering `request` (a frame without its
/// size prefix) with `code` everywhere an error goes; `None` when the request cannot be
/// decoded or its API is not [`injectable`].
pub fn error_response(request: Bytes, code: i16) -> Option<Bytes> {
    let (header, request) = decode_request(request).ok()?;
    let version = header.request_api_version;
    let correlation = header.correlation_id;
    let encoded = match request {
        Request::Produce(r) => {
            let responses = r
                .topic_data
                .iter()
                .map(|t| {
                    TopicProduceResponse::default()
                        .with_name(t.name.clone())
                        .with_topic_id(t.topic_id)
                        .with_partition_responses(
                            t.partition_data
                                .iter()
                                .map(|p| {
                                    PartitionProduceResponse::default()
                                        .with_index(p.index)
                                        .with_error_code(code)
                                        .with_base_offset(-1)
                                        .with_log_start_offset(-1)
                                })
                                .collect(),
                        )
                })
                .collect();
            let body = ProduceResponse::default().with_responses(responses);
            encode_response(ApiKey::Produce, version, correlation, &body)
        }
        Request::FindCoordinator(r) => {
            // v0-3 answer one key at the top level, v4+ a list (fields of the other form
            // must stay at their defaults to encode).
            let body = if version < 4 {
                FindCoordinatorResponse::default()
                    .with_error_code(code)
                    .with_node_id((-1).into())
                    .with_host(StrBytes::from_static_str(""))
                    .with_port(-1)
            } else {
                FindCoordinatorResponse::default().with_coordinators(
                    r.coordinator_keys
                        .iter()
                        .map(|key| {
                            Coordinator::default()
                                .with_key(key.clone())
                                .with_node_id((-1).into())
                                .with_host(StrBytes::from_static_str(""))
                                .with_port(-1)
                                .with_error_code(code)
                        })
                        .collect(),
                )
            };
            encode_response(ApiKey::FindCoordinator, version, correlation, &body)
        }
        Request::InitProducerId(_) => {
            let body = InitProducerIdResponse::default()
                .with_error_code(code)
                .with_producer_id((-1).into())
                .with_producer_epoch(-1);
            encode_response(ApiKey::InitProducerId, version, correlation, &body)
        }
        Request::AddPartitionsToTxn(r) => {
            let results = r
                .v3_and_below_topics
                .iter()
                .map(|t| {
                    AddPartitionsToTxnTopicResult::default()
                        .with_name(t.name.clone())
                        .with_results_by_partition(
                            t.partitions
                                .iter()
                                .map(|&p| {
                                    AddPartitionsToTxnPartitionResult::default()
                                        .with_partition_index(p)
                                        .with_partition_error_code(code)
                                })
                                .collect(),
                        )
                })
                .collect();
            let body = AddPartitionsToTxnResponse::default()
                .with_error_code(code)
                .with_results_by_topic_v3_and_below(results);
            encode_response(ApiKey::AddPartitionsToTxn, version, correlation, &body)
        }
        Request::AddOffsetsToTxn(_) => {
            let body = AddOffsetsToTxnResponse::default().with_error_code(code);
            encode_response(ApiKey::AddOffsetsToTxn, version, correlation, &body)
        }
        Request::EndTxn(_) => {
            let body = EndTxnResponse::default()
                .with_error_code(code)
                .with_producer_id((-1).into())
                .with_producer_epoch(-1);
            encode_response(ApiKey::EndTxn, version, correlation, &body)
        }
        Request::TxnOffsetCommit(r) => {
            let topics = r
                .topics
                .iter()
                .map(|t| {
                    TxnOffsetCommitResponseTopic::default()
                        .with_name(t.name.clone())
                        .with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    TxnOffsetCommitResponsePartition::default()
                                        .with_partition_index(p.partition_index)
                                        .with_error_code(code)
                                })
                                .collect(),
                        )
                })
                .collect();
            let body = TxnOffsetCommitResponse::default().with_topics(topics);
            encode_response(ApiKey::TxnOffsetCommit, version, correlation, &body)
        }
        Request::OffsetCommit(r) => {
            let topics = r
                .topics
                .iter()
                .map(|t| {
                    OffsetCommitResponseTopic::default()
                        .with_name(t.name.clone())
                        .with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    OffsetCommitResponsePartition::default()
                                        .with_partition_index(p.partition_index)
                                        .with_error_code(code)
                                })
                                .collect(),
                        )
                })
                .collect();
            let body = OffsetCommitResponse::default().with_topics(topics);
            encode_response(ApiKey::OffsetCommit, version, correlation, &body)
        }
        Request::JoinGroup(_) => {
            let body = JoinGroupResponse::default()
                .with_error_code(code)
                .with_generation_id(-1);
            encode_response(ApiKey::JoinGroup, version, correlation, &body)
        }
        Request::SyncGroup(_) => {
            let body = SyncGroupResponse::default().with_error_code(code);
            encode_response(ApiKey::SyncGroup, version, correlation, &body)
        }
        Request::Heartbeat(_) => {
            let body = HeartbeatResponse::default().with_error_code(code);
            encode_response(ApiKey::Heartbeat, version, correlation, &body)
        }
        _ => return None,
    };
    encoded.ok()
}

/// Whether a request gets no response at all (Produce with acks=0).
pub fn expects_no_response(key: ApiKey, request: &Bytes) -> bool {
    key == ApiKey::Produce
        && matches!(decode_request(request.clone()), Ok((_, Request::Produce(r))) if r.acks == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::protocol::{Decodable, Encodable};

    fn request<T: Encodable>(key: ApiKey, version: i16, body: &T) -> Bytes {
        exacta_wire::frame::encode_request(key, version, 42, body).unwrap()
    }

    fn decode<T: Decodable>(key: ApiKey, version: i16, frame: Bytes) -> (i32, T) {
        let mut body = frame.slice(4..);
        let header =
            ResponseHeader::decode(&mut body, key.response_header_version(version)).unwrap();
        (
            header.correlation_id,
            T::decode(&mut body, version).unwrap(),
        )
    }

    #[test]
    fn error_names_and_numbers_parse() {
        assert_eq!(parse_error_code("NOT_COORDINATOR"), Ok(16));
        assert_eq!(parse_error_code("coordinator_load_in_progress"), Ok(14));
        assert_eq!(parse_error_code("51"), Ok(51));
        assert!(parse_error_code("NO_SUCH_ERROR").is_err());
    }

    #[test]
    fn produce_errors_name_every_partition_of_the_request() {
        let produce = ProduceRequest::default()
            .with_acks(-1)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("t")))
                .with_partition_data(vec![
                    PartitionProduceData::default().with_index(0),
                    PartitionProduceData::default().with_index(3),
                ])]);
        for version in [3, 9, 12] {
            let frame = request(ApiKey::Produce, version, &produce);
            assert!(!expects_no_response(ApiKey::Produce, &frame));
            let answer = error_response(frame, 6).unwrap();
            let (correlation, r): (_, ProduceResponse) = decode(ApiKey::Produce, version, answer);
            assert_eq!(correlation, 42);
            let partitions = &r.responses[0].partition_responses;
            assert_eq!(
                partitions
                    .iter()
                    .map(|p| (p.index, p.error_code))
                    .collect::<Vec<_>>(),
                vec![(0, 6), (3, 6)]
            );
        }
        let fire_and_forget = request(ApiKey::Produce, 9, &produce.clone().with_acks(0));
        assert!(expects_no_response(ApiKey::Produce, &fire_and_forget));
    }

    #[test]
    fn coordinator_errors_for_old_and_batched_find_coordinator() {
        let old = FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("g"));
        let (_, r): (_, FindCoordinatorResponse) = decode(
            ApiKey::FindCoordinator,
            2,
            error_response(request(ApiKey::FindCoordinator, 2, &old), 15).unwrap(),
        );
        assert_eq!(r.error_code, 15);
        let batched = FindCoordinatorRequest::default()
            .with_coordinator_keys(vec![StrBytes::from_static_str("g")]);
        let (_, r): (_, FindCoordinatorResponse) = decode(
            ApiKey::FindCoordinator,
            4,
            error_response(request(ApiKey::FindCoordinator, 4, &batched), 15).unwrap(),
        );
        assert_eq!(r.coordinators.len(), 1);
        assert_eq!(r.coordinators[0].error_code, 15);
        assert_eq!(r.coordinators[0].key.as_str(), "g");
    }

    #[test]
    fn every_injectable_api_answers_at_every_served_version() {
        for range in exacta_wire::versions::SUPPORTED {
            if !injectable(range.key) {
                continue;
            }
            for version in range.min..=range.max {
                let mut buf = BytesMut::new();
                RequestHeader::default()
                    .with_request_api_key(range.key as i16)
                    .with_request_api_version(version)
                    .with_correlation_id(7)
                    .encode(&mut buf, range.key.request_header_version(version))
                    .unwrap();
                exacta_wire::frame::encode_default_body(range.key, version, &mut buf).unwrap();
                assert!(
                    error_response(buf.freeze(), 14).is_some(),
                    "{:?} v{version}",
                    range.key
                );
            }
        }
    }

    #[test]
    fn end_txn_error_and_unsupported_apis() {
        let end = EndTxnRequest::default().with_committed(true);
        let (_, r): (_, EndTxnResponse) = decode(
            ApiKey::EndTxn,
            1,
            error_response(request(ApiKey::EndTxn, 1, &end), 16).unwrap(),
        );
        assert_eq!(r.error_code, 16);
        assert!(!injectable(ApiKey::Fetch));
        let fetch = FetchRequest::default();
        assert!(error_response(request(ApiKey::Fetch, 12, &fetch), 6).is_none());
    }
}
