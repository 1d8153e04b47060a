"""Topic and broker configs as Kafka 4.x has them: every topic config accepted with Kafka's
validation and described with its source; those that mean something on one node honoured
(compression.type recompresses, LogAppendTime stamps, min.insync.replicas refuses acks=all,
flush.messages / flush.ms fsync); the BROKER resource described under Kafka's names, its
dynamic settings altered at run time, persisted, and refused for static ones."""

import re
import struct
import time
import urllib.request

import pytest
from confluent_kafka import (TIMESTAMP_LOG_APPEND_TIME, Consumer, KafkaError, KafkaException,
                             Producer, TopicPartition)
from harness import connect, frame, kstr, roundtrip
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   ConfigSource, NewTopic)

# Configs Kafka 4.x knows that Kafka Streams, Connect and provisioning tools set.
KAFKA4_TOPIC_CONFIGS = {
    "compression.type": "zstd",
    "compression.zstd.level": "5",
    "file.delete.delay.ms": "30000",
    "index.interval.bytes": "8192",
    "leader.replication.throttled.replicas": "*",
    "local.retention.ms": "-2",
    "message.timestamp.type": "LogAppendTime",
    "min.insync.replicas": "1",
    "preallocate": "true",
    "remote.storage.enable": "false",
    "segment.index.bytes": "1048576",
    "segment.jitter.ms": "100",
    "unclean.leader.election.enable": "false",
}


def admin(broker):
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def describe(a, kind, name):
    res = ConfigResource(kind, name)
    return a.describe_configs([res])[res].result(10)


def consume(broker, topic, n, timeout=10):
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "cfg-" + topic,
                  "auto.offset.reset": "earliest"})
    c.assign([TopicPartition(topic, 0, 0)])
    got, deadline = [], time.time() + timeout
    while len(got) < n and time.time() < deadline:
        m = c.poll(0.2)
        if m is not None and not m.error():
            got.append(m)
    c.close()
    return got


def first_batch_codec(broker, topic):
    """The compression codec of the first batch stored in the partition's first segment."""
    data = broker.segment_files(topic, 0)[0].read_bytes()
    return int.from_bytes(data[21:23], "big") & 0x07


def test_kafka4_topic_configs_are_accepted_described_and_checked(broker):
    a = admin(broker)
    a.create_topics([NewTopic("cfg4", 1, 1, config=KAFKA4_TOPIC_CONFIGS)])["cfg4"].result(10)
    entries = describe(a, "topic", "cfg4")
    for name, value in KAFKA4_TOPIC_CONFIGS.items():
        assert entries[name].value == value, name
        assert entries[name].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value, name
    # Kafka's defaults for the rest, described as defaults.
    for name, value in {"compression.gzip.level": "-1", "compression.lz4.level": "9",
                        "flush.messages": "1", "local.retention.bytes": "-2",
                        "remote.log.copy.disable": "false", "retention.ms": "604800000"}.items():
        assert entries[name].value == value, name
        assert entries[name].source == ConfigSource.DEFAULT_CONFIG.value, name
    # Kafka's validation, with Kafka's error and wording.
    for config, says in [({"compression.type": "brotli"}, "String must be one of"),
                         ({"message.timestamp.type": "Now"}, "String must be one of"),
                         ({"min.insync.replicas": "0"}, "Value must be at least 1"),
                         ({"preallocate": "maybe"}, "either true or false"),
                         ({"compression.gzip.level": "12"}, "between 1 and 9"),
                         ({"remote.storage.enable": "true"}, "Tiered Storage"),
                         ({"no.such.config": "1"}, "Unknown topic config name")]:
        f = a.create_topics([NewTopic("cfg-bad", 1, 1, config=config)])["cfg-bad"]
        with pytest.raises(KafkaException) as refused:
            f.result(10)
        assert refused.value.args[0].code() == KafkaError.INVALID_CONFIG, config
        assert says in refused.value.args[0].str(), (config, refused.value.args[0].str())
    assert "cfg-bad" not in a.list_topics(timeout=10).topics


