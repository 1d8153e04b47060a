//! Deterministic fuzzing of request decoding, run with the ordinary tests: valid requests
//! of every served API and version, mutated (bit flips, truncation, huge lengths), must
//! decode or fail with an error, never panic or abort on an allocation. The cargo-fuzz
//! target `fuzz/fuzz_targets/decode_request.rs` explores further.

use bytes::{BufMut, Bytes, BytesMut};
use exacta_wire::frame::{decode_request, encode_default_body};
use exacta_wire::kafka_protocol::messages::*;
use exacta_wire::kafka_protocol::protocol::{Encodable, StrBytes};
use exacta_wire::versions::SUPPORTED;

fn encode_default(key: ApiKey, version: i16) -> Bytes {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("fuzz")));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, key.request_header_version(version))
        .expect("header encodes");
    encode_default_body(key, version, &mut buf).expect("default request encodes");
    buf.freeze()
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn every_served_request_decodes_and_mutations_never_panic() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut decoded = 0;
    for range in SUPPORTED {
        for version in range.min..=range.max {
            let valid = encode_default(range.key, version);
            assert!(
                decode_request(valid.clone()).is_ok(),
                "{:?} v{version}",
                range.key
            );
            decoded += 1;
            for _ in 0..400 {
                let mut bytes = valid.to_vec();
                match rng.below(4) {
                    0 => {
                        let at = rng.below(bytes.len());
                        bytes[at] ^= 1 << rng.below(8);
                    }
                    1 => bytes.truncate(rng.below(bytes.len())),
                    2 => {
                        // A huge count or length where the body begins.
                        let at = 8 + rng.below(bytes.len().saturating_sub(8));
                        let mut huge = BytesMut::new();
                        huge.put_i32(0x7fff_fff0 - rng.below(1000) as i32);
                        bytes.splice(at..at, huge.iter().copied());
                    }
                    _ => {
                        for _ in 0..rng.below(16) {
                            bytes.push(rng.next() as u8);
                        }
                        let at = rng.below(bytes.len());
                        bytes[at] = 0xff;
                    }
                }
                let _ = decode_request(Bytes::from(bytes));
            }
        }
    }
    assert!(decoded > 50);
}
