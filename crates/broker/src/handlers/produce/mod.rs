//! Produce (key 0): validate each batch (header, CRC, codec, size), append it as sent
//! (recompressed when the topic's `compression.type` names another codec, stamped with
//! the broker's clock under `message.timestamp.type=LogAppendTime`), and answer per `acks`:
//! - `acks=0`: no response at all;
//! - `acks=1`: after the append (the batch is in the page cache);
//! - `acks=all` (-1): on a partition that fsyncs every append (`flush.messages=1`, the
//!   default under `flush_policy = "always"`), after the group fsync that covers the
//!   batch; otherwise as acks=1. A batch not durable within `timeout_ms` is answered
//!   REQUEST_TIMED_OUT (it may still become durable: the producer will retry). A topic
//!   whose `min.insync.replicas` exceeds the one replica a node has refuses acks=all
//!   writes with NOT_ENOUGH_REPLICAS, as Kafka does.
//!
//! In a cluster only the partition's leader takes the batch (else NOT_LEADER_OR_FOLLOWER),
//! `min.insync.replicas` is checked against its ISR, and acks=all waits for the high
//! watermark, which passes the batch once every in-sync replica has it durable.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use exacta_types::ErrorCode;
use exacta_wire::batch::{validate_produced, BatchHeader};
use exacta_wire::rewrite::StoredBatch;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

mod txn;

use super::{message, Ctx, Reply};
use crate::config::WriteGuarantee;
use crate::partitions::{ApiError, Partition};
use crate::topic_config::WriteRules;
use crate::Node;

pub fn handle(node: &Arc<Node>, request: ProduceRequest, ctx: Ctx) -> Reply {
    let broker = &node.broker;
    let acks = request.acks;
    let mut response = ProduceResponse::default();
    // (topic index, partition index, partition, last offset, leader epoch) of appends to
    // wait for.
    let mut waits: Vec<Wait> = Vec::new();
    // Transaction records of partitions that joined a transaction implicitly (Produce
    // v12): durable before any answer, whatever the acks.
    let mut txn_records: Vec<crate::txns::Durable> = Vec::new();
    // In a cluster: first writes of a transaction to a partition, to check with the
    // coordinator before they are appended (see [`txn`]).
    let mut checks: Vec<txn::Pending> = Vec::new();
    for (ti, topic) in request.topic_data.into_iter().enumerate() {
        let mut topic_response = TopicProduceResponse::default()
            .with_name(topic.name.clone())
            .with_topic_id(topic.topic_id);
        // v13 names topics by id (KIP-516).
        let name = if ctx.version >= 13 {
            broker.topic_by_id(topic.topic_id).map(|t| t.name.clone())
        } else {
            Some(topic.name.to_string())
        };
        for (pi, data) in topic.partition_data.into_iter().enumerate() {
            let index = data.index;
            let result = if !matches!(acks, -1..=1) {
                Err(ApiError::new(
                    ErrorCode::InvalidRequiredAcks,
                    format!("acks must be -1, 0 or 1, got {acks}"),
                ))
            } else if let Some(name) = &name {
                let records = data.records.unwrap_or_default();
                append(
                    node,
                    name,
                    index,
                    records,
                    ctx.version,
                    acks,
                    &mut txn_records,
                    None,
                )
            } else {
                Err(ApiError::new(
                    ErrorCode::UnknownTopicId,
                    format!("unknown topic id {}", topic.topic_id),
                ))
            };
            let mut pr = PartitionProduceResponse::default()
                .with_index(index)
                .with_log_append_time_ms(-1);
            match result {
                Ok(Written::Check(check)) => checks.push(txn::Pending {
                    ti,
                    pi,
                    topic: name.clone().unwrap_or_default(),
                    index,
                    check,
                }),
                Ok(Written::Appended(appended)) => {
                    answer(&mut pr, Ok(&appended));
                    if appended.wait_for_fsync {
                        waits.push(appended.wait(ti, pi));
                    }
                }
                Err(e) => {
                    tracing::debug!(topic = name.as_deref().unwrap_or_default(), partition = index, error = %e.message, "produce refused");
                    answer(&mut pr, Err(e));
                }
            }
            topic_response.partition_responses.push(pr);
        }
        response.responses.push(topic_response);
    }
    let transactional_id = request.transactional_id.map(|t| t.to_string());
    if acks == 0 {
        if !checks.is_empty() {
            let node = Arc::clone(node);
            tokio::spawn(async move {
                let (mut response, mut waits) = (response, Vec::new());
                let id = transactional_id.as_deref();
                txn::run(&node, id, checks, ctx.version, &mut response, &mut waits).await;
            });
        }
        return Box::pin(std::future::ready(Ok(None)));
    }
    if acks == 1 {
        waits.clear();
    }
    if txn_records.is_empty() && waits.is_empty() && checks.is_empty() {
        let reply = ctx.encode(&response);
        return Box::pin(std::future::ready(reply));
    }
    let timeout = Duration::from_millis(request.timeout_ms.max(0) as u64);
    let node = Arc::clone(node);
    Box::pin(async move {
        if !checks.is_empty() {
            let id = transactional_id.as_deref();
            let mut checked = Vec::new();
            txn::run(&node, id, checks, ctx.version, &mut response, &mut checked).await;
            if acks == -1 {
                waits.extend(checked);
            }
        }
        // A single node's records (a cluster has none here): they cannot fail to commit.
        let _ = crate::txns::TxnRuntime::durable_records(txn_records).await;
        let deadline = tokio::time::Instant::now() + timeout;
        for (ti, pi, partition, last_offset, epoch) in waits {
            let durable =
                tokio::time::timeout_at(deadline, partition.wait_for_high_watermark(last_offset))
                    .await;
            let pr = &mut response.responses[ti].partition_responses[pi];
            if durable.is_err() {
                pr.error_code = ErrorCode::RequestTimedOut.code();
                pr.error_message = message("the batch was not fsynced within the request timeout");
            } else if let Err(e) = partition.check_leader(epoch) {
                // Leadership moved while waiting: the high watermark that passed the batch
                // may be a new leader's, over other records. The producer retries; its
                // sequence numbers make the retry a duplicate if the batch did survive.
                pr.error_code = ErrorCode::NotLeaderOrFollower.code();
                pr.error_message = message(e.message);
            }
        }
        ctx.encode(&response)
    })
}

