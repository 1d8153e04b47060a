//! One module per Kafka API. [`dispatch`] does a request's synchronous work at once (so
//! appends happen in arrival order) and returns a [`Reply`] future for the part that may
//! wait (an fsync for acks=all, a long-polling fetch). Work that fsyncs in place (topic
//! admin, an append that rolls a segment) or reads the log (Fetch) runs through
//! [`crate::blocking`], so it does not stall the other tasks of its async worker.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use exacta_wire::frame::{encode_response, Request};
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::{Encodable, StrBytes};

use crate::Node;

pub mod add_offsets_to_txn;
pub mod add_partitions_to_txn;
pub mod api_versions;
pub mod cluster_metadata;
pub mod cluster_refusals;
pub mod configs;
pub mod consumer_group_describe;
pub mod consumer_group_heartbeat;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_groups;
pub mod describe_log_dirs;
pub mod describe_producers;
pub mod describe_topic_partitions;
pub mod describe_transactions;
pub mod end_txn;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod list_transactions;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod replica_fetch;
pub mod single_node;
pub mod sync_group;
pub mod txn_offset_commit;
pub mod write_txn_markers;

/// The encoded response frame, `None` when the API sends none (acks=0 produce), or an
/// error that closes the connection.
pub type ReplyResult = Result<Option<Bytes>, String>;
pub type Reply = Pin<Box<dyn Future<Output = ReplyResult> + Send>>;

/// What a handler needs to know about the request it answers.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    pub api_key: ApiKey,
    pub version: i16,
    pub correlation_id: i32,
}

impl Ctx {
    pub fn encode<T: Encodable>(&self, body: &T) -> ReplyResult {
        encode_response(self.api_key, self.version, self.correlation_id, body)
            .map(Some)
            .map_err(|e| {
                format!(
                    "encoding {:?} v{} response: {e}",
                    self.api_key, self.version
                )
            })
    }

    fn ready<T: Encodable>(&self, body: &T) -> Reply {
        let result = self.encode(body);
        Box::pin(std::future::ready(result))
    }
}

/// Routes a decoded request to its handler.
pub fn dispatch(
    node: &Arc<Node>,
    peer: SocketAddr,
    header: &RequestHeader,
    request: Request,
) -> Reply {
    let ctx = Ctx {
        api_key: ApiKey::try_from(header.request_api_key).unwrap_or(ApiKey::ApiVersions),
        version: header.request_api_version,
        correlation_id: header.correlation_id,
    };
    if let Some(cluster) = &node.cluster {
        match request {
            Request::Metadata(r) => {
                let cluster = Arc::clone(cluster);
                return later(node, ctx, move |n| async move {
                    cluster_metadata::handle(&n, &cluster, r, ctx.version).await
                });
            }
            Request::CreateTopics(r) => {
                let cluster = Arc::clone(cluster);
                return later(node, ctx, move |n| async move {
                    create_topics::handle_cluster(&n.broker, &cluster, r, ctx.version).await
                });
            }
            Request::DeleteTopics(r) => {
                let cluster = Arc::clone(cluster);
                return later(node, ctx, move |n| async move {
                    delete_topics::handle_cluster(&n.broker, &cluster, r, ctx.version).await
                });
            }
            Request::CreatePartitions(r) => {
                return ctx.ready(&cluster_refusals::create_partitions(r))
            }
            Request::AlterConfigs(r) => return ctx.ready(&cluster_refusals::alter_configs(r)),
            Request::IncrementalAlterConfigs(r) => {
                return ctx.ready(&cluster_refusals::incremental_alter_configs(r))
            }
            Request::DeleteRecords(r) => return ctx.ready(&cluster_refusals::delete_records(r)),
            other => return dispatch_common(node, peer, header, other, ctx),
        }
    }
    dispatch_common(node, peer, header, request, ctx)
}

