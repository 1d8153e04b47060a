//! Producer ids from durable blocks, so that a restart never hands out an id twice.
//!
//! The file `__producer_ids` in the data directory holds the end (exclusive) of the last
//! block reserved. Ids are handed out from memory; when a block is used up, the next one
//! is reserved by writing its end durably *before* its first id is returned. After a
//! crash the broker starts at the persisted end, skipping at most one block of ids.

use std::path::{Path, PathBuf};

use exacta_log::LogError;

/// Ids reserved per durable write.
pub const BLOCK_SIZE: i64 = 1000;

/// Why InitProducerId could not give an id.
#[derive(Debug, thiserror::Error)]
pub enum ProducerIdError {
    #[error("producer id {0} was never allocated by this broker")]
    UnknownProducerId(i64),
    #[error(transparent)]
    Storage(#[from] LogError),
}

/// Hands out producer ids and epochs (for producers without a transactional id).
#[derive(Debug)]
pub struct ProducerIdManager {
    path: PathBuf,
    next: i64,
    block_end: i64,
}

impl ProducerIdManager {
    pub fn open(data_dir: &Path) -> Result<Self, LogError> {
        let path = data_dir.join("__producer_ids");
        let block_end = match std::fs::read_to_string(&path) {
            Ok(text) => text
                .trim()
                .parse::<i64>()
                .map_err(|e| LogError::CorruptMetadata {
                    path: path.clone(),
                    reason: e.to_string(),
                })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(LogError::io("read", &path)(e)),
        };
        Ok(Self {
            path,
            next: block_end,
            block_end,
        })
    }

    /// A fresh producer id.
    pub fn generate(&mut self) -> Result<i64, LogError> {
        if self.next >= self.block_end {
            let end = self.next + BLOCK_SIZE;
            exacta_log::write_atomically(&self.path, format!("{end}\n").as_bytes())?;
            tracing::debug!(
                block_start = self.next,
                block_end = end,
                "reserved producer id block"
            );
            self.block_end = end;
        }
        let id = self.next;
        self.next += 1;
        Ok(id)
    }

    /// InitProducerId without a transactional id: a new id at epoch 0, or, when the client
    /// names an id it already has (v3+, KIP-360), the same id with the next epoch so it can
    /// restart its sequences. An exhausted epoch gets a new id.
    pub fn init(&mut self, producer_id: i64, epoch: i16) -> Result<(i64, i16), ProducerIdError> {
        if producer_id < 0 || epoch < 0 {
            return Ok((self.generate()?, 0));
        }
        if producer_id >= self.block_end {
            return Err(ProducerIdError::UnknownProducerId(producer_id));
        }
        if epoch >= i16::MAX - 1 {
            return Ok((self.generate()?, 0));
        }
        Ok((producer_id, epoch + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_never_reused_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..3 {
            let mut m = ProducerIdManager::open(dir.path()).unwrap();
            for _ in 0..(BLOCK_SIZE + 5) {
                assert!(seen.insert(m.generate().unwrap()), "id reused");
            }
        }
    }

    #[test]
    fn known_id_gets_a_bumped_epoch_and_unknown_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = ProducerIdManager::open(dir.path()).unwrap();
        let (id, epoch) = m.init(-1, -1).unwrap();
        assert_eq!(epoch, 0);
        assert_eq!(m.init(id, 0).unwrap(), (id, 1));
        assert_eq!(m.init(id, 5).unwrap(), (id, 6));
        let (other, e) = m.init(id, i16::MAX - 1).unwrap();
        assert!(other != id && e == 0);
        assert!(matches!(
            m.init(1_000_000, 0),
            Err(ProducerIdError::UnknownProducerId(1_000_000))
        ));
        // After a restart, ids from earlier blocks are still known.
        drop(m);
        let mut m = ProducerIdManager::open(dir.path()).unwrap();
        assert_eq!(m.init(id, 1).unwrap(), (id, 2));
    }
}