/// Produce v12+ is transaction protocol v2 (KIP-890): a transactional batch adds its
/// partition to the producer's transaction implicitly.
pub const V2_MIN_VERSION: i16 = 12;

/// (topic index, partition index, partition, last offset, leader epoch) of an append to
/// wait for.
pub(super) type Wait = (usize, usize, Arc<Partition>, i64, i32);

/// Fills a partition's answer from its append or refusal.
pub(super) fn answer(pr: &mut PartitionProduceResponse, result: Result<&Appended, ApiError>) {
    match result {
        Ok(appended) => {
            pr.base_offset = appended.info.base_offset;
            pr.log_start_offset = appended.info.log_start_offset;
            pr.log_append_time_ms = appended.log_append_time_ms;
        }
        Err(e) => {
            pr.error_code = e.code.code();
            pr.error_message = message(e.message);
            pr.base_offset = -1;
            pr.log_start_offset = -1;
        }
    }
}

/// What became of a produced batch.
pub(super) enum Written {
    Appended(Appended),
    /// The first write of a transaction to a partition of a cluster: to check with the
    /// coordinator first.
    Check(txn::Check),
}

/// A batch appended to a partition.
pub(super) struct Appended {
    partition: Arc<Partition>,
    info: exacta_log::AppendInfo,
    /// The broker's timestamp under LogAppendTime, else -1.
    log_append_time_ms: i64,
    /// The partition fsyncs every append, or is replicated: acks=all waits for the high
    /// watermark to pass the batch.
    pub(super) wait_for_fsync: bool,
    /// The leader epoch the batch was appended under.
    leader_epoch: i32,
}