fn dispatch_common(
    node: &Arc<Node>,
    peer: SocketAddr,
    header: &RequestHeader,
    request: Request,
    ctx: Ctx,
) -> Reply {
    let broker = &node.broker;
    let groups = &node.groups;
    match request {
        Request::ApiVersions(_) => ctx.ready(&api_versions::handle(ctx.version)),
        Request::Metadata(r) => ctx.ready(&metadata::handle(broker, r, ctx.version)),
        Request::OffsetForLeaderEpoch(r) => ctx.ready(&offset_for_leader_epoch::handle(broker, r)),
        Request::Produce(r) => produce::handle(node, r, ctx),
        Request::Fetch(r) => fetch::handle(broker, r, ctx),
        Request::ListOffsets(r) => ctx.ready(&list_offsets::handle(broker, r, ctx.version)),
        Request::CreateTopics(r) => ctx.ready(&crate::blocking(|| {
            create_topics::handle(broker, r, ctx.version)
        })),
        Request::DeleteTopics(r) => ctx.ready(&crate::blocking(|| {
            delete_topics::handle(broker, r, ctx.version)
        })),
        Request::CreatePartitions(r) => {
            ctx.ready(&crate::blocking(|| create_partitions::handle(broker, r)))
        }
        Request::DescribeConfigs(r) => ctx.ready(&configs::describe(broker, r)),
        Request::DeleteRecords(r) => ctx.ready(&delete_records::handle(broker, r)),
        Request::DescribeLogDirs(r) => {
            ctx.ready(&crate::blocking(|| describe_log_dirs::handle(broker, r)))
        }
        Request::AlterConfigs(r) => ctx.ready(&crate::blocking(|| configs::alter_all(broker, r))),
        Request::IncrementalAlterConfigs(r) => {
            ctx.ready(&crate::blocking(|| configs::alter(broker, r)))
        }
        Request::DescribeCluster(r) => ctx.ready(&describe_cluster::handle(node, r)),
        Request::InitProducerId(r) => later(node, ctx, move |n| async move {
            init_producer_id::handle(&n, r, ctx.version).await
        }),
        Request::AddPartitionsToTxn(r) => later(node, ctx, move |n| async move {
            add_partitions_to_txn::handle(&n, r, ctx.version).await
        }),
        Request::AddOffsetsToTxn(r) => later(node, ctx, move |n| async move {
            add_offsets_to_txn::handle(&n, r, ctx.version).await
        }),
        Request::EndTxn(r) => later(node, ctx, move |n| async move {
            end_txn::handle(&n, r, ctx.version).await
        }),
        Request::TxnOffsetCommit(r) => later(node, ctx, move |n| async move {
            txn_offset_commit::handle(&n, r, ctx.version).await
        }),
        Request::DescribeTopicPartitions(r) => {
            ctx.ready(&describe_topic_partitions::handle(broker, r))
        }
        Request::ElectLeaders(r) => ctx.ready(&single_node::elect_leaders(broker, r)),
        Request::AlterPartitionReassignments(r) => {
            ctx.ready(&single_node::alter_partition_reassignments(broker, r))
        }
        Request::ListPartitionReassignments(r) => {
            ctx.ready(&single_node::list_partition_reassignments(r))
        }
        Request::DescribeAcls(r) => ctx.ready(&single_node::describe_acls(r)),
        Request::CreateAcls(r) => ctx.ready(&single_node::create_acls(r)),
        Request::DeleteAcls(r) => ctx.ready(&single_node::delete_acls(r)),
        Request::DescribeProducers(r) => ctx.ready(&describe_producers::handle(broker, r)),
        Request::ListTransactions(r) => ctx.ready(&list_transactions::handle(node, r)),
        Request::DescribeTransactions(r) => ctx.ready(&describe_transactions::handle(node, r)),
        Request::FindCoordinator(r) => ctx.ready(&find_coordinator::handle(
            broker,
            node.cluster.as_deref(),
            r,
            ctx.version,
        )),
        Request::Heartbeat(r) => ctx.ready(&heartbeat::handle(groups, r)),
        Request::ListGroups(r) => ctx.ready(&list_groups::handle(groups, r)),
        Request::DescribeGroups(r) => ctx.ready(&describe_groups::handle(groups, r, ctx.version)),
        Request::OffsetFetch(r) => ctx.ready(&offset_fetch::handle(groups, r, ctx.version)),
        Request::JoinGroup(r) => {
            let node = Arc::clone(node);
            let client_id = header.client_id.as_deref().unwrap_or_default().to_string();
            let host = format!("/{}", peer.ip());
            Box::pin(async move {
                let response =
                    join_group::handle(&node.groups, r, ctx.version, client_id, host).await;
                ctx.encode(&response)
            })
        }
        Request::ConsumerGroupHeartbeat(r) => {
            let node = Arc::clone(node);
            let client_id = header.client_id.as_deref().unwrap_or_default().to_string();
            let host = format!("/{}", peer.ip());
            Box::pin(async move {
                let response = consumer_group_heartbeat::handle(
                    &node.broker,
                    &node.groups,
                    r,
                    ctx.version,
                    client_id,
                    host,
                )
                .await;
                ctx.encode(&response)
            })
        }
        Request::ConsumerGroupDescribe(r) => {
            ctx.ready(&consumer_group_describe::handle(broker, groups, r))
        }
        Request::SyncGroup(r) => later(node, ctx, |n| async move {
            sync_group::handle(&n.groups, r).await
        }),
        Request::LeaveGroup(r) => later(node, ctx, move |n| async move {
            leave_group::handle(&n.groups, r, ctx.version).await
        }),
        Request::OffsetCommit(r) => later(node, ctx, move |n| async move {
            offset_commit::handle(&n.broker, &n.groups, r, ctx.version).await
        }),
        Request::OffsetDelete(r) => later(node, ctx, |n| async move {
            offset_delete::handle(&n.groups, r).await
        }),
        Request::DeleteGroups(r) => later(node, ctx, |n| async move {
            delete_groups::handle(&n.groups, r).await
        }),
        Request::WriteTxnMarkers(r) => later(node, ctx, |n| async move {
            write_txn_markers::handle(&n, r).await
        }),
    }
}

/// A reply computed by an async handler that needs the node.
fn later<T, F, Fut>(node: &Arc<Node>, ctx: Ctx, handler: F) -> Reply
where
    T: Encodable + Send + 'static,
    F: FnOnce(Arc<Node>) -> Fut + Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    let node = Arc::clone(node);
    Box::pin(async move {
        let response = handler(node).await;
        ctx.encode(&response)
    })
}

/// `Some(message)` for a response's nullable error message.
pub(crate) fn message(text: impl Into<String>) -> Option<StrBytes> {
    Some(StrBytes::from_string(text.into()))
}