def test_compression_type_makes_the_broker_recompress(broker):
    a = admin(broker)
    fs = a.create_topics([NewTopic("to-zstd", 1, 1, config={"compression.type": "zstd"}),
                          NewTopic("to-plain", 1, 1, config={"compression.type": "uncompressed"}),
                          NewTopic("as-sent", 1, 1)])
    for f in fs.values():
        f.result(10)
    values = [f"value-{i}".encode() * 20 for i in range(50)]
    for topic, codec in [("to-zstd", "none"), ("to-plain", "gzip"), ("as-sent", "lz4")]:
        p = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True,
                      "compression.codec": codec, "linger.ms": 50})
        for i, v in enumerate(values):
            p.produce(topic, key=str(i).encode(), value=v, partition=0)
        assert p.flush(10) == 0
        got = consume(broker, topic, len(values))
        assert [m.value() for m in got] == values, topic
        assert [m.offset() for m in got] == list(range(len(values)))
    assert first_batch_codec(broker, "to-zstd") == 4
    assert first_batch_codec(broker, "to-plain") == 0
    assert first_batch_codec(broker, "as-sent") == 3  # producer: kept as the producer sent it


def test_log_append_time_replaces_the_producers_timestamps(broker):
    a = admin(broker)
    a.create_topics([NewTopic("lat", 1, 1, config={
        "message.timestamp.type": "LogAppendTime"})])["lat"].result(10)
    p = Producer({"bootstrap.servers": broker.bootstrap})
    reports = []
    before = int(time.time() * 1000)
    # A create time a day old would be within Kafka's window anyway; one far in the past is
    # refused under CreateTime (before.max.ms) but not here, where the broker's clock counts.
    for i in range(3):
        p.produce("lat", value=b"x%d" % i, partition=0, timestamp=1000,
                  on_delivery=lambda err, msg: reports.append((err, msg.timestamp())))
    assert p.flush(10) == 0
    after = int(time.time() * 1000)
    assert all(err is None for err, _ in reports), reports
    got = consume(broker, "lat", 3)
    assert len(got) == 3
    for m in got:
        kind, ts = m.timestamp()
        assert kind == TIMESTAMP_LOG_APPEND_TIME
        assert before <= ts <= after, (before, ts, after)


def test_min_insync_replicas_above_one_refuses_acks_all(broker):
    a = admin(broker)
    a.create_topics([NewTopic("isr2", 1, 1, config={
        "min.insync.replicas": "2"})])["isr2"].result(10)
    errors = []
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all",
                  "message.timeout.ms": 2000, "retry.backoff.ms": 100})
    p.produce("isr2", value=b"needs two replicas", partition=0,
              on_delivery=lambda err, msg: errors.append(err))
    p.flush(10)
    # librdkafka retries the (retriable) error until the message times out.
    assert errors and errors[0] is not None
    assert errors[0].code() in (KafkaError.NOT_ENOUGH_REPLICAS, KafkaError._MSG_TIMED_OUT), errors
    from kafka import KafkaProducer
    from kafka.errors import NotEnoughReplicasError
    kp = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", retries=0)
    with pytest.raises(NotEnoughReplicasError) as refused:
        kp.send("isr2", b"needs two replicas", partition=0).get(10)
    assert "min.isr requirement of 2" in str(refused.value), refused.value
    kp.close()
    ok = []
    p1 = Producer({"bootstrap.servers": broker.bootstrap, "acks": 1})
    p1.produce("isr2", value=b"one replica is enough for acks=1", partition=0,
               on_delivery=lambda err, msg: ok.append(err))
    assert p1.flush(10) == 0 and ok == [None]
    assert [m.value() for m in consume(broker, "isr2", 1)] == [b"one replica is enough for acks=1"]


