"""Real clients against the real broker: librdkafka (confluent-kafka) and kafka-python."""

import time

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   NewPartitions, NewTopic)
from harness import read_batch_headers

CODECS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


def admin(broker):
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def create(broker, name, partitions=1, config=None):
    a = admin(broker)  # keep the handle alive until the future resolves
    fs = a.create_topics([NewTopic(name, partitions, 1, config=config or {})])
    fs[name].result(10)


def rdkafka_consume(broker, topic, partitions, expected, timeout=20, **conf):
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "unused",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest", **conf})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out = []
    deadline = time.time() + timeout
    while len(out) < expected and time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            raise KafkaException(m.error())
        out.append(m)
    c.close()
    return out


def kp_consumer(broker, **conf):
    from kafka import KafkaConsumer

    conf.setdefault("consumer_timeout_ms", 5000)
    return KafkaConsumer(bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest",
                         enable_auto_commit=False, **conf)


def kp_take(consumer, n):
    """The next n records (fewer only if the consumer times out)."""
    out = []
    for m in consumer:
        out.append(m)
        if len(out) == n:
            break
    return out


@pytest.mark.parametrize("codec", list(CODECS))
def test_librdkafka_produces_every_codec_stored_as_sent(broker, codec):
    from kafka import TopicPartition as KTP

    topic = f"rd-{codec}"
    create(broker, topic, partitions=2)
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all",
                  "compression.type": codec, "linger.ms": 20})
    values = [f"{codec}-{i}-".encode() * 20 for i in range(400)]
    for i, v in enumerate(values):
        p.produce(topic, value=v, key=str(i).encode(), partition=i % 2)
    assert p.flush(20) == 0
    # Stored as sent: the batches on disk carry the producer's codec.
    for part in range(2):
        headers = []
        for seg in broker.segment_files(topic, part):
            headers += read_batch_headers(seg)
        assert headers, "no batch on disk"
        # (librdkafka sends lz4 only to brokers serving FindCoordinator, which we do.)
        assert {attrs & 7 for _, _, attrs in headers} == {CODECS[codec]}
        assert headers[0][0] == 0
    # Read back with the other client library.
    c = kp_consumer(broker)
    c.assign([KTP(topic, 0), KTP(topic, 1)])
    got = {int(m.key): m.value for m in kp_take(c, len(values))}
    c.close()
    assert got == {i: v for i, v in enumerate(values)}


@pytest.mark.parametrize("codec", list(CODECS))
def test_kafka_python_produces_every_codec(broker, codec):
    from kafka import KafkaProducer

    topic = f"kp-{codec}"
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", enable_idempotence=False,
                      compression_type=None if codec == "none" else codec, linger_ms=10)
    futures = [p.send(topic, value=f"v{i}".encode(), partition=0) for i in range(300)]
    p.flush()
    offsets = [f.get(10).offset for f in futures]
    assert offsets == list(range(300))
    p.close()
    headers = read_batch_headers(broker.segment_files(topic, 0)[0])
    assert {attrs & 7 for _, _, attrs in headers} == {CODECS[codec]}
    msgs = rdkafka_consume(broker, topic, 1, 300)
    assert [m.value() for m in msgs] == [f"v{i}".encode() for i in range(300)]
    assert [m.offset() for m in msgs] == list(range(300))


def test_seek_by_offset_and_timestamp(broker):
    topic = "seek"
    create(broker, topic)
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 0})
    t0 = 1_700_000_000_000
    for i in range(100):
        p.produce(topic, value=str(i).encode(), timestamp=t0 + 1000 * i, partition=0)
        if i % 10 == 9:
            p.flush(10)
    assert p.flush(10) == 0
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "seek",
                  "enable.auto.commit": False})
    lo, hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    assert (lo, hi) == (0, 100)
    # By timestamp: exact, between two records, before all, after all.
    for ts, expected in [(t0 + 42_000, 42), (t0 + 42_500, 43), (t0 - 5, 0), (t0 + 10**9, -1)]:
        (tp,) = c.offsets_for_times([TopicPartition(topic, 0, ts)], timeout=10)
        assert tp.offset == expected, (ts, tp)
    # By offset.
    c.assign([TopicPartition(topic, 0, 77)])
    m = None
    deadline = time.time() + 10
    while m is None and time.time() < deadline:
        m = c.poll(0.5)
    assert m is not None and m.offset() == 77 and m.value() == b"77"
    assert m.timestamp()[1] == t0 + 77_000
    c.close()
    # The same through kafka-python.
    from kafka import TopicPartition as KTP

    kc = kp_consumer(broker)
    tp = KTP(topic, 0)
    found = kc.offsets_for_times({tp: t0 + 10_000})[tp]
    assert found.offset == 10 and found.timestamp == t0 + 10_000
    assert kc.beginning_offsets([tp])[tp] == 0 and kc.end_offsets([tp])[tp] == 100
    kc.assign([tp])
    kc.seek(tp, 95)
    assert [m.offset for m in kp_take(kc, 5)] == [95, 96, 97, 98, 99]
    kc.close()


