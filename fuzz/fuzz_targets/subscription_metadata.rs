//! Any bytes as a JoinGroup member's subscription metadata (client-controlled, parsed by
//! the group coordinator for OffsetDelete checks): returns topic names, never panics or
//! loops past the input.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Each name costs at least its 2-byte length in the input.
    let topics = exacta_coordinator::group::subscription_topics(data);
    assert!(topics.len() * 2 <= data.len());
});
