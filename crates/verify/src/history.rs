//! The history every verifier process writes: one JSON object per line, one file per
//! process (seeder, each copier instance, the live reader, the final reader), in the
//! spirit of Jepsen's Kafka workload. [`crate::check`] judges a whole history.
//!
//! A copier flushes its file before it asks to commit or abort, so a SIGKILLed copier's
//! history still names every transaction it may have committed.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// One event. `t` is wall-clock milliseconds (all processes run on one host).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Event {
    /// The seeder's record `id` was acknowledged at input `(p, off)`.
    Seed { id: u64, p: i32, off: i64 },
    /// A copier began transaction `txn`.
    Begin { txn: String, t: u64 },
    /// A copier sent input record `id` (read at input `(in_p, in_off)`) to output `out_p`.
    Send {
        txn: String,
        id: u64,
        in_p: i32,
        in_off: i64,
        out_p: i32,
    },
    /// The producer acknowledged (or failed) a send.
    Ack {
        txn: String,
        id: u64,
        out_p: i32,
        off: Option<i64>,
        err: Option<String>,
    },
    /// A copier is about to commit `txn` with these input offsets (partition, next offset).
    Commit {
        txn: String,
        offsets: Vec<(i32, i64)>,
        t: u64,
    },
    /// The outcome of the commit call (`ok: false` means unknown or failed).
    Committed {
        txn: String,
        ok: bool,
        err: Option<String>,
        t: u64,
    },
    /// A copier decided to abort `txn` (on purpose or after an error); it is never
    /// committed afterwards.
    Abort {
        txn: String,
        deliberate: bool,
        t: u64,
    },
    /// A read_committed reader returned output record `(p, off)` holding `id` of `txn`.
    Read {
        reader: String,
        p: i32,
        off: i64,
        id: u64,
        txn: String,
        t: u64,
    },
    /// The run's parameters and end state, written by the verifier last.
    Meta(Meta),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub records: u64,
    pub input_topic: String,
    pub output_topic: String,
    pub group: String,
    pub input_partitions: i32,
    pub output_partitions: i32,
    /// Log end offset of each input partition after seeding.
    pub input_end: Vec<i64>,
    /// The group's committed offset of each input partition at the end (-1: none).
    pub committed: Vec<i64>,
    pub copier_kills: u64,
    pub copier_restarts: u64,
    /// Copiers restarted because they made no progress (a client stuck in a call).
    #[serde(default)]
    pub copier_stalls: u64,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// An output record's value: the input id and the transaction that wrote it.
pub fn output_value(id: u64, txn: &str) -> String {
    format!("{id} {txn}")
}

pub fn parse_output_value(value: &[u8]) -> Option<(u64, String)> {
    let text = std::str::from_utf8(value).ok()?;
    let (id, txn) = text.split_once(' ')?;
    Some((id.parse().ok()?, txn.to_string()))
}

/// Appends events to one history file; shared by a process's threads.
pub struct Recorder {
    path: PathBuf,
    out: Mutex<BufWriter<File>>,
}

impl Recorder {
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let file = File::options()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening history file {}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            out: Mutex::new(BufWriter::with_capacity(1 << 16, file)),
        })
    }

    pub fn record(&self, event: &Event) -> anyhow::Result<()> {
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        serde_json::to_writer(&mut *out, event)?;
        out.write_all(b"\n")
            .with_context(|| format!("writing {}", self.path.display()))
    }

    /// Writes buffered events to the file (before an action whose outcome matters).
    pub fn flush(&self) -> anyhow::Result<()> {
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        out.flush()
            .with_context(|| format!("writing {}", self.path.display()))
    }
}

/// All events of a history directory, per file name (`*.jsonl`). A torn last line (a
/// process killed mid-write) is ignored; any other unparsable line is an error.
pub fn load(dir: &Path) -> anyhow::Result<BTreeMap<String, Vec<Event>>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("jsonl") {
            continue;
        }
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        let lines: Vec<String> = BufReader::new(
            File::open(&path).with_context(|| format!("opening {}", path.display()))?,
        )
        .lines()
        .collect::<Result<_, _>>()
        .with_context(|| format!("reading {}", path.display()))?;
        let mut events = Vec::with_capacity(lines.len());
        for (n, line) in lines.iter().enumerate() {
            match serde_json::from_str::<Event>(line) {
                Ok(event) => events.push(event),
                Err(_) if n + 1 == lines.len() => {} // torn by a kill
                Err(e) => anyhow::bail!("{}:{}: {e}", path.display(), n + 1),
            }
        }
        files.insert(name, events);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_torn_tail_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let recorder = Recorder::create(&dir.path().join("copier-0-0.jsonl")).unwrap();
        let events = vec![
            Event::Begin {
                txn: "c0.0.1".into(),
                t: 5,
            },
            Event::Commit {
                txn: "c0.0.1".into(),
                offsets: vec![(0, 10), (1, 7)],
                t: 6,
            },
        ];
        for e in &events {
            recorder.record(e).unwrap();
        }
        recorder.flush().unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("copier-0-0.jsonl"))
            .unwrap()
            .write_all(b"{\"op\":\"beg")
            .unwrap();
        let loaded = load(dir.path()).unwrap();
        assert_eq!(loaded["copier-0-0"], events);
    }

    #[test]
    fn output_values_parse() {
        assert_eq!(
            parse_output_value(output_value(42, "c1.2.3").as_bytes()),
            Some((42, "c1.2.3".to_string()))
        );
        assert_eq!(parse_output_value(b"garbage"), None);
    }
}
