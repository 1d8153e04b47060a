//! Topic metadata persisted beside the partition logs.
//!
//! Each topic is one JSON file `__topics/<name>.json` holding its id, partition count and
//! configs, replaced atomically. Partition logs live in `<data dir>/<topic>-<partition>`.
//! Deleting a topic removes its metadata file first, so a crash half-way through leaves
//! orphan partition directories, which [`TopicStore::remove_orphans`] cleans on start.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::LogError;

/// A topic's persisted description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMetadata {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    /// Topic-level config overrides (`retention.ms`, `segment.bytes`, ...).
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
}

/// The metadata directory of a data dir.
#[derive(Debug, Clone)]
pub struct TopicStore {
    data_dir: PathBuf,
    meta_dir: PathBuf,
}

impl TopicStore {
    pub fn open(data_dir: &Path) -> Result<Self, LogError> {
        let meta_dir = data_dir.join("__topics");
        std::fs::create_dir_all(&meta_dir).map_err(LogError::io("create", &meta_dir))?;
        Ok(Self {
            data_dir: data_dir.to_path_buf(),
            meta_dir,
        })
    }

    /// Every persisted topic.
    pub fn load_all(&self) -> Result<Vec<TopicMetadata>, LogError> {
        let mut topics = Vec::new();
        for entry in
            std::fs::read_dir(&self.meta_dir).map_err(LogError::io("list", &self.meta_dir))?
        {
            let path = entry.map_err(LogError::io("list", &self.meta_dir))?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let bytes = std::fs::read(&path).map_err(LogError::io("read", &path))?;
            let topic: TopicMetadata =
                serde_json::from_slice(&bytes).map_err(|e| LogError::CorruptMetadata {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            topics.push(topic);
        }
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(topics)
    }

    /// Persists (creates or replaces) a topic's metadata durably.
    pub fn save(&self, topic: &TopicMetadata) -> Result<(), LogError> {
        let bytes = serde_json::to_vec_pretty(topic).map_err(|e| LogError::CorruptMetadata {
            path: self.path_of(&topic.name),
            reason: e.to_string(),
        })?;
        crate::write_atomically(&self.path_of(&topic.name), &bytes)
    }

    /// Removes a topic: metadata first (durably), then its partition directories.
    pub fn remove(&self, topic: &TopicMetadata) -> Result<(), LogError> {
        let path = self.path_of(&topic.name);
        std::fs::remove_file(&path).map_err(LogError::io("delete", &path))?;
        crate::sync_dir(&self.meta_dir)?;
        for partition in 0..topic.partitions {
            let dir = self.partition_dir(&topic.name, partition);
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(LogError::io("delete", &dir))?;
            }
        }
        crate::sync_dir(&self.data_dir)
    }

    /// Deletes partition directories that belong to no known topic (an interrupted delete).
    pub fn remove_orphans(&self, topics: &[TopicMetadata]) -> Result<usize, LogError> {
        let mut known = std::collections::HashSet::new();
        for t in topics {
            for p in 0..t.partitions {
                known.insert(self.partition_dir(&t.name, p));
            }
        }
        let mut removed = 0;
        for entry in
            std::fs::read_dir(&self.data_dir).map_err(LogError::io("list", &self.data_dir))?
        {
            let path = entry.map_err(LogError::io("list", &self.data_dir))?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let looks_like_partition = name
                .rsplit_once('-')
                .is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
            if path.is_dir() && looks_like_partition && !known.contains(&path) {
                tracing::warn!(dir = %path.display(), "removing partition directory of a deleted topic");
                std::fs::remove_dir_all(&path).map_err(LogError::io("delete", &path))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    pub fn partition_dir(&self, topic: &str, partition: i32) -> PathBuf {
        self.data_dir.join(format!("{topic}-{partition}"))
    }

    fn path_of(&self, topic: &str) -> PathBuf {
        self.meta_dir.join(format!("{topic}.json"))
    }
}
