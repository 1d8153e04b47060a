//! The cleaner against real log directories: what survives a cleaning, and a restart.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use exacta_wire::batch::Batches;
use exacta_wire::kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::{assess, Cleaner};
use crate::{LogConfig, PartitionLog};

const NOW: i64 = 1_700_000_000_000;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 2048,
        compact: true,
        delete: false,
        index_interval_bytes: 256,
        delete_retention_ms: 1000,
        ..LogConfig::default()
    }
}

/// A batch of `(key, value)` records from producer `(id, epoch, base sequence)`.
fn batch(
    records: &[(&str, Option<&str>)],
    producer: (i64, i16, i32),
    transactional: bool,
) -> Vec<u8> {
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (k, v))| Record {
            transactional,
            control: false,
            partition_leader_epoch: 0,
            producer_id: producer.0,
            producer_epoch: producer.1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: if producer.0 < 0 {
                -1
            } else {
                producer.2 + i as i32
            },
            timestamp: NOW + i as i64,
            key: Some(Bytes::copy_from_slice(k.as_bytes())),
            value: v.map(|v| Bytes::copy_from_slice(v.as_bytes())),
            headers: Default::default(),
            delete_horizon: false,
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .unwrap();
    buf.to_vec()
}

fn append(log: &mut PartitionLog, records: &[(&str, Option<&str>)], producer: (i64, i16, i32)) {
    let mut b = batch(records, producer, false);
    log.append(&mut b).unwrap();
}

/// Every record: (offset, key, value, transactional, control).
type Row = (i64, String, Option<String>, bool, bool);

fn rows(log: &PartitionLog) -> Vec<Row> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let read = log.read(offset, 1 << 20, log.log_end_offset()).unwrap();
        if read.records.is_empty() {
            break;
        }
        for (_, h) in Batches::new(&read.records) {
            offset = h.last_offset() + 1;
        }
        let mut buf = read.records.clone();
        for set in RecordBatchDecoder::decode_all(&mut buf).unwrap() {
            for r in set.records {
                let text =
                    |b: &Option<Bytes>| b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
                out.push((
                    r.offset,
                    text(&r.key).unwrap_or_default(),
                    text(&r.value),
                    r.transactional,
                    r.control,
                ));
            }
        }
    }
    out
}

fn clean(log: &mut PartitionLog, now: i64) -> super::Outcome {
    let mut cleaner = Cleaner::new(1 << 20, f64::INFINITY, Arc::new(AtomicBool::new(false)));
    let view = log.clean_view(log.log_end_offset()).unwrap();
    let outcome = cleaner.clean(&view, now).unwrap().expect("cleanable");
    log.install_cleaned(view, &outcome).unwrap();
    outcome
}

/// The latest value per key, from rows.
fn latest(rows: &[Row]) -> BTreeMap<String, Option<String>> {
    rows.iter()
        .filter(|r| !r.4)
        .map(|r| (r.1.clone(), r.2.clone()))
        .collect()
}

#[test]
fn keeps_the_last_record_per_key_at_its_offset_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(dir.path(), config(), true).unwrap();
    for round in 0..40 {
        let v1 = format!("v{round}");
        append(
            &mut log,
            &[("a", Some(&v1)), ("b", Some(&v1))],
            (-1, -1, -1),
        );
        let key = format!("k{round}");
        append(&mut log, &[(&key, Some("once"))], (-1, -1, -1));
    }
    log.roll().unwrap();
    let before = rows(&log);
    let segments_before = log.segment_count();
    let outcome = clean(&mut log, NOW);
    let after = rows(&log);
    assert_eq!(latest(&before), latest(&after));
    assert_eq!(after.len(), 42, "a, b and the forty k keys");
    assert!(after.windows(2).all(|w| w[0].0 < w[1].0));
    for row in &after {
        let original = before.iter().find(|r| r.0 == row.0).unwrap();
        assert_eq!(original, row, "offsets are not renumbered");
    }
    assert!(outcome.stats.bytes_written < outcome.stats.bytes_read);
    let view = log.clean_view(log.log_end_offset()).unwrap();
    let again = assess(&view, NOW);
    assert!(!again.due(&view.config), "nothing new to clean: {again:?}");
    assert_eq!(
        again.compaction_delay_ms, 0,
        "max.compaction.lag.ms is unlimited"
    );
    drop(view);
    // Segments are grouped by their size before cleaning (as Kafka does), so the small
    // cleaned segments merge at the next cleaning.
    append(&mut log, &[("a", Some("last"))], (-1, -1, -1));
    log.roll().unwrap();
    clean(&mut log, NOW);
    assert!(log.segment_count() < segments_before, "{outcome:?}");
    let after: Vec<Row> = rows(&log).into_iter().filter(|r| r.1 != "a").collect();
    assert_eq!(after.len(), 41);
    // A restart (unclean, so every segment without indexes is rescanned) reads the same.
    drop(log);
    let (log, info) = PartitionLog::open(dir.path(), config(), false).unwrap();
    assert_eq!(info.bytes_truncated, 0);
    assert_eq!(
        rows(&log)
            .into_iter()
            .filter(|r| r.1 != "a")
            .collect::<Vec<_>>(),
        after
    );
    assert_eq!(log.log_end_offset(), 121);
}

