//! Partition log behaviour: offsets, reads, rolling, recovery and retention.

use exacta_log::{LogConfig, PartitionLog};
use exacta_wire::batch::{build_batch, BatchHeader, Batches};
use exacta_wire::kafka_protocol::records::Compression;

const T0: i64 = 1_700_000_000_000;

fn batch(n: usize, first_ts: i64) -> Vec<u8> {
    let values: Vec<Vec<u8>> = (0..n).map(|i| vec![b'x'; 100 + i]).collect();
    build_batch(&values, first_ts, Compression::None)
}

fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 512,
        ..LogConfig::default()
    }
}

fn offsets_in(buf: &[u8]) -> Vec<(i64, i64)> {
    Batches::new(buf)
        .map(|(_, h)| (h.base_offset, h.last_offset()))
        .collect()
}

#[test]
fn append_assigns_consecutive_offsets_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(dir.path(), LogConfig::default(), true).unwrap();
    let a = log.append(&mut batch(3, T0)).unwrap();
    let b = log.append(&mut batch(2, T0)).unwrap();
    assert_eq!((a.base_offset, a.last_offset), (0, 2));
    assert_eq!((b.base_offset, b.last_offset), (3, 4));
    let read = log.read(0, 1 << 20, 5).unwrap();
    assert_eq!(offsets_in(&read.records), vec![(0, 2), (3, 4)]);
    // Reading from the middle of a batch starts at that batch.
    let read = log.read(4, 1 << 20, 5).unwrap();
    assert_eq!(offsets_in(&read.records), vec![(3, 4)]);
    // The upper bound (high watermark) hides later batches.
    let read = log.read(0, 1 << 20, 3).unwrap();
    assert_eq!(offsets_in(&read.records), vec![(0, 2)]);
    // At the end: empty, past the end: out of range.
    assert!(log.read(5, 1 << 20, 5).unwrap().records.is_empty());
    assert!(log.read(6, 1 << 20, 6).is_err());
    // Every batch read back still passes its CRC.
    for (at, h) in Batches::new(&log.read(0, 1 << 20, 5).unwrap().records) {
        let _ = (
            at,
            BatchHeader::parse_and_verify(&log.read(h.base_offset, 1, 5).unwrap().records).unwrap(),
        );
    }
}

#[test]
fn max_bytes_returns_whole_batches_and_at_least_one() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(dir.path(), LogConfig::default(), true).unwrap();
    for _ in 0..4 {
        log.append(&mut batch(5, T0)).unwrap();
    }
    let one = log.read(0, 1, 20).unwrap();
    assert_eq!(offsets_in(&one.records), vec![(0, 4)]);
    let size = one.records.len();
    let two = log.read(0, 2 * size + size / 2, 20).unwrap();
    assert_eq!(offsets_in(&two.records), vec![(0, 4), (5, 9)]);
    assert_eq!(two.records.len(), 2 * size);
}

#[test]
fn rolls_segments_and_reads_across_them() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(dir.path(), small_segments(), true).unwrap();
    for _ in 0..50 {
        log.append(&mut batch(3, T0)).unwrap();
    }
    assert!(log.segment_count() >= 4, "{} segments", log.segment_count());
    let mut next = 0;
    while next < 150 {
        let read = log.read(next, 1000, 150).unwrap();
        let batches = offsets_in(&read.records);
        assert!(!batches.is_empty(), "stuck at {next}");
        assert_eq!(batches[0].0, next);
        next = batches.last().unwrap().1 + 1;
    }
}

#[test]
fn clean_reopen_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _) = PartitionLog::open(dir.path(), small_segments(), true).unwrap();
        for _ in 0..30 {
            log.append(&mut batch(3, T0)).unwrap();
        }
        log.close().unwrap();
    }
    let (log, info) = PartitionLog::open(dir.path(), small_segments(), true).unwrap();
    assert_eq!(info.segments_rescanned, 0);
    assert_eq!(log.log_end_offset(), 90);
    assert_eq!(
        offsets_in(&log.read(88, 1 << 20, 90).unwrap().records),
        vec![(87, 89)]
    );
}

#[test]
fn unclean_reopen_truncates_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let active;
    {
        let (mut log, _) = PartitionLog::open(dir.path(), LogConfig::default(), true).unwrap();
        for _ in 0..10 {
            log.append(&mut batch(2, T0)).unwrap();
        }
        log.flush();
        active = dir.path().join(exacta_log::segment::file_name(0, "log"));
    }
    let full = std::fs::metadata(&active).unwrap().len();
    // Tear the last batch in half, as a power loss mid-write would.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&active)
        .unwrap();
    f.set_len(full - 50).unwrap();
    drop(f);
    let (mut log, info) = PartitionLog::open(dir.path(), LogConfig::default(), false).unwrap();
    assert!(info.bytes_truncated > 0);
    assert_eq!(log.log_end_offset(), 18);
    // The log keeps working after recovery.
    let a = log.append(&mut batch(2, T0)).unwrap();
    assert_eq!(a.base_offset, 18);
}