def scrape(broker):
    port = re.search(r"metrics listening on 127\.0\.0\.1:(\d+)", broker.log()).group(1)
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return float(re.search(r"^exacta_fsync_duration_seconds_count (\S+)$", text, re.M).group(1))


def test_flush_messages_and_flush_ms_fsync_a_topic_on_a_broker_that_never_does(make_broker):
    broker = make_broker('flush_policy = "never"\nmetrics_listen = "127.0.0.1:0"\n')
    a = admin(broker)
    fs = a.create_topics([NewTopic("lazy", 1, 1),
                          NewTopic("every", 1, 1, config={"flush.messages": "1"}),
                          NewTopic("timed", 1, 1, config={"flush.ms": "200"})])
    for f in fs.values():
        f.result(10)
    entries = describe(a, "topic", "lazy")
    assert entries["flush.messages"].value == str(2**63 - 1)  # the broker's policy: never
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 0})

    def produce(topic, n):
        for i in range(n):
            p.produce(topic, value=b"v", partition=0)
            p.flush(10)

    start = scrape(broker)
    produce("lazy", 5)
    time.sleep(0.5)
    assert scrape(broker) == start, "flush_policy = never: no fsync for a topic without override"
    produce("every", 5)
    assert scrape(broker) >= start + 5, "flush.messages=1: an fsync per acknowledged write"
    mid = scrape(broker)
    produce("timed", 3)
    deadline = time.time() + 5
    while scrape(broker) == mid and time.time() < deadline:
        time.sleep(0.05)
    assert mid < scrape(broker) <= mid + 3, "flush.ms=200: fsynced in the background"


def alter_raw(broker, name, value, resource=""):
    """IncrementalAlterConfigs v0 SET on a BROKER resource: (error code, message)."""
    body = (struct.pack(">i", 1) + struct.pack(">b", 4) + kstr(resource)
            + struct.pack(">i", 1) + kstr(name) + b"\x00" + kstr(value)
            + b"\x00")  # validate_only
    with connect(broker) as sock:
        _, resp = roundtrip(sock, frame(44, 0, 7, body))
    # throttle_time, one response: error_code, error_message, resource_type, resource_name.
    (count,) = struct.unpack(">i", resp[4:8])
    assert count == 1
    (code, msg_len) = struct.unpack(">hh", resp[8:12])
    message = None if msg_len < 0 else resp[12:12 + msg_len].decode()
    return code, message


def describe_cluster_default(broker):
    """DescribeConfigs v1 of the BROKER resource "": {name: value}."""
    body = (struct.pack(">i", 1) + struct.pack(">b", 4) + kstr("") + struct.pack(">i", -1)
            + b"\x00")  # include_synonyms
    with connect(broker) as sock:
        _, resp = roundtrip(sock, frame(32, 1, 8, body))
    at = 4
    (count,) = struct.unpack(">i", resp[at:at + 4])
    assert count == 1
    at += 4

    def string():
        nonlocal at
        (n,) = struct.unpack(">h", resp[at:at + 2])
        at += 2
        if n < 0:
            return None
        at += n
        return resp[at - n:at].decode()
    (code,) = struct.unpack(">h", resp[at:at + 2])
    at += 2
    assert code == 0, string()
    string()
    at += 1
    string()
    (entries,) = struct.unpack(">i", resp[at:at + 4])
    at += 4
    out = {}
    for _ in range(entries):
        name, value = string(), string()
        at += 3  # read_only, config_source, is_sensitive
        (synonyms,) = struct.unpack(">i", resp[at:at + 4])
        assert synonyms == 0
        at += 4
        out[name] = value
    return out


