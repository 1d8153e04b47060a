//! A view of Kafka's v2 `RecordBatch` (magic 2), the unit producers send and the log stores.
//!
//! The broker never re-encodes a producer's batch: it validates the header and CRC, then
//! writes the bytes as sent, rewriting only the fields outside the CRC (base offset and
//! partition leader epoch). Compressed batches are therefore stored compressed.
//!
//! Layout (big-endian):
//! ```text
//! baseOffset i64 | batchLength i32 | partitionLeaderEpoch i32 | magic i8 | crc u32 |
//! attributes i16 | lastOffsetDelta i32 | baseTimestamp i64 | maxTimestamp i64 |
//! producerId i64 | producerEpoch i16 | baseSequence i32 | recordsCount i32 | records...
//! ```
//! `batchLength` counts the bytes after itself; the CRC-32C covers `attributes` to the end.

use exacta_types::ErrorCode;

/// Size of the fixed batch header, records excluded.
pub const BATCH_HEADER_LEN: usize = 61;
/// Bytes before `batchLength`'s payload: baseOffset and batchLength.
pub const LOG_OVERHEAD: usize = 12;

const MAGIC_OFFSET: usize = 16;
const CRC_OFFSET: usize = 17;
const ATTRIBUTES_OFFSET: usize = 21;
const MAX_TIMESTAMP_OFFSET: usize = 35;

/// Attribute bits.
pub const COMPRESSION_MASK: i16 = 0x07;
pub const TIMESTAMP_TYPE_LOG_APPEND: i16 = 0x08;
pub const TRANSACTIONAL_FLAG: i16 = 0x10;
pub const CONTROL_FLAG: i16 = 0x20;

/// Why a batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch is truncated: {have} bytes, header says {need}")]
    Truncated { have: usize, need: usize },
    #[error("batch length {0} is smaller than the v2 header")]
    LengthTooSmall(i32),
    #[error("unsupported record batch magic {0}; only magic 2 is accepted")]
    UnsupportedMagic(i8),
    #[error("CRC mismatch: header says {stored:#010x}, bytes give {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("unknown compression codec {0}")]
    UnknownCompression(i16),
    #[error("records count {count} does not match lastOffsetDelta {last_offset_delta}")]
    InconsistentCount { count: i32, last_offset_delta: i32 },
    #[error("control batches may only be written by the broker")]
    ControlBatchFromClient,
    #[error("malformed records: {0}")]
    Records(String),
    #[error("the batch's records decompress to more than {limit} bytes")]
    DecompressedTooLarge { limit: usize },
}

impl BatchError {
    /// The Kafka error code a producer gets for this batch.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            BatchError::UnknownCompression(_) => ErrorCode::UnsupportedCompressionType,
            // Kafka: Produce v3+ may only carry magic 2 batches (InvalidRecordException).
            BatchError::UnsupportedMagic(_)
            | BatchError::InconsistentCount { .. }
            | BatchError::ControlBatchFromClient => ErrorCode::InvalidRecord,
            BatchError::DecompressedTooLarge { .. } => ErrorCode::MessageTooLarge,
            _ => ErrorCode::CorruptMessage,
        }
    }
}

/// The parsed header of one batch; `size` is the whole batch in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    /// Total size of the batch on the wire and on disk.
    pub fn size(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }
    pub fn compression(&self) -> i16 {
        self.attributes & COMPRESSION_MASK
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_FLAG != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_FLAG != 0
    }

    /// Parses the fixed header from the start of `buf` without checking the CRC.
    ///
    /// Returns `Truncated` when `buf` does not hold the whole batch the header announces.
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        let header = Self::parse_header(buf)?;
        if buf.len() < header.size() {
            return Err(BatchError::Truncated {
                have: buf.len(),
                need: header.size(),
            });
        }
        Ok(header)
    }

    /// Parses only the fixed 61-byte header; the records need not be in `buf`.
    pub fn parse_header(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        if buf.len() < BATCH_HEADER_LEN {
            return Err(BatchError::Truncated {
                have: buf.len(),
                need: BATCH_HEADER_LEN,
            });
        }
        let batch_length = be_i32(buf, 8);
        if (batch_length as i64) < (BATCH_HEADER_LEN - LOG_OVERHEAD) as i64 {
            return Err(BatchError::LengthTooSmall(batch_length));
        }
        let header = BatchHeader {
            base_offset: be_i64(buf, 0),
            batch_length,
            partition_leader_epoch: be_i32(buf, 12),
            magic: buf[MAGIC_OFFSET] as i8,
            crc: u32::from_be_bytes(buf[CRC_OFFSET..CRC_OFFSET + 4].try_into().unwrap_or([0; 4])),
            attributes: be_i16(buf, ATTRIBUTES_OFFSET),
            last_offset_delta: be_i32(buf, 23),
            base_timestamp: be_i64(buf, 27),
            max_timestamp: be_i64(buf, 35),
            producer_id: be_i64(buf, 43),
            producer_epoch: be_i16(buf, 51),
            base_sequence: be_i32(buf, 53),
            records_count: be_i32(buf, 57),
        };
        if header.magic != 2 {
            return Err(BatchError::UnsupportedMagic(header.magic));
        }
        Ok(header)
    }

    /// Parses the header and checks the CRC over the batch's bytes.
    pub fn parse_and_verify(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        let header = Self::parse(buf)?;
        let computed = crc32c::crc32c(&buf[ATTRIBUTES_OFFSET..header.size()]);
        if computed != header.crc {
            return Err(BatchError::CrcMismatch {
                stored: header.crc,
                computed,
            });
        }
        Ok(header)
    }
}

