//! Compaction measurements (not tests: `#[ignore]`d, run by scripts/bench_compaction.sh,
//! figures in docs/benchmarks.md): cleaner throughput and what it does to concurrent
//! produce, and start-up time after a million offset commits and a million transactions.

mod common;

use std::time::{Duration, Instant};

use common::*;
use exacta_wire::batch::{build_keyed_batch, KeyedRecord};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn keyed(n: usize, key_space: usize, round: usize, value_bytes: usize) -> Vec<u8> {
    let records: Vec<KeyedRecord> = (0..n)
        .map(|i| {
            let key = format!("key-{:07}", (round * n + i) % key_space).into_bytes();
            (key, Some(vec![b'v'; value_bytes]))
        })
        .collect();
    build_keyed_batch(&records, now_ms(), None)
}

/// Produce for `seconds` (acks=all, batches of 100 × 100 B): records/s and p50/p99 latency.
fn produce_load(broker: &Broker, topic: &str, seconds: u64) -> (f64, Duration, Duration) {
    let mut c = Conn::new(broker);
    let mut latencies = Vec::new();
    let started = Instant::now();
    let mut round = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        let t = Instant::now();
        let answer = produce(&mut c, 9, topic, 0, keyed(100, 1_000_000, round, 100));
        assert_eq!(answer.error_code, 0);
        latencies.push(t.elapsed());
        round += 1;
    }
    latencies.sort();
    let rate = (round * 100) as f64 / started.elapsed().as_secs_f64();
    (
        rate,
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 99 / 100],
    )
}

fn cleaned_lines(broker: &Broker, topic: &str) -> Vec<String> {
    broker.log_lines(&format!("cleaned log topic={topic} "))
}

#[test]
#[ignore]
fn cleaner_throughput_and_produce_under_cleaning() {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    for (label, config) in [
        ("cleaner off", "cleaner_enable = false\n"),
        ("cleaner on, unthrottled", "cleaner_backoff_ms = 100\n"),
        (
            "cleaner on, 20 MB/s",
            "cleaner_backoff_ms = 100\ncleaner_io_max_bytes_per_second = 20000000\n",
        ),
    ] {
        let broker = start_with(config);
        let mut c = Conn::new(&broker);
        create_topic_with(
            &mut c,
            "big",
            1,
            &[
                ("cleanup.policy", "compact"),
                ("segment.bytes", "16777216"),
                ("min.cleanable.dirty.ratio", "0.01"),
            ],
        );
        create_topic(&mut c, "load", 1);
        // ~300 MB of updates over 100,000 keys: a long cleaning to run produce against.
        for round in 0..3000 {
            let answer = produce(&mut c, 9, "big", 0, keyed(1000, 100_000, round, 80));
            assert_eq!(answer.error_code, 0);
        }
        // Measured load on one topic while another client keeps updating `big`, so that
        // the cleaner (when on) is busy for the whole run.
        let before = cleaned_lines(&broker, "big").len();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let updater = {
            let stop = std::sync::Arc::clone(&stop);
            let mut c = Conn::new(&broker);
            std::thread::spawn(move || {
                let mut round = 3000;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let answer = produce(&mut c, 9, "big", 0, keyed(1000, 100_000, round, 80));
                    assert_eq!(answer.error_code, 0);
                    round += 1;
                }
            })
        };
        let (rate, p50, p99) = produce_load(&broker, "load", seconds);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        updater.join().unwrap();
        println!(
            "{label}: produce {rate:.0} records/s, p50 {p50:?}, p99 {p99:?} \
             (cleanings during the run: {})",
            cleaned_lines(&broker, "big").len() - before
        );
        if config.contains("backoff") {
            let deadline = Instant::now() + Duration::from_secs(600);
            while cleaned_lines(&broker, "big").is_empty() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(200));
            }
            for line in cleaned_lines(&broker, "big").iter().rev().take(3) {
                println!("  {}", &line[line.find("bytes_read").unwrap_or(0)..]);
            }
        }
    }
}

#[test]
#[ignore]
fn start_up_after_a_million_commits_and_a_million_transactions() {
    let n: i64 = std::env::var("BENCH_COUNT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    // Segments of the internal topics (the active one is never compacted); 100 MiB default.
    let segment: u64 = std::env::var("BENCH_SEGMENT_BYTES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100 << 20);
    for compacted in [false, true] {
        let config = format!(
            "flush_policy = \"never\"\ncleaner_backoff_ms = 200\ncleaner_enable = {compacted}\n\
             offsets_topic_segment_bytes = {segment}\ntransaction_state_segment_bytes = {segment}\n"
        );
        let broker = start_with(&config);
        let mut c = Conn::new(&broker);
        create_topic(&mut c, "source", 100);
        let started = Instant::now();
        // n offset commits: n/100 requests of 100 partitions, 10 groups.
        for round in 0..n / 100 {
            use kafka_protocol::messages::offset_commit_request::*;
            let request = OffsetCommitRequest::default()
                .with_group_id(GroupId(StrBytes::from_string(format!("g{}", round % 10))))
                .with_generation_id_or_member_epoch(-1)
                .with_topics(vec![OffsetCommitRequestTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str("source")))
                    .with_partitions(
                        (0..100)
                            .map(|p| {
                                OffsetCommitRequestPartition::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(round)
                            })
                            .collect(),
                    )]);
            let r: OffsetCommitResponse = c.call(ApiKey::OffsetCommit, 8, &request);
            assert_eq!(r.topics[0].partitions[0].error_code, 0);
        }
        let commits = started.elapsed();
        // n transactions over 100 transactional ids, one partition each.
        let ids: Vec<(String, (i64, i16))> = (0..100)
            .map(|i| {
                let id = format!("tx-{i}");
                let p = init_transactional(&mut c, &id);
                (id, p)
            })
            .collect();
        for t in 0..n {
            let (id, producer) = &ids[(t % 100) as usize];
            assert_eq!(
                add_partition(&mut c, id, *producer, "source", (t % 100) as i32),
                0
            );
            assert_eq!(end_txn(&mut c, id, *producer, true), 0);
        }
        let txns = started.elapsed() - commits;
        // Let the cleaner catch up, then restart and time the coordinators' loading.
        std::thread::sleep(Duration::from_secs(20));
        drop(c);
        let dir = broker.kill9();
        let size = |topic: &str| -> u64 {
            std::fs::read_dir(dir.path().join("data"))
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with(topic))
                .flat_map(|e| std::fs::read_dir(e.path()).unwrap())
                .filter_map(|f| f.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        };
        let (offsets_bytes, txn_bytes) = (size("__consumer_offsets"), size("__transaction_state"));
        let restarted = Instant::now();
        let broker = start_in(dir, &config, &[]);
        let ready = restarted.elapsed();
        let load = |what: &str| broker.log_lines(what).pop().unwrap_or_default();
        println!(
            "compaction {compacted}: {n} commits in {commits:?}, {n} transactions in {txns:?}; \
             on disk {offsets_bytes} B of __consumer_offsets, {txn_bytes} B of __transaction_state; \
             restart to listening {ready:?}\n  {}\n  {}",
            load("group coordinator loaded"),
            load("transaction coordinator loaded")
        );
    }
}
