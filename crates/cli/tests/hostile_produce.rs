//! Hostile Produce requests against the real binary: every batch a partition takes passes
//! the transaction, sequence and timestamp checks, and none can leave a transaction that
//! no coordinator knows holding back `read_committed` readers.

mod common;

use common::*;
use exacta_wire::batch::{build_batch, build_producer_batch, build_transactional_batch};
use kafka_protocol::records::Compression;

const INVALID_RECORD: i16 = 87;
const INVALID_TXN_STATE: i16 = 48;
const INVALID_TIMESTAMP: i16 = 32;
const MESSAGE_TOO_LARGE: i16 = 10;
const TS: i64 = 1_700_000_000_000;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn a_second_batch_in_a_partition_is_refused_and_cannot_pin_the_stable_offset() {
    let broker = start();
    let mut c = Conn::new(&broker);
    create_topic(&mut c, "mixed", 1);
    let plain = build_batch(&[b"plain".to_vec()], TS, Compression::None);
    assert_eq!(produce(&mut c, 3, "mixed", 0, plain.clone()).error_code, 0);
    let before = read_all(&mut c, "mixed", 0);

    // A plain batch, then a transactional one from a producer no coordinator knows.
    let hidden = build_transactional_batch(&[b"hidden".to_vec()], TS, (4242, 0, 0));
    for version in [3, 7, 9, 12] {
        let mut records = plain.clone();
        records.extend_from_slice(&hidden);
        let answer = produce(&mut c, version, "mixed", 0, records);
        assert_eq!(
            answer.error_code, INVALID_RECORD,
            "v{version}: two batches in one partition must be refused"
        );
        // The same batch twice: refused too.
        let twice = [plain.clone(), plain.clone()].concat();
        assert_eq!(
            produce(&mut c, version, "mixed", 0, twice).error_code,
            INVALID_RECORD
        );
    }
    // Alone, the made-up transactional batch is refused (no open transaction).
    assert_ne!(produce(&mut c, 3, "mixed", 0, hidden).error_code, 0);

    assert_eq!(read_all(&mut c, "mixed", 0), before, "nothing was appended");
    let hw = latest_offset(&mut c, "mixed", 0, 0);
    assert_eq!(
        latest_offset(&mut c, "mixed", 0, 1),
        hw,
        "no transaction holds the LSO"
    );
    assert_healthy(&broker, "mixed");
}

#[test]
fn a_plain_batch_cannot_slip_into_an_open_transaction() {
    let broker = start();
    let mut c = Conn::new(&broker);
    create_topic(&mut c, "txn-state", 1);
    let producer = init_transactional(&mut c, "owner");
    assert_eq!(add_partition(&mut c, "owner", producer, "txn-state", 0), 0);
    let txn = build_transactional_batch(&[b"in-txn".to_vec()], TS, (producer.0, producer.1, 0));
    assert_eq!(produce(&mut c, 7, "txn-state", 0, txn).error_code, 0);
    // Same producer id and epoch, next sequence, but not marked transactional.
    let plain = build_producer_batch(
        &[b"sneaky".to_vec()],
        TS,
        Compression::None,
        (producer.0, producer.1, 1),
    );
    assert_eq!(
        produce(&mut c, 7, "txn-state", 0, plain).error_code,
        INVALID_TXN_STATE
    );
    assert_eq!(end_txn(&mut c, "owner", producer, false), 0);
    let hw = latest_offset(&mut c, "txn-state", 0, 0);
    assert_eq!(latest_offset(&mut c, "txn-state", 0, 1), hw);
    assert_healthy(&broker, "txn-state");
}

#[test]
fn timestamps_outside_the_topic_window_are_invalid() {
    let broker = start_with("message_timestamp_before_max_ms = 86400000\n");
    let mut c = Conn::new(&broker);
    create_topic(&mut c, "times", 1);
    let now = now_ms();
    for (what, ts) in [
        ("two hours ahead", now + 7_200_000),
        ("two days old", now - 2 * 86_400_000),
        ("negative", -5),
        ("i64::MIN", i64::MIN),
        ("i64::MAX", i64::MAX),
    ] {
        let batch = build_batch(&[b"t".to_vec()], ts, Compression::None);
        let answer = produce(&mut c, 9, "times", 0, batch);
        assert_eq!(answer.error_code, INVALID_TIMESTAMP, "{what}");
        assert!(answer.error_message.is_some(), "{what}: a message says why");
    }
    let fine = build_batch(&[b"now".to_vec()], now, Compression::None);
    assert_eq!(produce(&mut c, 7, "times", 0, fine).error_code, 0);
    // The topic's own window replaces the broker's.
    alter_topic_config(
        &mut c,
        "times",
        "message.timestamp.after.max.ms",
        "86400000",
    );
    let tomorrowish = build_batch(&[b"later".to_vec()], now + 7_200_000, Compression::None);
    assert_eq!(produce(&mut c, 7, "times", 0, tomorrowish).error_code, 0);
    assert_eq!(latest_offset(&mut c, "times", 0, 0), 2);
    assert_healthy(&broker, "times");
}

#[test]
fn a_compression_bomb_is_refused_where_the_broker_decompresses() {
    let broker = start();
    let mut c = Conn::new(&broker);
    create_topic_with(
        &mut c,
        "bomb-compacted",
        1,
        &[("cleanup.policy", "compact")],
    );
    create_topic_with(
        &mut c,
        "bomb-recompressed",
        1,
        &[("compression.type", "zstd")],
    );
    // 100 MiB of zeros: about 100 KiB gzipped, well within max.message.bytes.
    let bomb = build_batch(&[vec![0u8; 100 << 20]], now_ms(), Compression::Gzip);
    assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());
    for topic in ["bomb-compacted", "bomb-recompressed"] {
        let answer = produce(&mut c, 9, topic, 0, bomb.clone());
        assert_eq!(answer.error_code, MESSAGE_TOO_LARGE, "{topic}");
        let message = answer
            .error_message
            .map(|m| m.to_string())
            .unwrap_or_default();
        assert!(message.contains("decompress"), "{topic}: {message}");
    }
    // An ordinary compressed batch still goes in, recompressed.
    let fine = build_batch(&[b"fine".to_vec()], now_ms(), Compression::Gzip);
    assert_eq!(
        produce(&mut c, 9, "bomb-recompressed", 0, fine).error_code,
        0
    );
    assert_healthy(&broker, "bomb-recompressed");
}
