//! The records inside a stored batch, and the batch rebuilt with only some of them: what
//! the log cleaner needs to drop superseded records while keeping Kafka's batch rules.
//!
//! A rebuilt batch keeps the original base offset, last offset delta, producer id, epoch
//! and base sequence (so offsets are never renumbered and a producer's last sequence stays
//! readable from its last batch), the compression codec and the flags. With a delete
//! horizon (KIP-534) the batch's base timestamp holds the horizon and attribute bit 6 says
//! so; record timestamps are re-encoded relative to it and so do not change.
//!
//! Records are copied byte for byte from the key onwards (headers included, duplicates and
//! all); only each record's length and two deltas are re-encoded.

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};

use crate::batch::{BatchError, BatchHeader, BATCH_HEADER_LEN, COMPRESSION_MASK};

/// Attribute bit: the base timestamp is the batch's delete horizon (KIP-534).
pub const DELETE_HORIZON_FLAG: i16 = 0x40;

/// The delete horizon stored in a batch, if one was set.
pub fn delete_horizon(header: &BatchHeader) -> Option<i64> {
    (header.attributes & DELETE_HORIZON_FLAG != 0).then_some(header.base_timestamp)
}

/// One record of a stored batch, located in the decompressed records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordEntry {
    pub offset: i64,
    pub timestamp: i64,
    /// `None` for a record without a key.
    key: Option<Range<usize>>,
    /// False for a tombstone (null value).
    pub has_value: bool,
    attributes: u8,
    /// From the key length to the end of the record.
    body: Range<usize>,
}

/// A stored batch with its records decoded (but not copied).
#[derive(Debug, Clone)]
pub struct StoredBatch {
    pub header: BatchHeader,
    records: Bytes,
    pub entries: Vec<RecordEntry>,
}

impl StoredBatch {
    /// Decodes the records of one whole, CRC-checked batch.
    pub fn parse(batch: &[u8]) -> Result<Self, BatchError> {
        let header = BatchHeader::parse(batch)?;
        let body = Bytes::copy_from_slice(&batch[BATCH_HEADER_LEN..header.size()]);
        let records = decompress(header.compression(), body)?;
        let mut entries = Vec::with_capacity(header.records_count.clamp(0, 1 << 16) as usize);
        let mut at = 0usize;
        for _ in 0..header.records_count.max(0) {
            let (entry, next) = parse_record(&records, at, &header)?;
            entries.push(entry);
            at = next;
        }
        Ok(Self {
            header,
            records,
            entries,
        })
    }

    /// The key of record `index`.
    pub fn key(&self, index: usize) -> Option<&[u8]> {
        let range = self.entries.get(index)?.key.clone()?;
        Some(&self.records[range])
    }

    /// Whether every record has a key (compacted topics require one).
    pub fn all_keyed(&self) -> bool {
        self.entries.iter().all(|e| e.key.is_some())
    }

