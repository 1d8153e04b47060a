//! Any bytes as a producer-state snapshot file: loading returns the state or an error
//! (recovery then falls back to an older snapshot or a replay), never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(state) = exacta_log::producer_state::ProducerStateManager::from_snapshot(data) {
        let again = exacta_log::producer_state::ProducerStateManager::from_snapshot(
            &state.to_snapshot(),
        )
        .expect("a snapshot it wrote loads");
        assert_eq!(again.producers().count(), state.producers().count());
    }
});