impl Appended {
    /// What acks=all waits for, for the batch at (TI, PI) of the request.
    pub(super) fn wait(&self, ti: usize, pi: usize) -> Wait {
        (
            ti,
            pi,
            Arc::clone(&self.partition),
            self.info.last_offset,
            self.leader_epoch,
        )
    }
}

/// Validates and appends one partition's batch; GUARD is given on the second attempt of a
/// checked transactional write (see [`txn`]).
#[allow(clippy::too_many_arguments)]
pub(super) fn append(
    node: &Node,
    topic: &str,
    index: i32,
    records: Bytes,
    version: i16,
    acks: i16,
    txn_records: &mut Vec<crate::txns::Durable>,
    guard: Option<crate::txns::verify::Guard>,
) -> Result<Written, ApiError> {
    let broker = &node.broker;
    if exacta_types::is_internal_topic(topic) {
        return Err(ApiError::new(
            ErrorCode::InvalidTopicException,
            format!("cannot append to internal topic {topic}"),
        ));
    }
    let partition = broker.partition(topic, index).ok_or_else(|| {
        ApiError::new(
            ErrorCode::UnknownTopicOrPartition,
            format!("unknown topic or partition {topic}-{index}"),
        )
    })?;
    let rules = partition.write_rules();
    let now = crate::now_ms();
    let (batch, decoded) = validate(&records, &rules, topic, now)?;
    // NOT_LEADER_OR_FOLLOWER when this broker does not lead the partition (a cluster).
    let in_sync = partition.in_sync_replicas()? as i32;
    if acks == -1 && rules.min_insync_replicas > in_sync {
        return Err(ApiError::new(
            ErrorCode::NotEnoughReplicas,
            format!(
                "The size of the current ISR ({in_sync}) is insufficient to satisfy \
                 the min.isr requirement of {} for partition {topic}-{}",
                rules.min_insync_replicas, index
            ),
        ));
    }
    let mut buf = stored_form(&records, decoded.as_ref(), &batch, &rules)?;
    let log_append_time_ms = if rules.log_append_time {
        exacta_wire::batch::set_log_append_time(&mut buf, now);
        now
    } else {
        -1
    };
    let mut epoch = 0;
    let fenced = |mut e: ApiError| {
        // Produce answers a fenced producer INVALID_PRODUCER_EPOCH at every version, as
        // Kafka does (KAFKA-10687).
        e.code = e.code.fenced_for(version, i16::MAX);
        e
    };
    let info = if batch.is_transactional() && node.cluster.is_some() {
        use crate::txns::verify::TxnAppend;
        let (pid, producer_epoch) = (batch.producer_id, batch.producer_epoch);
        match partition
            .append_in_txn(&mut buf, pid, producer_epoch, guard)
            .map_err(fenced)?
        {
            TxnAppend::Done((info, e)) => {
                epoch = e;
                info
            }
            TxnAppend::Check(guard) => return Ok(Written::Check(txn::Check { guard, records })),
        }
    } else if batch.is_transactional() {
        // Only into an open transaction that contains this partition, checked and
        // appended atomically with respect to the transaction's end.
        let (info, added) = node
            .txns
            .verified(
                batch.producer_id,
                batch.producer_epoch,
                topic,
                index,
                version >= V2_MIN_VERSION,
                || {
                    partition.append_as_leader(&mut buf).map(|(info, e)| {
                        epoch = e;
                        info
                    })
                },
            )
            .map_err(fenced)?;
        txn_records.extend(added);
        info
    } else {
        let (info, e) = partition.append_as_leader(&mut buf)?;
        epoch = e;
        info
    };
    let replicated = partition.is_replicated();
    Ok(Written::Appended(Appended {
        wait_for_fsync: rules.flush.per_append() || replicated,
        partition,
        info,
        log_append_time_ms,
        leader_epoch: epoch,
    }))
}

