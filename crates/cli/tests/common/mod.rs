//! Shared by the protocol-level tests: the real `exacta` binary on an ephemeral port and a
//! raw connection that speaks any API at any version with the `kafka-protocol` codecs.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

pub struct Broker {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
    /// Every line the broker logged.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The broker binary under test: this build's, or `EXACTA_TEST_BIN` (to show that a test
/// fails against an older build).
pub fn binary() -> std::path::PathBuf {
    std::env::var_os("EXACTA_TEST_BIN")
        .map(Into::into)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_exacta").into())
}

/// Starts the broker with a TOML `config` (may be empty).
pub fn start_with(config: &str) -> Broker {
    start_in(tempfile::tempdir().unwrap(), config, &[])
}

/// Starts the broker on the data in `dir` (kept, so a test can restart on it), with a TOML
/// `config` and extra environment variables.
pub fn start_in(dir: tempfile::TempDir, config: &str, env: &[(&str, &str)]) -> Broker {
    let config_path = dir.path().join("exacta.toml");
    std::fs::write(&config_path, config).unwrap();
    let mut child = Command::new(binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(&config_path)
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let port = loop {
        let line = lines.next().expect("broker exited").unwrap();
        let port = line
            .split("exacta listening on 127.0.0.1:")
            .nth(1)
            .map(|rest| rest.split_whitespace().next().unwrap().parse().unwrap());
        log.lock().unwrap().push(line);
        if let Some(port) = port {
            break port;
        }
    };
    // Keep draining stderr so the broker never blocks on a full pipe.
    let kept = std::sync::Arc::clone(&log);
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            kept.lock().unwrap().push(line);
        }
    });
    Broker {
        child,
        port,
        _dir: dir,
        log,
    }
}

pub fn start() -> Broker {
    start_with("")
}

impl Broker {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the broker process, in bytes.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status");
        kb * 1024
    }

    /// The exit code once the process has exited, waiting up to `timeout`; `None` if it
    /// is still running then.
    pub fn wait_exit(&mut self, timeout: std::time::Duration) -> Option<Option<i32>> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status.code());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        None
    }

    /// SIGKILLs the broker and hands back its data directory.
    pub fn kill9(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let placeholder = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self._dir, placeholder)
    }

    /// The log lines containing `text`.
    pub fn log_lines(&self, text: &str) -> Vec<String> {
        let log = self.log.lock().unwrap();
        log.iter().filter(|l| l.contains(text)).cloned().collect()
    }

    /// The data directory.
    pub fn data_dir(&self) -> std::path::PathBuf {
        self._dir.path().join("data")
    }
}

pub struct Conn {
    stream: TcpStream,
    correlation: i32,
    port: u16,
}

impl Conn {
    pub fn new(broker: &Broker) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", broker.port)).unwrap();
        let _ = stream.set_nodelay(true);
        Self {
            stream,
            correlation: 0,
            port: broker.port,
        }
    }

    /// Sends `request` at `version` and decodes the answer; panics on any failure.
    pub fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        request: &Req,
    ) -> Resp {
        self.try_call(key, version, request)
            .unwrap_or_else(|e| panic!("{key:?} v{version}: {e}"))
    }

    /// As [`Conn::call`], with the failure as an error. After a failure the connection is
    /// replaced by a new one, so later calls can go on.
    pub fn try_call<Req: Encodable, Resp: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        request: &Req,
    ) -> Result<Resp, String> {
        let result = self.exchange(key, version, request);
        if result.is_err() {
            if let Ok(stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                self.stream = stream;
            }
        }
        result
    }

    fn exchange<Req: Encodable, Resp: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        request: &Req,
    ) -> Result<Resp, String> {
        self.correlation += 1;
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("exacta-protocol-test")));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, key.request_header_version(version))
            .map_err(|e| format!("encoding the request header: {e}"))?;
        request
            .encode(&mut body, version)
            .map_err(|e| format!("encoding the request: {e}"))?;
        // One write per frame: a size prefix sent apart would wait for the delayed ACK of
        // the first segment (Nagle), 40 ms a request.
        let mut frame = Vec::with_capacity(4 + body.len());
        frame.extend_from_slice(&(body.len() as i32).to_be_bytes());
        frame.extend_from_slice(&body);
        self.stream
            .write_all(&frame)
            .map_err(|e| format!("sending: {e}"))?;
        let mut size = [0u8; 4];
        self.stream
            .read_exact(&mut size)
            .map_err(|e| format!("no response (the broker closed the connection?): {e}"))?;
        let mut frame = vec![0u8; i32::from_be_bytes(size) as usize];
        self.stream
            .read_exact(&mut frame)
            .map_err(|e| format!("reading the response: {e}"))?;
        let mut frame = Bytes::from(frame);
        let header = ResponseHeader::decode(&mut frame, key.response_header_version(version))
            .map_err(|e| format!("decoding the response header: {e}"))?;
        if header.correlation_id != self.correlation {
            return Err(format!(
                "correlation id {} answered for {}",
                header.correlation_id, self.correlation
            ));
        }
        Resp::decode(&mut frame, version).map_err(|e| format!("decoding the response: {e}"))
    }
}

