"""Idempotent producers: every record exactly once and in order, through lost responses,
cut connections and broker kill -9, with librdkafka, kafka-python, aiokafka and kafkajs."""

import os
import random
import threading
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from harness import FaultProxy, build_batch, connect, frame, parse_produce_v3, produce_v3, roundtrip

RECORDS = int(os.environ.get("EXACTA_IDEMPOTENCE_RECORDS", "20000"))
DROP_RATE = 0.05
# Clients pack more records into each request when the machine is busy, so the number of
# dropped responses varies from run to run (librdkafka, 20,000 records: 9 to about 20);
# five already send the producer through its retry path five times.
MIN_DROPPED = 5


def create(broker, name, partitions=1):
    a = AdminClient({"bootstrap.servers": broker.bootstrap})
    a.create_topics([NewTopic(name, partitions, 1)])[name].result(10)


def read_partition_values(broker, topic, partition):
    """All values of one partition in offset order, read directly from the broker."""
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "verify",
                  "enable.auto.commit": False})
    lo, hi = c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
    c.assign([TopicPartition(topic, partition, lo)])
    out, next_offset = [], lo
    deadline = time.time() + 60
    while next_offset < hi and time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        assert not m.error(), m.error()
        assert m.offset() >= next_offset
        out.append(int(m.value()))
        next_offset = m.offset() + 1
    c.close()
    assert next_offset == hi
    return out


def check_exactly_once_in_order(values_by_partition, expected_by_partition):
    duplicates = gaps = 0
    for p, values in values_by_partition.items():
        duplicates += len(values) - len(set(values))
        gaps += len(set(expected_by_partition[p]) - set(values))
        assert values == expected_by_partition[p], f"partition {p}: not exactly once in order"
    return duplicates, gaps


def check_one_partition_run(broker, client, topic, offsets, dropped):
    """Partition 0 of `topic` holds "0".."n-1" once each in order, each acknowledged at
    the offset it really has, after at least MIN_DROPPED dropped responses."""
    n = len(offsets)
    values = read_partition_values(broker, topic, 0)
    duplicates, gaps = check_exactly_once_in_order({0: values}, {0: list(range(n))})
    assert offsets == list(range(n)), "each record acknowledged at the offset it really has"
    assert dropped >= MIN_DROPPED, f"only {dropped} responses dropped: the test did not test"
    print(f"{client} idempotent: records={n} produce_responses_dropped={dropped} "
          f"duplicates={duplicates} gaps={gaps}")


def test_librdkafka_idempotent_producer_through_dropped_responses(broker, tmp_path):
    topic, partitions = "idem-rd", 3
    create(broker, topic, partitions)
    proxy = FaultProxy(broker.bootstrap, tmp_path / "proxy.log",
                       drop=[f"produce={DROP_RATE}"], seed=11)
    p = Producer({"bootstrap.servers": proxy.bootstrap, "enable.idempotence": True,
                  "acks": "all", "linger.ms": 1, "batch.num.messages": 50,
                  "message.timeout.ms": 120000, "retry.backoff.ms": 20,
                  "reconnect.backoff.ms": 10, "reconnect.backoff.max.ms": 100})
    errors = []
    for i in range(RECORDS):
        while True:
            try:
                p.produce(topic, value=str(i).encode(), partition=i % partitions,
                          on_delivery=lambda e, m: e and errors.append(e))
                break
            except BufferError:
                p.poll(0.05)
        if i % 500 == 0:
            p.poll(0)
    assert p.flush(120) == 0
    assert not errors, errors[:3]
    dropped = proxy.dropped()
    proxy.stop()
    values = {q: read_partition_values(broker, topic, q) for q in range(partitions)}
    expected = {q: list(range(q, RECORDS, partitions)) for q in range(partitions)}
    duplicates, gaps = check_exactly_once_in_order(values, expected)
    assert dropped >= MIN_DROPPED, f"only {dropped} responses dropped: the test did not test"
    print(f"librdkafka idempotent: records={RECORDS} produce_responses_dropped={dropped} "
          f"duplicates={duplicates} gaps={gaps}")


