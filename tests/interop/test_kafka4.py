"""Exacta looks like a current Kafka 4.x to clients: kafka-python infers a 4.x broker from
ApiVersions and its admin calls that only 4.x brokers answer work (DescribeTopicPartitions,
DescribeLogDirs), and every client still produces and consumes at the new versions
(Produce v13 names topics by id)."""

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic


def test_kafka_python_infers_a_4x_broker_and_its_admin_calls_work(broker):
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    version = admin._client.check_version()
    assert version >= (4, 0), version
    admin.create_topics([NewTopic("k4", 3, 1)])
    (described,) = admin.describe_topics(["k4"])
    assert described["error_code"] == 0 and described["topic_id"]
    assert [p["partition_index"] for p in described["partitions"]] == [0, 1, 2]
    dirs = admin.describe_log_dirs()
    topics = {t["name"] for d in dirs for ld in d["log_dirs"] for t in ld["topics"]}
    assert "k4" in topics
    p = KafkaProducer(bootstrap_servers=broker.bootstrap)
    meta = p.send("k4", b"kafka-python", partition=1).get(10)
    assert meta.offset == 0
    p.close()
    c = KafkaConsumer("k4", bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest",
                      consumer_timeout_ms=5000)
    assert [m.value for m in c] == [b"kafka-python"]
    c.close()
    admin.close()


def test_librdkafka_produces_and_consumes_at_the_newest_versions(broker):
    p = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True})
    for i in range(10):
        p.produce("k4-rd", value=str(i).encode(), partition=0)
    assert p.flush(10) == 0
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "k4",
                  "auto.offset.reset": "earliest"})
    c.assign([TopicPartition("k4-rd", 0)])
    got = []
    for _ in range(50):
        m = c.poll(0.2)
        if m is not None and not m.error():
            got.append(int(m.value()))
        if len(got) == 10:
            break
    c.close()
    assert got == list(range(10))


def test_single_node_answers_to_replica_leader_and_acl_admin_calls(broker):
    """What a Kafka 4.x single node answers to admin calls about leaders, replicas and ACLs:
    elections are not needed, the only reassignment is to the replica it has, no
    reassignment is ever in progress, ACLs need an authorizer (none configured), and the
    features finalized are KIP-848 groups and KIP-890 transactions."""
    from confluent_kafka import ElectionType, KafkaError, KafkaException
    from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation,
                                       AclPermissionType, AdminClient, ResourcePatternType,
                                       ResourceType)
    from kafka import TopicPartition as KpPartition
    from kafka.errors import SecurityDisabledError

    kp = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    kp.create_topics([NewTopic("adm", 2, 1)])
    features = kp.describe_features()
    assert features["group.version"]["finalized"] == (1, 1), features
    assert features["transaction.version"]["finalized"] == (2, 2), features
    elected = kp.elect_leaders(election_type=0, topic_partitions={"adm": [0, 1]})
    codes = [p.error_code for r in elected.replica_election_results for p in r.partition_result]
    assert codes == [84, 84], elected  # ELECTION_NOT_NEEDED
    moved = kp.alter_partition_reassignments({KpPartition("adm", 0): [0],
                                              KpPartition("adm", 1): [0, 1]})
    assert moved[KpPartition("adm", 0)] is None, moved
    assert moved[KpPartition("adm", 1)].errno == 39, moved  # INVALID_REPLICA_ASSIGNMENT
    assert kp.list_partition_reassignments() == {}
    from kafka.admin import ACLFilter, ACLOperation, ACLPermissionType, ResourcePattern
    from kafka.admin import ResourceType as KpResourceType
    with pytest.raises(SecurityDisabledError):
        kp.describe_acls(ACLFilter(principal=None, host="*", operation=ACLOperation.ANY,
                                   permission_type=ACLPermissionType.ANY,
                                   resource_pattern=ResourcePattern(KpResourceType.TOPIC, "adm")))
    kp.close()

    rd = AdminClient({"bootstrap.servers": broker.bootstrap})
    results = rd.elect_leaders(ElectionType.PREFERRED, [TopicPartition("adm", 0)]).result(10)
    (err,) = results.values()
    assert err.code() == KafkaError.ELECTION_NOT_NEEDED, results
    binding = AclBinding(ResourceType.TOPIC, "adm", ResourcePatternType.LITERAL, "User:alice",
                         "*", AclOperation.READ, AclPermissionType.ALLOW)
    with pytest.raises(KafkaException) as refused:
        rd.create_acls([binding])[binding].result(10)
    assert refused.value.args[0].code() == KafkaError.SECURITY_DISABLED
    everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                                  AclOperation.ANY, AclPermissionType.ANY)
    with pytest.raises(KafkaException) as refused:
        rd.delete_acls([everything])[everything].result(10)
    assert refused.value.args[0].code() == KafkaError.SECURITY_DISABLED
