//! This broker as a member of a cluster (`--voters`): its metadata quorum member
//! (`exacta-cluster`), its registration, and the cluster-wide answers handlers need
//! (brokers, partition leaders, topic creation and deletion through the quorum). Without
//! `--voters` there is no [`ClusterRuntime`] and the broker is the single node it always was.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use exacta_cluster::metadata::{Command, Metadata, Response};
use exacta_cluster::voters;
use exacta_types::ErrorCode;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::BrokerConfig;
use crate::partitions::{ApiError, Broker};

/// How long an admin request waits for the quorum to commit and this broker to apply.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

pub struct ClusterRuntime {
    pub me: i32,
    pub node: exacta_cluster::Node,
    metadata: watch::Receiver<Arc<Metadata>>,
    /// Bumped when this broker has applied a metadata version to its partitions.
    applied: watch::Sender<u64>,
    pub lag_max_ms: i64,
    /// The block of producer ids this broker hands out: `(next, end)`.
    producer_ids: tokio::sync::Mutex<(i64, i64)>,
    /// This start's registration mark (see `exacta_cluster::metadata::Broker`).
    incarnation: u64,
    /// Set by a controlled shutdown: replica fetchers stop, so the new leaders do not take
    /// this broker back into their ISRs.
    stopping: std::sync::atomic::AtomicBool,
    /// How many voters the cluster has.
    voters: usize,
    /// Connections to the other brokers for coordinator requests (markers, transaction
    /// checks): one per broker, one request at a time on it.
    peers: std::sync::Mutex<std::collections::HashMap<i32, Peer>>,
}

type Peer = Arc<tokio::sync::Mutex<Option<exacta_client::Connection>>>;

/// How long a request to another broker may take before it counts as failed.
const PEER_TIMEOUT: Duration = Duration::from_secs(5);

impl std::fmt::Debug for ClusterRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterRuntime")
            .field("me", &self.me)
            .finish()
    }
}

/// Why the cluster side could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{0}")]
    Config(String),
    #[error("binding the cluster listener {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
    #[error("starting the metadata quorum member: {0}")]
    Start(std::io::Error),
}

impl ClusterRuntime {
    /// Checks the voters and the data directory's identity, binds the cluster listener and
    /// starts the quorum member. Registration happens in the background (the quorum may
    /// not have a majority yet).
    pub async fn start(config: &BrokerConfig) -> Result<Option<Arc<Self>>, ClusterError> {
        let dir = config.data_dir.join("__cluster");
        let Some(list) = &config.voters else {
            if dir.exists() {
                return Err(ClusterError::Config(format!(
                    "{} holds a cluster node's data; start it with its --node-id and --voters",
                    config.data_dir.display()
                )));
            }
            return Ok(None);
        };
        let has_data = std::fs::read_dir(&config.data_dir).is_ok_and(|mut d| d.next().is_some());
        if !dir.exists() && has_data {
            return Err(ClusterError::Config(format!(
                "{} holds a single node's data; a cluster node starts from an empty data directory",
                config.data_dir.display()
            )));
        }
        let me = u64::try_from(config.node_id)
            .map_err(|_| ClusterError::Config(format!("node id {} is negative", config.node_id)))?;
        let voters = voters::parse(list, me).map_err(ClusterError::Config)?;
        let listen = config
            .cluster_listen
            .clone()
            .unwrap_or_else(|| voters[&me].clone());
        voters::check_identity(&dir, me, &voters).map_err(ClusterError::Config)?;
        let listener = TcpListener::bind(&listen)
            .await
            .map_err(|source| ClusterError::Bind {
                address: listen.clone(),
                source,
            })?;
        let session = Duration::from_millis(config.broker_session_timeout_ms);
        let node = exacta_cluster::Node::start(me, &dir, listener, &voters, session)
            .await
            .map_err(ClusterError::Start)?;
        let metadata = node.state.subscribe();
        tracing::info!(node_id = me, cluster_listen = %listen, voters = list.as_str(), "cluster member started");
        Ok(Some(Arc::new(Self {
            me: config.node_id,
            node,
            metadata,
            applied: watch::channel(0).0,
            lag_max_ms: config.replica_lag_time_max_ms,
            producer_ids: tokio::sync::Mutex::new((0, 0)),
            incarnation: uuid::Uuid::new_v4().as_u64_pair().0,
            stopping: std::sync::atomic::AtomicBool::new(false),
            voters: voters.len(),
            peers: Default::default(),
        })))
    }

