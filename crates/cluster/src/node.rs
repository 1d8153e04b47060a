//! One member of the metadata quorum: its Raft (on the log and state machine in its data
//! directory), the listener answering its peers, and the first start of a cluster (every
//! voter initialises the same membership; a node that already has state keeps it).

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::Arc;

use openraft::error::{InitializeError, RaftError};
use openraft::{BasicNode, Config};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::network::{serve, Network};
use crate::{LogStore, NodeId, Raft, StateMachine};

pub struct Node {
    pub id: NodeId,
    pub raft: Raft,
    pub state: StateMachine,
    server: JoinHandle<()>,
}

/// Raft timing for brokers on one network: heartbeats every 100 ms, elections after
/// 300-600 ms without one (so a leader's loss is noticed well under a second).
pub fn config() -> Config {
    Config {
        cluster_name: "exacta".into(),
        heartbeat_interval: 100,
        election_timeout_min: 300,
        election_timeout_max: 600,
        ..Default::default()
    }
}

impl Node {
    /// Start node ID with its data in DIR, answering peers on LISTENER; VOTERS (id to
    /// cluster address, this node included) is the membership of a new cluster.
    pub async fn start(
        id: NodeId,
        dir: &Path,
        listener: TcpListener,
        voters: &BTreeMap<NodeId, String>,
    ) -> io::Result<Self> {
        let config = Arc::new(config().validate().map_err(io::Error::other)?);
        let log = LogStore::open(&dir.join("raft"))?;
        let state = StateMachine::open(&dir.join("metadata"))?;
        let raft = Raft::new(id, config, Network, log, state.clone())
            .await
            .map_err(io::Error::other)?;
        let server = tokio::spawn(serve(listener, raft.clone()));
        let members: BTreeMap<NodeId, BasicNode> = voters
            .iter()
            .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
            .collect();
        match raft.initialize(members).await {
            Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
            Err(e) => return Err(io::Error::other(e)),
        }
        Ok(Self {
            id,
            raft,
            state,
            server,
        })
    }

    /// The node this one believes leads the quorum.
    pub async fn leader(&self) -> Option<NodeId> {
        self.raft.current_leader().await
    }

    /// Stop answering and stop the Raft (as if the process ended).
    pub async fn stop(self) {
        self.server.abort();
        let _ = self.server.await;
        let _ = self.raft.shutdown().await;
    }
}