#[test]
fn unclean_reopen_cuts_at_first_corrupt_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(dir.path(), LogConfig::default(), true).unwrap();
    let mut sizes = Vec::new();
    for _ in 0..5 {
        let mut b = batch(2, T0);
        sizes.push(b.len() as u64);
        log.append(&mut b).unwrap();
    }
    drop(log);
    let path = dir.path().join(exacta_log::segment::file_name(0, "log"));
    let mut bytes = std::fs::read(&path).unwrap();
    let third = (sizes[0] + sizes[1]) as usize;
    bytes[third + 70] ^= 0x55; // inside the third batch's records
    std::fs::write(&path, &bytes).unwrap();
    let (log, info) = PartitionLog::open(dir.path(), LogConfig::default(), false).unwrap();
    assert_eq!(log.log_end_offset(), 4);
    assert_eq!(info.bytes_truncated, sizes[2] + sizes[3] + sizes[4]);
}

#[test]
fn garbage_tails_never_panic() {
    // Deterministic pseudo-random tails appended to a valid log.
    let mut seed: u64 = 0x9e3779b97f4a7c15;
    for round in 0..200 {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, _) = PartitionLog::open(dir.path(), LogConfig::default(), true).unwrap();
            log.append(&mut batch(2, T0)).unwrap();
        }
        let path = dir.path().join(exacta_log::segment::file_name(0, "log"));
        let mut bytes = std::fs::read(&path).unwrap();
        let good = bytes.len();
        let len = (round * 7) % 300;
        for _ in 0..len {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            bytes.push(seed as u8);
        }
        // Sometimes make the garbage look like a plausible header.
        if round % 3 == 0 && bytes.len() > good + 61 {
            bytes[good + 16] = 2;
        }
        std::fs::write(&path, &bytes).unwrap();
        let (log, _) = PartitionLog::open(dir.path(), LogConfig::default(), false).unwrap();
        assert_eq!(log.log_end_offset(), 2, "round {round}");
        assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, good);
    }
}

#[test]
fn finds_offsets_by_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(dir.path(), small_segments(), true).unwrap();
    // Batch i holds 3 records stamped T0 + 10*i, +1, +2.
    for i in 0..40 {
        log.append(&mut batch(3, T0 + 10 * i)).unwrap();
    }
    assert_eq!(log.offset_for_timestamp(T0).unwrap(), Some((0, T0)));
    assert_eq!(
        log.offset_for_timestamp(T0 + 101).unwrap(),
        Some((31, T0 + 101))
    );
    assert_eq!(
        log.offset_for_timestamp(T0 + 105).unwrap(),
        Some((33, T0 + 110))
    );
    assert_eq!(log.offset_for_timestamp(T0 + 10_000).unwrap(), None);
    assert_eq!(log.max_timestamp_offset().unwrap(), Some((119, T0 + 392)));
    // The same answers from indexes loaded after a clean restart, for every timestamp.
    let expected: Vec<_> = (0..400)
        .map(|t| log.offset_for_timestamp(T0 + t).unwrap())
        .collect();
    log.close().unwrap();
    drop(log);
    let (log, info) = PartitionLog::open(dir.path(), small_segments(), true).unwrap();
    assert_eq!(info.segments_rescanned, 0);
    for (t, want) in expected.iter().enumerate() {
        assert_eq!(
            &log.offset_for_timestamp(T0 + t as i64).unwrap(),
            want,
            "ts +{t}"
        );
    }
    assert_eq!(log.max_timestamp_offset().unwrap(), Some((119, T0 + 392)));
}

#[test]
fn timestamp_lookup_handles_out_of_order_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        index_interval_bytes: 1,
        ..LogConfig::default()
    };
    let (mut log, _) = PartitionLog::open(dir.path(), config, true).unwrap();
    // CreateTime is the producer's clock: it may go backwards.
    for ts in [T0 + 100, T0 + 50, T0 + 200, T0 + 10] {
        log.append(&mut batch(1, ts)).unwrap();
    }
    assert_eq!(
        log.offset_for_timestamp(T0 + 60).unwrap(),
        Some((0, T0 + 100))
    );
    assert_eq!(
        log.offset_for_timestamp(T0 + 150).unwrap(),
        Some((2, T0 + 200))
    );
    assert_eq!(log.offset_for_timestamp(T0 + 201).unwrap(), None);
}

#[test]
fn retention_by_size_and_time_deletes_old_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = small_segments();
    config.retention_bytes = 8192;
    let (mut log, _) = PartitionLog::open(dir.path(), config, true).unwrap();
    for _ in 0..60 {
        log.append(&mut batch(3, T0)).unwrap();
    }
    let before = log.segment_count();
    let deleted = log.apply_retention(T0).unwrap();
    assert!(deleted > 0 && log.segment_count() == before - deleted);
    assert!(log.size_bytes() as i64 <= 8192 + 4096);
    assert!(log.log_start_offset() > 0);
    assert!(
        log.read(0, 100, 180).is_err(),
        "deleted offsets are out of range"
    );

    let mut config = small_segments();
    config.retention_ms = 1000;
    log.set_config(config);
    let end = log.log_end_offset();
    log.apply_retention(T0 + 5000).unwrap();
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.log_start_offset(), end);
    assert_eq!(
        log.append(&mut batch(1, T0 + 5000)).unwrap().base_offset,
        end
    );
}

