//! Any bytes as a record of `__consumer_offsets` or `__transaction_state` (the first byte
//! says where the key ends): decoding returns a record or an error, never panics; a
//! decoded record encodes and decodes to itself.
#![no_main]
use libfuzzer_sys::fuzz_target;

use exacta_coordinator::group::Record;
use exacta_coordinator::txn::TxnRecord;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let split = usize::from(split).min(rest.len());
    let (key, value) = rest.split_at(split);
    let value = (!value.is_empty()).then_some(value);
    if let Ok(record) = Record::from_key_value(key, value) {
        let (k, v) = record.to_key_value();
        assert_eq!(Record::from_key_value(&k, v.as_deref()).ok(), Some(record));
    }
    if let Ok(record) = TxnRecord::from_key_value(key, value) {
        let (k, v) = record.to_key_value();
        let again = TxnRecord::from_key_value(&k, v.as_deref()).expect("re-decodes");
        assert_eq!(again.transactional_id, record.transactional_id);
    }
});
