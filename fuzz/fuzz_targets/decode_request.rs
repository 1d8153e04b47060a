//! Any bytes as a request frame (size prefix removed): decode must return, never panic
//! or abort on a huge allocation.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = exacta_wire::frame::decode_request(bytes::Bytes::copy_from_slice(data));
});
