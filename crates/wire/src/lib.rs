//! The Kafka wire protocol without I/O.
//!
//! Message codecs come from the `kafka-protocol` crate (generated from Kafka's own JSON
//! message definitions). This crate adds what the broker needs around them: the table of
//! API versions Exacta serves ([`versions`]), request framing rules ([`frame`]) and a
//! zero-copy view of a v2 `RecordBatch` that validates what a producer sent ([`batch`]), and the records inside a stored batch
//! with a rebuilt batch holding some of them, for the log cleaner ([`rewrite`]), decompressed
//! within a bound ([`inflate`]).

pub mod batch;
pub mod frame;
pub mod inflate;
pub mod rewrite;
pub mod versions;

pub use kafka_protocol;
