//! The Raft log and vote of one node, on disk. The log is one append-only file of frames
//! (`u32` length, `u32` CRC32C, a JSON operation: append an entry, truncate from an index,
//! purge up to a log id, the committed log id); the vote is its own small file replaced
//! atomically. Every write is fsynced before openraft hears it is durable, so a vote or an
//! entry a node acknowledged survives a crash. On open the operations are replayed; a torn or
//! corrupt frame at the end (a crash mid-write, never acknowledged) is cut off. Once purges
//! leave much of the file dead, it is rewritten with only the live entries.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    Entry, LogId, LogState, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tracing::warn;

use crate::{NodeId, TypeConfig};

const LOG: &str = "raft.log";
const VOTE: &str = "vote.json";
/// Rewrite the log file once this many operations are dead weight.
const REWRITE_AFTER: usize = 10_000;

#[derive(Serialize, Deserialize)]
enum Op {
    Append(Entry<TypeConfig>),
    Truncate(u64),
    Purge(LogId<NodeId>),
    Committed(Option<LogId<NodeId>>),
}

#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    dir: PathBuf,
    file: File,
    log: BTreeMap<u64, Entry<TypeConfig>>,
    last_purged: Option<LogId<NodeId>>,
    committed: Option<LogId<NodeId>>,
    vote: Option<Vote<NodeId>>,
    /// Operations in the file beyond the live entries.
    dead: usize,
}

