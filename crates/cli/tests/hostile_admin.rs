//! Hostile admin and coordinator requests against the real binary: transaction-id
//! patterns cannot crash or freeze the broker, internal topics keep the configs their
//! coordinators rely on, and a client cannot make the group coordinator hold unbounded
//! groups.

mod common;

use std::time::{Duration, Instant};

use common::*;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

const INVALID_REQUEST: i16 = 42;
const POLICY_VIOLATION: i16 = 44;
const COORDINATOR_NOT_AVAILABLE: i16 = 15;
const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;

fn list_transactions(c: &mut Conn, pattern: &str) -> Result<ListTransactionsResponse, String> {
    let request = ListTransactionsRequest::default()
        .with_transactional_id_pattern(Some(StrBytes::from_string(pattern.to_string())));
    c.try_call(ApiKey::ListTransactions, 2, &request)
}

#[test]
fn transactional_id_patterns_cannot_crash_or_freeze_the_broker() {
    let broker = start();
    let mut c = Conn::new(&broker);
    create_topic(&mut c, "patterns", 1);
    // A 41-character transactional id: (a*){12} against it is exponential to backtrack.
    let long_id = format!("{}b", "a".repeat(40));
    init_transactional(&mut c, &long_id);
    init_transactional(&mut c, "orders-eu-1");

    // 200,000 repetitions (400 KB): refused, not a stack overflow.
    let huge = list_transactions(&mut c, &"a*".repeat(200_000)).expect("an answer");
    assert_eq!(huge.error_code, INVALID_REQUEST);

    // The exponential one is answered at once, and meanwhile the coordinator serves others.
    let started = Instant::now();
    let slow = list_transactions(&mut c, &"a*".repeat(12)).expect("an answer");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(slow.error_code, 0);
    assert!(slow.transaction_states.is_empty(), "no id is only a's");
    let mut other = Conn::new(&broker);
    let started = Instant::now();
    init_transactional(&mut other, "unrelated");
    assert!(started.elapsed() < Duration::from_secs(2));

    // Kafka's semantics: a full match of a Java-style regular expression.
    let ids = |r: ListTransactionsResponse| -> Vec<String> {
        r.transaction_states
            .iter()
            .map(|t| t.transactional_id.0.to_string())
            .collect()
    };
    assert_eq!(
        ids(list_transactions(&mut c, "orders-.*").unwrap()),
        ["orders-eu-1"]
    );
    assert!(ids(list_transactions(&mut c, "orders").unwrap()).is_empty());
    assert_eq!(
        ids(list_transactions(&mut c, "a+b").unwrap()),
        std::slice::from_ref(&long_id)
    );
    let invalid = list_transactions(&mut c, "(unclosed").unwrap();
    assert_eq!(invalid.error_code, 128, "INVALID_REGULAR_EXPRESSION");
    assert_healthy(&broker, "patterns");
}

#[test]
fn internal_topics_keep_the_configs_their_coordinators_rely_on() {
    let broker = start();
    let mut c = Conn::new(&broker);
    create_topic(&mut c, "internal-configs", 1);
    for topic in ["__transaction_state", "__consumer_offsets"] {
        for (key, value, op) in [
            ("retention.ms", Some("1"), 0),
            ("retention.bytes", Some("1"), 0),
            ("retention.ms", None, 1),
            ("cleanup.policy", Some("delete"), 0),
            ("cleanup.policy", Some("compact,delete"), 0),
            ("cleanup.policy", Some("compact"), 3),
            ("cleanup.policy", None, 1),
            ("segment.bytes", Some("1024"), 0),
            ("segment.ms", Some("1"), 0),
            ("flush.messages", Some("1000"), 0),
            ("flush.ms", Some("60000"), 0),
        ] {
            let (code, message) = try_alter_topic_config(&mut c, topic, key, value, op);
            assert!(
                code == POLICY_VIOLATION,
                "{topic}: {key} {value:?} op {op} must be refused, got {code}"
            );
            assert!(message.is_some_and(|m| m.contains(topic)), "{topic} {key}");
        }
        // Harmless ones are allowed.
        alter_topic_config(&mut c, topic, "segment.bytes", "104857600");
        // AlterConfigs replaces all overrides; the pinned ones stay.
        let request = AlterConfigsRequest::default().with_resources(vec![
            alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_string(topic.to_string()))
                .with_configs(vec![alter_configs_request::AlterableConfig::default()
                    .with_name(StrBytes::from_static_str("max.message.bytes"))
                    .with_value(Some(StrBytes::from_static_str("2000000")))]),
        ]);
        let replaced: AlterConfigsResponse = c.call(ApiKey::AlterConfigs, 1, &request);
        assert_eq!(replaced.responses[0].error_code, 0, "{topic}");
        for (key, pinned) in [
            ("retention.ms", "-1"),
            ("retention.bytes", "-1"),
            ("cleanup.policy", "compact"),
        ] {
            assert_eq!(
                describe_topic_config(&mut c, topic, key).as_deref(),
                Some(pinned),
                "{topic} {key}"
            );
        }
    }
    assert_healthy(&broker, "internal-configs");
}

