//! Any bytes as a produced record batch: validation returns a verdict, never panics; a
//! batch it accepts can be iterated and re-validated after the broker assigns its offset.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = exacta_wire::batch::validate_produced(data) {
        let mut owned = data[..header.size()].to_vec();
        exacta_wire::batch::assign_offset(&mut owned, 1234, 0);
        assert!(exacta_wire::batch::validate_produced(&owned).is_ok());
        assert_eq!(exacta_wire::batch::Batches::new(&owned).count(), 1);
    }
});