impl LogStore {
    /// Open (or create) the log in DIR.
    pub fn open(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let vote = match fs::read(dir.join(VOTE)) {
            Ok(bytes) => Some(serde_json::from_slice(&bytes).map_err(invalid)?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let path = dir.join(LOG);
        let mut bytes = Vec::new();
        if path.exists() {
            File::open(&path)?.read_to_end(&mut bytes)?;
        }
        let mut inner = Inner {
            dir: dir.to_path_buf(),
            file: OpenOptions::new().create(true).append(true).open(&path)?,
            log: BTreeMap::new(),
            last_purged: None,
            committed: None,
            vote,
            dead: 0,
        };
        let mut at = 0;
        while let Some((op, len)) = frame(&bytes[at..]) {
            inner.replay(op);
            at += len;
        }
        if at < bytes.len() {
            warn!(
                "{}: cut {} bytes of a torn or corrupt tail at byte {at}",
                path.display(),
                bytes.len() - at
            );
            inner.file.set_len(at as u64)?;
            inner.file.sync_all()?;
        }
        sync_dir(dir)?;
        Ok(Self {
            inner: Arc::new(Mutex::new(inner)),
        })
    }
}

/// The next whole, intact frame of BYTES and its length.
fn frame(bytes: &[u8]) -> Option<(Op, usize)> {
    let header = bytes.get(..8)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
    let body = bytes.get(8..8 + len)?;
    if crc32c::crc32c(body) != crc {
        return None;
    }
    Some((serde_json::from_slice(body).ok()?, 8 + len))
}

fn encode(ops: &[Op], out: &mut Vec<u8>) {
    for op in ops {
        let body = serde_json::to_vec(op).expect("log operations serialize");
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        out.extend_from_slice(&body);
    }
}

fn invalid(e: serde_json::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replace PATH with BYTES: a temporary file, fsynced, renamed over it, the directory fsynced.
pub(crate) fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

impl Inner {
    fn replay(&mut self, op: Op) {
        match op {
            Op::Append(e) => {
                self.log.insert(e.log_id.index, e);
            }
            Op::Truncate(index) => {
                self.dead += self.log.split_off(&index).len() + 1;
            }
            Op::Purge(id) => {
                let kept = self.log.split_off(&(id.index + 1));
                self.dead += std::mem::replace(&mut self.log, kept).len() + 1;
                self.last_purged = Some(id);
            }
            Op::Committed(c) => {
                self.committed = c;
                self.dead += 1;
            }
        }
    }

    /// Write OPS and fsync them.
    fn write(&mut self, ops: &[Op]) -> io::Result<()> {
        let mut bytes = Vec::new();
        encode(ops, &mut bytes);
        self.file.write_all(&bytes)?;
        self.file.sync_data()
    }

    /// Rewrite the file with only what is live, once it is mostly dead weight.
    fn compact(&mut self) -> io::Result<()> {
        if self.dead < REWRITE_AFTER || self.dead < self.log.len() {
            return Ok(());
        }
        let mut ops = Vec::with_capacity(self.log.len() + 2);
        if let Some(p) = self.last_purged {
            ops.push(Op::Purge(p));
        }
        ops.extend(self.log.values().cloned().map(Op::Append));
        ops.push(Op::Committed(self.committed));
        let mut bytes = Vec::new();
        encode(&ops, &mut bytes);
        replace_file(&self.dir, LOG, &bytes)?;
        self.file = OpenOptions::new().append(true).open(self.dir.join(LOG))?;
        self.dead = 0;
        Ok(())
    }

    fn state(&self) -> LogState<TypeConfig> {
        let last = self.log.values().next_back().map(|e| e.log_id);
        LogState {
            last_purged_log_id: self.last_purged,
            last_log_id: last.or(self.last_purged),
        }
    }
}

fn write_error(e: io::Error) -> StorageError<NodeId> {
    StorageIOError::write_logs(&e).into()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let inner = self.inner.lock().await;
        Ok(inner.log.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        Ok(self.inner.lock().await.state())
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.inner.lock().await;
        let bytes = serde_json::to_vec(vote).expect("a vote serializes");
        replace_file(&inner.dir, VOTE, &bytes).map_err(|e| StorageIOError::write_vote(&e))?;
        inner.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.inner.lock().await.vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.inner.lock().await;
        inner
            .write(&[Op::Committed(committed)])
            .map_err(write_error)?;
        inner.committed = committed;
        inner.dead += 1;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.inner.lock().await.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
    {
        let mut inner = self.inner.lock().await;
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        let ops: Vec<Op> = entries.iter().cloned().map(Op::Append).collect();
        // Durable first, then in memory, then openraft is told.
        if let Err(e) = inner.write(&ops) {
            let copy = io::Error::new(e.kind(), e.to_string());
            callback.log_io_completed(Err(e));
            return Err(write_error(copy));
        }
        for e in entries {
            inner.log.insert(e.log_id.index, e);
        }
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.inner.lock().await;
        inner
            .write(&[Op::Truncate(log_id.index)])
            .map_err(write_error)?;
        inner.replay(Op::Truncate(log_id.index));
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.inner.lock().await;
        inner.write(&[Op::Purge(log_id)]).map_err(write_error)?;
        inner.replay(Op::Purge(log_id));
        inner.compact().map_err(write_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::metadata::Command;

    fn entry(term: u64, index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Normal(Command::RegisterBroker {
                id: index,
                address: format!("127.0.0.1:{index}"),
                incarnation: 0,
            }),
        }
    }

    async fn contents(
        store: &LogStore,
    ) -> (Vec<u64>, Option<u64>, Option<u64>, Option<Vote<NodeId>>) {
        let inner = store.inner.lock().await;
        (
            inner.log.keys().copied().collect(),
            inner.last_purged.map(|l| l.index),
            inner.committed.map(|l| l.index),
            inner.vote,
        )
    }

    #[tokio::test]
    async fn what_was_written_is_there_after_reopening_and_torn_tails_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path()).unwrap();
        {
            let mut inner = store.inner.lock().await;
            let ops: Vec<Op> = (1..=10).map(|i| Op::Append(entry(1, i))).collect();
            inner.write(&ops).unwrap();
            for op in ops {
                inner.replay(op);
            }
        }
        store
            .truncate(LogId::new(CommittedLeaderId::new(1, 1), 8))
            .await
            .unwrap();
        store
            .purge(LogId::new(CommittedLeaderId::new(1, 1), 3))
            .await
            .unwrap();
        store
            .save_committed(Some(LogId::new(CommittedLeaderId::new(1, 1), 6)))
            .await
            .unwrap();
        store.save_vote(&Vote::new(4, 2)).await.unwrap();
        let want = (vec![4, 5, 6, 7], Some(3), Some(6), Some(Vote::new(4, 2)));
        assert_eq!(contents(&store).await, want);
        drop(store);

        let reopened = LogStore::open(dir.path()).unwrap();
        assert_eq!(contents(&reopened).await, want);
        drop(reopened);

        // A crash mid-write leaves half a frame; a flipped bit fails its checksum.
        let path = dir.path().join(LOG);
        let good = fs::metadata(&path).unwrap().len();
        let mut torn = Vec::new();
        encode(&[Op::Append(entry(2, 8))], &mut torn);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&torn[..torn.len() - 3]).unwrap();
        drop(f);
        assert_eq!(contents(&LogStore::open(dir.path()).unwrap()).await, want);
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            good,
            "the torn frame is cut"
        );
        let last = torn.len() - 1;
        torn[last] ^= 1;
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&torn).unwrap();
        drop(f);
        assert_eq!(contents(&LogStore::open(dir.path()).unwrap()).await, want);
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            good,
            "the corrupt frame is cut"
        );
    }
}