#[test]
fn aborted_records_go_and_markers_wait_for_their_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(dir.path(), config(), true).unwrap();
    append(
        &mut log,
        &[("a", Some("a0")), ("b", Some("b0"))],
        (-1, -1, -1),
    );
    // Producer 1 commits a=a1; producer 2 aborts a=bad, c=bad.
    let mut t = batch(&[("a", Some("a1"))], (1, 0, 0), true);
    log.append(&mut t).unwrap();
    let mut t = batch(&[("a", Some("bad")), ("c", Some("bad"))], (2, 0, 0), true);
    log.append(&mut t).unwrap();
    log.append_marker(1, 0, true, 0, NOW).unwrap();
    log.append_marker(2, 0, false, 0, NOW).unwrap();
    append(&mut log, &[("d", Some("d0"))], (-1, -1, -1));
    log.roll().unwrap();
    assert_eq!(log.producer_state().aborted().len(), 1);

    clean(&mut log, NOW);
    let after = rows(&log);
    let data: Vec<_> = after
        .iter()
        .filter(|r| !r.4)
        .map(|r| (r.1.as_str(), r.2.as_deref()))
        .collect();
    assert_eq!(
        data,
        [("b", Some("b0")), ("a", Some("a1")), ("d", Some("d0"))]
    );
    // Producer 2's last batch stays (emptied) for its sequence state; its abort marker
    // stays while that batch is met, producer 1's commit marker while a1 is there.
    assert_eq!(after.iter().filter(|r| r.4).count(), 2);

    // A newer a from producer 1 supersedes a1: its commit marker then has nothing left
    // and goes after delete.retention.ms (first cleaning sets the horizon).
    let mut t = batch(&[("a", Some("a2"))], (1, 0, 1), true);
    log.append(&mut t).unwrap();
    log.append_marker(1, 0, true, 0, NOW).unwrap();
    log.roll().unwrap();
    clean(&mut log, NOW);
    let after = rows(&log);
    let data: Vec<_> = after
        .iter()
        .filter(|r| !r.4)
        .map(|r| (r.1.as_str(), r.2.as_deref()))
        .collect();
    assert_eq!(
        data,
        [("b", Some("b0")), ("d", Some("d0")), ("a", Some("a2"))]
    );
    let markers = |log: &PartitionLog| -> Vec<i64> {
        rows(log).iter().filter(|r| r.4).map(|r| r.0).collect()
    };
    assert_eq!(markers(&log), [5, 6, 9], "a1's batch was met in this walk");
    // The next cleaning finds marker 5 alone and sets its horizon; one after it removes it.
    clean(&mut log, NOW + 5_000);
    assert_eq!(markers(&log), [5, 6, 9]);
    clean(&mut log, NOW + 6_000);
    // Left: producer 2's abort (its emptied last batch still holds its sequence state)
    // and producer 1's last commit (its a2 is live).
    assert_eq!(markers(&log), [6, 9]);

    // Producers keep their sequences across cleaning and a restart.
    drop(log);
    let (mut log, _) = PartitionLog::open(dir.path(), config(), false).unwrap();
    let mut next = batch(&[("e", Some("e0"))], (1, 0, 2), true);
    log.append(&mut next).unwrap();
    let mut stale = batch(&[("e", Some("x"))], (2, 0, 5), true);
    assert!(
        log.append(&mut stale).is_err(),
        "producer 2's sequence is still known"
    );
}

