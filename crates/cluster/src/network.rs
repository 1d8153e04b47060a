//! The Raft network between the nodes of a cluster. Each node listens on its cluster
//! address (`--cluster-listen`) and answers AppendEntries, Vote and InstallSnapshot for its
//! Raft, and, when it leads the quorum, the brokers' proposals (metadata commands forwarded
//! to the leader) and heartbeats (their sessions, see [`crate::controller`]); towards each
//! peer a connection sends one request at a time as a frame (`u32` length, JSON) and reads
//! its answer. A peer that cannot be reached is reported as
//! unreachable (openraft backs off); a broken connection is dropped and dialled again.

// The error types are openraft's `RaftNetwork` contract, large as they are.
#![allow(clippy::result_large_err)]

use std::io;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::debug;

use crate::controller::Sessions;
use crate::metadata::{Command, Response};
use crate::{NodeId, Raft, TypeConfig};

/// Frames larger than this are refused (a snapshot of the metadata is far smaller).
const MAX_FRAME: usize = 64 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Serialize, Deserialize)]
pub(crate) enum Rpc {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    /// A metadata command for the leader to commit.
    Propose(Command),
    /// A broker's session heartbeat to the leader.
    Heartbeat(NodeId),
}

#[derive(Serialize, Deserialize)]
pub(crate) enum Reply {
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    Snapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    /// The committed command's response, or why this node could not commit it (it does
    /// not lead: ask again where the leader is).
    Propose(Result<Response, String>),
    /// Whether this node leads (and so keeps sessions).
    Heartbeat(bool),
}

pub(crate) async fn write_frame<T: Serialize>(stream: &mut TcpStream, value: &T) -> io::Result<()> {
    let body = serde_json::to_vec(value).map_err(io::Error::other)?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    stream.write_all(&frame).await
}

pub(crate) async fn read_frame<T: for<'de> Deserialize<'de>>(
    stream: &mut TcpStream,
) -> io::Result<T> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a {len}-byte cluster frame (limit {MAX_FRAME})"),
        ));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    serde_json::from_slice(&body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Answer the peers' requests on LISTENER until the task is dropped (which also drops
/// every connection it accepted, as the end of the process would).
pub async fn serve(listener: TcpListener, raft: Raft, sessions: Sessions) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, peer)) = accepted {
                    connections.spawn(answer(stream, peer, raft.clone(), sessions.clone()));
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn answer(mut stream: TcpStream, peer: std::net::SocketAddr, raft: Raft, sessions: Sessions) {
    let _ = stream.set_nodelay(true);
    // The broker whose heartbeats come on this connection, if any.
    let mut heartbeats_of = None;
    loop {
        let rpc: Rpc = match read_frame(&mut stream).await {
            Ok(rpc) => rpc,
            Err(e) => {
                if e.kind() != io::ErrorKind::UnexpectedEof {
                    debug!("cluster connection from {peer} closed: {e}");
                }
                if let Some(id) = heartbeats_of {
                    sessions.disconnected(id);
                }
                return;
            }
        };
        if let Rpc::Heartbeat(id) = &rpc {
            heartbeats_of = Some(*id);
        }
        let reply = match rpc {
            Rpc::Append(r) => Reply::Append(raft.append_entries(r).await),
            Rpc::Vote(r) => Reply::Vote(raft.vote(r).await),
            Rpc::Snapshot(r) => Reply::Snapshot(raft.install_snapshot(r).await),
            Rpc::Propose(command) => Reply::Propose(match raft.client_write(command).await {
                Ok(written) => Ok(written.data),
                Err(e) => Err(e.to_string()),
            }),
            Rpc::Heartbeat(id) => Reply::Heartbeat(sessions.heard(id)),
        };
        if write_frame(&mut stream, &reply).await.is_err() {
            return;
        }
    }
}

/// Dials peers at the addresses their membership entries carry.
#[derive(Clone, Default)]
pub struct Network;

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        Peer {
            target,
            address: node.addr.clone(),
            stream: None,
        }
    }
}

pub struct Peer {
    target: NodeId,
    address: String,
    stream: Option<TcpStream>,
}

type Failure<E> = RPCError<NodeId, BasicNode, E>;

impl Peer {
    async fn call<E: std::error::Error>(
        &mut self,
        rpc: &Rpc,
        option: &RPCOption,
    ) -> Result<Reply, Failure<E>> {
        if self.stream.is_none() {
            let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.address))
                .await
                .map_err(|e| Failure::Unreachable(Unreachable::new(&e)))?
                .map_err(|e| Failure::Unreachable(Unreachable::new(&e)))?;
            let _ = stream.set_nodelay(true);
            self.stream = Some(stream);
        }
        let stream = self.stream.as_mut().expect("connected above");
        let exchange = async {
            write_frame(stream, rpc).await?;
            read_frame::<Reply>(stream).await
        };
        match tokio::time::timeout(option.hard_ttl(), exchange).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => {
                self.stream = None;
                Err(Failure::Network(NetworkError::new(&e)))
            }
            Err(e) => {
                self.stream = None;
                Err(Failure::Network(NetworkError::new(&e)))
            }
        }
    }

    fn remote<T, E: std::error::Error>(
        &self,
        r: Result<T, RaftError<NodeId, E>>,
    ) -> Result<T, Failure<RaftError<NodeId, E>>> {
        r.map_err(|e| Failure::RemoteError(RemoteError::new(self.target, e)))
    }
}

fn mismatched<E: std::error::Error>() -> Failure<E> {
    let e = io::Error::new(io::ErrorKind::InvalidData, "a reply of another kind");
    Failure::Network(NetworkError::new(&e))
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, Failure<RaftError<NodeId>>> {
        match self.call(&Rpc::Append(rpc), &option).await? {
            Reply::Append(r) => self.remote(r),
            _ => Err(mismatched()),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, Failure<RaftError<NodeId, InstallSnapshotError>>>
    {
        match self.call(&Rpc::Snapshot(rpc), &option).await? {
            Reply::Snapshot(r) => self.remote(r),
            _ => Err(mismatched()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, Failure<RaftError<NodeId>>> {
        match self.call(&Rpc::Vote(rpc), &option).await? {
            Reply::Vote(r) => self.remote(r),
            _ => Err(mismatched()),
        }
    }
}

/// A connection to another node for this node's own requests (proposals, heartbeats):
/// dialled on first use and again after any failure.
#[derive(Default)]
pub(crate) struct Link {
    peer: Option<(String, TcpStream)>,
}

impl Link {
    /// Sends RPC to the node at ADDRESS and reads its reply within TIMEOUT.
    pub(crate) async fn call(
        &mut self,
        address: &str,
        rpc: &Rpc,
        timeout: Duration,
    ) -> io::Result<Reply> {
        let exchange = async {
            let stream = match &mut self.peer {
                Some((a, stream)) if a == address => stream,
                _ => {
                    let stream = TcpStream::connect(address).await?;
                    let _ = stream.set_nodelay(true);
                    &mut self.peer.insert((address.to_string(), stream)).1
                }
            };
            write_frame(stream, rpc).await?;
            read_frame::<Reply>(stream).await
        };
        let result = match tokio::time::timeout(timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "no answer in time")),
        };
        if result.is_err() {
            self.peer = None;
        }
        result
    }
}
