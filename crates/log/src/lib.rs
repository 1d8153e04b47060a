//! The durable partition log.
//!
//! A partition is a directory of segments (`<base offset>.log` plus `.index` and
//! `.timeindex`); only the last, active segment is written. Storage is synchronous and owns
//! durability: the network layer decides *when* to call [`PartitionLog::flush_target`] and
//! `fsync`, this crate guarantees *what* is on disk after that call and after a crash.
//!
//! - [`segment`]: one segment file and its in-memory sparse indexes.
//! - [`log`]: the partition log: append, read, roll, retention, recovery.
//! - [`producer_state`]: idempotent-producer state (epochs, sequences, last 5 batches),
//!   snapshotted beside the segments.
//! - [`leader_epochs`]: where each leader epoch's writes start (OffsetForLeaderEpoch,
//!   follower truncation).
//! - [`cleaner`]: compaction (the last record per key), with Kafka's transaction rules.
//! - [`topics`]: topic metadata (id, partition count, configs) persisted beside the logs.

pub mod cleaner;
pub mod config;
pub mod leader_epochs;
pub mod log;
pub mod producer_state;
pub mod segment;
pub mod topics;

pub use config::LogConfig;
pub use log::{AppendInfo, PartitionLog, ReadResult};

use std::path::PathBuf;

/// A storage failure, with the file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("offset {offset} is out of range [{start}, {end}]")]
    OffsetOutOfRange { offset: i64, start: i64, end: i64 },
    #[error("corrupt metadata {path}: {reason}")]
    CorruptMetadata { path: PathBuf, reason: String },
    #[error(transparent)]
    Producer(#[from] producer_state::SequenceError),
    #[error("replicated batch at offset {got} does not follow the log end offset {expected}")]
    NotContiguous { expected: i64, got: i64 },
    #[error("replicated batch at offset {offset} is invalid: {reason}")]
    InvalidReplica { offset: i64, reason: String },
}

impl LogError {
    /// A closure wrapping an I/O error with the action and path it concerns.
    pub fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> LogError {
        let path = path.into();
        move |source| LogError::Io {
            action,
            path,
            source,
        }
    }
}

/// What the process does when an fsync fails (see [`sync_file`]); it must not return.
pub type FsyncFailureHandler = fn(&std::path::Path, &std::io::Error) -> !;

static FSYNC_FAILURE: std::sync::OnceLock<FsyncFailureHandler> = std::sync::OnceLock::new();

/// Installs what happens when an fsync fails (once, at start; later calls are ignored).
/// Without one, the failure is printed and the process exits with code 70.
pub fn on_fsync_failure(handler: FsyncFailureHandler) {
    let _ = FSYNC_FAILURE.set(handler);
}

fn fsync_failed(file: &std::fs::File, error: &std::io::Error) -> ! {
    let path = fd_path(file).unwrap_or_default();
    match FSYNC_FAILURE.get() {
        Some(handler) => handler(&path, error),
        None => {
            eprintln!("fatal: fsync of {} failed: {error}", path.display());
            std::process::exit(70)
        }
    }
}

fn fd_path(file: &std::fs::File) -> std::io::Result<PathBuf> {
    use std::os::fd::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// Fsyncs a file (`fdatasync`; with `all`, `fsync`): the one fsync path for everything the
/// broker relies on being durable (segments, indexes, snapshots, metadata, directories).
///
/// To ensure correctness: a failed fsync does not return. After one, the kernel may have
/// dropped the dirty pages and marked them clean, so a later fsync of the same file can
/// "succeed" with data lost (PostgreSQL's fsyncgate); carrying on (answering an error and
/// retrying) would acknowledge data that is gone. The failure handler
/// ([`on_fsync_failure`]) stops the process; recovery validates the log at restart.
///
/// Test hooks: with `EXACTA_TEST_SYNC_LEDGER=FILE`, each successful call appends
/// `<path> <length>` to FILE, the length the file had before the fsync, i.e. a prefix now
/// known to be durable (a test can cut every file back to it after a `kill -9`, as a power
/// failure could). With `EXACTA_TEST_FAIL_FSYNC=TEXT`, the fsync of any file whose path
/// contains TEXT fails with EIO, as a failing disk's would.
pub fn sync_file(file: &std::fs::File, all: bool) {
    use std::io::Write;
    static LEDGER: std::sync::OnceLock<Option<std::sync::Mutex<std::fs::File>>> =
        std::sync::OnceLock::new();
    static FAIL: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let ledger = LEDGER.get_or_init(|| {
        let path = std::env::var_os("EXACTA_TEST_SYNC_LEDGER")?;
        let file = std::fs::File::options()
            .create(true)
            .append(true)
            .open(path)
            .ok()?;
        Some(std::sync::Mutex::new(file))
    });
    let fail = FAIL.get_or_init(|| std::env::var("EXACTA_TEST_FAIL_FSYNC").ok());
    if let Some(text) = fail {
        if fd_path(file).is_ok_and(|p| p.to_string_lossy().contains(text.as_str())) {
            fsync_failed(file, &std::io::Error::from_raw_os_error(5));
        }
    }
    let durable = ledger
        .as_ref()
        .and_then(|_| file.metadata().ok())
        .map(|m| m.len());
    let synced = if all {
        file.sync_all()
    } else {
        file.sync_data()
    };
    if let Err(e) = synced {
        fsync_failed(file, &e);
    }
    if let (Some(ledger), Some(len)) = (ledger, durable) {
        if let Ok(path) = fd_path(file) {
            let mut ledger = ledger.lock().unwrap_or_else(|p| p.into_inner());
            let _ = writeln!(ledger, "{} {len}", path.display());
        }
    }
}

/// Writes `bytes` to `path` atomically: temporary file, fsync, rename, fsync of the directory.
pub fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> Result<(), LogError> {
    use std::io::Write;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let mut file = std::fs::File::create(&tmp).map_err(LogError::io("create", &tmp))?;
    file.write_all(bytes).map_err(LogError::io("write", &tmp))?;
    sync_file(&file, true);
    std::fs::rename(&tmp, path).map_err(LogError::io("rename", path))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Fsyncs a directory so that file creations, renames and deletions in it are durable.
pub fn sync_dir(dir: &std::path::Path) -> Result<(), LogError> {
    let handle = std::fs::File::open(dir).map_err(LogError::io("open directory", dir))?;
    sync_file(&handle, true);
    Ok(())
}
