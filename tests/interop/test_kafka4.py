"""Exacta looks like a current Kafka 4.x to clients: kafka-python infers a 4.x broker from
ApiVersions and its admin calls that only 4.x brokers answer work (DescribeTopicPartitions,
DescribeLogDirs), and every client still produces and consumes at the new versions
(Produce v13 names topics by id)."""

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