/// Validates one batch a producer sent: header, CRC, codec, counts, not a control batch.
pub fn validate_produced(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse_and_verify(buf)?;
    if header.compression() > 4 {
        return Err(BatchError::UnknownCompression(header.compression()));
    }
    if header.is_control() {
        return Err(BatchError::ControlBatchFromClient);
    }
    if header.records_count < 1 || header.last_offset_delta != header.records_count - 1 {
        return Err(BatchError::InconsistentCount {
            count: header.records_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    Ok(header)
}

/// Sets the fields the broker owns; both lie outside the CRC, so it stays valid.
/// Stamps a whole batch with the broker's clock (`message.timestamp.type=LogAppendTime`):
/// the timestamp-type attribute is set and the max timestamp becomes `now_ms`, which
/// readers take as every record's timestamp; the CRC is recomputed. As Kafka does for v2
/// batches, the records themselves are not rewritten.
pub fn set_log_append_time(buf: &mut [u8], now_ms: i64) {
    let attributes = i16::from_be_bytes([buf[ATTRIBUTES_OFFSET], buf[ATTRIBUTES_OFFSET + 1]])
        | TIMESTAMP_TYPE_LOG_APPEND;
    buf[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
    buf[MAX_TIMESTAMP_OFFSET..MAX_TIMESTAMP_OFFSET + 8].copy_from_slice(&now_ms.to_be_bytes());
    let size = BatchHeader::parse_header(buf).map_or(buf.len(), |h| h.size().min(buf.len()));
    let crc = crc32c::crc32c(&buf[ATTRIBUTES_OFFSET..size]);
    buf[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
}

pub fn assign_offset(buf: &mut [u8], base_offset: i64, partition_leader_epoch: i32) {
    buf[0..8].copy_from_slice(&base_offset.to_be_bytes());
    buf[12..16].copy_from_slice(&partition_leader_epoch.to_be_bytes());
}

/// Iterates over the complete batches at the start of `buf`; stops at a partial tail or at
/// the first unparsable header (the caller decides whether that is corruption).
pub struct Batches<'a> {
    buf: &'a [u8],
    position: usize,
    error: Option<BatchError>,
}

impl<'a> Batches<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self {
            buf,
            position: 0,
            error: None,
        }
    }
    /// Bytes consumed by the batches yielded so far.
    pub fn position(&self) -> usize {
        self.position
    }
    /// Why iteration stopped early, if it did (`None` at a clean end).
    pub fn error(&self) -> Option<&BatchError> {
        self.error.as_ref()
    }
}

impl Iterator for Batches<'_> {
    /// Position of the batch in the buffer and its header.
    type Item = (usize, BatchHeader);

    fn next(&mut self) -> Option<Self::Item> {
        if self.position >= self.buf.len() || self.error.is_some() {
            return None;
        }
        match BatchHeader::parse(&self.buf[self.position..]) {
            Ok(header) => {
                let at = self.position;
                self.position += header.size();
                Some((at, header))
            }
            Err(e) => {
                self.error = Some(e);
                None
            }
        }
    }
}

fn be_i16(buf: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([buf[at], buf[at + 1]])
}
fn be_i32(buf: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}
fn be_i64(buf: &[u8], at: usize) -> i64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    i64::from_be_bytes(b)
}

