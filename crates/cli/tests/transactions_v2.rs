//! Transaction protocol v2 (KIP-890) against the real `exacta` binary.
//!
//! No third-party client available here speaks v2 yet (librdkafka 2.x and kafka-python 3
//! stop at v1), so this test drives the wire protocol itself with the `kafka-protocol`
//! codecs (generated from Kafka's message definitions): EndTxn v5 bumps the epoch, Produce
//! v12 adds partitions implicitly, and a produce delayed from an earlier transaction can
//! no longer land in a later one (KAFKA-17754); AddPartitionsToTxn v4/v5, the batched and
//! verify-only form partition leaders send.

mod common;

use bytes::Bytes;
use common::{start, Conn};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

trait Tv2 {
    fn produce(&mut self, topic: &str, producer: (i64, i16, i32), value: &str) -> (i16, i64);
    fn end(&mut self, pid: i64, epoch: i16, commit: bool) -> EndTxnResponse;
}

impl Tv2 for Conn {
    fn produce(
        &mut self,
        topic: &str,
        (pid, epoch, seq): (i64, i16, i32),
        value: &str,
    ) -> (i16, i64) {
        let batch = exacta_wire::batch::build_transactional_batch(
            &[value.as_bytes().to_vec()],
            1_700_000_000_000,
            (pid, epoch, seq),
        );
        let request = ProduceRequest::default()
            .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str("tv2"))))
            .with_acks(-1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(Bytes::from(batch)))])]);
        let response: ProduceResponse = self.call(ApiKey::Produce, 12, &request);
        let p = &response.responses[0].partition_responses[0];
        (p.error_code, p.base_offset)
    }

    fn end(&mut self, pid: i64, epoch: i16, commit: bool) -> EndTxnResponse {
        let request = EndTxnRequest::default()
            .with_transactional_id(TransactionalId(StrBytes::from_static_str("tv2")))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_committed(commit);
        self.call(ApiKey::EndTxn, 5, &request)
    }
}

#[test]
fn epoch_bump_per_transaction_fences_delayed_requests() {
    let broker = start();
    let mut c = Conn::new(&broker);

    // The feature is advertised.
    let versions: ApiVersionsResponse =
        c.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    let tv = versions
        .finalized_features
        .iter()
        .find(|f| f.name.as_str() == "transaction.version")
        .expect("transaction.version finalized");
    assert_eq!(tv.max_version_level, 2);

    let create = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(TopicName(StrBytes::from_static_str("tv2")))
        .with_num_partitions(1)
        .with_replication_factor(1)]);
    let created: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 5, &create);
    assert_eq!(created.topics[0].error_code, 0);

    let init: InitProducerIdResponse = c.call(
        ApiKey::InitProducerId,
        5,
        &InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str("tv2"))))
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    );
    assert_eq!(init.error_code, 0);
    let (pid, e0) = (init.producer_id.0, init.producer_epoch);

    // Produce v12 joins the transaction without AddPartitionsToTxn.
    assert_eq!(c.produce("tv2", (pid, e0, 0), "committed"), (0, 0));
    let end = c.end(pid, e0, true);
    assert_eq!(end.error_code, 0);
    assert_eq!(
        (end.producer_id.0, end.producer_epoch),
        (pid, e0 + 1),
        "EndTxn v5 bumps the epoch"
    );
    // A retried EndTxn is answered again with the new epoch.
    let retry = c.end(pid, e0, true);
    assert_eq!((retry.error_code, retry.producer_epoch), (0, e0 + 1));

    // KAFKA-17754: a produce delayed from the committed transaction arrives now. With the
    // old epoch it is refused (the marker carries the bumped epoch)...
    let (delayed, _) = c.produce("tv2", (pid, e0, 1), "delayed");
    assert_ne!(
        delayed, 0,
        "a delayed produce from an ended transaction must be refused"
    );
    // ...while the next transaction, with the new epoch, works and can be aborted.
    assert_eq!(c.produce("tv2", (pid, e0 + 1, 0), "aborted").0, 0);
    let end = c.end(pid, e0 + 1, false);
    assert_eq!((end.error_code, end.producer_epoch), (0, e0 + 2));

    // read_committed from offset 0 to the end (a fetch returns one segment at a time):
    // the committed record, then the aborted one, listed as aborted.
    let mut offset = 0;
    let mut values = Vec::new();
    let mut aborted = Vec::new();
    for _ in 0..10 {
        let fetch = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(0)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_isolation_level(1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str("tv2")))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(1 << 20)])]);
        let fetched: FetchResponse = c.call(ApiKey::Fetch, 11, &fetch);
        let p = &fetched.responses[0].partitions[0];
        assert_eq!(p.error_code, 0);
        assert_eq!(p.last_stable_offset, p.high_watermark, "nothing left open");
        aborted.extend(
            p.aborted_transactions
                .clone()
                .expect("read_committed lists aborts"),
        );
        let mut records = p.records.clone().unwrap_or_default();
        for set in kafka_protocol::records::RecordBatchDecoder::decode_all(&mut records).unwrap() {
            for r in set.records {
                offset = r.offset + 1;
                if !r.control {
                    values.push((
                        r.offset,
                        String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
                    ));
                }
            }
        }
        if offset >= p.high_watermark {
            break;
        }
    }
    assert_eq!(offset, 4, "data, commit marker, data, abort marker");
    assert_eq!(
        values,
        vec![(0, "committed".to_string()), (2, "aborted".to_string())],
        "no delayed record in the log"
    );
    assert_eq!(aborted.len(), 1);
    assert_eq!(
        (aborted[0].producer_id.0, aborted[0].first_offset),
        (pid, 2)
    );
}

