//! Any bytes as a control batch (a transaction marker read back from a log): its type is
//! decoded or refused, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = exacta_wire::batch::marker_type(data);
});
