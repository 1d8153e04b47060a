//! Every served API at every served version against the real `exacta` binary: each request
//! (with a topic, partition and group where the API has them, so the answer carries real
//! fields) must get an answer that decodes at that version. A response field set for a
//! version that lacks it makes the broker's encoder fail and close the connection, which is
//! how older clients (kafkajs, aiokafka, Sarama, old Java) would meet it: ListOffsets v1-v3
//! did so until 2026-11-25.

mod common;

use bytes::Bytes;
use common::{start_with, Conn};
use exacta_wire::versions::SUPPORTED;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

const TOPIC: &str = "every";

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

fn topic() -> TopicName {
    TopicName(s(TOPIC))
}

fn group(name: &str) -> GroupId {
    GroupId(s(name))
}

fn txn_id() -> TransactionalId {
    TransactionalId(s("every-unknown-txn"))
}

/// One exchange of `key` at `version`; Err with what went wrong.
fn exchange(
    c: &mut Conn,
    key: ApiKey,
    v: i16,
    created: &create_topics_response::CreatableTopicResult,
) -> Result<(), String> {
    macro_rules! call {
        ($request:expr, $response:ty) => {
            c.try_call::<_, $response>(key, v, &$request).map(|_| ())
        };
    }
    match key {
        ApiKey::Produce => {
            use produce_request::*;
            let batch = exacta_wire::batch::build_batch(
                &[b"every".to_vec()],
                1_700_000_000_000,
                kafka_protocol::records::Compression::None,
            );
            // v13 names the topic by id only.
            let produced: ProduceResponse = c.try_call(
                key,
                v,
                &ProduceRequest::default()
                    .with_acks(-1)
                    .with_timeout_ms(5_000)
                    .with_topic_data(vec![TopicProduceData::default()
                        .with_name(topic())
                        .with_topic_id(created.topic_id)
                        .with_partition_data(vec![PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(Bytes::from(batch)))])]),
            )?;
            let code = produced.responses[0].partition_responses[0].error_code;
            if code != 0 {
                return Err(format!("produce answered {code}"));
            }
            Ok(())
        }
        ApiKey::Fetch => {
            use fetch_request::*;
            let mut t = FetchTopic::default().with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)]);
            if v >= 13 {
                t.topic_id = created.topic_id;
            } else {
                t.topic = topic();
            }
            call!(
                FetchRequest::default()
                    .with_max_wait_ms(0)
                    .with_min_bytes(1)
                    .with_max_bytes(if v >= 3 { 1 << 20 } else { i32::MAX })
                    .with_isolation_level(if v >= 4 { 1 } else { 0 })
                    .with_topics(vec![t]),
                FetchResponse
            )
        }
        ApiKey::ListOffsets => {
            use list_offsets_request::*;
            let partitions = [(0, -1), (1, -2), (2, 0)]
                .into_iter()
                .map(|(p, ts)| {
                    ListOffsetsPartition::default()
                        .with_partition_index(p)
                        .with_timestamp(ts)
                })
                .collect();
            call!(
                ListOffsetsRequest::default()
                    .with_replica_id(BrokerId(-1))
                    .with_isolation_level(if v >= 2 { 1 } else { 0 })
                    .with_topics(vec![ListOffsetsTopic::default()
                        .with_name(topic())
                        .with_partitions(partitions)]),
                ListOffsetsResponse
            )
        }
        ApiKey::Metadata => call!(
            MetadataRequest::default().with_topics(Some(vec![
                metadata_request::MetadataRequestTopic::default().with_name(Some(topic()))
            ])),
            MetadataResponse
        ),
        ApiKey::OffsetCommit => {
            use offset_commit_request::*;
            call!(
                OffsetCommitRequest::default()
                    .with_group_id(group("every-group"))
                    .with_generation_id_or_member_epoch(-1)
                    .with_topics(vec![OffsetCommitRequestTopic::default()
                        .with_name(topic())
                        .with_partitions(vec![OffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(1)
                            .with_committed_metadata(Some(s("m")))])]),
                OffsetCommitResponse
            )
        }
        ApiKey::OffsetFetch => {
            use offset_fetch_request::*;
            let request = if v >= 8 {
                OffsetFetchRequest::default()
                    .with_require_stable(true)
                    .with_groups(vec![OffsetFetchRequestGroup::default()
                        .with_group_id(group("every-group"))
                        .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                            .with_name(topic())
                            .with_partition_indexes(vec![0, 1])]))])
            } else {
                OffsetFetchRequest::default()
                    .with_group_id(group("every-group"))
                    .with_require_stable(v >= 7)
                    .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                        .with_name(topic())
                        .with_partition_indexes(vec![0, 1])]))
            };
            call!(request, OffsetFetchResponse)
        }
        ApiKey::FindCoordinator => {
            let request = if v >= 4 {
                FindCoordinatorRequest::default().with_coordinator_keys(vec![s("every-group")])
            } else {
                FindCoordinatorRequest::default().with_key(s("every-group"))
            };
            call!(request, FindCoordinatorResponse)
        }
        ApiKey::JoinGroup => call!(
            JoinGroupRequest::default()
                .with_group_id(group(&format!("every-join-{v}")))
                .with_session_timeout_ms(10_000)
                .with_rebalance_timeout_ms(if v >= 1 { 10_000 } else { -1 })
                .with_protocol_type(s("consumer"))
                .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
                )
                .with_name(s("range"))
                .with_metadata(Bytes::from_static(b"\0\0"))]),
            JoinGroupResponse
        ),
        ApiKey::Heartbeat => call!(
            HeartbeatRequest::default()
                .with_group_id(group("every-join-0"))
                .with_generation_id(1)
                .with_member_id(s("nobody")),
            HeartbeatResponse
        ),
        ApiKey::LeaveGroup => {
            let request = if v >= 3 {
                LeaveGroupRequest::default()
                    .with_group_id(group("every-join-0"))
                    .with_members(vec![
                        leave_group_request::MemberIdentity::default().with_member_id(s("nobody"))
                    ])
            } else {
                LeaveGroupRequest::default()
                    .with_group_id(group("every-join-0"))
                    .with_member_id(s("nobody"))
            };
            call!(request, LeaveGroupResponse)
        }
        ApiKey::SyncGroup => call!(
            SyncGroupRequest::default()
                .with_group_id(group("every-join-0"))
                .with_generation_id(1)
                .with_member_id(s("nobody"))
                .with_protocol_type((v >= 5).then(|| s("consumer")))
                .with_protocol_name((v >= 5).then(|| s("range"))),
            SyncGroupResponse
        ),
        ApiKey::DescribeGroups => call!(
            DescribeGroupsRequest::default()
                .with_groups(vec![group("every-join-0"), group("every-group")]),
            DescribeGroupsResponse
        ),
        ApiKey::ListGroups => call!(ListGroupsRequest::default(), ListGroupsResponse),
        ApiKey::ApiVersions => {
            let mut request = ApiVersionsRequest::default();
            if v >= 3 {
                request.client_software_name = s("exacta-test");
                request.client_software_version = s("1");
            }
            call!(request, ApiVersionsResponse)
        }
        ApiKey::CreateTopics => call!(
            CreateTopicsRequest::default()
                .with_timeout_ms(5_000)
                .with_topics(vec![create_topics_request::CreatableTopic::default()
                    .with_name(TopicName(s(&format!("every-created-{v}"))))
                    .with_num_partitions(1)
                    .with_replication_factor(1)]),
            CreateTopicsResponse
        ),
        ApiKey::DeleteTopics => {
            let name = TopicName(s(&format!("every-created-{v}")));
            let request = if v >= 6 {
                DeleteTopicsRequest::default().with_topics(vec![
                    delete_topics_request::DeleteTopicState::default().with_name(Some(name)),
                ])
            } else {
                DeleteTopicsRequest::default().with_topic_names(vec![name])
            };
            call!(request.with_timeout_ms(5_000), DeleteTopicsResponse)
        }
        ApiKey::DeleteRecords => call!(
            DeleteRecordsRequest::default()
                .with_timeout_ms(5_000)
                .with_topics(vec![delete_records_request::DeleteRecordsTopic::default()
                    .with_name(topic())
                    .with_partitions(vec![
                        delete_records_request::DeleteRecordsPartition::default()
                            .with_partition_index(1)
                            .with_offset(0)
                    ])]),
            DeleteRecordsResponse
        ),
        ApiKey::DescribeLogDirs => {
            let request = DescribeLogDirsRequest::default().with_topics(Some(vec![
                describe_log_dirs_request::DescribableLogDirTopic::default()
                    .with_topic(topic())
                    .with_partitions(vec![0, 1]),
            ]));
            c.try_call::<_, DescribeLogDirsResponse>(key, v, &request)
                .and_then(|r| match r.results.first() {
                    Some(d) if d.topics.first().is_some_and(|t| t.partitions.len() == 2) => Ok(()),
                    _ => Err(format!("no partitions described: {r:?}")),
                })
        }
        ApiKey::DescribeConfigs => call!(
            DescribeConfigsRequest::default()
                .with_include_synonyms(true)
                .with_include_documentation(v >= 3)
                .with_resources(vec![
                    describe_configs_request::DescribeConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(s(TOPIC))
                ]),
            DescribeConfigsResponse
        ),
        ApiKey::AlterConfigs => {
            use alter_configs_request::*;
            call!(
                AlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default(
                )
                .with_resource_type(2)
                .with_resource_name(s(TOPIC))
                .with_configs(vec![AlterableConfig::default()
                    .with_name(s("retention.ms"))
                    .with_value(Some(s("86400000")))])]),
                AlterConfigsResponse
            )
        }
        ApiKey::CreatePartitions => call!(
            CreatePartitionsRequest::default()
                .with_timeout_ms(5_000)
                .with_topics(vec![
                    create_partitions_request::CreatePartitionsTopic::default()
                        .with_name(topic())
                        .with_count(3)
                ]),
            CreatePartitionsResponse
        ),
        ApiKey::DeleteGroups => call!(
            DeleteGroupsRequest::default().with_groups_names(vec![group("every-join-1")]),
            DeleteGroupsResponse
        ),
        ApiKey::InitProducerId => call!(
            InitProducerIdRequest::default()
                .with_transaction_timeout_ms(60_000)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
            InitProducerIdResponse
        ),
        ApiKey::OffsetForLeaderEpoch => {
            use offset_for_leader_epoch_request::*;
            let answer: OffsetForLeaderEpochResponse = c.try_call(
                key,
                v,
                &OffsetForLeaderEpochRequest::default()
                    .with_replica_id(BrokerId(-1))
                    .with_topics(vec![OffsetForLeaderTopic::default()
                        .with_topic(topic())
                        .with_partitions(vec![OffsetForLeaderPartition::default()
                            .with_partition(0)
                            .with_current_leader_epoch(0)
                            .with_leader_epoch(0)])]),
            )?;
            // A single node leads at epoch 0, which ends at the log end.
            let p = &answer.topics[0].partitions[0];
            if p.error_code != 0 || p.leader_epoch != 0 || p.end_offset < 1 {
                return Err(format!("epoch 0 answered {p:?}"));
            }
            Ok(())
        }
        ApiKey::AddPartitionsToTxn => {
            use add_partitions_to_txn_request::*;
            let topics = vec![AddPartitionsToTxnTopic::default()
                .with_name(topic())
                .with_partitions(vec![0])];
            let request = if v >= 4 {
                AddPartitionsToTxnRequest::default().with_transactions(vec![
                    AddPartitionsToTxnTransaction::default()
                        .with_transactional_id(txn_id())
                        .with_producer_id(ProducerId(1))
                        .with_verify_only(true)
                        .with_topics(topics),
                ])
            } else {
                AddPartitionsToTxnRequest::default()
                    .with_v3_and_below_transactional_id(txn_id())
                    .with_v3_and_below_producer_id(ProducerId(1))
                    .with_v3_and_below_topics(topics)
            };
            call!(request, AddPartitionsToTxnResponse)
        }
        ApiKey::AddOffsetsToTxn => call!(
            AddOffsetsToTxnRequest::default()
                .with_transactional_id(txn_id())
                .with_producer_id(ProducerId(1))
                .with_group_id(group("every-group")),
            AddOffsetsToTxnResponse
        ),
        ApiKey::EndTxn => call!(
            EndTxnRequest::default()
                .with_transactional_id(txn_id())
                .with_producer_id(ProducerId(1))
                .with_committed(true),
            EndTxnResponse
        ),
        ApiKey::TxnOffsetCommit => {
            use txn_offset_commit_request::*;
            let mut request = TxnOffsetCommitRequest::default()
                .with_transactional_id(txn_id())
                .with_group_id(group("every-group"))
                .with_producer_id(ProducerId(1))
                .with_topics(vec![TxnOffsetCommitRequestTopic::default()
                    .with_name(topic())
                    .with_partitions(vec![TxnOffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(1)])]);
            if v >= 3 {
                request.generation_id = -1;
            }
            call!(request, TxnOffsetCommitResponse)
        }
        ApiKey::IncrementalAlterConfigs => {
            use incremental_alter_configs_request::*;
            call!(
                IncrementalAlterConfigsRequest::default().with_resources(vec![
                    AlterConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(s(TOPIC))
                        .with_configs(vec![AlterableConfig::default()
                            .with_name(s("retention.ms"))
                            .with_config_operation(0)
                            .with_value(Some(s("86400000")))])
                ]),
                IncrementalAlterConfigsResponse
            )
        }
        ApiKey::OffsetDelete => {
            use offset_delete_request::*;
            call!(
                OffsetDeleteRequest::default()
                    .with_group_id(group("every-group"))
                    .with_topics(vec![OffsetDeleteRequestTopic::default()
                        .with_name(topic())
                        .with_partitions(vec![
                            OffsetDeleteRequestPartition::default().with_partition_index(1)
                        ])]),
                OffsetDeleteResponse
            )
        }
        ApiKey::DescribeCluster => {
            call!(DescribeClusterRequest::default(), DescribeClusterResponse)
        }
        ApiKey::DescribeProducers => call!(
            DescribeProducersRequest::default().with_topics(vec![
                describe_producers_request::TopicRequest::default()
                    .with_name(topic())
                    .with_partition_indexes(vec![0, 1])
            ]),
            DescribeProducersResponse
        ),
        ApiKey::DescribeTransactions => call!(
            DescribeTransactionsRequest::default().with_transactional_ids(vec![txn_id()]),
            DescribeTransactionsResponse
        ),
        ApiKey::ListTransactions => {
            call!(ListTransactionsRequest::default(), ListTransactionsResponse)
        }
        ApiKey::WriteTxnMarkers => {
            use write_txn_markers_request::*;
            call!(
                WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
                    .with_producer_id(ProducerId(424_242))
                    .with_transaction_result(false)
                    .with_topics(vec![WritableTxnMarkerTopic::default()
                        .with_name(topic())
                        .with_partition_indexes(vec![2])])]),
                WriteTxnMarkersResponse
            )
        }
        ApiKey::ConsumerGroupHeartbeat => {
            // A real join (v0: the broker names the member; v1: the client does), so the
            // answer carries an assignment of the topic's partitions.
            let member = if v >= 1 {
                format!("every-member-{v}")
            } else {
                String::new()
            };
            let joined: ConsumerGroupHeartbeatResponse = c.try_call(
                key,
                v,
                &ConsumerGroupHeartbeatRequest::default()
                    .with_group_id(group(&format!("every-kip848-{v}")))
                    .with_member_id(s(&member))
                    .with_member_epoch(0)
                    .with_rebalance_timeout_ms(30_000)
                    .with_subscribed_topic_names(Some(vec![topic()]))
                    .with_topic_partitions(Some(Vec::new())),
            )?;
            let assigned = joined.assignment.as_ref().map(|a| {
                a.topic_partitions
                    .iter()
                    .map(|t| t.partitions.len())
                    .sum::<usize>()
            });
            if joined.error_code != 0 || assigned != Some(3) {
                return Err(format!("join answered {joined:?}"));
            }
            Ok(())
        }
        ApiKey::ConsumerGroupDescribe => {
            let described: ConsumerGroupDescribeResponse = c.try_call(
                key,
                v,
                &ConsumerGroupDescribeRequest::default()
                    .with_group_ids(vec![group("every-kip848-1"), group("every-unknown-group")]),
            )?;
            let members = described.groups[0].members.len();
            if described.groups[0].error_code != 0
                || members != 1
                || described.groups[1].error_code != 69
            {
                return Err(format!("describe answered {described:?}"));
            }
            Ok(())
        }
        ApiKey::DescribeTopicPartitions => {
            use describe_topic_partitions_request::TopicRequest;
            let described: DescribeTopicPartitionsResponse = c.try_call(
                key,
                v,
                &DescribeTopicPartitionsRequest::default()
                    .with_topics(vec![TopicRequest::default().with_name(topic())])
                    .with_response_partition_limit(2),
            )?;
            let t = &described.topics[0];
            if t.error_code != 0 || t.partitions.len() != 2 || described.next_cursor.is_none() {
                return Err(format!("describe answered {described:?}"));
            }
            Ok(())
        }
        ApiKey::ElectLeaders => {
            use elect_leaders_request::TopicPartitions;
            let elected: ElectLeadersResponse = c.try_call(
                key,
                v,
                &ElectLeadersRequest::default()
                    .with_election_type(if v >= 1 { 1 } else { 0 })
                    .with_topic_partitions(Some(vec![TopicPartitions::default()
                        .with_topic(topic())
                        .with_partitions(vec![0, 9])])),
            )?;
            let codes: Vec<i16> = elected.replica_election_results[0]
                .partition_result
                .iter()
                .map(|p| p.error_code)
                .collect();
            // The only replica already leads: ELECTION_NOT_NEEDED; no partition 9.
            if codes != [84, 3] {
                return Err(format!("elect answered {elected:?}"));
            }
            Ok(())
        }
        ApiKey::AlterPartitionReassignments => {
            use alter_partition_reassignments_request::*;
            let partition = |index: i32, replicas: Option<Vec<i32>>| {
                ReassignablePartition::default()
                    .with_partition_index(index)
                    .with_replicas(replicas.map(|r| r.into_iter().map(BrokerId).collect()))
            };
            let altered: AlterPartitionReassignmentsResponse = c.try_call(
                key,
                v,
                &AlterPartitionReassignmentsRequest::default()
                    .with_timeout_ms(5_000)
                    .with_topics(vec![ReassignableTopic::default()
                        .with_name(topic())
                        .with_partitions(vec![
                            partition(0, Some(vec![0])),
                            partition(1, Some(vec![0, 1])),
                            partition(2, None),
                        ])]),
            )?;
            let codes: Vec<i16> = altered.responses[0]
                .partitions
                .iter()
                .map(|p| p.error_code)
                .collect();
            if altered.error_code != 0 || codes != [0, 39, 85] {
                return Err(format!("reassignment answered {altered:?}"));
            }
            Ok(())
        }
        ApiKey::ListPartitionReassignments => {
            let listed: ListPartitionReassignmentsResponse = c.try_call(
                key,
                v,
                &ListPartitionReassignmentsRequest::default().with_timeout_ms(5_000),
            )?;
            if listed.error_code != 0 || !listed.topics.is_empty() {
                return Err(format!("list answered {listed:?}"));
            }
            Ok(())
        }
        ApiKey::DescribeAcls => {
            let described: DescribeAclsResponse = c.try_call(
                key,
                v,
                &DescribeAclsRequest::default()
                    .with_resource_type_filter(1)
                    .with_pattern_type_filter(1)
                    .with_operation(1)
                    .with_permission_type(1),
            )?;
            if described.error_code != 54 {
                return Err(format!("describe answered {described:?}"));
            }
            Ok(())
        }
        ApiKey::CreateAcls => {
            use create_acls_request::AclCreation;
            let created: CreateAclsResponse = c.try_call(
                key,
                v,
                &CreateAclsRequest::default().with_creations(vec![AclCreation::default()
                    .with_resource_type(2)
                    .with_resource_name(s("every"))
                    .with_resource_pattern_type(3)
                    .with_principal(s("User:alice"))
                    .with_host(s("*"))
                    .with_operation(3)
                    .with_permission_type(3)]),
            )?;
            if created.results.len() != 1 || created.results[0].error_code != 54 {
                return Err(format!("create answered {created:?}"));
            }
            Ok(())
        }
        ApiKey::DeleteAcls => {
            use delete_acls_request::DeleteAclsFilter;
            let deleted: DeleteAclsResponse = c.try_call(
                key,
                v,
                &DeleteAclsRequest::default().with_filters(vec![DeleteAclsFilter::default()
                    .with_resource_type_filter(1)
                    .with_pattern_type_filter(1)
                    .with_operation(1)
                    .with_permission_type(1)]),
            )?;
            if deleted.filter_results.len() != 1 || deleted.filter_results[0].error_code != 54 {
                return Err(format!("delete answered {deleted:?}"));
            }
            Ok(())
        }
        other => Err(format!(
            "{other:?} is served but this test has no request for it: add one"
        )),
    }
}

#[test]
fn every_served_version_answers_and_decodes() {
    let broker = start_with("group_initial_rebalance_delay_ms = 0\n");
    let mut c = Conn::new(&broker);
    let created: CreateTopicsResponse = c.call(
        ApiKey::CreateTopics,
        7,
        &CreateTopicsRequest::default().with_topics(vec![
            create_topics_request::CreatableTopic::default()
                .with_name(topic())
                .with_num_partitions(3)
                .with_replication_factor(1),
        ]),
    );
    assert_eq!(created.topics[0].error_code, 0);
    let mut failures = Vec::new();
    let mut exchanges = 0;
    for range in SUPPORTED {
        // Produce is advertised from v0 (KAFKA-18659) but served from v3 (magic 2 batches).
        for v in range.min..=range.max {
            exchanges += 1;
            if let Err(e) = exchange(&mut c, range.key, v, &created.topics[0]) {
                failures.push(format!("{:?} v{v}: {e}", range.key));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {exchanges} exchanges failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(exchanges > 150, "only {exchanges} exchanges");
}
