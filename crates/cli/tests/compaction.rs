//! Log compaction against the real binary: a changelog of a million updates shrinks to one
//! record per key; kill -9 in a loop while the cleaner runs, and at each step of a segment
//! swap, loses and duplicates nothing; the internal topics are compacted so a restart
//! replays live state only; bad compaction input gets Kafka's errors.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use exacta_wire::batch::{build_keyed_batch, KeyedRecord};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

const FAST_CLEANER: &str = "cleaner_backoff_ms = 50\n";
/// As [`FAST_CLEANER`], without the default I/O limit.
const UNTHROTTLED: &str = "cleaner_backoff_ms = 50\ncleaner_io_max_bytes_per_second = inf\n";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn compacted(segment_bytes: &str) -> Vec<(&str, &str)> {
    vec![
        ("cleanup.policy", "compact"),
        ("segment.bytes", segment_bytes),
        ("min.cleanable.dirty.ratio", "0.01"),
    ]
}

/// Writes `entries` as one batch; panics unless acknowledged.
fn write(c: &mut Conn, topic: &str, entries: &[(String, String)]) {
    let records: Vec<KeyedRecord> = entries
        .iter()
        .map(|(k, v)| (k.clone().into_bytes(), Some(v.clone().into_bytes())))
        .collect();
    let batch = build_keyed_batch(&records, now_ms(), None);
    let answer = produce(c, 9, topic, 0, batch);
    assert_eq!(answer.error_code, 0, "{:?}", answer.error_message);
}

/// As [`write`]; false if the broker did not answer (it stopped).
fn try_write(c: &mut Conn, topic: &str, entries: &[(String, String)]) -> bool {
    let records: Vec<KeyedRecord> = entries
        .iter()
        .map(|(k, v)| (k.clone().into_bytes(), Some(v.clone().into_bytes())))
        .collect();
    let batch = build_keyed_batch(&records, now_ms(), None);
    let request = produce_request(topic, 0, batch);
    match c.try_call::<_, ProduceResponse>(ApiKey::Produce, 9, &request) {
        Ok(r) => r.responses[0].partition_responses[0].error_code == 0,
        Err(_) => false,
    }
}

/// The first dirty offset the cleaner persisted for partition 0 of `topic` (-1: none).
fn cleaned_up_to(data: &Path, topic: &str) -> i64 {
    std::fs::read_to_string(data.join(format!("{topic}-0")).join("cleaner-checkpoint"))
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(-1)
}

fn wait_cleaned(data: &Path, topic: &str, offset: i64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while cleaned_up_to(data, topic) < offset {
        assert!(
            Instant::now() < deadline,
            "{topic} cleaned up to {} only, wanted {offset}",
            cleaned_up_to(data, topic)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every key's last value in partition 0 of `topic`.
fn latest_values(c: &mut Conn, topic: &str) -> BTreeMap<String, String> {
    read_records(c, topic, 0)
        .into_iter()
        .map(|(_, key, value)| {
            (
                String::from_utf8(key).unwrap(),
                String::from_utf8(value.unwrap()).unwrap(),
            )
        })
        .collect()
}

/// Checks a partition against the acknowledged writes: offsets strictly increasing, every
/// key's last value the last one written.
fn assert_matches(c: &mut Conn, topic: &str, acked: &BTreeMap<String, String>) -> usize {
    let records = read_records(c, topic, 0);
    assert!(
        records.windows(2).all(|w| w[0].0 < w[1].0),
        "offsets must strictly increase"
    );
    assert_eq!(
        &latest_values(c, topic),
        acked,
        "the log lost or resurrected a value"
    );
    records.len()
}

#[test]
fn a_million_updates_over_ten_thousand_keys_leave_ten_thousand_records() {
    let broker = start_with(UNTHROTTLED);
    let mut c = Conn::new(&broker);
    create_topic_with(&mut c, "changelog", 1, &compacted("4194304"));
    let started = Instant::now();
    let mut acked = BTreeMap::new();
    for round in 0..1000 {
        let entries: Vec<(String, String)> = (0..1000)
            .map(|i| {
                let key = format!("key-{:05}", (round * 1000 + i) % 10_000);
                (key, format!("round-{round:04}"))
            })
            .collect();
        for (k, v) in &entries {
            acked.insert(k.clone(), v.clone());
        }
        write(&mut c, "changelog", &entries);
    }
    let produced = started.elapsed();
    // Roll by time so the last updates leave the active segment (never cleaned).
    alter_topic_config(&mut c, "changelog", "segment.ms", "1");
    std::thread::sleep(Duration::from_millis(5));
    write(&mut c, "changelog", &[("end".into(), "end".into())]);
    acked.insert("end".into(), "end".into());
    wait_cleaned(
        &broker.data_dir(),
        "changelog",
        1_000_000,
        Duration::from_secs(120),
    );
    let records = assert_matches(&mut c, "changelog", &acked);
    assert_eq!(records, 10_001, "one record per key (and the last write)");
    println!(
        "1,000,000 updates written in {produced:?}, cleaned to {records} records {:?} later",
        started.elapsed() - produced
    );
}

/// A small deterministic generator (no dependency for one test).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn interrupted_cleaning_files(data: &Path, topic: &str) -> usize {
    std::fs::read_dir(data.join(format!("{topic}-0")))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".cleaned") || n.ends_with(".swap"))
        .count()
}

