//! The network side: accept connections, read frames, answer in order.
//!
//! Per connection, a reader decodes each request and dispatches it at once (so appends
//! from one producer happen in the order sent) and queues its [`Reply`] future; a writer
//! awaits the replies in order and writes them back. Up to `in_flight_requests_max`
//! replies may be pending, which lets a pipelining producer's acks=all batches share one
//! fsync. Frames are read within the broker's size, memory and time limits ([`crate::frames`]).
//! A frame that is oversized, malformed, too slow or of an unknown API closes that
//! connection only, with a warning.
//!
//! Shutdown (SIGTERM/SIGINT): stop accepting, stop reading new requests, let in-flight
//! replies finish (bounded by `shutdown_timeout_ms`), seal the logs, write the
//! clean-shutdown marker.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use exacta_wire::frame::{decode_request, DecodeError};
use kafka_protocol::messages::ApiKey;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::config::BrokerConfig;
use crate::frames::{FrameReader, RequestBudget};
use crate::groups::GroupRuntime;
use crate::handlers::{api_versions, dispatch, Reply};
use crate::metrics::{Metrics, METRICS};
use crate::partitions::{Broker, OpenError};
use crate::txns::TxnRuntime;
use crate::Node;

/// Why the server could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("binding {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
    #[error("opening storage: {0}")]
    Open(#[from] OpenError),
    #[error("loading the coordinators: {0}")]
    Groups(String),
    #[error("joining the cluster: {0}")]
    Cluster(crate::cluster::ClusterError),
    #[error("closing storage: {0}")]
    Close(#[from] exacta_log::LogError),
}

/// A bound, recovered broker, ready to serve.
pub struct Server {
    node: Arc<Node>,
    listener: TcpListener,
    metrics: Option<TcpListener>,
}

impl Server {
    /// Binds the listener, then opens and recovers the data directory. With port 0 and no
    /// advertised listener, the bound address is advertised.
    pub async fn bind(mut config: BrokerConfig) -> Result<Self, ServerError> {
        config.validate()?;
        let listener =
            TcpListener::bind(&config.listen)
                .await
                .map_err(|source| ServerError::Bind {
                    address: config.listen.clone(),
                    source,
                })?;
        let local = listener.local_addr().map_err(|source| ServerError::Bind {
            address: config.listen.clone(),
            source,
        })?;
        if config.advertised_listener.is_none() {
            config.advertised_listener = Some(local.to_string());
        }
        let metrics = match &config.metrics_listen {
            Some(address) => {
                Some(
                    TcpListener::bind(address)
                        .await
                        .map_err(|source| ServerError::Bind {
                            address: address.clone(),
                            source,
                        })?,
                )
            }
            None => None,
        };
        let cluster = crate::cluster::ClusterRuntime::start(&config)
            .await
            .map_err(ServerError::Cluster)?;
        let group_config = config.group_config();
        let offsets_partitions = config.offsets_topic_partitions;
        let txn_config = config.txn_config();
        let txn_partitions = config.transaction_state_partitions;
        let clustered = cluster.is_some();
        let node = tokio::task::block_in_place(|| -> Result<Node, ServerError> {
            let broker = Broker::open(config)?;
            let groups = Arc::new(
                GroupRuntime::open(
                    Arc::clone(&broker),
                    group_config,
                    offsets_partitions,
                    clustered,
                )
                .map_err(|e| ServerError::Groups(e.message))?,
            );
            let txns = TxnRuntime::open(
                Arc::clone(&broker),
                Arc::clone(&groups),
                txn_config,
                txn_partitions,
                cluster.clone(),
            )
            .map_err(|e| ServerError::Groups(e.message))?;
            Ok(Node {
                broker,
                groups,
                txns: Arc::new(txns),
                cluster,
            })
        })?;
        Ok(Self {
            node: Arc::new(node),
            listener,
            metrics,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn broker(&self) -> &Arc<Broker> {
        &self.node.broker
    }

    /// Serves until `shutdown` resolves, then shuts down gracefully.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), ServerError> {
        let Server {
            node,
            listener,
            metrics,
        } = self;
        let broker = Arc::clone(&node.broker);
        let addr = listener.local_addr().ok();
        tracing::info!(
            listen = ?addr,
            advertised = broker.config.advertised(),
            data_dir = %broker.config.data_dir.display(),
            flush_policy = ?broker.config.flush_policy,
            "exacta listening on {}",
            addr.map(|a| a.to_string()).unwrap_or_default()
        );
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut background = JoinSet::new();
        if let Some(metrics) = metrics {
            tracing::info!(
                "metrics listening on {}",
                metrics
                    .local_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default()
            );
            crate::metrics::enable_error_counting();
            background.spawn(crate::metrics::serve(metrics, Arc::clone(&node)));
        }
        background.spawn(retention_loop(Arc::clone(&broker)));
        let mut cleaner = crate::cleaner::CleanerThread::start(Arc::clone(&broker));
        background.spawn(Arc::clone(&node.groups).tick_loop());
        background.spawn(Arc::clone(&node.txns).tick_loop());
        background.spawn(flush_loop(Arc::clone(&broker)));
        if let Some(cluster) = &node.cluster {
            let advertised = broker.config.advertised().to_string();
            background.spawn(Arc::clone(cluster).register(advertised));
            background.spawn(crate::replication::follow::run(
                Arc::clone(&broker),
                Arc::clone(cluster),
            ));
            background.spawn(crate::coordinators::run(
                Arc::clone(&node),
                Arc::clone(cluster),
            ));
            background.spawn(crate::replication::isr::run(
                Arc::clone(&broker),
                Arc::clone(cluster),
            ));
        }
        let connections_open = Arc::new(AtomicUsize::new(0));
        let budget = RequestBudget::new(broker.config.queued_request_bytes_max);
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let limit = broker.live().connections_max;
                        if connections_open.load(Ordering::Acquire) >= limit {
                            Metrics::add(&METRICS.connections_refused, 1);
                            tracing::warn!(%peer, limit, "connection limit reached; closing new connection");
                            drop(stream);
                            continue;
                        }
                        connections_open.fetch_add(1, Ordering::AcqRel);
                        let node = Arc::clone(&node);
                        let stop = stop_rx.clone();
                        let open = Arc::clone(&connections_open);
                        let budget = budget.clone();
                        connections.spawn(async move {
                            serve_connection(stream, peer, node, budget, stop).await;
                            open.fetch_sub(1, Ordering::AcqRel);
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        if let Some(cluster) = &node.cluster {
            cluster.controlled_shutdown(&broker).await;
        }
        tracing::info!(
            connections = connections.len(),
            "shutting down: draining in-flight requests"
        );
        drop(listener);
        let _ = stop_tx.send(true);
        let timeout = Duration::from_millis(broker.config.shutdown_timeout_ms);
        if tokio::time::timeout(timeout, async {
            while connections.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            tracing::warn!("in-flight requests did not finish in time; closing anyway");
            connections.abort_all();
        }
        background.abort_all();
        let closing = Arc::clone(&broker);
        tokio::task::spawn_blocking(move || {
            cleaner.stop();
            closing.close()
        })
        .await
        .map_err(|e| {
            ServerError::Close(exacta_log::LogError::Io {
                action: "join close task",
                path: Default::default(),
                source: std::io::Error::other(e.to_string()),
            })
        })??;
        tracing::info!("shutdown complete");
        Ok(())
    }
}

async fn retention_loop(broker: Arc<Broker>) {
    let mut every = tokio::time::interval(Duration::from_millis(
        broker.config.retention_check_interval_ms.max(10),
    ));
    every.tick().await;
    loop {
        every.tick().await;
        let b = Arc::clone(&broker);
        if let Ok(deleted) = tokio::task::spawn_blocking(move || b.apply_retention()).await {
            if deleted > 0 {
                tracing::info!(segments = deleted, "retention deleted segments");
            }
        }
    }
}

/// How often partitions are checked for a due `flush.ms` fsync.
const FLUSH_CHECK_MS: u64 = 50;

async fn flush_loop(broker: Arc<Broker>) {
    let mut every = tokio::time::interval(Duration::from_millis(FLUSH_CHECK_MS));
    loop {
        every.tick().await;
        broker.flush_due();
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    node: Arc<Node>,
    budget: RequestBudget,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let (mut reader, writer) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Reply>(node.broker.config.in_flight_requests_max);
    // Requests read and not yet answered on this connection.
    let unanswered = Arc::new(AtomicUsize::new(0));
    let answered = Arc::clone(&unanswered);
    let writer = tokio::spawn(async move {
        let mut writer = BufWriter::with_capacity(64 << 10, writer);
        while let Some(reply) = rx.recv().await {
            let result = reply.await;
            answered.fetch_sub(1, Ordering::AcqRel);
            match result {
                Ok(Some(bytes)) => {
                    if writer.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(%peer, error = %e, "closing connection: could not encode a response");
                    break;
                }
            }
            if rx.is_empty() && writer.flush().await.is_err() {
                break;
            }
        }
        let _ = writer.flush().await;
        let _ = writer.shutdown().await;
    });
    let frames = FrameReader::new(budget, &node.broker.config);
    loop {
        let frame = tokio::select! {
            biased;
            _ = stop.changed() => break,
            frame = frames.read(&mut reader, || unanswered.load(Ordering::Acquire) > 0) => frame,
        };
        let (frame, share) = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing connection");
                break;
            }
        };
        let arrived = std::time::Instant::now();
        let size = frame.len() as u64;
        let reply: Reply = match decode_request(frame) {
            Ok((header, request)) => {
                let api = header.request_api_key;
                let version = header.request_api_version;
                if api == ApiKey::Produce as i16 {
                    Metrics::add(&METRICS.produce_bytes, size);
                }
                let reply = dispatch(&node, peer, &header, request);
                Box::pin(async move {
                    let result = reply.await;
                    // The request's bytes return to the budget once it is answered.
                    drop(share);
                    METRICS.request(api, arrived.elapsed());
                    if let Ok(Some(bytes)) = &result {
                        crate::metrics::count_errors(api, version, bytes);
                    }
                    if api == ApiKey::Fetch as i16 {
                        if let Ok(Some(bytes)) = &result {
                            Metrics::add(&METRICS.fetch_bytes, bytes.len() as u64);
                        }
                    }
                    result
                })
            }
            Err(DecodeError::UnsupportedVersion {
                api_key: ApiKey::ApiVersions,
                version,
                correlation_id,
            }) => {
                tracing::debug!(%peer, version, "ApiVersions at an unserved version; answering v0");
                Box::pin(std::future::ready(
                    api_versions::unsupported_version(correlation_id).map(Some),
                ))
            }
            Err(e) => {
                Metrics::add(&METRICS.bad_requests, 1);
                tracing::warn!(%peer, error = %e, "closing connection: bad request");
                break;
            }
        };
        unanswered.fetch_add(1, Ordering::AcqRel);
        if tx.send(reply).await.is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}
