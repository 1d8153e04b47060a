//! `exacta-client`: a native async client for the Kafka protocol (codecs from
//! `kafka-protocol`), used by the `exacta` CLI against any Kafka-compatible cluster.
//!
//! - [`Connection`]: one broker connection; negotiates each API's version with
//!   ApiVersions and sends typed requests.
//! - [`Cluster`]: connections by address from a bootstrap list; metadata, partition
//!   leaders and group/transaction coordinators.
//! - [`KafkaError`]: an error code from a response, with Kafka's name and a hint.

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use exacta_types::ErrorCode;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, FindCoordinatorRequest, MetadataRequest,
    MetadataResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_RESPONSE: usize = 256 << 20;

/// A Kafka error code from a response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name} ({code}){}{}", .message.as_deref().map(|m| format!(": {m}")).unwrap_or_default(), hint(*.code).map(|h| format!(" (hint: {h})")).unwrap_or_default())]
pub struct KafkaError {
    pub code: i16,
    pub name: String,
    pub message: Option<String>,
}

impl KafkaError {
    pub fn new(code: i16, message: Option<&str>) -> Self {
        Self {
            code,
            name: ErrorCode::from_code(code)
                .map(|e| e.name().to_string())
                .unwrap_or_else(|| format!("ERROR_{code}")),
            message: message.filter(|m| !m.is_empty()).map(str::to_string),
        }
    }

    /// `Ok` for code 0, else the error.
    pub fn check(code: i16, message: Option<&StrBytes>) -> Result<(), KafkaError> {
        if code == 0 {
            Ok(())
        } else {
            Err(Self::new(code, message.map(|m| m.as_str())))
        }
    }
}

fn hint(code: i16) -> Option<&'static str> {
    Some(match ErrorCode::from_code(code)? {
        ErrorCode::UnknownTopicOrPartition => "check the topic name with `exacta topic list`",
        ErrorCode::TopicAlreadyExists => "pick another name or delete the topic first",
        ErrorCode::GroupIdNotFound => "check the group with `exacta group list`",
        ErrorCode::NonEmptyGroup => "stop the group's consumers first",
        ErrorCode::TransactionalIdNotFound => "check the id with `exacta txn list`",
        ErrorCode::CoordinatorLoadInProgress | ErrorCode::NotCoordinator => {
            "the coordinator is moving or loading; retry"
        }
        ErrorCode::PolicyViolation => "the topic's exacta.write.guarantee refuses this producer",
        _ => return None,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connecting to {address}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("connecting to {address}: timed out")]
    ConnectTimeout { address: String },
    #[error("talking to {address}")]
    Io {
        address: String,
        source: std::io::Error,
    },
    #[error("{address} did not answer {api:?} within {REQUEST_TIMEOUT:?}")]
    Timeout { address: String, api: ApiKey },
    #[error("{address} does not serve {api:?} in a version this client speaks")]
    Unsupported { address: String, api: ApiKey },
    #[error("{address}: {api:?}: {reason}")]
    Protocol {
        address: String,
        api: ApiKey,
        reason: String,
    },
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error("{0}")]
    Other(String),
}

/// One connection to one broker.
pub struct Connection {
    address: String,
    stream: TcpStream,
    correlation: i32,
    /// Versions the broker serves, by API key.
    versions: HashMap<i16, (i16, i16)>,
}