fn txn_entry(
    id: &str,
    (pid, epoch): (i64, i16),
    verify_only: bool,
    partitions: &[i32],
) -> add_partitions_to_txn_request::AddPartitionsToTxnTransaction {
    add_partitions_to_txn_request::AddPartitionsToTxnTransaction::default()
        .with_transactional_id(TransactionalId(StrBytes::from_string(id.to_string())))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_verify_only(verify_only)
        .with_topics(vec![
            add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("batched")))
                .with_partitions(partitions.to_vec()),
        ])
}

/// Per transactional id, the (partition, error code) answers of a v4+ response.
fn codes(response: &AddPartitionsToTxnResponse) -> Vec<(String, Vec<(i32, i16)>)> {
    response
        .results_by_transaction
        .iter()
        .map(|t| {
            (
                t.transactional_id.to_string(),
                t.topic_results
                    .iter()
                    .flat_map(|r| {
                        r.results_by_partition
                            .iter()
                            .map(|p| (p.partition_index, p.partition_error_code))
                    })
                    .collect(),
            )
        })
        .collect()
}

#[test]
fn batched_and_verify_only_add_partitions() {
    let broker = start();
    let mut c = Conn::new(&broker);
    let create = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(TopicName(StrBytes::from_static_str("batched")))
        .with_num_partitions(3)
        .with_replication_factor(1)]);
    let created: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 5, &create);
    assert_eq!(created.topics[0].error_code, 0);
    let mut init = |id: &str| {
        let r: InitProducerIdResponse = c.call(
            ApiKey::InitProducerId,
            5,
            &InitProducerIdRequest::default()
                .with_transactional_id(Some(TransactionalId(StrBytes::from_string(id.to_string()))))
                .with_transaction_timeout_ms(60_000)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        );
        assert_eq!(r.error_code, 0);
        (r.producer_id.0, r.producer_epoch)
    };
    let a = init("a");
    let b = init("b");
    const NONE: i16 = 0;
    const ABORTABLE: i16 = 120;
    const FENCED: i16 = 90;
    const MAPPING: i16 = 49;
    for version in [4, 5] {
        // One request adds partitions for two transactional ids.
        let added: AddPartitionsToTxnResponse = c.call(
            ApiKey::AddPartitionsToTxn,
            version,
            &AddPartitionsToTxnRequest::default().with_transactions(vec![
                txn_entry("a", a, false, &[0]),
                txn_entry("b", b, false, &[1, 2]),
            ]),
        );
        assert_eq!(added.error_code, 0);
        assert_eq!(
            codes(&added),
            vec![
                ("a".to_string(), vec![(0, NONE)]),
                ("b".to_string(), vec![(1, NONE), (2, NONE)])
            ]
        );
        // verify_only answers membership and writes nothing; wrong producers get one error
        // for every partition.
        let verified: AddPartitionsToTxnResponse = c.call(
            ApiKey::AddPartitionsToTxn,
            version,
            &AddPartitionsToTxnRequest::default().with_transactions(vec![
                txn_entry("a", a, true, &[0, 1]),
                txn_entry("b", (b.0, b.1 + 1), true, &[1]),
                txn_entry("c", a, true, &[0]),
            ]),
        );
        assert_eq!(
            codes(&verified),
            vec![
                ("a".to_string(), vec![(0, NONE), (1, ABORTABLE)]),
                ("b".to_string(), vec![(1, FENCED)]),
                ("c".to_string(), vec![(0, MAPPING)]),
            ]
        );
        let again: AddPartitionsToTxnResponse = c.call(
            ApiKey::AddPartitionsToTxn,
            version,
            &AddPartitionsToTxnRequest::default().with_transactions(vec![txn_entry(
                "a",
                a,
                true,
                &[1],
            )]),
        );
        assert_eq!(
            codes(&again),
            vec![("a".to_string(), vec![(1, ABORTABLE)])],
            "verification did not add the partition"
        );
        // End both (protocol v1 EndTxn keeps the epoch) for the next round.
        for (id, (pid, epoch)) in [("a", a), ("b", b)] {
            let end: EndTxnResponse = c.call(
                ApiKey::EndTxn,
                3,
                &EndTxnRequest::default()
                    .with_transactional_id(TransactionalId(StrBytes::from_string(id.to_string())))
                    .with_producer_id(ProducerId(pid))
                    .with_producer_epoch(epoch)
                    .with_committed(false),
            );
            assert_eq!(end.error_code, 0, "ending {id}");
        }
    }
}