def test_fetch_limits_return_whole_batches_and_never_stall(broker):
    topic = "limits"
    create(broker, topic)
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0, "batch.num.messages": 1})
    big = b"x" * 50_000
    for _ in range(20):
        p.produce(topic, value=big, partition=0)
    assert p.flush(10) == 0
    # Limits far below one record: KIP-74 still returns one whole batch per fetch.
    msgs = rdkafka_consume(broker, topic, 1, 20, **{"fetch.max.bytes": 1024,
                                                    "message.max.bytes": 1000,
                                                    "max.partition.fetch.bytes": 1024,
                                                    "receive.message.max.bytes": 100_000})
    assert len(msgs) == 20 and all(m.value() == big for m in msgs)


def test_long_poll_returns_when_data_arrives(broker):
    from kafka import KafkaProducer, TopicPartition as KTP
    import threading

    topic = "longpoll"
    create(broker, topic)
    c = kp_consumer(broker, fetch_max_wait_ms=5000, consumer_timeout_ms=15000)
    c.assign([KTP(topic, 0)])
    c.poll(100)

    def later():
        time.sleep(1)
        p = KafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=False)
        p.send(topic, b"late", partition=0).get(10)
        p.close()

    threading.Thread(target=later).start()
    got = next(iter(c))
    assert got.value == b"late" and got.offset == 0
    c.close()


