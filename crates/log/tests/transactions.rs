//! Partition side of transactions: open transactions hold the last stable offset, markers
//! end them, aborts are remembered for read_committed readers, and all of it is rebuilt
//! after a crash.

use exacta_log::producer_state::AbortedTxn;
use exacta_log::{LogConfig, PartitionLog};
use exacta_wire::batch::{build_batch, build_transactional_batch};
use exacta_wire::kafka_protocol::records::Compression;

const T0: i64 = 1_700_000_000_000;

fn txn(pid: i64, seq: i32, n: usize) -> Vec<u8> {
    let values: Vec<Vec<u8>> = (0..n)
        .map(|i| format!("{pid}-{seq}-{i}").into_bytes())
        .collect();
    build_transactional_batch(&values, T0, (pid, 0, seq))
}

fn plain(n: usize) -> Vec<u8> {
    let values: Vec<Vec<u8>> = (0..n).map(|i| vec![b'p'; 10 + i]).collect();
    build_batch(&values, T0, Compression::None)
}

fn small() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 128,
        ..LogConfig::default()
    }
}

#[test]
fn open_transactions_hold_the_lso_and_markers_release_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(dir.path(), LogConfig::default(), true).unwrap();
    log.append(&mut plain(2)).unwrap(); // 0..1
    log.append(&mut txn(7, 0, 3)).unwrap(); // 2..4, pid 7 open from 2
    log.append(&mut txn(8, 0, 2)).unwrap(); // 5..6, pid 8 open from 5
    let hw = log.log_end_offset();
    assert_eq!(log.last_stable_offset(hw), 2);
    // Commit 7: the LSO moves to 8's first offset.
    assert_eq!(log.append_marker(7, 0, true, 0, T0).unwrap(), 7);
    assert_eq!(log.last_stable_offset(log.log_end_offset()), 5);
    // Abort 8: nothing open, the LSO is the high watermark; the abort is remembered.
    assert_eq!(log.append_marker(8, 0, false, 0, T0).unwrap(), 8);
    assert_eq!(log.last_stable_offset(9), 9);
    assert_eq!(
        log.last_stable_offset(6),
        6,
        "never past the high watermark"
    );
    let aborted = log.producer_state().aborted_between(0, 9);
    assert_eq!(
        aborted,
        vec![AbortedTxn {
            producer_id: 8,
            first_offset: 5,
            last_offset: 8
        }]
    );
    assert!(log.producer_state().aborted_between(9, 20).is_empty());
    assert!(log.producer_state().aborted_between(0, 5).is_empty());
    // A marker from an older epoch is refused (the producer was fenced).
    log.append(&mut build_transactional_batch(
        &[b"x".to_vec()],
        T0,
        (9, 5, 0),
    ))
    .unwrap();
    assert!(log.append_marker(9, 4, true, 0, T0).is_err());
}

#[test]
fn transaction_state_survives_crash_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(dir.path(), small(), true).unwrap();
    let mut seq = [0i32; 3];
    for round in 0..60 {
        let pid = (round % 3) as i64;
        log.append(&mut txn(pid, seq[pid as usize], 2)).unwrap();
        seq[pid as usize] += 2;
        if round % 4 == 3 {
            log.append_marker(pid, 0, round % 8 == 3, 0, T0).unwrap();
        }
    }
    let live = log.producer_state().clone();
    let lso = log.last_stable_offset(log.log_end_offset());
    assert!(lso < log.log_end_offset(), "some transaction is still open");
    assert!(!live.aborted_between(0, i64::MAX).is_empty());
    assert!(log.segment_count() > 3);
    drop(log); // crash
    let (log, info) = PartitionLog::open(dir.path(), small(), false).unwrap();
    assert!(info.snapshot_offset > 0 && info.batches_replayed > 0);
    assert_eq!(log.producer_state(), &live);
    assert_eq!(log.last_stable_offset(log.log_end_offset()), lso);
    // And from the log alone.
    drop(log);
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "snapshot") {
            std::fs::remove_file(path).unwrap();
        }
    }
    let (log, _) = PartitionLog::open(dir.path(), small(), false).unwrap();
    assert_eq!(log.producer_state(), &live);
}