/// The codec the topic recompresses this batch into, if it uses another.
fn recompression(rules: &WriteRules, batch: &BatchHeader) -> Option<i16> {
    rules.codec.filter(|&c| c != batch.compression())
}

/// The batch as the log stores it: as sent, or recompressed into the topic's codec
/// (`decoded` holds its records then, see [`validate`]).
fn stored_form(
    records: &Bytes,
    decoded: Option<&StoredBatch>,
    batch: &BatchHeader,
    rules: &WriteRules,
) -> Result<BytesMut, ApiError> {
    let (Some(codec), Some(decoded)) = (recompression(rules, batch), decoded) else {
        return Ok(BytesMut::from(&records[..]));
    };
    let out = exacta_wire::rewrite::recompress(decoded, codec);
    if out.len() as i64 > rules.max_message_bytes {
        return Err(ApiError::new(
            ErrorCode::MessageTooLarge,
            format!(
                "batch of {} bytes after recompression exceeds max.message.bytes {}",
                out.len(),
                rules.max_message_bytes
            ),
        ));
    }
    Ok(BytesMut::from(&out[..]))
}

/// Checks a partition's records: one whole, valid batch, within the size limit, with
/// timestamps in the topic's window, from a producer the topic's `exacta.write.guarantee`
/// admits. Returns its header, and its records decoded (once, within the decompression
/// bound) when the topic needs them: for the key check or for recompression.
fn validate(
    records: &Bytes,
    rules: &WriteRules,
    topic: &str,
    now_ms: i64,
) -> Result<(BatchHeader, Option<StoredBatch>), ApiError> {
    let max_message_bytes = rules.max_message_bytes;
    let guarantee = rules.write_guarantee;
    if records.is_empty() {
        return Err(ApiError::new(
            ErrorCode::CorruptMessage,
            "no record batch in the request",
        ));
    }
    let header =
        validate_produced(records).map_err(|e| ApiError::new(e.error_code(), e.to_string()))?;
    // Exactly one batch per partition (Kafka's rule for Produce v3+): every check below,
    // and the transaction and sequence checks of the append, are made on that batch, so
    // a second batch could otherwise ride along unchecked.
    if header.size() != records.len() {
        return Err(ApiError::new(
            ErrorCode::InvalidRecord,
            format!(
                "Produce v3+ must carry exactly one record batch per partition; \
                 found {} bytes after the first batch of {}",
                records.len() - header.size(),
                header.size()
            ),
        ));
    }
    if header.size() as i64 > max_message_bytes {
        return Err(ApiError::new(
            ErrorCode::MessageTooLarge,
            format!(
                "batch of {} bytes exceeds max.message.bytes {max_message_bytes}",
                header.size()
            ),
        ));
    }
    check_timestamps(&header, rules, now_ms)?;
    let decoded = if rules.keys_required || recompression(rules, &header).is_some() {
        Some(
            StoredBatch::parse(records)
                .map_err(|e| ApiError::new(e.error_code(), e.to_string()))?,
        )
    } else {
        None
    };
    if let (true, Some(batch)) = (rules.keys_required, &decoded) {
        check_keys(batch, topic)?;
    }
    let refused = match guarantee {
        WriteGuarantee::None => None,
        WriteGuarantee::Idempotent if header.producer_id < 0 => {
            Some("idempotent or transactional producers (set enable.idempotence=true)")
        }
        WriteGuarantee::Transactional if !header.is_transactional() => {
            Some("transactional producers (set transactional.id)")
        }
        _ => None,
    };
    if let Some(who) = refused {
        return Err(ApiError::new(
            ErrorCode::PolicyViolation,
            format!(
                "topic {topic} accepts writes only from {who}: exacta.write.guarantee={}",
                guarantee.name()
            ),
        ));
    }
    Ok((header, decoded))
}

