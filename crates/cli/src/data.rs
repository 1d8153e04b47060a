//! `exacta produce` and `exacta consume`: records from stdin to a topic, and a topic's
//! records to stdout, with keys, headers and either isolation level.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Write};

use anyhow::{bail, Context};
use bytes::{Bytes, BytesMut};
use exacta_client::{Cluster, KafkaError};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use serde_json::json;

#[derive(clap::Args)]
pub struct ProduceArgs {
    pub topic: String,
    /// Partition for every record [default: by key hash, as Kafka's default partitioner;
    /// unkeyed records round-robin].
    #[arg(long)]
    pub partition: Option<i32>,
    /// Split each line into key and value at the first SEP.
    #[arg(long, value_name = "SEP")]
    pub key_separator: Option<String>,
    /// A header on every record. Repeatable.
    #[arg(long = "header", value_name = "KEY=VALUE")]
    pub headers: Vec<String>,
}

#[derive(clap::Args)]
pub struct ConsumeArgs {
    pub topic: String,
    /// Only this partition [default: all].
    #[arg(long)]
    pub partition: Option<i32>,
    /// Start offset [default: the log start].
    #[arg(long)]
    pub offset: Option<i64>,
    /// Stop after this many records.
    #[arg(long)]
    pub max_messages: Option<u64>,
    /// read_committed (default: only committed records, up to the LSO) or read_uncommitted.
    #[arg(long, default_value = "read_committed")]
    pub isolation: String,
    /// `text` (value, or key<TAB>value with --print-key) or `json` (one object per record).
    #[arg(long, default_value = "text")]
    pub format: String,
    #[arg(long)]
    pub print_key: bool,
}

/// Kafka's murmur2, as its default partitioner uses on keys.
fn murmur2(data: &[u8]) -> i32 {
    let m: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(m);
        k ^= k >> 24;
        k = k.wrapping_mul(m);
        h = h.wrapping_mul(m);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(m);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(m);
    h ^= h >> 15;
    h as i32
}

pub async fn produce(cluster: &mut Cluster, args: ProduceArgs) -> anyhow::Result<()> {
    let metadata = cluster
        .metadata(Some(std::slice::from_ref(&args.topic)))
        .await?;
    let topic = metadata.topics.first().context("no metadata returned")?;
    KafkaError::check(topic.error_code, None)?;
    let partitions = topic.partitions.len() as i32;
    // Produce v13 names the topic by id (KIP-516).
    let topic_id = topic.topic_id;
    if partitions == 0 {
        bail!("topic {} has no partitions", args.topic);
    }
    let mut headers = Vec::new();
    for h in &args.headers {
        let (k, v) = h
            .split_once('=')
            .with_context(|| format!("'{h}' is not KEY=VALUE"))?;
        headers.push((k.to_string(), v.to_string()));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let mut by_partition: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
    let mut next = 0i32;
    for line in std::io::stdin().lock().lines() {
        let line = line.context("reading stdin")?;
        let (key, value) = match &args.key_separator {
            Some(sep) => match line.split_once(sep.as_str()) {
                Some((k, v)) => (Some(k.to_string()), v.to_string()),
                None => (None, line.clone()),
            },
            None => (None, line.clone()),
        };
        let partition = match (args.partition, &key) {
            (Some(p), _) => p,
            (None, Some(k)) => (murmur2(k.as_bytes()) & 0x7fff_ffff) % partitions,
            (None, None) => {
                next = (next + 1) % partitions;
                next
            }
        };
        let records = by_partition.entry(partition).or_default();
        let mut header_map = indexmap::IndexMap::new();
        for (k, v) in &headers {
            header_map.insert(
                StrBytes::from_string(k.clone()),
                Some(Bytes::from(v.clone())),
            );
        }
        records.push(Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: records.len() as i64,
            // The encoder starts a new batch when offset - sequence changes; one batch per
            // partition is what Produce takes (its base sequence is -1: not idempotent).
            sequence: (records.len() as i32).wrapping_sub(1),
            timestamp: now,
            key: key.map(Bytes::from),
            value: Some(Bytes::from(value)),
            headers: header_map,
        });
    }
    let mut report = Vec::new();
    for (partition, records) in by_partition {
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .context("encoding the batch")?;
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(args.topic.clone())))
                .with_topic_id(topic_id)
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(buf.freeze()))])]);
        let response = cluster
            .leader(&args.topic, partition)
            .await?
            .send(&request)
            .await?;
        let p = response
            .responses
            .first()
            .and_then(|t| t.partition_responses.first())
            .context("empty Produce response")?;
        KafkaError::check(p.error_code, p.error_message.as_ref())?;
        report.push((partition, records.len(), p.base_offset));
    }
    for (partition, n, base) in report {
        eprintln!(
            "produced {n} record(s) to {}-{partition} at offsets {base}..{}",
            args.topic,
            base + n as i64 - 1
        );
    }
    Ok(())
}