    /// The batch with only the records for which `keep` is true, same base and last offset,
    /// and the delete horizon if given (or the one it had).
    pub fn rebuild(&self, keep: &[bool], delete_horizon: Option<i64>) -> Vec<u8> {
        let h = &self.header;
        let kept: Vec<&RecordEntry> = self
            .entries
            .iter()
            .zip(keep.iter().chain(std::iter::repeat(&false)))
            .filter_map(|(e, k)| k.then_some(e))
            .collect();
        let horizon = delete_horizon.or(self::delete_horizon(h));
        if kept.is_empty() {
            // Kafka's empty batch: no records, no compression, both timestamps the batch's
            // max timestamp; it survives only to hold offsets and producer state.
            let attributes = h.attributes & !(COMPRESSION_MASK | DELETE_HORIZON_FLAG);
            return assemble(h, attributes, h.max_timestamp, h.max_timestamp, 0, &[]);
        }
        let base_timestamp = horizon.unwrap_or_else(|| {
            kept.iter()
                .map(|e| e.timestamp)
                .min()
                .unwrap_or(h.base_timestamp)
        });
        let max_timestamp = kept
            .iter()
            .map(|e| e.timestamp)
            .max()
            .unwrap_or(h.max_timestamp);
        let mut raw = BytesMut::new();
        for e in &kept {
            let mut head = Vec::with_capacity(24);
            head.push(e.attributes);
            put_varlong(&mut head, e.timestamp - base_timestamp);
            put_varint(&mut head, (e.offset - h.base_offset) as i32);
            let len = head.len() + e.body.len();
            let mut prefix = Vec::with_capacity(5);
            put_varint(&mut prefix, len as i32);
            raw.put_slice(&prefix);
            raw.put_slice(&head);
            raw.put_slice(&self.records[e.body.clone()]);
        }
        let mut attributes = h.attributes & !DELETE_HORIZON_FLAG;
        if horizon.is_some() {
            attributes |= DELETE_HORIZON_FLAG;
        }
        let body = compress(h.compression(), raw.freeze());
        assemble(
            h,
            attributes,
            base_timestamp,
            max_timestamp,
            kept.len() as i32,
            &body,
        )
    }
}

/// The batch re-encoded with compression `codec` (0: none): the same records, offsets,
/// timestamps, producer fields and flags, as Kafka's broker-side recompression
/// (`compression.type` other than `producer`) stores them.
pub fn recompress(batch: &StoredBatch, codec: i16) -> Vec<u8> {
    let h = &batch.header;
    let attributes = (h.attributes & !COMPRESSION_MASK) | (codec & COMPRESSION_MASK);
    let body = compress(codec, batch.records.clone());
    assemble(
        h,
        attributes,
        h.base_timestamp,
        h.max_timestamp,
        h.records_count,
        &body,
    )
}

/// Writes a v2 batch with `h`'s offsets and producer fields around `body` (the records,
/// compressed as `attributes` says).
fn assemble(
    h: &BatchHeader,
    attributes: i16,
    base_timestamp: i64,
    max_timestamp: i64,
    count: i32,
    body: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(BATCH_HEADER_LEN + body.len());
    out.extend_from_slice(&h.base_offset.to_be_bytes());
    out.extend_from_slice(&((BATCH_HEADER_LEN - 12 + body.len()) as i32).to_be_bytes());
    out.extend_from_slice(&h.partition_leader_epoch.to_be_bytes());
    out.push(2);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&attributes.to_be_bytes());
    out.extend_from_slice(&h.last_offset_delta.to_be_bytes());
    out.extend_from_slice(&base_timestamp.to_be_bytes());
    out.extend_from_slice(&max_timestamp.to_be_bytes());
    out.extend_from_slice(&h.producer_id.to_be_bytes());
    out.extend_from_slice(&h.producer_epoch.to_be_bytes());
    out.extend_from_slice(&h.base_sequence.to_be_bytes());
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(body);
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out
}

fn corrupt(why: impl std::fmt::Display) -> BatchError {
    BatchError::Records(why.to_string())
}

fn decompress(codec: i16, body: Bytes) -> Result<Bytes, BatchError> {
    if codec == 0 {
        return Ok(body);
    }
    let limit = crate::inflate::limit_for(body.len());
    crate::inflate::decompress(codec, &body, limit).map(Bytes::from)
}

fn compress(codec: i16, raw: Bytes) -> Vec<u8> {
    let mut out = BytesMut::new();
    let copy = |b: &mut BytesMut| {
        b.put_slice(&raw);
        Ok(())
    };
    let done = match codec {
        1 => Gzip::compress(&mut out, copy),
        2 => Snappy::compress(&mut out, copy),
        3 => Lz4::compress(&mut out, copy),
        4 => Zstd::compress(&mut out, copy),
        _ => {
            out.put_slice(&raw);
            Ok(())
        }
    };
    // Compressing into memory fails only on an allocation failure, which aborts anyway.
    done.expect("compressing records into memory");
    out.to_vec()
}