/// Builds a batch of records with the given values, record `i` stamped `first_timestamp + i`,
/// as a non-idempotent producer would send it. For tests, tools and fuzzing seeds.
pub fn build_batch(
    values: &[Vec<u8>],
    first_timestamp: i64,
    compression: kafka_protocol::records::Compression,
) -> Vec<u8> {
    build_producer_batch(values, first_timestamp, compression, (-1, -1, -1))
}

/// As [`build_batch`], for an idempotent producer `(producer id, epoch, base sequence)`.
pub fn build_producer_batch(
    values: &[Vec<u8>],
    first_timestamp: i64,
    compression: kafka_protocol::records::Compression,
    producer: (i64, i16, i32),
) -> Vec<u8> {
    encode_values(values, first_timestamp, compression, producer, false)
}

/// As [`build_producer_batch`], inside a transaction.
pub fn build_transactional_batch(
    values: &[Vec<u8>],
    first_timestamp: i64,
    producer: (i64, i16, i32),
) -> Vec<u8> {
    encode_values(
        values,
        first_timestamp,
        kafka_protocol::records::Compression::None,
        producer,
        true,
    )
}

fn encode_values(
    values: &[Vec<u8>],
    first_timestamp: i64,
    compression: kafka_protocol::records::Compression,
    (producer_id, producer_epoch, base_sequence): (i64, i16, i32),
    transactional: bool,
) -> Vec<u8> {
    use kafka_protocol::records::{Record, TimestampType};
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, value)| Record {
            transactional,
            control: false,
            partition_leader_epoch: 0,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder groups records whose offset - sequence is constant into one batch;
            // the batch's base sequence is the first record's.
            sequence: base_sequence.wrapping_add(i as i32),
            timestamp: first_timestamp + i as i64,
            key: None,
            value: Some(bytes::Bytes::copy_from_slice(value)),
            headers: Default::default(),
            delete_horizon: false,
        })
        .collect();
    encode(&records, compression)
}

/// Encodes records (that the encoder groups into one batch) as a v2 record batch.
fn encode(
    records: &[kafka_protocol::records::Record],
    compression: kafka_protocol::records::Compression,
) -> Vec<u8> {
    use kafka_protocol::records::{RecordBatchEncoder, RecordEncodeOptions};
    let mut buf = bytes::BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .expect("encoding records into memory cannot fail");
    buf.to_vec()
}

/// A record's key and value (`None`: a tombstone).
pub type KeyedRecord = (Vec<u8>, Option<Vec<u8>>);

/// Builds an uncompressed batch of keyed records (a `None` value is a tombstone), as the
/// broker writes to its internal topics; with a producer `(id, epoch)` it is a
/// transactional batch written on that producer's behalf (no sequence).
pub fn build_keyed_batch(
    entries: &[KeyedRecord],
    timestamp: i64,
    transactional_producer: Option<(i64, i16)>,
) -> Vec<u8> {
    let (producer_id, producer_epoch) = transactional_producer.unwrap_or((-1, -1));
    use kafka_protocol::records::{Compression, Record, TimestampType};
    let records: Vec<Record> = entries
        .iter()
        .enumerate()
        .map(|(i, (key, value))| Record {
            transactional: transactional_producer.is_some(),
            control: false,
            partition_leader_epoch: 0,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: (i as i32) - 1,
            timestamp,
            key: Some(bytes::Bytes::copy_from_slice(key)),
            value: value.as_deref().map(bytes::Bytes::copy_from_slice),
            headers: Default::default(),
            delete_horizon: false,
        })
        .collect();
    encode(&records, Compression::None)
}

/// Builds a transaction marker (a control batch with one control record) as Kafka's
/// WriteTxnMarkers writes it: key `(version 0, type)`, type 0 = abort, 1 = commit; value
/// `(version 0, coordinator epoch)`.
pub fn build_control_batch(
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
    timestamp: i64,
) -> Vec<u8> {
    use kafka_protocol::records::{Compression, Record, TimestampType};
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&i16::from(commit).to_be_bytes());
    let mut value = Vec::with_capacity(6);
    value.extend_from_slice(&0i16.to_be_bytes());
    value.extend_from_slice(&coordinator_epoch.to_be_bytes());
    let record = Record {
        transactional: true,
        control: true,
        partition_leader_epoch: 0,
        producer_id,
        producer_epoch,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp,
        key: Some(bytes::Bytes::from(key)),
        value: Some(bytes::Bytes::from(value)),
        headers: Default::default(),
        delete_horizon: false,
    };
    encode(std::slice::from_ref(&record), Compression::None)
}

