//! Coordinators: the parts of the broker that decide cluster-wide facts (which producer
//! id a client gets; later, group membership and transaction outcomes) and must never
//! forget them across restarts.
//!
//! - [`producer_ids`]: producer ids handed out from durable blocks.
//! - [`group`]: the consumer-group coordinator, a state machine over `__consumer_offsets`.
//! - [`consumer`]: its groups of the new consumer protocol (KIP-848), server-side assigned.
//! - [`pattern`]: bounded whole-string regular expressions from clients.
//! - [`txn`]: the transaction coordinator, a state machine over `__transaction_state`.

pub mod consumer;
pub mod group;
pub mod pattern;
pub mod producer_ids;
pub mod txn;
