//! OffsetFetch (key 9): committed offsets of a group (v0-v7) or of several groups (v8+);
//! a null topic list means every committed partition. Partitions without a commit get -1.

use exacta_types::ErrorCode;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::groups::GroupRuntime;

use exacta_coordinator::group::OffsetValue;

type Committed = Vec<(String, i32, Option<OffsetValue>)>;
/// Committed offsets grouped by topic: (topic, [(partition, offset)]).
type ByTopic = Vec<(String, Vec<(i32, Option<OffsetValue>)>)>;

fn fetch(
    groups: &GroupRuntime,
    group: &str,
    wanted: Option<Vec<(String, Vec<i32>)>>,
) -> Result<Committed, ErrorCode> {
    groups.with_group(group, |c| c.fetch_offsets(group, wanted.as_deref()))
}

/// Groups (topic, partition, value) rows by topic, keeping first-seen order.
fn by_topic(rows: Committed) -> ByTopic {
    let mut out: Vec<(String, Vec<_>)> = Vec::new();
    for (t, p, v) in rows {
        match out.iter_mut().find(|(name, _)| *name == t) {
            Some((_, ps)) => ps.push((p, v)),
            None => out.push((t, vec![(p, v)])),
        }
    }
    out
}

/// UNSTABLE_OFFSET_COMMIT when the client asks for stable offsets and an open transaction
/// holds a commit for the partition (it would otherwise read an offset about to change).
fn stability(
    groups: &GroupRuntime,
    require_stable: bool,
    group: &str,
    topic: &str,
    partition: i32,
) -> i16 {
    if require_stable && groups.has_pending_txn_offset(group, topic, partition) {
        ErrorCode::UnstableOffsetCommit.code()
    } else {
        ErrorCode::None.code()
    }
}

pub fn handle(
    groups: &GroupRuntime,
    request: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    let require_stable = request.require_stable;
    let mut response = OffsetFetchResponse::default();
    if version >= 8 {
        for g in request.groups {
            let wanted = g.topics.map(|ts| {
                ts.into_iter()
                    .map(|t| (t.name.to_string(), t.partition_indexes))
                    .collect()
            });
            let mut group = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
            // v9+: a member of a new-protocol group must be the current incarnation.
            let member = g.member_id.as_deref();
            let checked = groups
                .with_group(&g.group_id, |c| {
                    c.check_consumer_fetch(&g.group_id, member, g.member_epoch)
                })
                .and_then(|member_ok| member_ok);
            let rows = match checked.and_then(|()| fetch(groups, &g.group_id, wanted)) {
                Ok(rows) => rows,
                Err(e) => {
                    response.groups.push(group.with_error_code(e.code()));
                    continue;
                }
            };
            for (topic, parts) in by_topic(rows) {
                group.topics.push(
                    OffsetFetchResponseTopics::default()
                        .with_name(TopicName(StrBytes::from_string(topic.clone())))
                        .with_partitions(
                            parts
                                .into_iter()
                                .map(|(p, v)| {
                                    OffsetFetchResponsePartitions::default()
                                        .with_error_code(stability(
                                            groups,
                                            require_stable,
                                            &g.group_id,
                                            &topic,
                                            p,
                                        ))
                                        .with_partition_index(p)
                                        .with_committed_offset(v.as_ref().map_or(-1, |v| v.offset))
                                        .with_committed_leader_epoch(
                                            v.as_ref().map_or(-1, |v| v.leader_epoch),
                                        )
                                        .with_metadata(Some(StrBytes::from_string(
                                            v.and_then(|v| v.metadata).unwrap_or_default(),
                                        )))
                                })
                                .collect(),
                        ),
                );
            }
            response.groups.push(group);
        }
        return response;
    }
    let wanted = request.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.to_string(), t.partition_indexes))
            .collect()
    });
    let rows = match fetch(groups, &request.group_id, wanted) {
        Ok(rows) => rows,
        Err(code) => return response.with_error_code(code.code()),
    };
    for (topic, parts) in by_topic(rows) {
        response.topics.push(
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.clone())))
                .with_partitions(
                    parts
                        .into_iter()
                        .map(|(p, v)| {
                            OffsetFetchResponsePartition::default()
                                .with_partition_index(p)
                                .with_committed_offset(v.as_ref().map_or(-1, |v| v.offset))
                                .with_committed_leader_epoch(
                                    v.as_ref().map_or(-1, |v| v.leader_epoch),
                                )
                                .with_metadata(Some(StrBytes::from_string(
                                    v.and_then(|v| v.metadata).unwrap_or_default(),
                                )))
                                .with_error_code(stability(
                                    groups,
                                    require_stable,
                                    &request.group_id,
                                    &topic,
                                    p,
                                ))
                        })
                        .collect(),
                ),
        );
    }
    response
}
