//! One member of the metadata quorum: its Raft (on the log and state machine in its data
//! directory), the listener answering its peers, the first start of a cluster (every
//! voter initialises the same membership; a node that already has state keeps it), and
//! what every broker does towards the leader: heartbeats and proposals (commands are
//! committed by the leader; other nodes forward them). When this node leads, it also
//! runs the controller's fencing of expired brokers ([`crate::controller`]).

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{InitializeError, RaftError};
use openraft::{BasicNode, Config, ServerState};
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::controller::{fencings, Sessions, HEARTBEAT_INTERVAL};
use crate::metadata::{Command, Response};
use crate::network::{serve, Link, Network, Reply, Rpc};
use crate::{LogStore, NodeId, Raft, StateMachine};

pub struct Node {
    pub id: NodeId,
    pub raft: Raft,
    pub state: StateMachine,
    sessions: Sessions,
    link: Arc<Mutex<Link>>,
    tasks: Vec<JoinHandle<()>>,
}

/// The quorum as one node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuorumStatus {
    pub term: u64,
    /// Whether this node leads (is the active controller).
    pub leader: bool,
    pub last_log_index: u64,
    pub applied_index: u64,
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

/// How long a broker may go unheard before the controller fences it.
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_millis(600);

impl Node {
    /// Start node ID with its data in DIR, answering peers on LISTENER; VOTERS (id to
    /// cluster address, this node included) is the membership of a new cluster. Brokers
    /// unheard for SESSION_TIMEOUT are fenced while this node leads.
    pub async fn start(
        id: NodeId,
        dir: &Path,
        listener: TcpListener,
        voters: &BTreeMap<NodeId, String>,
        session_timeout: Duration,
    ) -> io::Result<Self> {
        let config = Arc::new(config().validate().map_err(io::Error::other)?);
        let log = LogStore::open(&dir.join("raft"))?;
        let state = StateMachine::open(&dir.join("metadata"))?;
        let raft = Raft::new(id, config, Network, log, state.clone())
            .await
            .map_err(io::Error::other)?;
        let sessions = Sessions::default();
        let mut tasks = vec![tokio::spawn(serve(
            listener,
            raft.clone(),
            sessions.clone(),
        ))];
        let members: BTreeMap<NodeId, BasicNode> = voters
            .iter()
            .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
            .collect();
        match raft.initialize(members).await {
            Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
            Err(e) => return Err(io::Error::other(e)),
        }
        tasks.push(tokio::spawn(heartbeats(id, raft.clone())));
        tasks.push(tokio::spawn(control(
            id,
            raft.clone(),
            state.clone(),
            sessions.clone(),
            session_timeout,
        )));
        Ok(Self {
            id,
            raft,
            state,
            sessions,
            link: Arc::default(),
            tasks,
        })
    }

    /// The node this one believes leads the quorum.
    pub async fn leader(&self) -> Option<NodeId> {
        self.current_leader()
    }

    /// This node's view of the quorum (for metrics).
    pub fn quorum_status(&self) -> QuorumStatus {
        let m = self.raft.metrics().borrow().clone();
        QuorumStatus {
            term: m.current_term,
            leader: m.state == ServerState::Leader,
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index: m.last_applied.map_or(0, |l| l.index),
        }
    }

    /// [`Node::leader`] without waiting (from the latest Raft metrics).
    pub fn current_leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// Commits COMMAND through the quorum leader (forwarding it when another node leads),
    /// retrying while there is no leader, for at most TIMEOUT.
    ///
    /// A command whose reply was lost may be committed twice: commands are written so that
    /// applying one again changes nothing or is refused (see [`Command`]).
    pub async fn propose(&self, command: Command, timeout: Duration) -> Result<Response, String> {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no quorum leader");
        while Instant::now() < deadline {
            match self.raft.current_leader().await {
                Some(leader) if leader == self.id => {
                    match self.raft.client_write(command.clone()).await {
                        Ok(written) => return Ok(written.data),
                        Err(e) => last = e.to_string(),
                    }
                }
                Some(leader) => match address_of(&self.raft, leader) {
                    Some(address) => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        let rpc = Rpc::Propose(command.clone());
                        match self.link.lock().await.call(&address, &rpc, left).await {
                            Ok(Reply::Propose(Ok(response))) => return Ok(response),
                            Ok(Reply::Propose(Err(e))) => last = e,
                            Ok(_) => last = format!("node {leader} answered another request"),
                            Err(e) => last = format!("node {leader} at {address}: {e}"),
                        }
                    }
                    None => last = format!("no address for node {leader}"),
                },
                None => {}
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!(
            "the metadata quorum did not commit the change in time: {last}"
        ))
    }

    /// Whether broker ID's session is live, as this node sees it (meaningful on the leader).
    pub fn session_alive(&self, id: NodeId, timeout: Duration) -> bool {
        id == self.id || self.sessions.alive(id, timeout)
    }

    /// Stop answering and stop the Raft (as if the process ended).
    pub async fn stop(self) {
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
        let _ = self.raft.shutdown().await;
    }
}

/// The cluster address of node ID in the membership.
fn address_of(raft: &Raft, id: NodeId) -> Option<String> {
    let metrics = raft.metrics().borrow().clone();
    metrics
        .membership_config
        .membership()
        .get_node(&id)
        .map(|n| n.addr.clone())
}

/// This broker's session: a heartbeat to the quorum leader every [`HEARTBEAT_INTERVAL`].
async fn heartbeats(me: NodeId, raft: Raft) {
    let mut link = Link::default();
    let mut tick = tokio::time::interval(HEARTBEAT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(leader) = raft.current_leader().await.filter(|&l| l != me) else {
            continue;
        };
        if let Some(address) = address_of(&raft, leader) {
            let _ = link
                .call(&address, &Rpc::Heartbeat(me), HEARTBEAT_INTERVAL * 3)
                .await;
        }
    }
}

/// While this node leads: restart the sessions on taking over, then fence the brokers
/// whose sessions expire.
async fn control(
    me: NodeId,
    raft: Raft,
    state: StateMachine,
    sessions: Sessions,
    timeout: Duration,
) {
    let mut leading_term = None;
    let mut tick = tokio::time::interval(HEARTBEAT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let metrics = raft.metrics().borrow().clone();
        if metrics.state != ServerState::Leader {
            leading_term = None;
            continue;
        }
        let metadata = state.current();
        if leading_term != Some(metrics.current_term) {
            leading_term = Some(metrics.current_term);
            sessions.restart(metadata.brokers.keys().copied());
            continue;
        }
        for command in fencings(&metadata, me, |b| sessions.alive(b, timeout)) {
            if let Command::FenceBroker { id, .. } = &command {
                tracing::warn!(broker = id, "broker session expired: fencing it");
            }
            if let Err(e) = raft.client_write(command).await {
                tracing::warn!(error = %e, "fencing not committed");
                break;
            }
        }
    }
}
