//! The cluster metadata the Raft quorum agrees on, and the commands that change it. Applying
//! a command is deterministic and never fails the state machine: a command that does not
//! fit the current state (a topic that exists, a stale leader epoch) is answered with an
//! error and changes nothing, on every node alike.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::NodeId;

/// Producer ids are handed to brokers in blocks of this many.
pub const PRODUCER_ID_BLOCK: i64 = 1000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Broker {
    /// The Kafka listener clients are given (`--advertised-listener`).
    pub address: String,
    /// Chosen anew by the broker at each start: once its own metadata shows it, the
    /// broker knows it has applied everything committed before it started.
    #[serde(default)]
    pub incarnation: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    pub replicas: Vec<NodeId>,
    pub leader: NodeId,
    /// Raised by every leader change (KIP-101/320 truncation and fencing).
    pub leader_epoch: i32,
    /// The in-sync replicas: where the high watermark is computed and leaders are chosen.
    pub isr: Vec<NodeId>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topic {
    /// The topic id (a UUID) every broker gives the topic.
    #[serde(default)]
    pub id: String,
    pub partitions: Vec<PartitionState>,
    pub configs: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    pub brokers: BTreeMap<NodeId, Broker>,
    pub topics: BTreeMap<String, Topic>,
    /// The first producer id of the next block to hand out.
    pub next_producer_id: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    RegisterBroker {
        id: NodeId,
        address: String,
        #[serde(default)]
        incarnation: u64,
    },
    /// Partition `i` on `replicas[i]`, led by its first replica, all of them in sync.
    CreateTopic {
        name: String,
        #[serde(default)]
        id: String,
        replicas: Vec<Vec<NodeId>>,
        configs: BTreeMap<String, String>,
    },
    DeleteTopic {
        name: String,
    },
    /// A new leader and ISR for a partition, only if the partition is still at
    /// `leader_epoch` (a decision made on stale state is refused).
    ChangePartition {
        topic: String,
        partition: usize,
        leader_epoch: i32,
        leader: NodeId,
        isr: Vec<NodeId>,
    },
    /// ISR changes that keep the leader (shrink and expand), same epoch rule.
    ChangeIsr {
        topic: String,
        partition: usize,
        leader_epoch: i32,
        isr: Vec<NodeId>,
    },
    AllocateProducerIds {
        broker: NodeId,
    },
    /// Broker `id` stops serving (its session expired, or a controlled shutdown): every
    /// partition it leads moves to another ISR member (preferring those in `alive`, in
    /// replica order) under a new leader epoch, and it leaves every ISR it shares with
    /// others. A partition whose only in-sync replica it is stays as it is (offline until
    /// it returns: no unclean election).
    FenceBroker {
        id: NodeId,
        alive: Vec<NodeId>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Done,
    /// How many partitions a fencing changed.
    Moved(usize),
    LeaderEpoch(i32),
    ProducerIds {
        first: i64,
        count: i64,
    },
    Refused(String),
}

impl PartitionState {
    /// Takes broker ID out of this partition's leadership and ISR (see
    /// [`Command::FenceBroker`]); whether anything changed.
    fn fence(&mut self, id: NodeId, alive: &[NodeId]) -> bool {
        if !self.isr.contains(&id) || self.isr.len() == 1 {
            return false;
        }
        let isr: Vec<NodeId> = self.isr.iter().copied().filter(|&b| b != id).collect();
        if self.leader == id {
            let next = self
                .replicas
                .iter()
                .copied()
                .filter(|b| isr.contains(b))
                .min_by_key(|b| !alive.contains(b));
            let Some(next) = next else {
                return false;
            };
            self.leader = next;
            self.leader_epoch += 1;
        }
        self.isr = isr;
        true
    }
}

impl Metadata {
    /// The partitions led by LEADER, or with BROKER in their ISR beside others.
    pub fn partitions_of(
        &self,
        broker: NodeId,
    ) -> impl Iterator<Item = (&str, usize, &PartitionState)> {
        self.topics.iter().flat_map(move |(name, t)| {
            t.partitions
                .iter()
                .enumerate()
                .filter(move |(_, p)| {
                    p.leader == broker || (p.isr.contains(&broker) && p.isr.len() > 1)
                })
                .map(move |(i, p)| (name.as_str(), i, p))
        })
    }

    pub fn apply(&mut self, command: &Command) -> Response {
        match self.try_apply(command) {
            Ok(r) => r,
            Err(reason) => Response::Refused(reason),
        }
    }

    fn try_apply(&mut self, command: &Command) -> Result<Response, String> {
        match command {
            Command::RegisterBroker {
                id,
                address,
                incarnation,
            } => {
                self.brokers.insert(
                    *id,
                    Broker {
                        address: address.clone(),
                        incarnation: *incarnation,
                    },
                );
                Ok(Response::Done)
            }
            Command::CreateTopic {
                name,
                id,
                replicas,
                configs,
            } => {
                if self.topics.contains_key(name) {
                    return Err(format!("topic {name} already exists"));
                }
                if replicas.is_empty() {
                    return Err("a topic needs at least one partition".into());
                }
                let mut partitions = Vec::with_capacity(replicas.len());
                for (i, r) in replicas.iter().enumerate() {
                    let unknown: Vec<_> =
                        r.iter().filter(|b| !self.brokers.contains_key(b)).collect();
                    let mut distinct = r.clone();
                    distinct.sort_unstable();
                    distinct.dedup();
                    if r.is_empty() || !unknown.is_empty() || distinct.len() != r.len() {
                        return Err(format!(
                            "partition {i}: replicas {r:?} must be distinct registered brokers"
                        ));
                    }
                    partitions.push(PartitionState {
                        replicas: r.clone(),
                        leader: r[0],
                        leader_epoch: 0,
                        isr: r.clone(),
                    });
                }
                self.topics.insert(
                    name.clone(),
                    Topic {
                        id: id.clone(),
                        partitions,
                        configs: configs.clone(),
                    },
                );
                Ok(Response::Done)
            }
            Command::DeleteTopic { name } => match self.topics.remove(name) {
                Some(_) => Ok(Response::Done),
                None => Err(format!("topic {name} does not exist")),
            },
            Command::ChangePartition {
                topic,
                partition,
                leader_epoch,
                leader,
                isr,
            } => {
                let p = self.partition(topic, *partition, *leader_epoch)?;
                if !isr.contains(leader) || isr.iter().any(|b| !p.replicas.contains(b)) {
                    return Err(format!(
                        "leader {leader} and ISR {isr:?} must be replicas of {topic}/{partition}, the leader in the ISR"
                    ));
                }
                p.leader = *leader;
                p.isr = isr.clone();
                p.leader_epoch += 1;
                Ok(Response::LeaderEpoch(p.leader_epoch))
            }
            Command::ChangeIsr {
                topic,
                partition,
                leader_epoch,
                isr,
            } => {
                let p = self.partition(topic, *partition, *leader_epoch)?;
                if !isr.contains(&p.leader) || isr.iter().any(|b| !p.replicas.contains(b)) {
                    return Err(format!(
                        "ISR {isr:?} of {topic}/{partition} must hold its leader and only replicas"
                    ));
                }
                p.isr = isr.clone();
                Ok(Response::LeaderEpoch(p.leader_epoch))
            }
            Command::FenceBroker { id, alive } => {
                let mut moved = 0;
                for topic in self.topics.values_mut() {
                    for p in &mut topic.partitions {
                        moved += usize::from(p.fence(*id, alive));
                    }
                }
                Ok(Response::Moved(moved))
            }
            Command::AllocateProducerIds { broker } => {
                if !self.brokers.contains_key(broker) {
                    return Err(format!("broker {broker} is not registered"));
                }
                let first = self.next_producer_id;
                self.next_producer_id += PRODUCER_ID_BLOCK;
                Ok(Response::ProducerIds {
                    first,
                    count: PRODUCER_ID_BLOCK,
                })
            }
        }
    }

    fn partition(
        &mut self,
        topic: &str,
        partition: usize,
        leader_epoch: i32,
    ) -> Result<&mut PartitionState, String> {
        let p = self
            .topics
            .get_mut(topic)
            .and_then(|t| t.partitions.get_mut(partition))
            .ok_or_else(|| format!("{topic}/{partition} does not exist"))?;
        if p.leader_epoch != leader_epoch {
            return Err(format!(
                "{topic}/{partition} is at leader epoch {}, not {leader_epoch}",
                p.leader_epoch
            ));
        }
        Ok(p)
    }
}

/// Metadata with brokers 1..=COUNT registered (for tests).
#[cfg(test)]
pub(crate) fn registered(count: NodeId) -> Metadata {
    let mut m = Metadata::default();
    for id in 1..=count {
        m.apply(&Command::RegisterBroker {
            id,
            address: format!("127.0.0.{id}:9092"),
            incarnation: 0,
        });
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_brokers() -> Metadata {
        registered(3)
    }

    #[test]
    fn topics_need_distinct_registered_replicas() {
        let mut m = with_brokers();
        let create = |replicas| Command::CreateTopic {
            name: "t".into(),
            id: String::new(),
            replicas,
            configs: BTreeMap::new(),
        };
        assert!(matches!(
            m.apply(&create(vec![vec![1, 4]])),
            Response::Refused(_)
        ));
        assert!(matches!(
            m.apply(&create(vec![vec![1, 1]])),
            Response::Refused(_)
        ));
        assert_eq!(
            m.apply(&create(vec![vec![1, 2, 3], vec![2, 3, 1]])),
            Response::Done
        );
        assert!(matches!(
            m.apply(&create(vec![vec![1]])),
            Response::Refused(_)
        ));
        assert_eq!(m.topics["t"].partitions[1].leader, 2);
    }

    #[test]
    fn leader_changes_raise_the_epoch_and_refuse_stale_decisions() {
        let mut m = with_brokers();
        m.apply(&Command::CreateTopic {
            name: "t".into(),
            id: String::new(),
            replicas: vec![vec![1, 2, 3]],
            configs: BTreeMap::new(),
        });
        let change = |epoch, leader, isr: Vec<NodeId>| Command::ChangePartition {
            topic: "t".into(),
            partition: 0,
            leader_epoch: epoch,
            leader,
            isr,
        };
        assert_eq!(m.apply(&change(0, 2, vec![2, 3])), Response::LeaderEpoch(1));
        // Decided on epoch 0, which is gone: refused, nothing changes.
        assert!(matches!(
            m.apply(&change(0, 3, vec![3])),
            Response::Refused(_)
        ));
        // A leader outside the ISR is refused.
        assert!(matches!(
            m.apply(&change(1, 1, vec![2, 3])),
            Response::Refused(_)
        ));
        let p = &m.topics["t"].partitions[0];
        assert_eq!(
            (p.leader, p.leader_epoch, p.isr.clone()),
            (2, 1, vec![2, 3])
        );
    }

    #[test]
    fn fencing_moves_leaders_to_live_isr_members_and_never_empties_an_isr() {
        let mut m = with_brokers();
        m.apply(&Command::CreateTopic {
            name: "t".into(),
            id: String::new(),
            replicas: vec![vec![1, 2, 3], vec![2, 3, 1], vec![1]],
            configs: BTreeMap::new(),
        });
        // 2 is dead too: partition 0 goes to 3, which is alive.
        let fence = |id, alive: Vec<NodeId>| Command::FenceBroker { id, alive };
        assert_eq!(m.apply(&fence(1, vec![3])), Response::Moved(2));
        let p = &m.topics["t"].partitions;
        assert_eq!(
            (p[0].leader, p[0].leader_epoch, p[0].isr.clone()),
            (3, 1, vec![2, 3])
        );
        // Partition 1 keeps its leader and epoch; 1 only leaves its ISR.
        assert_eq!(
            (p[1].leader, p[1].leader_epoch, p[1].isr.clone()),
            (2, 0, vec![2, 3])
        );
        // Partition 2 has no other replica: unchanged, offline until 1 returns.
        assert_eq!((p[2].leader, p[2].isr.clone()), (1, vec![1]));
        assert_eq!(m.partitions_of(1).count(), 1);
        // Fencing again changes nothing.
        assert_eq!(m.apply(&fence(1, vec![3])), Response::Moved(0));
    }

    #[test]
    fn producer_id_blocks_never_overlap() {
        let mut m = with_brokers();
        let a = m.apply(&Command::AllocateProducerIds { broker: 1 });
        let b = m.apply(&Command::AllocateProducerIds { broker: 2 });
        assert_eq!(
            a,
            Response::ProducerIds {
                first: 0,
                count: PRODUCER_ID_BLOCK
            }
        );
        assert_eq!(
            b,
            Response::ProducerIds {
                first: PRODUCER_ID_BLOCK,
                count: PRODUCER_ID_BLOCK
            }
        );
    }
}