#[test]
fn tombstones_stay_until_their_delete_horizon() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(dir.path(), config(), true).unwrap();
    append(
        &mut log,
        &[("a", Some("1")), ("b", Some("1"))],
        (-1, -1, -1),
    );
    append(&mut log, &[("a", None)], (-1, -1, -1));
    log.roll().unwrap();
    let first = clean(&mut log, NOW);
    let after = rows(&log);
    assert_eq!(
        latest(&after).get("a"),
        Some(&None),
        "the tombstone is kept"
    );
    assert_eq!(after.len(), 2);
    let horizon = first.checkpoint.next_horizon_ms.expect("a horizon is due");
    assert_eq!(horizon, NOW + 1000);
    let view = log.clean_view(log.log_end_offset()).unwrap();
    assert!(!assess(&view, NOW + 10).due(&view.config));
    assert!(assess(&view, horizon).due(&view.config));
    drop(view);
    clean(&mut log, horizon);
    let after = rows(&log);
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].1, "b");
}

#[test]
fn nothing_at_or_above_the_last_stable_offset_is_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(dir.path(), config(), true).unwrap();
    append(&mut log, &[("a", Some("1"))], (-1, -1, -1));
    log.roll().unwrap();
    let mut t = batch(&[("a", Some("open"))], (3, 0, 0), true);
    log.append(&mut t).unwrap();
    log.roll().unwrap();
    append(&mut log, &[("a", Some("2"))], (-1, -1, -1));
    log.roll().unwrap();
    let view = log.clean_view(log.log_end_offset()).unwrap();
    let a = assess(&view, NOW);
    assert_eq!(
        a.first_uncleanable_offset, 1,
        "the open transaction starts at 1"
    );
    drop(view);
    clean(&mut log, NOW);
    let values: Vec<_> = rows(&log)
        .into_iter()
        .map(|r| r.2.unwrap_or_default())
        .collect();
    assert_eq!(values, ["1", "open", "2"], "the map covered only offset 0");
}

#[test]
fn an_interrupted_swap_leaves_old_or_new_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(dir.path(), config(), true).unwrap();
    for i in 0..60 {
        append(&mut log, &[("a", Some(&format!("{i}")))], (-1, -1, -1));
    }
    log.roll().unwrap();
    let before = rows(&log);
    // Uncommitted: cleaned files without a manifest are deleted, the old log stays.
    let base = 0;
    std::fs::write(super::swap::cleaned_path(dir.path(), base, "log"), b"junk").unwrap();
    drop(log);
    let (log, info) = PartitionLog::open(dir.path(), config(), false).unwrap();
    assert_eq!(info.swaps.discarded, 1);
    assert_eq!(rows(&log), before);
    // Committed: a manifest with the old segments still present completes the swap.
    let mut cleaner = Cleaner::new(1 << 20, f64::INFINITY, Arc::new(AtomicBool::new(false)));
    let view = log.clean_view(log.log_end_offset()).unwrap();
    let outcome = cleaner.clean(&view, NOW).unwrap().unwrap();
    drop(view);
    drop(log);
    // Simulate the crash after step 1 by restoring the state the manifest protects: the
    // swap already finished here, so recovery must be a no-op that keeps the new log.
    let (base, end) = outcome.swaps[0];
    std::fs::write(
        dir.path().join(crate::segment::file_name(base, "swap")),
        end.to_string(),
    )
    .unwrap();
    let (log, info) = PartitionLog::open(dir.path(), config(), false).unwrap();
    assert_eq!(info.swaps.completed, 1);
    let after = rows(&log);
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].2.as_deref(), Some("59"));
}

#[test]
fn delete_records_moves_the_start_durably_and_drops_whole_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(dir.path(), config(), true).unwrap();
    for i in 0..100 {
        append(&mut log, &[("k", Some(&format!("{i}")))], (-1, -1, -1));
    }
    let segments = log.segment_count();
    assert!(segments > 3);
    assert_eq!(log.delete_records_before(50).unwrap(), 50);
    assert!(log.segment_count() < segments);
    assert!(log.read(49, 1024, 100).is_err());
    assert_eq!(
        log.delete_records_before(10).unwrap(),
        50,
        "never backwards"
    );
    drop(log);
    let (mut log, _) = PartitionLog::open(dir.path(), config(), false).unwrap();
    assert_eq!(log.log_start_offset(), 50);
    assert_eq!(log.delete_records_before(100).unwrap(), 100);
    assert_eq!(
        log.segment_count(),
        1,
        "everything deleted, a fresh active segment"
    );
    assert_eq!(log.log_end_offset(), 100);
}