fn parse_record(
    buf: &[u8],
    at: usize,
    h: &BatchHeader,
) -> Result<(RecordEntry, usize), BatchError> {
    let (len, start) = varint(buf, at)?;
    let end = usize::try_from(len)
        .ok()
        .and_then(|l| start.checked_add(l))
        .filter(|&e| e <= buf.len())
        .ok_or_else(|| corrupt(format!("record length {len} at {at} overruns the batch")))?;
    let attributes = *buf.get(start).ok_or_else(|| corrupt("empty record"))?;
    let (ts_delta, p) = varlong(buf, start + 1)?;
    let (offset_delta, p) = varint(buf, p)?;
    let body_start = p;
    let (key_len, p) = varint(buf, p)?;
    let (key, p) = bytes_field(buf, p, key_len, end)?;
    let (value_len, p) = varint(buf, p)?;
    let (_, p) = bytes_field(buf, p, value_len, end)?;
    if p > end {
        return Err(corrupt("record fields overrun its length"));
    }
    Ok((
        RecordEntry {
            offset: h.base_offset + i64::from(offset_delta),
            timestamp: h.base_timestamp.saturating_add(ts_delta),
            key,
            has_value: value_len >= 0,
            attributes,
            body: body_start..end,
        },
        end,
    ))
}

fn bytes_field(
    buf: &[u8],
    at: usize,
    len: i32,
    end: usize,
) -> Result<(Option<Range<usize>>, usize), BatchError> {
    if len < 0 {
        return Ok((None, at));
    }
    let stop = at + len as usize;
    if stop > end || stop > buf.len() {
        return Err(corrupt("record field overruns the record"));
    }
    Ok((Some(at..stop), stop))
}

fn varlong(buf: &[u8], mut at: usize) -> Result<(i64, usize), BatchError> {
    let mut value: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(at).ok_or_else(|| corrupt("truncated varint"))?;
        at += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok((((value >> 1) as i64) ^ -((value & 1) as i64), at));
        }
    }
    Err(corrupt("varint too long"))
}

fn varint(buf: &[u8], at: usize) -> Result<(i32, usize), BatchError> {
    let (v, at) = varlong(buf, at)?;
    let v = i32::try_from(v).map_err(|_| corrupt("varint out of range"))?;
    Ok((v, at))
}