def test_admin_topics_partitions_configs_cluster(broker):
    a = admin(broker)
    create(broker, "cfg", partitions=2, config={"retention.ms": "3600000"})
    md = a.list_topics(timeout=10)
    assert len(md.topics["cfg"].partitions) == 2
    assert md.brokers[0].port == broker.port

    res = ConfigResource(ConfigResource.Type.TOPIC, "cfg")
    configs = a.describe_configs([res])[res].result(10)
    assert configs["retention.ms"].value == "3600000" and not configs["retention.ms"].is_default
    assert configs["segment.bytes"].is_default and configs["cleanup.policy"].value == "delete"

    alter = ConfigResource(ConfigResource.Type.TOPIC, "cfg", incremental_configs=[
        ConfigEntry("retention.bytes", "1048576", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE)])
    a.incremental_alter_configs([alter])[alter].result(10)
    configs = a.describe_configs([res])[res].result(10)
    assert configs["retention.bytes"].value == "1048576"
    assert configs["retention.ms"].is_default

    bad = ConfigResource(ConfigResource.Type.TOPIC, "cfg", incremental_configs=[
        ConfigEntry("cleanup.policy", "shred", incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(KafkaException) as e:
        a.incremental_alter_configs([bad])[bad].result(10)
    assert e.value.args[0].code() == 40  # INVALID_CONFIG

    a.create_partitions([NewPartitions("cfg", 5)])["cfg"].result(10)
    assert len(a.list_topics(timeout=10).topics["cfg"].partitions) == 5
    with pytest.raises(KafkaException):
        a.create_partitions([NewPartitions("cfg", 3)])["cfg"].result(10)

    cluster = a.describe_cluster().result(10)
    assert cluster.controller.id == 0 and len(cluster.nodes) == 1

    # Configs and partitions survive a restart.
    assert broker.restart().alive()
    a = admin(broker)
    assert len(a.list_topics(timeout=10).topics["cfg"].partitions) == 5
    assert a.describe_configs([res])[res].result(10)["retention.bytes"].value == "1048576"

    a.delete_topics(["cfg"])["cfg"].result(10)
    assert "cfg" not in a.list_topics(timeout=10).topics
    assert not (broker.data_dir / "cfg-0").exists()


def test_auto_topic_creation_on_and_off(broker, make_broker):
    from kafka import KafkaProducer
    from kafka.errors import KafkaTimeoutError

    p = KafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=False)
    assert p.send("auto-made", b"x").get(10).offset == 0
    p.close()
    assert "auto-made" in admin(broker).list_topics(timeout=10).topics

    off = make_broker("auto_create_topics = false\nnum_partitions = 3\n", name="noauto")
    p = KafkaProducer(bootstrap_servers=off.bootstrap, enable_idempotence=False, max_block_ms=2000)
    with pytest.raises(KafkaTimeoutError):
        p.send("not-made", b"x").get(10)
    p.close()
    assert "not-made" not in admin(off).list_topics(timeout=10).topics
    # num_partitions applies to CreateTopics with the default count.
    a = admin(off)
    a.create_topics([NewTopic("defaulted")])["defaulted"].result(10)
    assert len(admin(off).list_topics(timeout=10).topics["defaulted"].partitions) == 3


def test_write_guarantee_refuses_producers_below_it(make_broker):
    """Governance: `exacta.write.guarantee` (topic) and `default_write_guarantee` (broker).
    A producer below the guarantee is refused with POLICY_VIOLATION and a message saying
    what to change; one that meets it writes."""
    from confluent_kafka import KafkaError, KafkaException, Producer
    from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic
    from kafka import KafkaProducer
    from kafka.errors import PolicyViolationError

    broker = make_broker('default_write_guarantee = "idempotent"\n')
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for f in admin.create_topics([
            NewTopic("gov-default", 1, 1),
            NewTopic("gov-txn", 1, 1, config={"exacta.write.guarantee": "transactional"}),
            NewTopic("gov-open", 1, 1, config={"exacta.write.guarantee": "none"})]).values():
        f.result(10)
    bad = admin.create_topics([NewTopic("gov-bad", 1, 1,
                                        config={"exacta.write.guarantee": "mostly"})])
    with pytest.raises(KafkaException, match="exacta.write.guarantee: must be one of"):
        bad["gov-bad"].result(10)
    described = admin.describe_configs([ConfigResource("topic", "gov-default")])
    entry = list(described.values())[0].result(10)["exacta.write.guarantee"]
    assert entry.value == "idempotent" and entry.is_default

    def send(topic, **config):
        errors = []
        p = Producer({"bootstrap.servers": broker.bootstrap, **config})
        if "transactional.id" in config:
            p.init_transactions(10)
            p.begin_transaction()
        p.produce(topic, b"v", on_delivery=lambda err, msg: errors.append(err))
        if "transactional.id" in config:
            p.commit_transaction(10)
        p.flush(10)
        return errors[0]

    plain = {"enable.idempotence": False, "acks": "all", "message.send.max.retries": 0}
    err = send("gov-default", **plain)
    assert err is not None and err.code() == KafkaError.POLICY_VIOLATION, err
    assert send("gov-default", **{"enable.idempotence": True}) is None
    assert send("gov-open", **plain) is None
    err = send("gov-txn", **{"enable.idempotence": True})
    assert err is not None and err.code() == KafkaError.POLICY_VIOLATION, err
    assert send("gov-txn", **{"transactional.id": "gov"}) is None
    # kafka-python names the error and shows the broker's message.
    kp = KafkaProducer(bootstrap_servers=broker.bootstrap, retries=0,
                       enable_idempotence=False, acks="all")
    with pytest.raises(PolicyViolationError):
        kp.send("gov-default", b"v").get(timeout=10)
    kp.close()


def test_alter_configs_replaces_overrides_kafka_python_and_librdkafka(broker):
    """AlterConfigs (key 33), the older non-incremental form: the given configs become the
    topic's whole set of overrides (kafka-python with incremental=False, which first reads
    and resends the others, and librdkafka's deprecated AdminClient.alter_configs, which
    does not)."""
    from confluent_kafka import KafkaError
    from confluent_kafka.admin import ConfigResource as RdResource
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic as KpTopic

    kp = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    kp.create_topics([KpTopic("alter-all", 1, 1)])

    def overrides():
        a = AdminClient({"bootstrap.servers": broker.bootstrap})
        res = RdResource("topic", "alter-all")
        entries = a.describe_configs([res])[res].result(10)
        return {n: e.value for n, e in entries.items() if not e.is_default}

    kp.alter_configs([ConfigResource(ConfigResourceType.TOPIC, "alter-all",
                                     configs={"retention.ms": "3600000",
                                              "max.message.bytes": "500000"})],
                     incremental=False)
    assert overrides() == {"retention.ms": "3600000", "max.message.bytes": "500000"}
    kp.alter_configs([ConfigResource(ConfigResourceType.TOPIC, "alter-all",
                                     configs={"retention.ms": "7200000"})], incremental=False)
    # kafka-python's AlterConfigs fills in the other current overrides itself (it reads
    # them first), so max.message.bytes stays; librdkafka below sends only what it is given.
    assert overrides() == {"retention.ms": "7200000", "max.message.bytes": "500000"}
    kp.close()

    rd = AdminClient({"bootstrap.servers": broker.bootstrap})
    res = RdResource("topic", "alter-all", set_config={"segment.bytes": "1048576"})
    rd.alter_configs([res])[res].result(10)
    assert overrides() == {"segment.bytes": "1048576"}
    bad = RdResource("topic", "alter-all", set_config={"retention.ms": "soon"})
    with pytest.raises(KafkaException) as refused:
        rd.alter_configs([bad])[bad].result(10)
    assert refused.value.args[0].code() == KafkaError.INVALID_CONFIG
    assert overrides() == {"segment.bytes": "1048576"}, "a refused change changes nothing"
