//! `exacta-cluster`: the metadata quorum of an Exacta cluster, on openraft (the role KRaft
//! plays in Kafka). See docs/cluster.md for the design: one Raft group holds the cluster
//! metadata, and data partitions replicate the way Kafka's do under it.
//!
//! Built so far:
//! - [`metadata`]: the replicated state (brokers, topics with each partition's replicas,
//!   leader, leader epoch and ISR, producer-id blocks) and the commands that change it;
//! - [`log_store`]: the Raft log and vote on disk, fsynced before openraft is told they are
//!   durable, torn tails cut at the last whole frame on open;
//! - [`state_machine`]: the metadata state machine with snapshots on disk;
//! - [`network`]: Raft RPCs, proposals and heartbeats between nodes over TCP
//!   (length-prefixed JSON frames);
//! - [`node`]: one quorum member (its Raft, its listener, first-start initialisation,
//!   heartbeats and proposals towards the leader);
//! - [`controller`]: broker sessions, fencing of expired brokers, replica placement;
//! - [`voters`]: `--voters` lists and the identity a data directory keeps.
//!
//! The broker (`exacta-broker`) runs a [`Node`] in cluster mode and replicates data
//! partitions under this metadata.

pub mod controller;
pub mod log_store;
pub mod metadata;
pub mod network;
pub mod node;
pub mod state_machine;
pub mod voters;

pub use log_store::LogStore;
pub use metadata::{Command, Metadata, Response};
pub use node::Node;
pub use state_machine::StateMachine;

/// A broker's node id (`--node-id`).
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// The cluster's Raft types: metadata commands in, responses out.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        SnapshotData = std::io::Cursor<Vec<u8>>,
);

pub type Raft = openraft::Raft<TypeConfig>;