fn put_varlong(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn put_varint(out: &mut Vec<u8>, v: i32) {
    put_varlong(out, i64::from(v));
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
        TimestampType,
    };

    fn batch(compression: Compression, base_offset: i64) -> Vec<u8> {
        let records: Vec<Record> = (0..5)
            .map(|i| Record {
                transactional: false,
                control: false,
                partition_leader_epoch: 0,
                producer_id: 7,
                producer_epoch: 1,
                timestamp_type: TimestampType::Creation,
                offset: base_offset + i,
                sequence: 10 + i as i32,
                timestamp: 1_000 + i,
                key: (i != 2).then(|| Bytes::from(format!("k{i}"))),
                value: (i != 3).then(|| Bytes::from(format!("v{i}"))),
                headers: [
                    ("h".into(), Some(Bytes::from_static(b"x"))),
                    ("g".into(), None),
                ]
                .into_iter()
                .collect(),
                delete_horizon: false,
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .unwrap();
        buf.to_vec()
    }

    #[test]
    fn rebuilt_batches_keep_offsets_sequences_and_record_bytes() {
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let original = batch(compression, 100);
            let parsed = StoredBatch::parse(&original).unwrap();
            assert_eq!(parsed.entries.len(), 5);
            assert_eq!(parsed.key(0), Some(&b"k0"[..]));
            assert_eq!(parsed.key(2), None);
            assert!(!parsed.all_keyed());
            assert!(!parsed.entries[3].has_value);
            for horizon in [None, Some(5_000)] {
                let rebuilt = parsed.rebuild(&[false, true, false, true, false], horizon);
                let h = BatchHeader::parse_and_verify(&rebuilt).unwrap();
                assert_eq!((h.base_offset, h.last_offset()), (100, 104));
                assert_eq!((h.producer_id, h.base_sequence), (7, 10));
                assert_eq!(h.records_count, 2);
                assert_eq!(h.compression(), compression as i16);
                assert_eq!(delete_horizon(&h), horizon);
                let set = RecordBatchDecoder::decode(&mut Bytes::from(rebuilt)).unwrap();
                let got: Vec<(i64, i64, Option<Bytes>)> = set
                    .records
                    .iter()
                    .map(|r| (r.offset, r.timestamp, r.value.clone()))
                    .collect();
                assert_eq!(
                    got,
                    vec![(101, 1_001, Some(Bytes::from("v1"))), (103, 1_003, None)]
                );
                assert_eq!(set.records[0].headers.len(), 2);
            }
        }
    }

    #[test]
    fn recompressed_batches_decode_to_the_same_records() {
        let codecs = [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ];
        let decoded = |b: Vec<u8>| {
            let set = RecordBatchDecoder::decode(&mut Bytes::from(b)).unwrap();
            set.records
                .iter()
                .map(|r| {
                    (
                        r.offset,
                        r.timestamp,
                        r.sequence,
                        r.key.clone(),
                        r.value.clone(),
                    )
                })
                .collect::<Vec<_>>()
        };
        for from in codecs {
            let original = batch(from, 100);
            let want = decoded(original.clone());
            let parsed = StoredBatch::parse(&original).unwrap();
            for to in codecs {
                let out = recompress(&parsed, to as i16);
                let h = BatchHeader::parse_and_verify(&out).unwrap();
                assert_eq!(h.compression(), to as i16);
                assert_eq!(
                    (h.producer_id, h.producer_epoch, h.base_sequence),
                    (7, 1, 10)
                );
                assert_eq!(
                    (h.base_timestamp, h.max_timestamp),
                    (parsed.header.base_timestamp, parsed.header.max_timestamp)
                );
                assert_eq!(decoded(out), want, "{from:?} -> {to:?}");
            }
        }
    }

    #[test]
    fn log_append_time_stamps_every_record_and_keeps_the_crc_valid() {
        let mut b = batch(Compression::Lz4, 0);
        crate::batch::set_log_append_time(&mut b, 77_000);
        let h = BatchHeader::parse_and_verify(&b).unwrap();
        assert_eq!(h.max_timestamp, 77_000);
        // Readers take the max timestamp as every record's (this decoder leaves the
        // record deltas as they were; the interop tests check real clients).
        let set = RecordBatchDecoder::decode(&mut Bytes::from(b)).unwrap();
        assert_eq!(set.records.len(), 5);
        assert!(set
            .records
            .iter()
            .all(|r| r.timestamp_type == TimestampType::LogAppend));
    }

    #[test]
    fn an_emptied_batch_keeps_its_offsets_and_producer() {
        let parsed = StoredBatch::parse(&batch(Compression::Zstd, 40)).unwrap();
        let empty = parsed.rebuild(&[false; 5], None);
        let h = BatchHeader::parse_and_verify(&empty).unwrap();
        assert_eq!(
            (h.base_offset, h.last_offset(), h.records_count),
            (40, 44, 0)
        );
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (7, 1, 10)
        );
        assert_eq!(h.compression(), 0);
        assert!(StoredBatch::parse(&empty).unwrap().entries.is_empty());
    }

    #[test]
    fn malformed_records_are_errors_not_panics() {
        let mut b = batch(Compression::None, 0);
        let n = b.len();
        for i in BATCH_HEADER_LEN..n {
            let mut c = b.clone();
            c[i] = 0xff;
            let _ = StoredBatch::parse(&c);
        }
        b.truncate(n - 3);
        let len = (b.len() - 12) as i32;
        b[8..12].copy_from_slice(&len.to_be_bytes());
        assert!(StoredBatch::parse(&b).is_err());
    }
}
