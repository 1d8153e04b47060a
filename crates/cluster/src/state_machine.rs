//! The metadata state machine: [`Metadata`] with the last applied log id and membership.
//! Snapshots (the whole metadata, which is small) are written to `snapshot.json` atomically;
//! on open the state starts from that snapshot and openraft re-applies the committed log
//! entries after it.

use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Mutex};

use crate::metadata::{Metadata, Response};
use crate::{NodeId, TypeConfig};

const SNAPSHOT: &str = "snapshot.json";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Applied {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    metadata: Metadata,
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Vec<u8>,
}

#[derive(Clone)]
pub struct StateMachine {
    dir: PathBuf,
    state: Arc<Mutex<Applied>>,
    snapshot: Arc<Mutex<Option<StoredSnapshot>>>,
    /// The metadata after each apply, for the broker to follow.
    published: Arc<watch::Sender<Arc<Metadata>>>,
}

impl StateMachine {
    pub fn open(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let (state, snapshot) = match std::fs::read(dir.join(SNAPSHOT)) {
            Ok(bytes) => {
                let stored: StoredSnapshot = serde_json::from_slice(&bytes)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                let metadata = serde_json::from_slice(&stored.data)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                let state = Applied {
                    last_applied: stored.meta.last_log_id,
                    membership: stored.meta.last_membership.clone(),
                    metadata,
                };
                (state, Some(stored))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => (Applied::default(), None),
            Err(e) => return Err(e),
        };
        let published = Arc::new(watch::channel(Arc::new(state.metadata.clone())).0);
        Ok(Self {
            dir: dir.to_path_buf(),
            state: Arc::new(Mutex::new(state)),
            snapshot: Arc::new(Mutex::new(snapshot)),
            published,
        })
    }

    /// The metadata as applied so far on this node.
    pub async fn metadata(&self) -> Metadata {
        self.state.lock().await.metadata.clone()
    }

    /// The metadata as applied so far, and every later version as it is applied.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Metadata>> {
        self.published.subscribe()
    }

    /// The metadata as last applied, without waiting.
    pub fn current(&self) -> Arc<Metadata> {
        self.published.borrow().clone()
    }

    async fn store(&self, stored: StoredSnapshot) -> Result<(), StorageError<NodeId>> {
        let bytes = serde_json::to_vec(&stored).expect("a snapshot serializes");
        crate::log_store::replace_file(&self.dir, SNAPSHOT, &bytes)
            .map_err(|e| StorageIOError::write_snapshot(Some(stored.meta.signature()), &e))?;
        *self.snapshot.lock().await = Some(stored);
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let (meta, data) = {
            let state = self.state.lock().await;
            let data = serde_json::to_vec(&state.metadata).expect("metadata serializes");
            let id = match state.last_applied {
                Some(l) => format!("{}-{}", l.leader_id, l.index),
                None => "empty".into(),
            };
            let meta = SnapshotMeta {
                last_log_id: state.last_applied,
                last_membership: state.membership.clone(),
                snapshot_id: id,
            };
            (meta, data)
        };
        self.store(StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        })
        .await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>>
    {
        let state = self.state.lock().await;
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
    {
        let mut state = self.state.lock().await;
        let mut responses = Vec::new();
        for entry in entries {
            state.last_applied = Some(entry.log_id);
            responses.push(match entry.payload {
                EntryPayload::Blank => Response::Done,
                EntryPayload::Normal(command) => state.metadata.apply(&command),
                EntryPayload::Membership(m) => {
                    state.membership = StoredMembership::new(Some(entry.log_id), m);
                    Response::Done
                }
            });
        }
        self.published
            .send_replace(Arc::new(state.metadata.clone()));
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let metadata: Metadata = serde_json::from_slice(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        self.store(StoredSnapshot {
            meta: meta.clone(),
            data,
        })
        .await?;
        self.published.send_replace(Arc::new(metadata.clone()));
        *self.state.lock().await = Applied {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            metadata,
        };
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        Ok(self.snapshot.lock().await.as_ref().map(|s| Snapshot {
            meta: s.meta.clone(),
            snapshot: Box::new(Cursor::new(s.data.clone())),
        }))
    }
}