#[test]
fn kill_9_while_the_cleaner_runs_loses_and_duplicates_nothing() {
    // A slow cleaner (2 MB/s) so that most kills land in the middle of a cleaning.
    let config = format!("{FAST_CLEANER}cleaner_io_max_bytes_per_second = 2000000\n");
    let topic = "crashy";
    let mut broker = start_with(&config);
    let mut c = Conn::new(&broker);
    create_topic_with(&mut c, topic, 1, &compacted("16384"));
    let mut acked = BTreeMap::new();
    let value = |round: usize| format!("{round:06}-{}", "v".repeat(180));
    let mut round = 0;
    let mut write_round = |c: &mut Conn, acked: &mut BTreeMap<String, String>, keys| {
        for chunk in (0..keys).collect::<Vec<usize>>().chunks(20) {
            let entries: Vec<(String, String)> = chunk
                .iter()
                .map(|i| (format!("k{:04}", (round * 97 + i) % 2000), value(round)))
                .collect();
            write(c, topic, &entries);
            acked.extend(entries);
        }
        round += 1;
    };
    write_round(&mut c, &mut acked, 2000);
    let mut rng = Lcg(7);
    let mut interrupted = 0;
    let kills = 50;
    for _ in 0..kills {
        write_round(&mut c, &mut acked, 200);
        // Kill at a random instant after the cleaner started writing a cleaned segment: in
        // the middle of a rewrite, of a swap, or between two groups.
        let deadline = Instant::now() + Duration::from_secs(10);
        while interrupted_cleaning_files(&broker.data_dir(), topic) == 0
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(rng.below(40)));
        drop(c);
        let dir = broker.kill9();
        interrupted += usize::from(interrupted_cleaning_files(&dir.path().join("data"), topic) > 0);
        broker = start_in(dir, &config, &[]);
        c = Conn::new(&broker);
        assert_matches(&mut c, topic, &acked);
    }
    drop(c);
    let dir = broker.kill9();
    let broker = start_in(dir, "cleaner_enable = false\n", &[]);
    let mut c = Conn::new(&broker);
    assert_matches(&mut c, topic, &acked);
    assert_eq!(
        interrupted_cleaning_files(&broker.data_dir(), topic),
        0,
        "recovery finished or undid every swap"
    );
    println!("{kills} kills, {interrupted} of them with a cleaning's files on disk");
    assert!(
        interrupted >= 5,
        "only {interrupted} kills hit a cleaning in progress"
    );
}

#[test]
fn a_crash_at_each_step_of_a_swap_leaves_the_old_or_the_new_segments() {
    for step in ["1", "2", "3"] {
        let dir = tempfile::tempdir().unwrap();
        let env = [("EXACTA_TEST_CRASH_IN_SWAP", step)];
        let mut broker = start_in(dir, UNTHROTTLED, &env);
        let mut c = Conn::new(&broker);
        create_topic_with(&mut c, "swap", 1, &compacted("4096"));
        let mut acked = BTreeMap::new();
        // The write the exit cut off: durable or not, never acknowledged.
        let mut in_flight = BTreeMap::new();
        // Write until the broker stops itself inside its first swap.
        for round in 0..200 {
            let entries: Vec<(String, String)> = (0..10)
                .map(|k| (format!("k{k}"), format!("{round}-{}", "x".repeat(50))))
                .collect();
            if !try_write(&mut c, "swap", &entries) {
                in_flight.extend(entries);
                break;
            }
            acked.extend(entries);
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            broker.wait_exit(Duration::from_secs(20)),
            Some(Some(86)),
            "the broker stops at swap step {step}"
        );
        drop(c);
        let dir = broker.kill9();
        assert!(interrupted_cleaning_files(&dir.path().join("data"), "swap") > 0 || step == "3");
        // Recovery alone (no new cleaning to race with the checks).
        let broker = start_in(dir, "cleaner_enable = false\n", &[]);
        let mut c = Conn::new(&broker);
        let mut with_in_flight = acked.clone();
        with_in_flight.extend(in_flight);
        let found = latest_values(&mut c, "swap");
        assert!(
            found == acked || found == with_in_flight,
            "step {step}: the log lost or resurrected a value: {found:?}"
        );
        assert_matches(&mut c, "swap", &found);
        assert_eq!(interrupted_cleaning_files(&broker.data_dir(), "swap"), 0);
        let completed = broker.log_lines("completing a segment swap").len();
        assert_eq!(completed, 1, "step {step}: the committed swap is completed");
    }
}