def test_kafka_python_idempotent_producer_through_dropped_responses(broker, tmp_path):
    from kafka import KafkaProducer

    topic = "idem-kp"
    create(broker, topic, 1)
    proxy = FaultProxy(broker.bootstrap, tmp_path / "proxy.log",
                       drop=[f"produce={DROP_RATE}"], seed=12)
    p = KafkaProducer(bootstrap_servers=proxy.bootstrap, enable_idempotence=True, acks="all",
                      linger_ms=1, batch_size=300, retries=1_000_000,
                      delivery_timeout_ms=120000, request_timeout_ms=10000,
                      retry_backoff_ms=20, reconnect_backoff_ms=10)
    n = RECORDS // 2
    futures = [p.send(topic, value=str(i).encode(), partition=0) for i in range(n)]
    p.flush(120)
    failures = [f.exception for f in futures if f.failed()]
    assert not failures, failures[:3]
    offsets = [f.get(1).offset for f in futures]
    p.close()
    dropped = proxy.dropped()
    proxy.stop()
    check_one_partition_run(broker, "kafka-python", topic, offsets, dropped)


def test_aiokafka_idempotent_producer_through_dropped_responses(broker, tmp_path):
    import asyncio

    from aiokafka import AIOKafkaProducer

    topic, n = "idem-aio", RECORDS // 2
    create(broker, topic, 1)
    proxy = FaultProxy(broker.bootstrap, tmp_path / "proxy.log",
                       drop=[f"produce={DROP_RATE}"], seed=13)

    async def produce():
        p = AIOKafkaProducer(bootstrap_servers=proxy.bootstrap, enable_idempotence=True,
                             acks="all", linger_ms=1, max_batch_size=300,
                             request_timeout_ms=10000, retry_backoff_ms=20)
        await p.start()
        try:
            futures = [await p.send(topic, value=str(i).encode(), partition=0) for i in range(n)]
            return [(await f).offset for f in futures]
        finally:
            await p.stop()

    offsets = asyncio.run(asyncio.wait_for(produce(), 180))
    dropped = proxy.dropped()
    proxy.stop()
    assert len(offsets) == n
    check_one_partition_run(broker, "aiokafka", topic, offsets, dropped)


def test_kafkajs_idempotent_producer_through_dropped_responses(broker, tmp_path):
    import json
    import subprocess
    from pathlib import Path

    topic, n = "idem-js", RECORDS // 4
    proxy = FaultProxy(broker.bootstrap, tmp_path / "proxy.log",
                       drop=[f"produce={DROP_RATE * 4}"], seed=14)
    client = Path(__file__).parent / "kafkajs" / "client.js"
    done = subprocess.run(["node", str(client), "idempotent", proxy.bootstrap, topic, str(n)],
                          capture_output=True, text=True, timeout=300)
    dropped = proxy.dropped()
    proxy.stop()
    assert done.returncode == 0, done.stderr
    offsets = json.loads(done.stdout.strip().splitlines()[-1])["offsets"]
    assert len(offsets) == n
    check_one_partition_run(broker, "kafkajs", topic, offsets, dropped)


def test_broker_kill9_during_idempotent_produce_leaves_no_duplicate_or_gap(broker):
    topic, partitions = "idem-kill", 2
    create(broker, topic, partitions)
    p = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True,
                  "acks": "all", "linger.ms": 2, "message.timeout.ms": 120000,
                  "retry.backoff.ms": 20, "reconnect.backoff.ms": 10,
                  "reconnect.backoff.max.ms": 100})
    acked = []
    errors = []

    def on_delivery(err, msg):
        (errors if err else acked).append(err or int(msg.value()))

    stop = threading.Event()
    sent = [0]

    def pump():
        i = 0
        while not stop.is_set() and i < 200_000:
            try:
                p.produce(topic, value=str(i).encode(), partition=i % partitions,
                          on_delivery=on_delivery)
                i += 1
                sent[0] = i
            except BufferError:
                p.poll(0.01)
            if i % 200 == 0:
                p.poll(0)
                time.sleep(0.002)

    t = threading.Thread(target=pump)
    t.start()
    rng = random.Random(3)
    for _ in range(5):
        time.sleep(rng.uniform(0.3, 0.7))
        broker.kill9()
        broker.start()
    stop.set()
    t.join()
    assert p.flush(120) == 0
    assert not errors, errors[:3]
    values = {q: read_partition_values(broker, topic, q) for q in range(partitions)}
    expected = {q: list(range(q, sent[0], partitions)) for q in range(partitions)}
    duplicates, gaps = check_exactly_once_in_order(values, expected)
    assert sorted(acked) == list(range(sent[0]))
    print(f"kill -9 x5 idempotent: records={sent[0]} duplicates={duplicates} gaps={gaps}")


