//! A follower's log: batches appended with the leader's offsets and epochs, producer state
//! rebuilt from them, and truncation to the point where it diverged from a new leader.

use exacta_log::{LogConfig, LogError, PartitionLog};
use exacta_wire::batch::build_producer_batch;
use exacta_wire::kafka_protocol::records::Compression;

const T0: i64 = 1_700_000_000_000;

fn pbatch(pid: i64, seq: i32, n: usize) -> Vec<u8> {
    let values: Vec<Vec<u8>> = (0..n)
        .map(|i| format!("{pid}-{seq}-{i}").into_bytes())
        .collect();
    build_producer_batch(
        &values,
        T0 + i64::from(seq),
        Compression::None,
        (pid, 0, seq),
    )
}

fn small() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 256,
        ..LogConfig::default()
    }
}

/// Everything in LOG from offset 0, as stored.
fn bytes_of(log: &PartitionLog) -> Vec<u8> {
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < log.log_end_offset() {
        let read = log.read(offset, 1 << 20, log.log_end_offset()).unwrap();
        let last = exacta_wire::batch::Batches::new(&read.records)
            .last()
            .unwrap()
            .1;
        offset = last.last_offset() + 1;
        out.extend_from_slice(&read.records);
    }
    out
}

#[test]
fn a_follower_copies_the_leader_byte_for_byte_and_knows_its_producers() {
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut leader, _) = PartitionLog::open(ld.path(), small(), true).unwrap();
    let (mut follower, _) = PartitionLog::open(fd.path(), small(), true).unwrap();
    leader.set_leader_epoch(3);
    for seq in 0..40 {
        leader.append(&mut pbatch(7, seq * 2, 2)).unwrap();
        if seq == 20 {
            leader.set_leader_epoch(5);
        }
    }
    let all = bytes_of(&leader);
    // Fetched in pieces, as a follower fetches.
    let mut offset = 0;
    while offset < leader.log_end_offset() {
        let read = leader.read(offset, 300, leader.log_end_offset()).unwrap();
        follower.append_replica(&read.records).unwrap();
        offset = follower.log_end_offset();
    }
    assert_eq!(bytes_of(&follower), all);
    assert_eq!(follower.epoch_end_offset(3), (3, 42));
    assert_eq!(follower.epoch_end_offset(5), (5, 80));
    assert_eq!(follower.latest_epoch(), Some(5));
    // A retry of the last batch, sent to the follower once it leads, is a duplicate.
    follower.set_leader_epoch(6);
    let retry = follower.append(&mut pbatch(7, 78, 2)).unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.base_offset, 78);
    // A gap or a damaged batch is refused and changes nothing.
    let end = follower.log_end_offset();
    let mut gap = leader.read(10, 1, end).unwrap().records.to_vec();
    assert!(matches!(
        follower.append_replica(&gap),
        Err(LogError::NotContiguous { expected: 80, .. })
    ));
    exacta_wire::batch::assign_offset(&mut gap, end, 6);
    let last = gap.len() - 1;
    gap[last] ^= 0xff;
    assert!(matches!(
        follower.append_replica(&gap),
        Err(LogError::InvalidReplica { .. })
    ));
    assert_eq!(follower.log_end_offset(), end);
}

#[test]
fn truncation_drops_the_divergent_tail_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(dir.path(), small(), true).unwrap();
    log.set_leader_epoch(1);
    for seq in 0..30 {
        log.append(&mut pbatch(9, seq * 2, 2)).unwrap();
    }
    log.set_leader_epoch(2);
    for seq in 30..45 {
        log.append(&mut pbatch(9, seq * 2, 2)).unwrap();
    }
    assert!(log.segment_count() > 2);
    let kept = {
        let mut b = bytes_of(&log);
        let cut = exacta_wire::batch::Batches::new(&b)
            .find(|(_, h)| h.base_offset == 60)
            .unwrap()
            .0;
        b.truncate(cut);
        b
    };
    log.truncate_to(60).unwrap();
    assert_eq!(log.log_end_offset(), 60);
    assert_eq!(bytes_of(&log), kept);
    assert_eq!(log.latest_epoch(), Some(1));
    assert_eq!(log.epoch_end_offset(1), (1, 60));
    // The producer state is the one at offset 60: sequence 60 is next, not a duplicate.
    let next = log.append(&mut pbatch(9, 60, 2)).unwrap();
    assert!(!next.duplicate);
    assert_eq!(next.base_offset, 60);
    drop(log);
    let (again, _) = PartitionLog::open(dir.path(), small(), false).unwrap();
    assert_eq!(again.log_end_offset(), 62);
    // The append after the cut was this log's epoch 2 again, starting at 60.
    assert_eq!(again.latest_epoch(), Some(2));
    assert_eq!(again.epoch_end_offset(1), (1, 60));
}