impl Connection {
    /// Connects and learns the broker's API versions.
    pub async fn connect(address: &str) -> Result<Self, ClientError> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
            .await
            .map_err(|_| ClientError::ConnectTimeout {
                address: address.to_string(),
            })?
            .map_err(|source| ClientError::Connect {
                address: address.to_string(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        let mut connection = Self {
            address: address.to_string(),
            stream,
            correlation: 0,
            versions: HashMap::new(),
        };
        // v0 is understood by every broker (newer ones answer v0 to an unknown version).
        let response: ApiVersionsResponse = connection
            .exchange(&ApiVersionsRequest::default(), 0)
            .await?;
        KafkaError::check(response.error_code, None)?;
        connection.versions = response
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        Ok(connection)
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// The version of `R` to use with this broker: the highest both sides speak.
    pub fn version_of<R: Request>(&self) -> Option<i16> {
        let (min, max) = *self.versions.get(&R::KEY)?;
        let ours = R::VERSIONS;
        let version = max.min(ours.max);
        (version >= min.max(ours.min)).then_some(version)
    }

    /// Sends a request at the negotiated version and returns its response.
    pub async fn send<R: Request>(&mut self, request: &R) -> Result<R::Response, ClientError> {
        let version = self
            .version_of::<R>()
            .ok_or_else(|| ClientError::Unsupported {
                address: self.address.clone(),
                api: api(R::KEY),
            })?;
        self.exchange(request, version).await
    }

    async fn exchange<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<R::Response, ClientError> {
        let key = api(R::KEY);
        let protocol = |reason: String| ClientError::Protocol {
            address: self.address.clone(),
            api: key,
            reason,
        };
        self.correlation = self.correlation.wrapping_add(1);
        let correlation = self.correlation;
        let mut buf = BytesMut::with_capacity(256);
        buf.put_i32(0);
        RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation)
            .with_client_id(Some(StrBytes::from_static_str("exacta-cli")))
            .encode(&mut buf, R::header_version(version))
            .map_err(|e| protocol(e.to_string()))?;
        request
            .encode(&mut buf, version)
            .map_err(|e| protocol(e.to_string()))?;
        let size = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&size.to_be_bytes());
        let address = self.address.clone();
        let io = |source| ClientError::Io {
            address: address.clone(),
            source,
        };
        let frame = tokio::time::timeout(REQUEST_TIMEOUT, async {
            self.stream.write_all(&buf).await.map_err(io)?;
            let mut prefix = [0u8; 4];
            self.stream.read_exact(&mut prefix).await.map_err(io)?;
            let size = i32::from_be_bytes(prefix);
            if size < 4 || size as usize > MAX_RESPONSE {
                return Err(ClientError::Other(format!(
                    "{address}: response frame of {size} bytes"
                )));
            }
            let mut frame = vec![0u8; size as usize];
            self.stream.read_exact(&mut frame).await.map_err(io)?;
            Ok(Bytes::from(frame))
        })
        .await
        .map_err(|_| ClientError::Timeout {
            address: self.address.clone(),
            api: key,
        })??;
        let mut body = frame;
        let header = ResponseHeader::decode(&mut body, R::Response::header_version(version))
            .map_err(|e| protocol(e.to_string()))?;
        if header.correlation_id != correlation {
            return Err(protocol(format!(
                "response correlation id {} for request {correlation}",
                header.correlation_id
            )));
        }
        let response =
            R::Response::decode(&mut body, version).map_err(|e| protocol(e.to_string()))?;
        if body.has_remaining() {
            return Err(protocol(format!(
                "{} bytes after the response",
                body.remaining()
            )));
        }
        Ok(response)
    }
}

fn api(key: i16) -> ApiKey {
    ApiKey::try_from(key).unwrap_or(ApiKey::ApiVersions)
}

/// Coordinator key types of FindCoordinator.
pub const GROUP: i8 = 0;
pub const TRANSACTION: i8 = 1;

/// Connections to a cluster, by broker address.
pub struct Cluster {
    bootstrap: Vec<String>,
    connections: HashMap<String, Connection>,
}

impl Cluster {
    /// Connects to the first reachable bootstrap address (comma-separated list).
    pub async fn connect(bootstrap: &str) -> Result<Self, ClientError> {
        let bootstrap: Vec<String> = bootstrap
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        let mut cluster = Self {
            bootstrap,
            connections: HashMap::new(),
        };
        cluster.any().await?;
        Ok(cluster)
    }