/// For a control batch: `Some(true)` for a commit marker, `Some(false)` for an abort.
pub fn marker_type(batch: &[u8]) -> Option<bool> {
    marker(batch).map(|(commit, _)| commit)
}

/// For a control batch: whether it commits, and the coordinator epoch its value carries
/// (-1 when it has none).
pub fn marker(batch: &[u8]) -> Option<(bool, i32)> {
    let mut buf = bytes::Bytes::copy_from_slice(batch);
    let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut buf).ok()?;
    let record = set.records.first()?;
    let key = record.key.as_ref()?;
    if key.len() < 4 {
        return None;
    }
    let coordinator_epoch = match record.value.as_deref() {
        Some(v) if v.len() >= 6 => i32::from_be_bytes([v[2], v[3], v[4], v[5]]),
        _ => -1,
    };
    Some((i16::from_be_bytes([key[2], key[3]]) == 1, coordinator_epoch))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::Compression;

    fn encode_batch(n: usize, compression: Compression) -> Vec<u8> {
        let values: Vec<Vec<u8>> = (0..n).map(|i| format!("value-{i}").into_bytes()).collect();
        build_batch(&values, 1_700_000_000_000, compression)
    }

    #[test]
    fn valid_batch_of_every_codec_passes() {
        for codec in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let buf = encode_batch(10, codec);
            let header = validate_produced(&buf).expect("valid");
            assert_eq!(header.records_count, 10);
            assert_eq!(header.last_offset_delta, 9);
            assert_eq!(header.size(), buf.len());
            assert_eq!(header.compression(), codec as i16);
        }
    }

    #[test]
    fn control_batches_carry_their_marker() {
        for commit in [true, false] {
            let buf = build_control_batch(42, 3, commit, 7, 1000);
            let header = BatchHeader::parse_and_verify(&buf).unwrap();
            assert!(header.is_control() && header.is_transactional());
            assert_eq!((header.producer_id, header.producer_epoch), (42, 3));
            assert_eq!(marker_type(&buf), Some(commit));
            // Clients may not send one.
            assert_eq!(
                validate_produced(&buf),
                Err(BatchError::ControlBatchFromClient)
            );
        }
    }

    #[test]
    fn flipped_byte_fails_crc() {
        let mut buf = encode_batch(3, Compression::None);
        let last = buf.len() - 1;
        buf[last] ^= 0xff;
        assert!(matches!(
            validate_produced(&buf),
            Err(BatchError::CrcMismatch { .. })
        ));
    }

    #[test]
    fn assigning_offset_keeps_crc_valid() {
        let mut buf = encode_batch(3, Compression::None);
        assign_offset(&mut buf, 4242, 7);
        let header = validate_produced(&buf).expect("still valid");
        assert_eq!(header.base_offset, 4242);
        assert_eq!(header.last_offset(), 4244);
        assert_eq!(header.partition_leader_epoch, 7);
    }

    #[test]
    fn truncated_and_wrong_magic_are_refused() {
        let buf = encode_batch(3, Compression::None);
        assert!(matches!(
            validate_produced(&buf[..buf.len() - 1]),
            Err(BatchError::Truncated { .. })
        ));
        assert!(matches!(
            validate_produced(&buf[..20]),
            Err(BatchError::Truncated { .. })
        ));
        let mut old = buf.clone();
        old[MAGIC_OFFSET] = 1;
        assert_eq!(
            validate_produced(&old).unwrap_err().error_code(),
            ErrorCode::InvalidRecord
        );
        let mut tiny = buf;
        tiny[8..12].copy_from_slice(&5i32.to_be_bytes());
        assert!(matches!(
            validate_produced(&tiny),
            Err(BatchError::LengthTooSmall(5))
        ));
    }

    #[test]
    fn iterator_stops_at_partial_tail() {
        let mut buf = encode_batch(2, Compression::None);
        let one = buf.len();
        buf.extend(encode_batch(2, Compression::None));
        buf.extend_from_slice(&encode_batch(2, Compression::None)[..30]);
        let mut it = Batches::new(&buf);
        let seen: Vec<usize> = it.by_ref().map(|(at, _)| at).collect();
        assert_eq!(seen, vec![0, one]);
        assert_eq!(it.position(), 2 * one);
        assert!(matches!(it.error(), Some(BatchError::Truncated { .. })));
    }
}
