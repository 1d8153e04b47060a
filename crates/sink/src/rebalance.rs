//! Rebalances: the consumer context whose callback (run by librdkafka inside `poll`, on the
//! sink's thread) claims newly assigned partitions in the offsets table and starts them
//! at the stored offsets, and commits (or drops) a revoked partition's batch in flight
//! before releasing it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tracing::{error, info, warn};

use crate::batch::Partition;
use crate::engine::Core;
use crate::offsets::NONE;
use crate::SinkError;

pub(crate) struct Ctx {
    pub(crate) core: Arc<Mutex<Core>>,
}

pub(crate) fn lock(core: &Mutex<Core>) -> MutexGuard<'_, Core> {
    core.lock().unwrap_or_else(|p| p.into_inner())
}

impl ClientContext for Ctx {}

impl ConsumerContext for Ctx {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let mut core = lock(&self.core);
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let partitions: Vec<Partition> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                match core.claim(&partitions) {
                    Ok(claims) => {
                        for ((t, p), c) in partitions.iter().zip(&claims) {
                            let at = match c.next {
                                NONE => Offset::Invalid, // Kafka's committed offset, or start_from
                                n => Offset::Offset(n),
                            };
                            let _ = tpl.set_partition_offset(t, *p, at);
                        }
                        core.assigned(&partitions, &claims);
                    }
                    Err(e) => core.fatal = Some(e),
                }
                let result = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(e) = result {
                    error!("assigning partitions failed: {e}");
                }
                let _ = consumer.resume(tpl);
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let revoked: HashSet<Partition> = partitions.into_iter().collect();
                // Finish the batch in flight (one attempt); a lost assignment is already
                // someone else's, and the owner token would refuse it anyway.
                if !consumer.assignment_lost() {
                    match core.flush(consumer, Some(&revoked), Some(1)) {
                        Ok(()) => {}
                        Err(e @ SinkError::BadRecord { .. }) => core.fatal = Some(e),
                        Err(e) => {
                            warn!("the batch in flight for revoked partitions is rolled back: {e}")
                        }
                    }
                }
                core.release(&revoked);
                let result = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = result {
                    error!("releasing partitions failed: {e}");
                }
                info!("released {} partitions", revoked.len());
            }
            other => {
                error!("rebalance failed: {other:?}");
                let all: HashSet<Partition> = core.owned.keys().cloned().collect();
                core.release(&all);
                let _ = consumer.unassign();
            }
        }
    }
}
