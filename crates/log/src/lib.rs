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
//! - [`topics`]: topic metadata (id, partition count, configs) persisted beside the logs.

pub mod config;
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

/// Fsyncs a log file's data (`fdatasync`; with `all`, `fsync`). Every fsync the broker
/// relies on for acknowledged data goes through here.
///
/// Test hook for simulated power loss: with `EXACTA_TEST_SYNC_LEDGER=FILE` in the
/// environment, each successful call appends `<path> <length>` to FILE, the length the
/// file had before the fsync, i.e. a prefix now known to be durable. A test can then cut
/// every file back to its durable prefix (plus a torn tail) after a `kill -9`, as a power
/// failure could, and check that nothing acknowledged is lost.
pub fn sync_file(file: &std::fs::File, all: bool) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    static LEDGER: std::sync::OnceLock<Option<std::sync::Mutex<std::fs::File>>> =
        std::sync::OnceLock::new();
    let ledger = LEDGER.get_or_init(|| {
        let path = std::env::var_os("EXACTA_TEST_SYNC_LEDGER")?;
        let file = std::fs::File::options()
            .create(true)
            .append(true)
            .open(path)
            .ok()?;
        Some(std::sync::Mutex::new(file))
    });
    let durable = match ledger {
        Some(_) => Some(file.metadata()?.len()),
        None => None,
    };
    if all {
        file.sync_all()?;
    } else {
        file.sync_data()?;
    }
    if let (Some(ledger), Some(len)) = (ledger, durable) {
        let path = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
        let mut ledger = ledger.lock().unwrap_or_else(|p| p.into_inner());
        writeln!(ledger, "{} {len}", path.display())?;
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically: temporary file, fsync, rename, fsync of the directory.
pub fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> Result<(), LogError> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp).map_err(LogError::io("create", &tmp))?;
    file.write_all(bytes).map_err(LogError::io("write", &tmp))?;
    file.sync_all().map_err(LogError::io("fsync", &tmp))?;
    std::fs::rename(&tmp, path).map_err(LogError::io("rename", path))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Fsyncs a directory so that file creations, renames and deletions in it are durable.
pub fn sync_dir(dir: &std::path::Path) -> Result<(), LogError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(LogError::io("fsync directory", dir))
}
