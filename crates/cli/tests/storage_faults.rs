//! Storage faults against the real binary: what recovery accepts after a crash is made
//! durable before it counts as such, and a failed fsync stops the broker wherever it
//! happens (never an error answer followed by business as usual).

mod common;

use std::time::Duration;

use common::*;
use exacta_wire::batch::build_batch;
use kafka_protocol::records::Compression;

const TS: i64 = 1_700_000_000_000;

#[test]
fn recovery_fsyncs_the_segment_it_rescanned() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("sync-ledger");
    let env = [("EXACTA_TEST_SYNC_LEDGER", ledger.to_str().unwrap())];
    // No fsync during operation: acknowledged records are in the page cache only.
    let config = "flush_policy = \"never\"\n";
    let broker = start_in(dir, config, &env);
    let mut c = Conn::new(&broker);
    create_topic(&mut c, "unsynced", 1);
    for i in 0..10 {
        let batch = build_batch(&[format!("r{i}").into_bytes()], TS, Compression::None);
        assert_eq!(produce(&mut c, 7, "unsynced", 0, batch).error_code, 0);
    }
    drop(c);
    let segment = broker
        .data_dir()
        .join("unsynced-0")
        .join("00000000000000000000.log");
    let dir = broker.kill9();
    let length = std::fs::metadata(&segment).unwrap().len();
    assert!(length > 0);
    std::fs::write(&ledger, "").unwrap();

    // The restart rescans the active segment (no clean-shutdown marker) and must fsync it
    // before serving what it found.
    let broker = start_in(dir, config, &env);
    let mut c = Conn::new(&broker);
    assert_eq!(
        latest_offset(&mut c, "unsynced", 0, 0),
        10,
        "recovery kept all 10"
    );
    let synced = std::fs::read_to_string(&ledger).unwrap();
    let durable = synced
        .lines()
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(path, _)| path.ends_with("unsynced-0/00000000000000000000.log"))
        .filter_map(|(_, len)| len.parse::<u64>().ok())
        .max();
    assert_eq!(
        durable,
        Some(length),
        "recovery must fsync the whole segment it accepted; ledger:\n{synced}"
    );
}

#[test]
fn a_failed_fsync_during_a_roll_stops_the_broker() {
    let env = [(
        "EXACTA_TEST_FAIL_FSYNC",
        "fsync-victim-0/00000000000000000000.log",
    )];
    // No flusher: the only fsync of the segment is the one sealing it at the roll.
    let config = "flush_policy = \"never\"\nsegment_bytes = 1024\n";
    let mut broker = start_in(tempfile::tempdir().unwrap(), config, &env);
    let mut c = Conn::new(&broker);
    create_topic(&mut c, "fsync-victim", 1);
    create_topic(&mut c, "bystander", 1);
    let value = vec![b'x'; 400];
    let mut answers = Vec::new();
    for _ in 0..10 {
        let batch = build_batch(std::slice::from_ref(&value), TS, Compression::None);
        match c.try_call::<_, kafka_protocol::messages::ProduceResponse>(
            kafka_protocol::messages::ApiKey::Produce,
            7,
            &produce_request("fsync-victim", 0, batch),
        ) {
            Ok(r) => answers.push(r.responses[0].partition_responses[0].error_code),
            Err(_) => break,
        }
    }
    assert_eq!(
        broker.wait_exit(Duration::from_secs(10)),
        Some(Some(70)),
        "the broker must exit (code 70) on a failed fsync; it answered {answers:?}"
    );
    assert!(
        answers.iter().all(|&code| code == 0),
        "no error answer before the exit, the broker stops instead: {answers:?}"
    );
}