def test_broker_configs_are_described_and_dynamic_ones_change_and_persist(make_broker):
    from kafka.admin import ConfigResource as KpResource, ConfigResourceType, KafkaAdminClient

    broker = make_broker("num_partitions = 2\n")
    # kafka-python asks for broker "0", every setting with its source.
    kp = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    described = kp.describe_configs([KpResource(ConfigResourceType.BROKER, "0")],
                                    config_filter="all")
    (entries,) = [named["0"] for named in described.values()]
    print({k: entries[k] for k in ("num.partitions", "node.id")})
    value = lambda e: e["value"] if isinstance(e, dict) else e
    assert value(entries["num.partitions"]) == "2"
    assert value(entries["node.id"]) == "0"
    assert value(entries["log.retention.ms"]) == "604800000"
    kp.close()

    a = admin(broker)
    a.create_topics([NewTopic("follows", 1, 1),
                     NewTopic("own", 1, 1, config={"retention.ms": "1000000"})])
    time.sleep(0.5)
    b = describe(a, "broker", "0")
    assert b["num.partitions"].source == ConfigSource.STATIC_BROKER_CONFIG.value
    assert b["num.partitions"].is_read_only
    assert b["log.retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value
    assert not b["log.retention.ms"].is_read_only

    def alter(name, ops):
        res = ConfigResource("broker", name, incremental_configs=ops)
        return a.incremental_alter_configs([res])[res].result(10)

    alter("0", [ConfigEntry("log.retention.ms", "3600000",
                            incremental_operation=AlterConfigOpType.SET),
                ConfigEntry("compression.type", "gzip",
                            incremental_operation=AlterConfigOpType.SET)])
    # The cluster-wide layer (resource name ""), which neither librdkafka nor kafka-python
    # can name: IncrementalAlterConfigs v0 by hand.
    assert alter_raw(broker, "log.segment.bytes", "2097152") == (0, None)

    def check():
        b = describe(a, "broker", "0")
        assert b["log.retention.ms"].value == "3600000"
        assert b["log.retention.ms"].source == ConfigSource.DYNAMIC_BROKER_CONFIG.value
        assert b["log.segment.bytes"].source == ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value
        assert describe_cluster_default(broker) == {"log.segment.bytes": "2097152"}
        t = describe(a, "topic", "follows")
        assert t["retention.ms"].value == "3600000"
        assert t["retention.ms"].source == ConfigSource.DYNAMIC_BROKER_CONFIG.value
        assert t["segment.bytes"].value == "2097152"
        assert describe(a, "topic", "own")["retention.ms"].value == "1000000"
    check()
    # The new broker default applies to live topics at once: gzip stored from now on.
    p = Producer({"bootstrap.servers": broker.bootstrap})
    p.produce("follows", value=b"recompressed by the new default" * 10, partition=0)
    assert p.flush(10) == 0
    assert first_batch_codec(broker, "follows") == 1
    broker.restart()
    a = admin(broker)
    check()

    refusals = [
        ("0", "num.partitions", "4", KafkaError.INVALID_CONFIG, "Cannot update"),
        ("0", "log.retention.ms", "soon", KafkaError.INVALID_CONFIG, "log.retention.ms"),
        ("0", "no.such.setting", "1", KafkaError.INVALID_CONFIG, "Unknown broker config"),
    ]
    for node, name, value, code, says in refusals:
        with pytest.raises(KafkaException) as refused:
            alter(node, [ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)])
        err = refused.value.args[0]
        assert err.code() == code and says in err.str(), (name, err)
    # Another node's id (librdkafka would send it to that node, which does not exist).
    code, message = alter_raw(broker, "log.retention.ms", "1", resource="7")
    assert code == 42 and "Unexpected broker id, expected 0, but received 7" in message
    # DELETE returns a setting to its static value or default.
    alter("0", [ConfigEntry("log.retention.ms", None,
                            incremental_operation=AlterConfigOpType.DELETE)])
    assert describe(a, "topic", "follows")["retention.ms"].value == "604800000"
    assert describe(a, "broker", "0")["num.partitions"].value == "2"