    /// A connection to any broker (a bootstrap one first).
    pub async fn any(&mut self) -> Result<&mut Connection, ClientError> {
        if let Some(address) = self.connections.keys().next().cloned() {
            return self.broker(&address).await;
        }
        let mut last = ClientError::Other("no bootstrap address given".into());
        for address in self.bootstrap.clone() {
            match Connection::connect(&address).await {
                Ok(c) => {
                    self.connections.insert(address.clone(), c);
                    return self.broker(&address).await;
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The connection to `address`, opened on first use.
    pub async fn broker(&mut self, address: &str) -> Result<&mut Connection, ClientError> {
        if !self.connections.contains_key(address) {
            let c = Connection::connect(address).await?;
            self.connections.insert(address.to_string(), c);
        }
        Ok(self.connections.get_mut(address).expect("inserted above"))
    }

    /// Metadata for some topics (`None`: all).
    pub async fn metadata(
        &mut self,
        topics: Option<&[String]>,
    ) -> Result<MetadataResponse, ClientError> {
        let mut request = MetadataRequest::default().with_allow_auto_topic_creation(false);
        request.topics = topics.map(|names| {
            names
                .iter()
                .map(|n| {
                    kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_string(n.clone()))))
                })
                .collect()
        });
        self.any().await?.send(&request).await
    }

    /// Addresses of every broker, by node id.
    pub async fn brokers(&mut self) -> Result<Vec<(i32, String)>, ClientError> {
        let metadata = self.metadata(Some(&[])).await?;
        Ok(metadata
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
            .collect())
    }

    /// The connection to the leader of a partition.
    pub async fn leader(
        &mut self,
        topic: &str,
        partition: i32,
    ) -> Result<&mut Connection, ClientError> {
        let metadata = self.metadata(Some(&[topic.to_string()])).await?;
        let t = metadata
            .topics
            .iter()
            .find(|t| t.name.as_ref().map(|n| n.as_str()) == Some(topic))
            .ok_or_else(|| ClientError::Other(format!("no metadata for topic {topic}")))?;
        KafkaError::check(t.error_code, None)?;
        let p = t
            .partitions
            .iter()
            .find(|p| p.partition_index == partition)
            .ok_or_else(|| {
                KafkaError::new(
                    ErrorCode::UnknownTopicOrPartition.code(),
                    Some(&format!("{topic}-{partition}")),
                )
            })?;
        let leader = p.leader_id.0;
        let address = metadata
            .brokers
            .iter()
            .find(|b| b.node_id.0 == leader)
            .map(|b| format!("{}:{}", b.host.as_str(), b.port))
            .ok_or_else(|| ClientError::Other(format!("{topic}-{partition} has no leader")))?;
        self.broker(&address).await
    }

    /// The connection to the coordinator of a group ([`GROUP`]) or transactional id
    /// ([`TRANSACTION`]).
    pub async fn coordinator(
        &mut self,
        key: &str,
        key_type: i8,
    ) -> Result<&mut Connection, ClientError> {
        let any = self.any().await?;
        let version = any.version_of::<FindCoordinatorRequest>().unwrap_or(0);
        let mut request = FindCoordinatorRequest::default().with_key_type(key_type);
        if version >= 4 {
            request.coordinator_keys = vec![StrBytes::from_string(key.to_string())];
        } else {
            request.key = StrBytes::from_string(key.to_string());
        }
        let response = any.send(&request).await?;
        let (host, port) = if version >= 4 {
            let c = response
                .coordinators
                .first()
                .ok_or_else(|| ClientError::Other(format!("no coordinator for {key}")))?;
            KafkaError::check(c.error_code, c.error_message.as_ref())?;
            (c.host.to_string(), c.port)
        } else {
            KafkaError::check(response.error_code, response.error_message.as_ref())?;
            (response.host.to_string(), response.port)
        };
        self.broker(&format!("{host}:{port}")).await
    }
}
