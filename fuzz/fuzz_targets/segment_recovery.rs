//! Any bytes as the active segment after a crash: recovery truncates to a valid prefix,
//! never panics, and the recovered log accepts appends and reads.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("00000000000000000000.log"), data).expect("write");
    let config = exacta_log::LogConfig::default();
    let Ok((log, _)) = exacta_log::PartitionLog::open(dir.path(), config, false) else {
        return;
    };
    let end = log.log_end_offset();
    let _ = log.read(0, 1 << 20, end);
});