#[test]
fn rolls_by_time_when_the_first_batch_is_old() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_ms: 1000,
        ..LogConfig::default()
    };
    let (mut log, _) = PartitionLog::open(dir.path(), config, true).unwrap();
    log.append(&mut batch(1, T0)).unwrap();
    log.append(&mut batch(1, T0 + 500)).unwrap();
    assert_eq!(log.segment_count(), 1);
    // The first batch is now older than segment.ms: the next append opens a new segment.
    log.append(&mut batch(1, T0 + 1500)).unwrap();
    assert_eq!(log.segment_count(), 2);
    assert_eq!(
        offsets_in(&log.read(2, 1 << 20, 3).unwrap().records),
        vec![(2, 2)]
    );
}

#[test]
fn old_timestamps_do_not_roll_every_batch() {
    // Replaying data stamped years ago: age is measured between batches, as in Kafka.
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_ms: 1000,
        ..LogConfig::default()
    };
    let (mut log, _) = PartitionLog::open(dir.path(), config, true).unwrap();
    for i in 0..10 {
        log.append(&mut batch(1, T0 + i)).unwrap();
    }
    assert_eq!(log.segment_count(), 1);
}

/// Power-loss style damage to the active segment's tail, many times over: cut mid-batch,
/// flipped bytes, appended garbage, zero-filled tails (what a file system may show for
/// allocated but unwritten blocks). Recovery must never panic and must keep exactly the
/// longest prefix of whole, undamaged batches: nothing undamaged lost, nothing damaged
/// served. Rounds: `EXACTA_CORRUPT_TAILS` (default 500); recovery times are printed.
#[test]
fn corrupted_tails_recover_to_the_undamaged_prefix() {
    let rounds: usize = std::env::var("EXACTA_CORRUPT_TAILS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut times = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let dir = tempfile::tempdir().unwrap();
        // Batch boundaries (byte end, log end offset after it) of the original file.
        let mut ends = vec![(0usize, 0i64)];
        {
            let (mut log, _) = PartitionLog::open(dir.path(), LogConfig::default(), true).unwrap();
            for _ in 0..(3 + next() % 30) {
                let a = log
                    .append(&mut batch(1 + (next() % 12) as usize, T0))
                    .unwrap();
                ends.push((log.size_bytes() as usize, a.last_offset + 1));
            }
        }
        let path = dir.path().join(exacta_log::segment::file_name(0, "log"));
        let original = std::fs::read(&path).unwrap();
        let mut damaged = original.clone();
        // Damage starts somewhere in the last third of the file.
        let from = original.len() * 2 / 3 + (next() as usize) % (original.len() / 3);
        let mode = next() % 5;
        match mode {
            0 => damaged.truncate(from),
            1 => {
                for _ in 0..(1 + next() % 8) {
                    let at = from + (next() as usize) % (original.len() - from);
                    damaged[at] ^= 1 << (next() % 8);
                }
            }
            2 => damaged.extend((0..(next() % 3000)).map(|_| next() as u8)),
            3 => {
                damaged.truncate(from);
                damaged.extend((0..(next() % 3000)).map(|_| next() as u8));
            }
            _ => {
                damaged.truncate(from);
                damaged.resize(from + (next() % 8192) as usize, 0);
            }
        }
        std::fs::write(&path, &damaged).unwrap();
        // A batch's partition leader epoch (bytes 12..16) is not checksummed, as in Kafka:
        // a flip there is not damage to the records, so it is not counted (nor compared).
        let epoch_field = |at: usize| {
            ends.iter()
                .any(|&(start, _)| start < original.len() && (start + 12..start + 16).contains(&at))
        };
        let first_damage = original
            .iter()
            .zip(&damaged)
            .enumerate()
            .position(|(at, (a, b))| a != b && !epoch_field(at))
            .unwrap_or(original.len().min(damaged.len()));
        // The longest run of whole batches before the first damaged byte.
        let &(keep, end_offset) = ends
            .iter()
            .rev()
            .find(|(end, _)| *end <= first_damage)
            .unwrap();

        let started = std::time::Instant::now();
        let (log, _) = PartitionLog::open(dir.path(), LogConfig::default(), false).unwrap();
        times.push(started.elapsed());
        assert_eq!(
            log.log_end_offset(),
            end_offset,
            "round {round} mode {mode}"
        );
        let read = log.read(0, usize::MAX, i64::MAX).unwrap().records;
        assert_eq!(read.len(), keep, "round {round} mode {mode}");
        assert!(
            read.iter()
                .zip(&original)
                .enumerate()
                .all(|(at, (a, b))| a == b || epoch_field(at)),
            "round {round} mode {mode}: a damaged batch is served"
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, keep);
    }
    times.sort();
    let pct = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
    println!(
        "{rounds} corrupted tails recovered: p50 {:?}, p99 {:?}, max {:?}",
        pct(0.5),
        pct(0.99),
        times[times.len() - 1]
    );
}