def test_init_producer_id_and_describe_producers(broker):
    from kafka.admin import KafkaAdminClient
    from kafka import TopicPartition as KTP

    create(broker, "idem-describe", 1)
    p = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True})
    for i in range(10):
        p.produce("idem-describe", value=b"x", partition=0)
    assert p.flush(10) == 0
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    tp = KTP("idem-describe", 0)
    states = admin.describe_producers([tp])[tp].active_producers
    assert len(states) == 1
    (state,) = states
    assert state.producer_id >= 0 and state.producer_epoch == 0
    assert state.last_sequence == 9
    # Producer ids survive restarts and are never handed out twice.
    broker.restart()
    p2 = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True})
    p2.produce("idem-describe", value=b"y", partition=0)
    assert p2.flush(10) == 0
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    after = admin.describe_producers([tp])[tp].active_producers
    ids = sorted(s.producer_id for s in after)
    assert len(ids) == 2 and ids[0] == state.producer_id and ids[1] != state.producer_id
    assert {s.producer_id: s.last_sequence for s in after}[state.producer_id] == 9


def test_sequence_errors_have_kafka_codes(broker):
    """Raw idempotent batches: retry, gap, old epoch, unknown producer."""
    create(broker, "idem-raw", 1)
    s = connect(broker)

    def produce(seq, epoch=0, pid=None, n=2):
        records = build_batch([b"v"] * n, producer=(pid, epoch, seq))
        _, body = roundtrip(s, frame(0, 3, 1, produce_v3("idem-raw", 0, records)))
        return parse_produce_v3(body)[0][2:]

    # InitProducerId v0 (non-flexible): transactional_id null, timeout.
    _, body = roundtrip(s, frame(22, 0, 2, b"\xff\xff" + (60000).to_bytes(4, "big")))
    error, pid = int.from_bytes(body[4:6], "big"), int.from_bytes(body[6:14], "big", signed=True)
    assert error == 0 and pid >= 0
    assert produce(0, pid=pid) == (0, 0)
    assert produce(2, pid=pid) == (0, 2)
    assert produce(0, pid=pid) == (0, 0)  # retry: original offset, not appended
    assert produce(7, pid=pid) == (45, -1)  # gap: OUT_OF_ORDER_SEQUENCE_NUMBER
    assert produce(0, epoch=1, pid=pid) == (0, 4)  # bumped epoch restarts at 0
    assert produce(4, epoch=0, pid=pid) == (47, -1)  # INVALID_PRODUCER_EPOCH
    assert produce(5, pid=pid + 1000) == (59, -1)  # UNKNOWN_PRODUCER_ID
    assert read_partition_values_count(broker, "idem-raw") == 6
    # InitProducerId v3 (flexible) naming the id and epoch it holds bumps the epoch (KIP-360).
    body = b"\x00" + (60000).to_bytes(4, "big") + pid.to_bytes(8, "big") + (1).to_bytes(2, "big") + b"\x00"
    _, resp = roundtrip(s, frame(22, 3, 3, body, flexible=True))
    # Response header v1 carries a tagged-fields byte; then throttle, error, id, epoch.
    error = int.from_bytes(resp[5:7], "big")
    got_pid = int.from_bytes(resp[7:15], "big", signed=True)
    got_epoch = int.from_bytes(resp[15:17], "big", signed=True)
    assert (error, got_pid, got_epoch) == (0, pid, 2)
    assert produce(0, epoch=2, pid=pid) == (0, 6)


def read_partition_values_count(broker, topic):
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "n"})
    lo, hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    c.close()
    return hi - lo


def test_idle_producers_expire(make_broker):
    from kafka.admin import KafkaAdminClient
    from kafka import TopicPartition as KTP

    broker = make_broker("producer_id_expiration_ms = 1000\nretention_check_interval_ms = 100\n")
    create(broker, "idem-expire", 1)
    p = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True})
    p.produce("idem-expire", value=b"x", partition=0)
    assert p.flush(10) == 0
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    tp = KTP("idem-expire", 0)
    assert len(admin.describe_producers([tp])[tp].active_producers) == 1
    deadline = time.time() + 20
    while admin.describe_producers([tp])[tp].active_producers and time.time() < deadline:
        time.sleep(0.2)
    assert admin.describe_producers([tp])[tp].active_producers == []
    assert "expired idle producer ids" in broker.log()