fn join(c: &mut Conn, group: &str, protocol_type: &str) -> i16 {
    let request = JoinGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_protocol_type(StrBytes::from_string(protocol_type.to_string()));
    let response: JoinGroupResponse = c.call(ApiKey::JoinGroup, 5, &request);
    response.error_code
}

fn commit_offset(c: &mut Conn, group: &str, topic: &str) -> i16 {
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(0)])]);
    let response: OffsetCommitResponse = c.call(ApiKey::OffsetCommit, 8, &request);
    response.topics[0].partitions[0].error_code
}

fn group_count(c: &mut Conn) -> usize {
    let groups: ListGroupsResponse = c.call(ApiKey::ListGroups, 4, &ListGroupsRequest::default());
    assert_eq!(groups.error_code, 0);
    groups.groups.len()
}

#[test]
fn clients_cannot_make_the_coordinator_hold_unbounded_groups() {
    let broker = start_with("groups_max = 20\n");
    let mut c = Conn::new(&broker);
    create_topic(&mut c, "groups-topic", 1);
    // Invalid joins are refused before any group exists.
    for i in 0..50 {
        assert_eq!(
            join(&mut c, &format!("bogus-{i}"), ""),
            INCONSISTENT_GROUP_PROTOCOL
        );
    }
    assert_eq!(group_count(&mut c), 0, "a refused request creates no group");
    // Simple-consumer commits create groups up to groups_max, then are refused (retriable).
    let codes: Vec<i16> = (0..30)
        .map(|i| commit_offset(&mut c, &format!("g-{i}"), "groups-topic"))
        .collect();
    assert!(codes[..20].iter().all(|&e| e == 0), "{codes:?}");
    assert!(
        codes[20..].iter().all(|&e| e == COORDINATOR_NOT_AVAILABLE),
        "{codes:?}"
    );
    assert_eq!(group_count(&mut c), 20);
    // Existing groups are still served.
    assert_eq!(commit_offset(&mut c, "g-3", "groups-topic"), 0);
    assert_healthy(&broker, "groups-topic");
}

fn marker(c: &mut Conn, topic: &str, coordinator_epoch: i32) -> i16 {
    use kafka_protocol::messages::write_txn_markers_request::{
        WritableTxnMarker, WritableTxnMarkerTopic,
    };
    let request =
        WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
            .with_producer_id(ProducerId(4242))
            .with_producer_epoch(0)
            .with_transaction_result(false)
            .with_coordinator_epoch(coordinator_epoch)
            .with_topics(vec![WritableTxnMarkerTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_indexes(vec![0])])]);
    let response: WriteTxnMarkersResponse = c.call(ApiKey::WriteTxnMarkers, 1, &request);
    response.markers[0].topics[0].partitions[0].error_code
}

/// A marker claiming a coordinator epoch no coordinator has (a single node's is 0) is
/// refused before it touches the partition: kept, it would fence every later real marker
/// for that producer.
#[test]
fn a_marker_from_an_impossible_coordinator_epoch_is_refused() {
    let broker = start();
    let mut c = Conn::new(&broker);
    create_topic(&mut c, "markers", 1);
    assert_eq!(marker(&mut c, "markers", i32::MAX), INVALID_REQUEST);
    assert_eq!(marker(&mut c, "markers", 1), INVALID_REQUEST);
    // Nothing was kept: a marker at the real epoch is still taken.
    assert_eq!(marker(&mut c, "markers", 0), 0);
    assert_eq!(
        marker(&mut c, "markers", -1),
        0,
        "operators' markers carry -1"
    );
}
