//! Group commit: a dedicated thread fsyncs partitions that have new appends.
//!
//! An append queues its partition once (a flag dedupes); the thread takes everything
//! queued, fsyncs each partition's active segment without holding the partition lock
//! (appends go on meanwhile and form the next group), then advances the partition's
//! flushed offset and high watermark, which releases the waiting acks=all producers and
//! long-polling consumers. One fsync thus covers every batch that arrived before it began.
//!
//! To ensure correctness: an fsync error is fatal, here and everywhere else (every fsync
//! goes through `exacta_log::sync_file`, whose failure handler is [`fatal_fsync_error`]).
//! After a failed fsync the kernel may have dropped the dirty pages, so a retry that
//! succeeds proves nothing (PostgreSQL's "fsyncgate"); the broker logs and exits, and
//! recovery rescans on restart.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use crate::partitions::Partition;

#[derive(Debug)]
enum Message {
    Flush(Arc<Partition>),
    Stop,
}

/// Handle to the flusher thread.
#[derive(Debug, Clone)]
pub struct Flusher {
    tx: mpsc::Sender<Message>,
    thread: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl Flusher {
    pub fn start() -> Self {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("exacta-flusher".into())
            .spawn(move || run(rx))
            .expect("spawning the flusher thread");
        Self {
            tx,
            thread: Arc::new(Mutex::new(Some(thread))),
        }
    }

    pub(crate) fn enqueue(&self, partition: Arc<Partition>) {
        // Fails only after stop(), when the broker is closing and seals every log anyway.
        let _ = self.tx.send(Message::Flush(partition));
    }

    /// Flushes what is queued, then stops the thread.
    pub fn stop(&self) {
        let _ = self.tx.send(Message::Stop);
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

fn run(rx: mpsc::Receiver<Message>) {
    let mut group: Vec<Arc<Partition>> = Vec::new();
    let mut stopping = false;
    while !stopping {
        match rx.recv() {
            Ok(Message::Flush(p)) => group.push(p),
            Ok(Message::Stop) | Err(_) => stopping = true,
        }
        // Everything that queued up while the previous group was being fsynced.
        while let Ok(m) = rx.try_recv() {
            match m {
                Message::Flush(p) => group.push(p),
                Message::Stop => stopping = true,
            }
        }
        for p in group.drain(..) {
            let (file, offset) = p.take_flush_target();
            let started = std::time::Instant::now();
            // Does not return if the fsync fails (see `fatal_fsync_error`).
            exacta_log::sync_file(&file, false);
            crate::metrics::METRICS
                .fsync_seconds
                .observe(started.elapsed());
            p.flushed(offset);
        }
    }
}

/// Exit code of the broker after a failed fsync.
pub const FSYNC_FAILED_EXIT_CODE: i32 = 70;

/// Logs an fsync failure and exits: the only safe answer (see the module docs). Installed
/// as the storage's fsync-failure handler, so it covers every fsync: segments, indexes,
/// snapshots, topic metadata and directories, during appends, rolls and recovery alike.
pub fn fatal_fsync_error(path: &std::path::Path, error: &std::io::Error) -> ! {
    tracing::error!(path = %path.display(), %error, "fsync failed; exiting so that recovery can validate the log");
    eprintln!("exacta: fatal: fsync of {} failed: {error}", path.display());
    std::process::exit(FSYNC_FAILED_EXIT_CODE)
}