impl Conn {
    /// Writes raw bytes (a hand-made or partial frame).
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Whether the broker closed this connection within `timeout` (reads and discards
    /// anything it sends meanwhile).
    pub fn closed_within(&mut self, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        while std::time::Instant::now() < deadline {
            self.stream
                .set_read_timeout(Some(std::time::Duration::from_millis(100)))
                .unwrap();
            match self.stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return true,
            }
        }
        self.stream.set_read_timeout(None).unwrap();
        false
    }
}

fn name(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// Creates a topic; panics unless it was created.
pub fn create_topic(c: &mut Conn, topic: &str, partitions: i32) {
    create_topic_with(c, topic, partitions, &[]);
}

/// Creates a topic with config overrides; panics unless it was created.
pub fn create_topic_with(c: &mut Conn, topic: &str, partitions: i32, configs: &[(&str, &str)]) {
    let created = try_create_topic(c, topic, partitions, configs);
    assert_eq!(
        created.error_code, 0,
        "creating {topic}: {:?}",
        created.error_message
    );
}

/// CreateTopics of one topic; its result.
pub fn try_create_topic(
    c: &mut Conn,
    topic: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> create_topics_response::CreatableTopicResult {
    use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
    let request = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(TopicName(name(topic)))
        .with_num_partitions(partitions)
        .with_replication_factor(1)
        .with_configs(
            configs
                .iter()
                .map(|(k, v)| {
                    CreatableTopicConfig::default()
                        .with_name(name(k))
                        .with_value(Some(name(v)))
                })
                .collect(),
        )]);
    let created: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 5, &request);
    created.topics[0].clone()
}

/// Every record of a partition from offset 0 as (offset, key, value), decoded.
pub fn read_records(
    c: &mut Conn,
    topic: &str,
    partition: i32,
) -> Vec<(i64, Vec<u8>, Option<Vec<u8>>)> {
    let mut bytes = Bytes::from(read_all(c, topic, partition));
    let sets = kafka_protocol::records::RecordBatchDecoder::decode_all(&mut bytes).unwrap();
    sets.into_iter()
        .flat_map(|s| s.records)
        .filter(|r| !r.control)
        .map(|r| {
            (
                r.offset,
                r.key.map(|k| k.to_vec()).unwrap_or_default(),
                r.value.map(|v| v.to_vec()),
            )
        })
        .collect()
}

/// An acks=all Produce request of one batch for `partition` of `topic`.
pub fn produce_request(topic: &str, partition: i32, records: Vec<u8>) -> ProduceRequest {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(name(topic)))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(Bytes::from(records)))])])
}

/// Sends `records` as one partition's data; returns that partition's answer.
pub fn produce(
    c: &mut Conn,
    version: i16,
    topic: &str,
    partition: i32,
    records: Vec<u8>,
) -> produce_response::PartitionProduceResponse {
    let request = produce_request(topic, partition, records);
    let response: ProduceResponse = c.call(ApiKey::Produce, version, &request);
    response.responses[0].partition_responses[0].clone()
}

/// The latest offset a reader at `isolation` (0 uncommitted, 1 committed) sees: the high
/// watermark or the last stable offset.
pub fn latest_offset(c: &mut Conn, topic: &str, partition: i32, isolation: i8) -> i64 {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_isolation_level(isolation)
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(name(topic)))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(partition)
                .with_timestamp(-1)])]);
    let response: ListOffsetsResponse = c.call(ApiKey::ListOffsets, 5, &request);
    let p = &response.topics[0].partitions[0];
    assert_eq!(p.error_code, 0, "ListOffsets {topic}-{partition}");
    p.offset
}

/// InitProducerId for a transactional id: (producer id, epoch).
pub fn init_transactional(c: &mut Conn, transactional_id: &str) -> (i64, i16) {
    let init: InitProducerIdResponse = c.call(
        ApiKey::InitProducerId,
        4,
        &InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(name(transactional_id))))
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    );
    assert_eq!(init.error_code, 0, "InitProducerId {transactional_id}");
    (init.producer_id.0, init.producer_epoch)
}

