//! Decompression of a producer's records with a bound on the output: a small, highly
//! compressible batch (a "zip bomb") is refused once its records pass the bound, before the
//! memory is taken, instead of inflating without limit.
//!
//! The formats are Kafka's: gzip (RFC 1952), snappy in xerial's framing (or raw snappy,
//! as the Java client also reads), the LZ4 frame format, and zstd frames.

use std::io::Read;

use crate::batch::BatchError;

/// Most bytes a batch's records may decompress to: 64 MiB, or 64 times the compressed
/// size for larger batches (`max.message.bytes` raised past 1 MiB).
pub fn limit_for(compressed_len: usize) -> usize {
    (64usize << 20).max(compressed_len.saturating_mul(64))
}

const XERIAL_MAGIC: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";

fn corrupt(codec: &str, why: impl std::fmt::Display) -> BatchError {
    BatchError::Records(format!("{codec}: {why}"))
}

/// The records of a batch body compressed with `codec` (1 gzip, 2 snappy, 3 lz4, 4 zstd),
/// at most `limit` bytes of them.
pub fn decompress(codec: i16, body: &[u8], limit: usize) -> Result<Vec<u8>, BatchError> {
    match codec {
        1 => read_bounded("gzip", flate2::read::GzDecoder::new(body), limit),
        2 => snappy(body, limit),
        3 => {
            let decoder = lz4::Decoder::new(body).map_err(|e| corrupt("lz4", e))?;
            read_bounded("lz4", decoder, limit)
        }
        4 => {
            let decoder = zstd::stream::read::Decoder::new(body).map_err(|e| corrupt("zstd", e))?;
            read_bounded("zstd", decoder, limit)
        }
        other => Err(BatchError::UnknownCompression(other)),
    }
}

fn read_bounded(codec: &str, reader: impl Read, limit: usize) -> Result<Vec<u8>, BatchError> {
    let mut out = Vec::new();
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| corrupt(codec, e))?;
    if out.len() > limit {
        return Err(BatchError::DecompressedTooLarge { limit });
    }
    Ok(out)
}

fn snappy(body: &[u8], limit: usize) -> Result<Vec<u8>, BatchError> {
    let block = |compressed: &[u8], out: &mut Vec<u8>| -> Result<(), BatchError> {
        let len = snap::raw::decompress_len(compressed).map_err(|e| corrupt("snappy", e))?;
        if out.len().saturating_add(len) > limit {
            return Err(BatchError::DecompressedTooLarge { limit });
        }
        let start = out.len();
        out.resize(start + len, 0);
        snap::raw::Decoder::new()
            .decompress(compressed, &mut out[start..])
            .map_err(|e| corrupt("snappy", e))?;
        Ok(())
    };
    let mut out = Vec::new();
    let Some(mut rest) = body.strip_prefix(&XERIAL_MAGIC[..]) else {
        // Raw snappy, as the Java client falls back to without the xerial header.
        block(body, &mut out)?;
        return Ok(out);
    };
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| corrupt("snappy", "truncated block length"))?;
        let len = u32::from_be_bytes(*len) as usize;
        let compressed = tail
            .get(..len)
            .ok_or_else(|| corrupt("snappy", "block longer than the batch"))?;
        block(compressed, &mut out)?;
        rest = &tail[len..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use bytes::{BufMut, BytesMut};
    use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};

    use super::*;

    fn compressed(codec: i16, raw: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        let copy = |b: &mut BytesMut| {
            b.put_slice(raw);
            Ok(())
        };
        match codec {
            1 => Gzip::compress(&mut out, copy),
            2 => Snappy::compress(&mut out, copy),
            3 => Lz4::compress(&mut out, copy),
            _ => Zstd::compress(&mut out, copy),
        }
        .unwrap();
        out.to_vec()
    }

    #[test]
    fn every_codec_round_trips_and_a_bomb_is_refused_at_the_bound() {
        let raw: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_be_bytes())
            .collect();
        let bomb = vec![0u8; 8 << 20];
        for codec in 1..=4 {
            let body = compressed(codec, &raw);
            assert_eq!(
                decompress(codec, &body, raw.len()).unwrap(),
                raw,
                "codec {codec}"
            );
            let e = decompress(codec, &body, raw.len() - 1).unwrap_err();
            assert!(
                matches!(e, BatchError::DecompressedTooLarge { .. }),
                "codec {codec}: {e}"
            );
            // 8 MiB of zeros compresses to a few KiB; the bound stops it at 1 MiB.
            let small = compressed(codec, &bomb);
            assert!(small.len() < 512 << 10, "codec {codec}: {}", small.len());
            let e = decompress(codec, &small, 1 << 20).unwrap_err();
            assert!(
                matches!(e, BatchError::DecompressedTooLarge { .. }),
                "codec {codec}: {e}"
            );
            // Truncated input is an error, not a panic.
            for cut in [1, body.len() / 2, body.len() - 1] {
                let _ = decompress(codec, &body[..cut], raw.len());
            }
        }
    }
}