    /// Registers this broker's advertised listener, retrying until the quorum commits it.
    pub async fn register(self: Arc<Self>, advertised: String) {
        loop {
            let command = Command::RegisterBroker {
                id: self.me as u64,
                address: advertised.clone(),
                incarnation: self.incarnation,
            };
            match self.node.propose(command, ADMIN_TIMEOUT).await {
                Ok(_) => {
                    tracing::info!(node_id = self.me, %advertised, "registered with the cluster");
                    return;
                }
                Err(e) => tracing::info!(error = %e, "waiting for the metadata quorum to register"),
            }
        }
    }

    /// Resolves once this node's metadata shows this start's registration: everything
    /// committed before the start is applied here by then, so a topic missing from the
    /// metadata is really gone (not merely not yet replayed).
    pub async fn caught_up(&self) {
        let me = self.me as u64;
        let mut versions = self.subscribe();
        let _ = versions
            .wait_for(|m| {
                m.brokers
                    .get(&me)
                    .is_some_and(|b| b.incarnation == self.incarnation)
            })
            .await;
    }

    /// Controlled shutdown (SIGTERM): asks the quorum to move every leadership this broker
    /// holds to another in-sync replica and take it out of every ISR, as its session
    /// expiry would, but at once; then waits (a few seconds at most) until this broker has
    /// applied that, so its clients are redirected before it stops.
    pub async fn controlled_shutdown(&self, broker: &Broker) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Release);
        let me = self.me as u64;
        let alive: Vec<u64> = self
            .metadata()
            .brokers
            .keys()
            .copied()
            .filter(|&b| b != me)
            .collect();
        let command = Command::FenceBroker { id: me, alive };
        match self.node.propose(command, Duration::from_secs(3)).await {
            Ok(Response::Moved(moved)) => {
                tracing::info!(
                    moved,
                    "controlled shutdown: leadership moved to other replicas"
                )
            }
            Ok(other) => tracing::info!(?other, "controlled shutdown"),
            Err(e) => {
                tracing::warn!(error = %e, "controlled shutdown: the quorum did not answer; stopping anyway");
                return;
            }
        }
        let moved = |b: &Broker| {
            b.topics().iter().all(|t| {
                t.partitions.iter().all(|p| match p.role_now() {
                    crate::replication::Role::Leader(l) => l.isr.len() <= 1,
                    _ => true,
                })
            })
        };
        let _ =
            tokio::time::timeout(Duration::from_secs(3), self.wait_applied(moved, broker)).await;
    }

    /// Whether a controlled shutdown has begun.
    pub fn stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The metadata as applied on this node.
    pub fn metadata(&self) -> Arc<Metadata> {
        self.metadata.borrow().clone()
    }

    /// A receiver of every metadata version.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Metadata>> {
        self.metadata.clone()
    }

    /// A receiver bumped each time this broker has applied a metadata version.
    pub fn subscribe_applied(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// Called by the metadata follower once a version is applied to the partitions.
    pub(crate) fn mark_applied(&self) {
        self.applied.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The quorum leader (Kafka's active controller), if known.
    pub async fn controller(&self) -> Option<i32> {
        self.node.leader().await.map(|l| l as i32)
    }

    /// Registered brokers: id and advertised `host:port`.
    pub fn brokers(&self) -> Vec<(i32, String)> {
        self.metadata()
            .brokers
            .iter()
            .map(|(id, b)| (*id as i32, b.address.clone()))
            .collect()
    }

    /// Creates a topic through the quorum: replicas placed over the registered brokers,
    /// then waits until this broker has the topic. Returns the topic id.
    pub async fn create_topic(
        &self,
        broker: &Broker,
        name: &str,
        partitions: i32,
        replication_factor: i32,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<uuid::Uuid, ApiError> {
        // The checks a single node makes (name, partition count, configs, collisions).
        broker.create_topic(name, partitions, configs.clone(), true)?;
        let metadata = self.metadata();
        let brokers: Vec<u64> = metadata.brokers.keys().copied().collect();
        let rf = if replication_factor == -1 {
            broker.config.default_replication_factor
        } else {
            replication_factor
        };
        if rf < 1 || rf as usize > brokers.len() {
            return Err(ApiError::new(
                ErrorCode::InvalidReplicationFactor,
                format!(
                    "Replication factor: {rf} larger than available brokers: {}.",
                    brokers.len()
                ),
            ));
        }
        if metadata.topics.contains_key(name) {
            return Err(ApiError::new(
                ErrorCode::TopicAlreadyExists,
                format!("topic '{name}' already exists"),
            ));
        }
        if validate_only {
            return Ok(uuid::Uuid::nil());
        }
        let (id, response) = self
            .propose_topic(name, partitions, rf as usize, &brokers, configs)
            .await?;
        if let Response::Refused(why) = response {
            // A retried proposal of our own creation is refused the second time: fine.
            let ours = self
                .metadata()
                .topics
                .get(name)
                .is_some_and(|t| t.id == id.to_string());
            if !ours {
                return Err(ApiError::new(ErrorCode::TopicAlreadyExists, why));
            }
        }
        self.wait_applied(|b| b.topic(name).is_some_and(|t| t.id == id), broker)
            .await?;
        Ok(id)
    }

    /// Proposes internal topic NAME with PARTITIONS and CONFIGS, replicated on 3 brokers
    /// (Kafka's `offsets.topic.replication.factor`), or on every voter of a smaller
    /// cluster, once that many have registered. Returns whether it was proposed; losing
    /// the race to another broker's proposal is fine.
    pub async fn create_internal_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
    ) -> Result<bool, ApiError> {
        let brokers: Vec<u64> = self.metadata().brokers.keys().copied().collect();
        let rf = self.voters.min(3);
        if brokers.len() < rf {
            return Ok(false);
        }
        let (_, response) = self
            .propose_topic(name, partitions, rf, &brokers, configs)
            .await?;
        if let Response::Refused(why) = response {
            tracing::debug!(topic = name, why, "internal topic proposal refused");
            return Ok(false);
        }
        tracing::info!(
            topic = name,
            partitions,
            replication_factor = rf,
            "internal topic created"
        );
        Ok(true)
    }

    /// Proposes topic NAME with a new id, its replicas placed over BROKERS (leaders spread
    /// from a start the id picks); returns the id and the quorum's answer.
    async fn propose_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: usize,
        brokers: &[u64],
        configs: BTreeMap<String, String>,
    ) -> Result<(uuid::Uuid, Response), ApiError> {
        let id = uuid::Uuid::new_v4();
        let start = (id.as_u128() % brokers.len() as u128) as usize;
        let replicas = exacta_cluster::controller::place(
            brokers,
            partitions as usize,
            replication_factor,
            start,
        );
        let command = Command::CreateTopic {
            name: name.to_string(),
            id: id.to_string(),
            replicas,
            configs,
        };
        Ok((id, self.propose(command).await?))
    }

    /// Deletes a topic through the quorum and waits until this broker dropped it.
    pub async fn delete_topic(&self, broker: &Broker, name: &str) -> Result<(), ApiError> {
        if exacta_types::is_internal_topic(name) {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("{name} is an internal topic managed by the broker"),
            ));
        }
        if !self.metadata().topics.contains_key(name) {
            return Err(ApiError::new(
                ErrorCode::UnknownTopicOrPartition,
                format!("unknown topic '{name}'"),
            ));
        }
        if let Response::Refused(why) = self
            .propose(Command::DeleteTopic { name: name.into() })
            .await?
        {
            return Err(ApiError::new(ErrorCode::UnknownTopicOrPartition, why));
        }
        self.wait_applied(|b| b.topic(name).is_none(), broker).await
    }

    /// InitProducerId without a transactional id in a cluster: ids come from blocks the
    /// quorum hands out, so no two brokers give out the same one; a known id gets its next
    /// epoch (KIP-360), an exhausted epoch a new id.
    pub async fn init_producer_id(&self, id: i64, epoch: i16) -> Result<(i64, i16), ApiError> {
        if id >= 0 && epoch >= 0 {
            if id >= self.metadata().next_producer_id {
                return Err(ApiError::new(
                    ErrorCode::InvalidProducerIdMapping,
                    format!("producer id {id} was never handed out"),
                ));
            }
            if epoch < i16::MAX - 1 {
                return Ok((id, epoch + 1));
            }
        }
        let mut block = self.producer_ids.lock().await;
        if block.0 >= block.1 {
            let command = Command::AllocateProducerIds {
                broker: self.me as u64,
            };
            match self.propose(command).await? {
                Response::ProducerIds { first, count } => *block = (first, first + count),
                other => {
                    return Err(ApiError::new(
                        ErrorCode::CoordinatorNotAvailable,
                        format!("no producer id block: {other:?}"),
                    ))
                }
            }
        }
        let id = block.0;
        block.0 += 1;
        Ok((id, 0))
    }

    /// Sends REQUEST to broker NODE (its advertised listener) and returns the response;
    /// a failure (unknown broker, no connection, no answer in time) is described.
    pub async fn call<R: kafka_protocol::protocol::Request>(
        &self,
        node: i32,
        request: &R,
    ) -> Result<R::Response, String> {
        let slot = Arc::clone(
            self.peers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(node)
                .or_default(),
        );
        let mut connection = slot.lock().await;
        let exchange = async {
            if connection.is_none() {
                let address = self
                    .brokers()
                    .into_iter()
                    .find(|(id, _)| *id == node)
                    .map(|(_, a)| a)
                    .ok_or_else(|| format!("broker {node} is not registered"))?;
                let c = exacta_client::Connection::connect(&address)
                    .await
                    .map_err(|e| e.to_string())?;
                *connection = Some(c);
            }
            let c = connection.as_mut().ok_or("not connected")?;
            c.send(request).await.map_err(|e| e.to_string())
        };
        let result = match tokio::time::timeout(PEER_TIMEOUT, exchange).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "broker {node} did not answer within {PEER_TIMEOUT:?}"
            )),
        };
        if result.is_err() {
            *connection = None;
        }
        result
    }

    /// The leader of TOPIC-INDEX as the quorum has it.
    pub fn leader_of(&self, topic: &str, index: i32) -> Option<i32> {
        let metadata = self.metadata();
        let p = metadata.topics.get(topic)?.partitions.get(index as usize)?;
        Some(p.leader as i32)
    }

    /// Proposes COMMAND; a quorum that cannot commit is REQUEST_TIMED_OUT.
    pub async fn propose(&self, command: Command) -> Result<Response, ApiError> {
        let started = std::time::Instant::now();
        let response = self
            .node
            .propose(command, ADMIN_TIMEOUT)
            .await
            .map_err(|e| ApiError::new(ErrorCode::RequestTimedOut, e))?;
        crate::metrics::METRICS
            .quorum_commit_seconds
            .observe(started.elapsed());
        Ok(response)
    }

    async fn wait_applied(
        &self,
        done: impl Fn(&Broker) -> bool,
        broker: &Broker,
    ) -> Result<(), ApiError> {
        let mut applied = self.applied.subscribe();
        let wait = async {
            while !done(broker) {
                if applied.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::time::timeout(ADMIN_TIMEOUT, wait)
            .await
            .map_err(|_| {
                ApiError::new(
                    ErrorCode::RequestTimedOut,
                    "the change was committed but this broker has not applied it in time",
                )
            })
    }
}