pub async fn consume(cluster: &mut Cluster, args: ConsumeArgs) -> anyhow::Result<()> {
    let isolation: i8 = match args.isolation.as_str() {
        "read_committed" => 1,
        "read_uncommitted" => 0,
        other => bail!("--isolation must be read_committed or read_uncommitted, got '{other}'"),
    };
    let json = match args.format.as_str() {
        "text" => false,
        "json" => true,
        other => bail!("--format must be text or json, got '{other}'"),
    };
    let metadata = cluster
        .metadata(Some(std::slice::from_ref(&args.topic)))
        .await?;
    let topic = metadata.topics.first().context("no metadata returned")?;
    KafkaError::check(topic.error_code, None)?;
    let partitions: Vec<i32> = match args.partition {
        Some(p) => vec![p],
        None => topic.partitions.iter().map(|p| p.partition_index).collect(),
    };
    let mut out = std::io::stdout().lock();
    let mut printed = 0u64;
    for partition in partitions {
        let mut offset = match args.offset {
            Some(o) => o,
            None => crate::admin::list_offset(cluster, &args.topic, partition, -2, 0).await?,
        };
        loop {
            let request = FetchRequest::default()
                .with_replica_id((-1).into())
                .with_max_wait_ms(0)
                .with_min_bytes(1)
                .with_max_bytes(8 << 20)
                .with_isolation_level(isolation)
                .with_topics(vec![FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(args.topic.clone())))
                    .with_topic_id(topic.topic_id)
                    .with_partitions(vec![FetchPartition::default()
                        .with_partition(partition)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(8 << 20)])]);
            let response = cluster
                .leader(&args.topic, partition)
                .await?
                .send(&request)
                .await?;
            KafkaError::check(response.error_code, None)?;
            let p = response
                .responses
                .first()
                .and_then(|t| t.partitions.first())
                .context("empty Fetch response")?;
            KafkaError::check(p.error_code, None)?;
            let end = if isolation == 1 {
                p.last_stable_offset
            } else {
                p.high_watermark
            };
            let records = p.records.clone().unwrap_or_default();
            let aborted: Vec<(i64, i64)> = p
                .aborted_transactions
                .iter()
                .flatten()
                .map(|a| (a.first_offset, a.producer_id.0))
                .collect();
            let visible = visible_records(&records, &aborted, isolation == 1)?;
            let Some(last) = visible.last_offset else {
                break;
            };
            for record in visible.records.into_iter().filter(|r| r.offset >= offset) {
                let text =
                    |b: &Option<Bytes>| b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
                let line = if json {
                    let headers: BTreeMap<String, Option<String>> = record
                        .headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), text(v)))
                        .collect();
                    json!({"partition": partition, "offset": record.offset, "timestamp": record.timestamp,
                           "key": text(&record.key), "value": text(&record.value), "headers": headers})
                    .to_string()
                } else if args.print_key {
                    format!(
                        "{}\t{}",
                        text(&record.key).unwrap_or_default(),
                        text(&record.value).unwrap_or_default()
                    )
                } else {
                    text(&record.value).unwrap_or_default()
                };
                if writeln!(out, "{line}").is_err() {
                    return Ok(());
                }
                printed += 1;
                if args.max_messages.is_some_and(|max| printed >= max) {
                    return Ok(());
                }
            }
            offset = last + 1;
            if offset >= end {
                break;
            }
        }
    }
    Ok(())
}

struct Visible {
    records: Vec<Record>,
    /// The last offset covered by the fetched batches (control batches included).
    last_offset: Option<i64>,
}

/// The records a consumer shows: never control records, and with read_committed none of
/// an aborted transaction (the fetch's aborted list gives each one's producer and first
/// offset; its abort marker ends it), as Kafka's consumer does.
fn visible_records(
    records: &Bytes,
    aborted: &[(i64, i64)],
    committed: bool,
) -> anyhow::Result<Visible> {
    let mut aborted: Vec<(i64, i64)> = aborted.to_vec();
    aborted.sort();
    let mut pending = aborted.into_iter().peekable();
    let mut active: BTreeSet<i64> = BTreeSet::new();
    let mut out = Vec::new();
    let mut last_offset = None;
    for (at, header) in exacta_wire::batch::Batches::new(records) {
        let mut bytes = records.slice(at..at + header.size());
        let set = RecordBatchDecoder::decode(&mut bytes).context("decoding a fetched batch")?;
        last_offset = Some(header.last_offset());
        while pending
            .peek()
            .is_some_and(|&(first, _)| first <= header.last_offset())
        {
            if let Some((_, producer)) = pending.next() {
                active.insert(producer);
            }
        }
        if header.is_control() {
            active.remove(&header.producer_id);
            continue;
        }
        if committed && header.is_transactional() && active.contains(&header.producer_id) {
            continue;
        }
        out.extend(set.records);
    }
    Ok(Visible {
        records: out,
        last_offset,
    })
}