fn commit_offsets(c: &mut Conn, group: &str, topic: &str, partitions: i32, offset: i64) {
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(
                (0..partitions)
                    .map(|p| {
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(p)
                            .with_committed_offset(offset)
                    })
                    .collect(),
            )]);
    let response: OffsetCommitResponse = c.call(ApiKey::OffsetCommit, 8, &request);
    assert!(response.topics[0]
        .partitions
        .iter()
        .all(|p| p.error_code == 0));
}

/// The `records=N` a coordinator's "loaded" line reports.
fn loaded_records(broker: &Broker, what: &str) -> usize {
    let line = broker.log_lines(what).pop().expect("a load line");
    line.split("records=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .expect("records=N")
}

#[test]
fn compacted_internal_topics_bound_what_a_restart_replays() {
    // No fsyncs (durability is not what this test is about), small internal segments.
    let config = format!(
        "{UNTHROTTLED}flush_policy = \"never\"\noffsets_topic_partitions = 1\n\
         transaction_state_partitions = 1\noffsets_topic_segment_bytes = 1048576\n\
         transaction_state_segment_bytes = 1048576\n"
    );
    let broker = start_with(&config);
    let mut c = Conn::new(&broker);
    create_topic(&mut c, "source", 50);
    // 100,000 offset commits (2,000 requests of 50 partitions) of one group.
    for round in 0..2000 {
        commit_offsets(&mut c, "busy-group", "source", 50, round);
    }
    // 1,000 committed transactions of one producer over 20 partitions.
    let producer = init_transactional(&mut c, "busy-txn");
    for sequence in 0..1000 {
        for p in 0..20 {
            assert_eq!(add_partition(&mut c, "busy-txn", producer, "source", p), 0);
        }
        let batch = exacta_wire::batch::build_transactional_batch(
            &[b"t".to_vec()],
            now_ms(),
            (producer.0, producer.1, sequence),
        );
        assert_eq!(produce(&mut c, 7, "source", 0, batch).error_code, 0);
        assert_eq!(end_txn(&mut c, "busy-txn", producer, true), 0);
    }
    let data = broker.data_dir();
    let deadline = Instant::now() + Duration::from_secs(60);
    while cleaned_up_to(&data, "__consumer_offsets") < 0
        || cleaned_up_to(&data, "__transaction_state") < 0
    {
        assert!(
            Instant::now() < deadline,
            "internal topics were not cleaned"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let group_written = latest_offset(&mut c, "__consumer_offsets", 0, 0);
    let txn_written = latest_offset(&mut c, "__transaction_state", 0, 0);
    drop(c);
    let dir = broker.kill9();
    let broker = start_in(dir, &config, &[]);
    let offsets = loaded_records(&broker, "group coordinator loaded");
    let txns = loaded_records(&broker, "transaction coordinator loaded");
    println!(
        "a restart replayed {offsets} of {group_written} group records and {txns} of \
         {txn_written} transaction records"
    );
    // What is left: the live state, plus the active segment (at most 1 MiB here).
    assert!(
        offsets < group_written as usize / 5,
        "{offsets} group records replayed"
    );
    assert!(
        txns < txn_written as usize / 5,
        "{txns} transaction records replayed"
    );
    // The state itself survived: the group's offsets are the last committed.
    let mut c = Conn::new(&broker);
    let fetched: OffsetFetchResponse = c.call(
        ApiKey::OffsetFetch,
        5,
        &OffsetFetchRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("busy-group")))
            .with_topics(None),
    );
    let partitions = &fetched.topics[0].partitions;
    assert_eq!(partitions.len(), 50);
    assert!(partitions.iter().all(|p| p.committed_offset == 1999));
    // And the transactional id still knows its producer: a new instance bumps the epoch.
    let again = init_transactional(&mut c, "busy-txn");
    assert_eq!(again.0, producer.0);
    assert!(again.1 > producer.1);
}

fn delete_records(c: &mut Conn, topic: &str, partition: i32, offset: i64) -> (i16, i64) {
    use kafka_protocol::messages::delete_records_request::{
        DeleteRecordsPartition, DeleteRecordsTopic,
    };
    let request = DeleteRecordsRequest::default()
        .with_timeout_ms(5_000)
        .with_topics(vec![DeleteRecordsTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![DeleteRecordsPartition::default()
                .with_partition_index(partition)
                .with_offset(offset)])]);
    let response: DeleteRecordsResponse = c.call(ApiKey::DeleteRecords, 2, &request);
    let p = &response.topics[0].partitions[0];
    (p.error_code, p.low_watermark)
}