/// AddPartitionsToTxn v3; the partition's error code.
pub fn add_partition(
    c: &mut Conn,
    transactional_id: &str,
    (pid, epoch): (i64, i16),
    topic: &str,
    partition: i32,
) -> i16 {
    use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
    let request = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(TransactionalId(name(transactional_id)))
        .with_v3_and_below_producer_id(ProducerId(pid))
        .with_v3_and_below_producer_epoch(epoch)
        .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
            .with_name(TopicName(name(topic)))
            .with_partitions(vec![partition])]);
    let response: AddPartitionsToTxnResponse = c.call(ApiKey::AddPartitionsToTxn, 3, &request);
    response.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code
}

/// EndTxn v3; its error code.
pub fn end_txn(
    c: &mut Conn,
    transactional_id: &str,
    (pid, epoch): (i64, i16),
    commit: bool,
) -> i16 {
    let request = EndTxnRequest::default()
        .with_transactional_id(TransactionalId(name(transactional_id)))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_committed(commit);
    let response: EndTxnResponse = c.call(ApiKey::EndTxn, 3, &request);
    response.error_code
}

/// Every record batch of a partition, read_uncommitted from offset 0 (to compare data
/// before and after an attack).
pub fn read_all(c: &mut Conn, topic: &str, partition: i32) -> Vec<u8> {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    let mut offset = 0;
    let mut all = Vec::new();
    loop {
        let fetch = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(0)
            .with_min_bytes(1)
            .with_max_bytes(8 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(name(topic)))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(partition)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(8 << 20)])]);
        let fetched: FetchResponse = c.call(ApiKey::Fetch, 11, &fetch);
        let p = &fetched.responses[0].partitions[0];
        assert_eq!(p.error_code, 0, "fetching {topic}-{partition}");
        let records = p.records.clone().unwrap_or_default();
        if records.is_empty() {
            return all;
        }
        let last = exacta_wire::batch::Batches::new(&records)
            .last()
            .map(|(_, h)| h.last_offset())
            .expect("whole batches");
        all.extend_from_slice(&records);
        offset = last + 1;
    }
}

/// After an attack: a new client is served, and a committed transaction on `topic` moves
/// the last stable offset (read_committed consumers advance).
pub fn assert_healthy(broker: &Broker, topic: &str) {
    let mut c = Conn::new(broker);
    let _: ApiVersionsResponse = c.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    let id = format!("health-{topic}");
    let producer = init_transactional(&mut c, &id);
    let before = latest_offset(&mut c, topic, 0, 1);
    assert_eq!(add_partition(&mut c, &id, producer, topic, 0), 0);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let batch = exacta_wire::batch::build_transactional_batch(
        &[b"healthy".to_vec()],
        now_ms,
        (producer.0, producer.1, 0),
    );
    assert_eq!(produce(&mut c, 7, topic, 0, batch).error_code, 0);
    assert_eq!(end_txn(&mut c, &id, producer, true), 0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while latest_offset(&mut c, topic, 0, 1) <= before {
        assert!(
            std::time::Instant::now() < deadline,
            "the last stable offset of {topic} did not advance past {before}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// IncrementalAlterConfigs SET of one topic config; panics unless it succeeded.
pub fn alter_topic_config(c: &mut Conn, topic: &str, key: &str, value: &str) {
    let code = try_alter_topic_config(c, topic, key, Some(value), 0).0;
    assert_eq!(code, 0, "setting {key}={value} on {topic}");
}

/// IncrementalAlterConfigs of one topic config (`op`: 0 SET, 1 DELETE); the error code and
/// message.
pub fn try_alter_topic_config(
    c: &mut Conn,
    topic: &str,
    key: &str,
    value: Option<&str>,
    op: i8,
) -> (i16, Option<String>) {
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(name(topic))
            .with_configs(vec![AlterableConfig::default()
                .with_name(name(key))
                .with_config_operation(op)
                .with_value(value.map(name))]),
    ]);
    let response: IncrementalAlterConfigsResponse =
        c.call(ApiKey::IncrementalAlterConfigs, 1, &request);
    let r = &response.responses[0];
    (
        r.error_code,
        r.error_message.as_ref().map(|m| m.to_string()),
    )
}

/// A topic config's value as DescribeConfigs reports it.
pub fn describe_topic_config(c: &mut Conn, topic: &str, key: &str) -> Option<String> {
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    let request =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(name(topic))
            .with_configuration_keys(Some(vec![name(key)]))]);
    let response: DescribeConfigsResponse = c.call(ApiKey::DescribeConfigs, 4, &request);
    response.results[0]
        .configs
        .first()
        .and_then(|e| e.value.as_ref().map(|v| v.to_string()))
}
