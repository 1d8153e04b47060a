//! The controller: what the quorum leader does besides committing commands, as KRaft's
//! active controller does. Every broker heartbeats to the leader every
//! [`HEARTBEAT_INTERVAL`]; a broker not heard from for the session timeout is fenced
//! ([`Command::FenceBroker`]): the partitions it leads move to live in-sync replicas under
//! new leader epochs, and it leaves the ISRs it shares. A node that just became leader
//! gives every broker [`RECONNECT_GRACE`] to heartbeat to it (live brokers learn of the
//! new leader from its first append and heartbeat at their next tick), so a change of
//! leader fences only the brokers that are gone, the old leader among them if it died. A broker whose heartbeat connection closes (its process died: the kernel closes
//! its sockets) and that does not heartbeat again within [`RECONNECT_GRACE`] is fenced
//! then, without waiting for its whole session: a live broker that only dropped its
//! connection reconnects at its next heartbeat, well within the grace. Also here: where a
//! new topic's replicas go ([`place`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::metadata::{Command, Metadata};
use crate::NodeId;

/// How often brokers heartbeat to the quorum leader.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);

/// How long a broker whose heartbeat connection closed has to heartbeat again.
pub const RECONNECT_GRACE: Duration = Duration::from_millis(250);

/// The brokers' sessions as the leader sees them.
#[derive(Clone, Default)]
pub struct Sessions {
    heard: Arc<Mutex<HashMap<NodeId, Heard>>>,
}

#[derive(Clone, Copy)]
struct Heard {
    last: Instant,
    /// When its heartbeat connection closed, if that came after the last heartbeat.
    disconnected: Option<Instant>,
}

impl Heard {
    fn now() -> Self {
        Heard {
            last: Instant::now(),
            disconnected: None,
        }
    }
}

impl Sessions {
    /// Broker ID heartbeated now.
    pub fn heard(&self, id: NodeId) -> bool {
        self.lock().insert(id, Heard::now());
        true
    }

    /// The connection broker ID heartbeated on closed.
    pub fn disconnected(&self, id: NodeId) {
        if let Some(h) = self.lock().get_mut(&id) {
            h.disconnected = Some(Instant::now());
        }
    }

    /// Count every broker as heard now (this node just became the leader).
    pub fn restart(&self, brokers: impl IntoIterator<Item = NodeId>) {
        let mut heard = self.lock();
        heard.clear();
        let now = Instant::now();
        heard.extend(brokers.into_iter().map(|b| {
            (
                b,
                Heard {
                    last: now,
                    disconnected: Some(now),
                },
            )
        }));
    }

    /// Whether broker ID was heard within TIMEOUT and has not lost its heartbeat
    /// connection for longer than [`RECONNECT_GRACE`] (a broker never heard is not alive).
    pub fn alive(&self, id: NodeId, timeout: Duration) -> bool {
        self.lock().get(&id).is_some_and(|h| {
            h.last.elapsed() <= timeout
                && h.disconnected
                    .is_none_or(|d| d.elapsed() <= RECONNECT_GRACE)
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, Heard>> {
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
    fn a_broker_whose_heartbeat_connection_closed_has_a_short_grace() {
        let sessions = Sessions::default();
        let long = Duration::from_secs(60);
        sessions.heard(1);
        sessions.heard(2);
        sessions.disconnected(1);
        assert!(sessions.alive(1, long), "within the grace");
        std::thread::sleep(RECONNECT_GRACE + Duration::from_millis(50));
        assert!(
            !sessions.alive(1, long),
            "gone: fenced long before its session ends"
        );
        assert!(sessions.alive(2, long));
        // A live broker that reconnects and heartbeats is alive again.
        sessions.heard(1);
        assert!(sessions.alive(1, long));
        // A new leader gives every broker the grace to heartbeat to it.
        sessions.restart([1, 2]);
        sessions.heard(2);
        std::thread::sleep(RECONNECT_GRACE + Duration::from_millis(50));
        assert!(!sessions.alive(1, long));
        assert!(sessions.alive(2, long));
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
