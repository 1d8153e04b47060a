//! The Exacta broker: a single node that unmodified Kafka clients talk to.
//!
//! - [`frames`]: reading request frames within the size, memory and time limits.
//! - [`server`]: the tokio listener and per-connection request pipeline (requests are
//!   handled in arrival order; their answers may wait concurrently, e.g. for an fsync,
//!   and are written back in order).
//! - [`handlers`]: one module per Kafka API.
//! - [`partitions`]: the partition manager: topics, their partition logs, high watermarks.
//! - [`groups`]: the group coordinator runtime over `__consumer_offsets`.
//! - [`txns`]: the transaction coordinator runtime over `__transaction_state`.
//! - [`cleaner`]: the background log cleaner (compaction) and its metrics.
//! - [`flusher`]: group commit: one fsync covers every append waiting at that moment.
//! - [`cluster`] and [`replication`]: membership of a cluster (`--voters`): the metadata
//!   quorum, replicated partitions, leader epochs; absent on a single node.
//! - [`config`]: settings and their limits; [`topic_config`]: topic-level configs;
//!   [`broker_settings`]: the settings under Kafka's names, and the dynamic ones.

pub mod broker_settings;
pub mod cleaner;
pub mod cluster;
pub mod config;
pub mod coordinators;
pub mod flusher;
pub mod frames;
pub mod groups;
pub mod handlers;
pub mod internal;
pub mod metrics;
pub mod partitions;
pub mod replication;
pub mod server;
pub mod serving;
pub mod topic_config;
pub mod txns;

pub use config::{BrokerConfig, FlushPolicy};
pub use server::Server;

/// Everything a request handler may use.
#[derive(Debug)]
pub struct Node {
    pub broker: std::sync::Arc<partitions::Broker>,
    pub groups: std::sync::Arc<groups::GroupRuntime>,
    pub txns: std::sync::Arc<txns::TxnRuntime>,
    /// This broker's cluster membership; `None` on a single node.
    pub cluster: Option<std::sync::Arc<cluster::ClusterRuntime>>,
}

/// Splits `host:port` for Metadata answers.
pub fn advertised_host_port(address: &str) -> Result<(String, i32), String> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("address '{address}' is not HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("address '{address}' has an invalid port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("address '{address}' has no host"));
    }
    Ok((host.to_string(), i32::from(port)))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Runs blocking storage work (fsyncs, reads that may miss the page cache) without
/// stalling the other tasks of an async worker: on the multi-thread runtime the worker
/// first hands them to another thread (`block_in_place`); elsewhere it just runs `work`.
pub fn blocking<T>(work: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}