/// A compacted topic keeps the last record per key, so every record needs one (Kafka's
/// "Compacted topic cannot accept message without key").
fn check_keys(batch: &StoredBatch, topic: &str) -> Result<(), ApiError> {
    match (0..batch.entries.len()).find(|&i| batch.key(i).is_none()) {
        None => Ok(()),
        Some(index) => Err(ApiError::new(
            ErrorCode::InvalidRecord,
            format!(
                "Compacted topic cannot accept message without key in topic {topic} \
                 (record {index} of the batch has none)"
            ),
        )),
    }
}

/// Timestamp of a record without one (magic 2 allows it).
const NO_TIMESTAMP: i64 = -1;

/// Kafka's `message.timestamp.before.max.ms` / `after.max.ms` rules for create times,
/// checked on the batch's first and largest timestamps (the per-record deltas inside a
/// compressed batch are not decompressed here). A negative timestamp other than -1 is
/// refused too: no client sends one, and the log computes with them.
fn check_timestamps(header: &BatchHeader, rules: &WriteRules, now_ms: i64) -> Result<(), ApiError> {
    for timestamp in [header.base_timestamp, header.max_timestamp] {
        if timestamp == NO_TIMESTAMP {
            continue;
        }
        let refused = if timestamp < 0 {
            Some("is negative".to_string())
        } else if rules.log_append_time {
            // The broker's clock replaces the create time: no window to check (Kafka).
            None
        } else if now_ms.saturating_sub(timestamp) > rules.timestamp_before_max_ms {
            Some(format!(
                "is more than message.timestamp.before.max.ms={} in the past",
                rules.timestamp_before_max_ms
            ))
        } else if timestamp.saturating_sub(now_ms) > rules.timestamp_after_max_ms {
            Some(format!(
                "is more than message.timestamp.after.max.ms={} in the future",
                rules.timestamp_after_max_ms
            ))
        } else {
            None
        };
        if let Some(why) = refused {
            return Err(ApiError::new(
                ErrorCode::InvalidTimestamp,
                format!("record timestamp {timestamp} {why} (broker time {now_ms})"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> WriteRules {
        WriteRules {
            max_message_bytes: 1 << 20,
            write_guarantee: WriteGuarantee::None,
            timestamp_before_max_ms: 1_000,
            timestamp_after_max_ms: 1_000,
            keys_required: false,
            codec: None,
            log_append_time: false,
            min_insync_replicas: 1,
            flush: crate::topic_config::FlushRule {
                messages: 1,
                ms: i64::MAX,
            },
        }
    }

    fn header(base: i64, max: i64) -> BatchHeader {
        let batch = exacta_wire::batch::build_keyed_batch(
            &[(b"k".to_vec(), Some(b"v".to_vec()))],
            base,
            None,
        );
        BatchHeader {
            max_timestamp: max,
            ..BatchHeader::parse_header(&batch).unwrap()
        }
    }

    #[test]
    fn timestamps_outside_the_window_are_invalid() {
        let now = 1_000_000;
        assert!(check_timestamps(&header(now, now), &rules(), now).is_ok());
        assert!(check_timestamps(&header(NO_TIMESTAMP, NO_TIMESTAMP), &rules(), now).is_ok());
        for (base, max) in [
            (now - 1_001, now),
            (now, now + 1_001),
            (i64::MIN, now),
            (now, i64::MAX),
            (-2, now),
        ] {
            let e = check_timestamps(&header(base, max), &rules(), now).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidTimestamp, "{base} {max}");
        }
        // The defaults: nothing too old, an hour into the future.
        let defaults = WriteRules {
            timestamp_before_max_ms: i64::MAX,
            timestamp_after_max_ms: 3_600_000,
            ..rules()
        };
        assert!(check_timestamps(&header(0, 0), &defaults, now).is_ok());
        assert!(check_timestamps(&header(now, now + 3_600_001), &defaults, now).is_err());
        // LogAppendTime: the broker's clock counts, but a negative time is still refused.
        let append = WriteRules {
            log_append_time: true,
            ..rules()
        };
        assert!(check_timestamps(&header(1, now + 10_000_000), &append, now).is_ok());
        assert!(check_timestamps(&header(i64::MIN, now), &append, now).is_err());
    }
}
