//! Idempotent appends through the partition log, and producer-state recovery: the state
//! rebuilt from snapshots and the log equals the live state.

use exacta_log::producer_state::SequenceError;
use exacta_log::{LogConfig, LogError, PartitionLog};
use exacta_wire::batch::build_producer_batch;
use exacta_wire::kafka_protocol::records::Compression;

const T0: i64 = 1_700_000_000_000;

fn pbatch(pid: i64, epoch: i16, seq: i32, n: usize) -> Vec<u8> {
    let values: Vec<Vec<u8>> = (0..n)
        .map(|i| format!("{pid}-{seq}-{i}").into_bytes())
        .collect();
    build_producer_batch(
        &values,
        T0 + i64::from(seq),
        Compression::None,
        (pid, epoch, seq),
    )
}

fn small() -> LogConfig {
    LogConfig {
        segment_bytes: 2048,
        index_interval_bytes: 256,
        ..LogConfig::default()
    }
}

#[test]
fn retry_is_acknowledged_with_original_offsets_and_not_appended() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(dir.path(), LogConfig::default(), true).unwrap();
    let first = log.append(&mut pbatch(1, 0, 0, 3)).unwrap();
    let second = log.append(&mut pbatch(1, 0, 3, 2)).unwrap();
    let retry = log.append(&mut pbatch(1, 0, 0, 3)).unwrap();
    assert!(!first.duplicate && retry.duplicate);
    assert_eq!((retry.base_offset, retry.last_offset), (0, 2));
    assert_eq!((second.base_offset, second.last_offset), (3, 4));
    assert_eq!(log.log_end_offset(), 5);
    // A gap, an old epoch and an unknown producer are refused and change nothing.
    assert!(matches!(
        log.append(&mut pbatch(1, 0, 9, 1)),
        Err(LogError::Producer(SequenceError::OutOfOrderSequence { .. }))
    ));
    log.append(&mut pbatch(1, 1, 0, 1)).unwrap();
    assert!(matches!(
        log.append(&mut pbatch(1, 0, 5, 1)),
        Err(LogError::Producer(
            SequenceError::InvalidProducerEpoch { .. }
        ))
    ));
    assert!(matches!(
        log.append(&mut pbatch(2, 0, 4, 1)),
        Err(LogError::Producer(SequenceError::UnknownProducerId { .. }))
    ));
    assert_eq!(log.log_end_offset(), 6);
}

/// Appends batches from several producers (with epoch bumps) across many segment rolls.
fn workload(log: &mut PartitionLog) {
    let mut seq = [0i32; 4];
    let mut epoch = [0i16; 4];
    for round in 0..120 {
        let p = round % 4;
        if round % 37 == 36 {
            epoch[p] += 1;
            seq[p] = 0;
        }
        let n = 1 + (round % 3);
        log.append(&mut pbatch(100 + p as i64, epoch[p], seq[p], n))
            .unwrap();
        seq[p] += n as i32;
    }
}

#[test]
fn state_after_clean_restart_equals_live_state() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(dir.path(), small(), true).unwrap();
    workload(&mut log);
    let live = log.producer_state().clone();
    assert_eq!(live.len(), 4);
    log.close().unwrap();
    drop(log);
    let (log, info) = PartitionLog::open(dir.path(), small(), true).unwrap();
    assert_eq!(
        info.batches_replayed, 0,
        "clean shutdown snapshot at the log end"
    );
    assert_eq!(log.producer_state(), &live);
}

#[test]
fn state_after_crash_equals_live_state_from_snapshot_plus_replay() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(dir.path(), small(), true).unwrap();
    workload(&mut log);
    let live = log.producer_state().clone();
    drop(log); // no close: as after kill -9
    let (log, info) = PartitionLog::open(dir.path(), small(), false).unwrap();
    assert!(info.snapshot_offset > 0, "a roll wrote a snapshot");
    assert!(info.batches_replayed > 0);
    assert_eq!(log.producer_state(), &live);
}

#[test]
fn state_rebuilt_from_the_whole_log_without_snapshots_equals_live_state() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(dir.path(), small(), true).unwrap();
    workload(&mut log);
    let live = log.producer_state().clone();
    drop(log);
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "snapshot") {
            std::fs::remove_file(path).unwrap();
        }
    }
    let (log, info) = PartitionLog::open(dir.path(), small(), false).unwrap();
    assert_eq!(info.snapshot_offset, -1);
    assert_eq!(log.producer_state(), &live);
}

#[test]
fn retention_keeps_the_state_of_active_producers() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = small();
    config.retention_bytes = 2048;
    let (mut log, _) = PartitionLog::open(dir.path(), config.clone(), true).unwrap();
    workload(&mut log);
    let live = log.producer_state().clone();
    assert!(log.apply_retention(T0).unwrap() > 0);
    assert!(log.log_start_offset() > 0);
    assert_eq!(log.producer_state(), &live);
    // And after a crash, the snapshot still carries them.
    drop(log);
    let (log, _) = PartitionLog::open(dir.path(), config, false).unwrap();
    assert_eq!(log.producer_state(), &live);
    // A retry of producer 100's last batch is still recognised.
    let last = live.get(100).unwrap().batches.back().copied().unwrap();
    assert!(last.last_offset >= log.log_start_offset());
}

#[test]
fn snapshots_past_a_truncated_log_end_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(dir.path(), LogConfig::default(), true).unwrap();
    log.append(&mut pbatch(1, 0, 0, 2)).unwrap();
    log.append(&mut pbatch(1, 0, 2, 2)).unwrap();
    log.close().unwrap(); // snapshot at 4
    drop(log);
    // Lose the last batch (as a broken disk might), then recover.
    let seg = dir.path().join(exacta_log::segment::file_name(0, "log"));
    let len = std::fs::metadata(&seg).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 10).unwrap();
    drop(f);
    let (mut log, info) = PartitionLog::open(dir.path(), LogConfig::default(), false).unwrap();
    assert_eq!(log.log_end_offset(), 2);
    assert_eq!(info.snapshot_offset, -1);
    // The state matches the log: the lost batch may be sent again.
    assert_eq!(log.producer_state().get(1).unwrap().last_sequence(), 1);
    assert!(!log.append(&mut pbatch(1, 0, 2, 2)).unwrap().duplicate);
}
