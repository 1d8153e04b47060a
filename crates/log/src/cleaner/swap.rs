//! Replacing segments with their cleaned copy so that a crash at any instant leaves either
//! the old segments or the new one, never both and never neither.
//!
//! A cleaned group of segments `[base, end)` (`end` is the base of the first segment after
//! the group) is written as `<base>.log.cleaned` with `.index.cleaned` and
//! `.timeindex.cleaned`, each fsynced. The swap then:
//!
//! 1. writes the manifest `<base>.swap` holding `end`, atomically: **the commit point**;
//! 2. deletes the replaced segments after the first (bases in `(base, end)`);
//! 3. renames each `.cleaned` file over the first segment's file (`rename` replaces the
//!    target atomically), fsyncs the directory and removes the manifest.
//!
//! Recovery ([`recover`]) runs before a log is opened: a manifest means the swap committed,
//! so steps 2 and 3 are redone (each is idempotent: a rename whose source is gone already
//! happened); `.cleaned` files without a manifest belong to a cleaning that never
//! committed and are deleted, leaving the old segments untouched. A manifest left behind
//! after step 3 (its removal not yet durable) is harmless: no segment can have a base in
//! `(base, end)` any more.

use std::path::{Path, PathBuf};

use crate::segment::file_name;
use crate::LogError;

/// The files of one segment.
pub const EXTENSIONS: [&str; 3] = ["log", "index", "timeindex"];

/// Temporary name of a cleaned segment's file.
pub fn cleaned_path(dir: &Path, base: i64, extension: &str) -> PathBuf {
    dir.join(format!("{}.cleaned", file_name(base, extension)))
}

fn manifest_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(file_name(base, "swap"))
}

/// Commits the cleaned copy of segments `[base, end)`; `replaced` are the bases of the
/// segments it replaces (the first is `base`). Test hook: with `EXACTA_TEST_CRASH_IN_SWAP`
/// set to 1, 2 or 3, the process exits right after that step.
pub fn commit(dir: &Path, base: i64, end: i64, replaced: &[i64]) -> Result<(), LogError> {
    crate::write_atomically(&manifest_path(dir, base), end.to_string().as_bytes())?;
    crash_point(1);
    finish(dir, base, replaced.iter().copied().filter(|&b| b != base))?;
    Ok(())
}

fn crash_point(step: u8) {
    static STEP: std::sync::OnceLock<Option<u8>> = std::sync::OnceLock::new();
    let at = STEP.get_or_init(|| {
        std::env::var("EXACTA_TEST_CRASH_IN_SWAP")
            .ok()
            .and_then(|v| v.parse().ok())
    });
    if *at == Some(step) {
        tracing::error!(step, "EXACTA_TEST_CRASH_IN_SWAP: exiting");
        std::process::exit(86);
    }
}

/// Steps 2 and 3 of a committed swap.
fn finish(dir: &Path, base: i64, others: impl Iterator<Item = i64>) -> Result<(), LogError> {
    for other in others {
        for ext in EXTENSIONS {
            remove_if_present(&dir.join(file_name(other, ext)))?;
        }
    }
    crash_point(2);
    for ext in EXTENSIONS {
        let from = cleaned_path(dir, base, ext);
        if from.exists() {
            let to = dir.join(file_name(base, ext));
            std::fs::rename(&from, &to).map_err(LogError::io("rename", &to))?;
        }
    }
    crate::sync_dir(dir)?;
    crash_point(3);
    remove_if_present(&manifest_path(dir, base))
}

fn remove_if_present(path: &Path) -> Result<(), LogError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LogError::io("delete", path)(e)),
    }
}

/// What recovery did in a log directory.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    /// Committed swaps completed.
    pub completed: usize,
    /// Uncommitted cleaned files deleted.
    pub discarded: usize,
}

/// Completes committed swaps and deletes uncommitted cleaned files in `dir`.
pub fn recover(dir: &Path) -> Result<Recovered, LogError> {
    let mut found = Recovered::default();
    if !dir.exists() {
        return Ok(found);
    }
    let names: Vec<String> = std::fs::read_dir(dir)
        .map_err(LogError::io("list log directory", dir))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    let bases = |suffix: &str| -> Vec<i64> {
        names
            .iter()
            .filter_map(|n| n.strip_suffix(suffix)?.parse().ok())
            .collect()
    };
    let segments = bases(".log");
    for base in bases(".swap") {
        let path = manifest_path(dir, base);
        let text = std::fs::read_to_string(&path).map_err(LogError::io("read", &path))?;
        let end: i64 = text.trim().parse().map_err(|_| LogError::CorruptMetadata {
            path: path.clone(),
            reason: format!("swap manifest holds '{}'", text.trim()),
        })?;
        tracing::warn!(dir = %dir.display(), base, end, "completing a segment swap interrupted by a crash");
        let others = segments.iter().copied().filter(|&b| b > base && b < end);
        finish(dir, base, others)?;
        found.completed += 1;
    }
    for name in names.iter().filter(|n| n.ends_with(".cleaned")) {
        let path = dir.join(name);
        if path.exists() {
            tracing::warn!(file = %path.display(), "deleting the output of an unfinished cleaning");
            remove_if_present(&path)?;
            found.discarded += 1;
        }
    }
    if found != Recovered::default() {
        crate::sync_dir(dir)?;
    }
    Ok(found)
}