#[test]
fn bad_compaction_input_gets_kafkas_errors_and_disturbs_nothing() {
    const INVALID_CONFIG: i16 = 40;
    let broker = start_with(FAST_CLEANER);
    let mut c = Conn::new(&broker);
    for configs in [
        vec![("min.cleanable.dirty.ratio", "-1")],
        vec![("min.cleanable.dirty.ratio", "1.01")],
        vec![
            ("min.compaction.lag.ms", "100"),
            ("max.compaction.lag.ms", "99"),
        ],
        vec![("max.compaction.lag.ms", "0")],
        vec![("delete.retention.ms", "-2")],
        vec![("cleanup.policy", "")],
        vec![("cleanup.policy", "compact,forever")],
    ] {
        let r = try_create_topic(&mut c, "bad", 1, &configs);
        assert_eq!(r.error_code, INVALID_CONFIG, "{configs:?}");
        let message = r.error_message.map(|m| m.to_string()).unwrap_or_default();
        assert!(
            message.contains(configs.last().unwrap().0),
            "{configs:?}: {message}"
        );
    }
    create_topic(&mut c, "policies", 1);
    // APPEND and SUBTRACT start from the value in force (the default `delete`).
    assert_eq!(
        try_alter_topic_config(&mut c, "policies", "cleanup.policy", Some("compact"), 2).0,
        0
    );
    assert_eq!(
        describe_topic_config(&mut c, "policies", "cleanup.policy").as_deref(),
        Some("delete,compact")
    );
    assert_eq!(
        try_alter_topic_config(&mut c, "policies", "cleanup.policy", Some("delete"), 3).0,
        0
    );
    assert_eq!(
        describe_topic_config(&mut c, "policies", "cleanup.policy").as_deref(),
        Some("compact")
    );
    let (code, message) =
        try_alter_topic_config(&mut c, "policies", "cleanup.policy", Some("compact"), 3);
    assert_eq!(code, INVALID_CONFIG, "an empty policy list: {message:?}");
    let (code, _) =
        try_alter_topic_config(&mut c, "policies", "min.compaction.lag.ms", Some("5000"), 0);
    assert_eq!(code, 0);
    let (code, message) =
        try_alter_topic_config(&mut c, "policies", "max.compaction.lag.ms", Some("4999"), 0);
    assert_eq!(code, INVALID_CONFIG);
    assert!(message.unwrap().contains("max.compaction.lag.ms"));

    // Unkeyed records on a compacted topic: INVALID_RECORD with a message.
    let batch = exacta_wire::batch::build_batch(
        &[b"no key".to_vec()],
        now_ms(),
        kafka_protocol::records::Compression::Lz4,
    );
    let answer = produce(&mut c, 9, "policies", 0, batch);
    assert_eq!(answer.error_code, 87, "INVALID_RECORD");
    assert!(answer.error_message.unwrap().contains("without key"));
    write(&mut c, "policies", &[("k".into(), "v".into())]);

    // DeleteRecords: past the high watermark, unknown topic or partition, internal topic.
    assert_eq!(
        delete_records(&mut c, "policies", 0, 5).0,
        1,
        "OFFSET_OUT_OF_RANGE"
    );
    assert_eq!(
        delete_records(&mut c, "nope", 0, 0).0,
        3,
        "UNKNOWN_TOPIC_OR_PARTITION"
    );
    assert_eq!(delete_records(&mut c, "policies", 9, 0).0, 3);
    assert_eq!(
        delete_records(&mut c, "__consumer_offsets", 0, 0).0,
        17,
        "INVALID_TOPIC_EXCEPTION"
    );
    assert_eq!(
        delete_records(&mut c, "policies", 0, -1),
        (0, 1),
        "-1: the high watermark"
    );
    assert_eq!(
        delete_records(&mut c, "policies", 0, 0),
        (0, 1),
        "never backwards"
    );
    write(&mut c, "policies", &[("k2".into(), "v2".into())]);
    let records = read_records_from(&mut c, "policies", 1);
    assert_eq!(records, [(1, b"k2".to_vec())]);
    create_topic(&mut c, "policies-health", 1);
    assert_healthy(&broker, "policies-health");
}

fn read_records_from(c: &mut Conn, topic: &str, offset: i64) -> Vec<(i64, Vec<u8>)> {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    let fetch = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![FetchPartition::default()
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])]);
    let fetched: FetchResponse = c.call(ApiKey::Fetch, 11, &fetch);
    let p = &fetched.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    assert_eq!(p.log_start_offset, offset);
    let mut bytes = p.records.clone().unwrap_or_default();
    kafka_protocol::records::RecordBatchDecoder::decode_all(&mut bytes)
        .unwrap()
        .into_iter()
        .flat_map(|s| s.records)
        .map(|r| (r.offset, r.key.unwrap_or_default().to_vec()))
        .collect()
}
