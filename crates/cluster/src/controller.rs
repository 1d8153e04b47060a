//! The controller: what the quorum leader does besides committing commands, as KRaft's
//! active controller does. Every broker heartbeats to the leader every
//! [`HEARTBEAT_INTERVAL`]; a broker not heard from for the session timeout is fenced
//! ([`Command::FenceBroker`]): the partitions it leads move to live in-sync replicas under
//! new leader epochs, and it leaves the ISRs it shares. A node that just became leader
//! counts every broker as heard at that moment, so a change of leader fences nobody by
//! itself. Also here: where a new topic's replicas go ([`place`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::metadata::{Command, Metadata};
use crate::NodeId;

/// How often brokers heartbeat to the quorum leader.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);

/// The brokers' sessions as the leader sees them.
#[derive(Clone, Default)]
pub struct Sessions {
    heard: Arc<Mutex<HashMap<NodeId, Instant>>>,
}

impl Sessions {
    /// Broker ID heartbeated now.
    pub fn heard(&self, id: NodeId) -> bool {
        self.lock().insert(id, Instant::now());
        true
    }

    /// Count every broker as heard now (this node just became the leader).
    pub fn restart(&self, brokers: impl IntoIterator<Item = NodeId>) {
        let now = Instant::now();
        let mut heard = self.lock();
        heard.clear();
        heard.extend(brokers.into_iter().map(|b| (b, now)));
    }

    /// Whether broker ID was heard within TIMEOUT (a broker never heard is not alive).
    pub fn alive(&self, id: NodeId, timeout: Duration) -> bool {
        self.lock().get(&id).is_some_and(|t| t.elapsed() <= timeout)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, Instant>> {
        self.heard.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The fencings the leader (ME) should propose now: one per registered broker whose
/// session expired and that still leads a partition or sits in a shared ISR.
pub fn fencings(metadata: &Metadata, me: NodeId, alive: impl Fn(NodeId) -> bool) -> Vec<Command> {
    let live: Vec<NodeId> = metadata
        .brokers
        .keys()
        .copied()
        .filter(|&b| b == me || alive(b))
        .collect();
    metadata
        .brokers
        .keys()
        .copied()
        .filter(|b| !live.contains(b))
        .filter(|&b| metadata.partitions_of(b).next().is_some())
        .map(|id| Command::FenceBroker {
            id,
            alive: live.clone(),
        })
        .collect()
}

/// Replicas for PARTITIONS partitions with REPLICATION_FACTOR copies each over BROKERS
/// (sorted ids), partition `i` starting at broker `START + i` so that leaders spread.
pub fn place(
    brokers: &[NodeId],
    partitions: usize,
    replication_factor: usize,
    start: usize,
) -> Vec<Vec<NodeId>> {
    (0..partitions)
        .map(|i| {
            (0..replication_factor)
                .map(|j| brokers[(start + i + j) % brokers.len()])
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn placement_spreads_leaders_and_never_repeats_a_broker() {
        let placed = place(&[1, 2, 3], 4, 3, 1);
        assert_eq!(
            placed,
            vec![vec![2, 3, 1], vec![3, 1, 2], vec![1, 2, 3], vec![2, 3, 1]]
        );
        assert_eq!(place(&[1, 2, 3], 2, 1, 0), vec![vec![1], vec![2]]);
    }

    #[test]
    fn only_expired_brokers_holding_partitions_are_fenced() {
        let mut m = crate::metadata::registered(3);
        m.apply(&Command::CreateTopic {
            name: "t".into(),
            id: String::new(),
            replicas: vec![vec![2, 3]],
            configs: BTreeMap::new(),
        });
        // 1 is silent but holds nothing; 3 is silent and in the ISR.
        let fenced = fencings(&m, 2, |b| b == 2);
        assert_eq!(
            fenced,
            vec![Command::FenceBroker {
                id: 3,
                alive: vec![2]
            }]
        );
        // The leader itself is never fenced, whatever its own session says.
        assert!(fencings(&m, 2, |b| b == 3).is_empty());
    }
}
