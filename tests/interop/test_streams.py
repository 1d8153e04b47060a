"""Kafka Streams with processing.guarantee=exactly_once_v2 on Exacta: a stateful count and
sum per key through a repartition topic and a RocksDB store with its changelog, all created
by Kafka Streams itself; the output, read with read_committed, equals a reference computed
from the input exactly. (Kills of the application and the broker: scripts/reliability.sh
and the longer runs; this is the CI-sized version.)"""

import signal
import subprocess
import time
from collections import defaultdict

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from test_java import JAVA_DIR

STREAMS_VERSION = "4.4.0"
KEYS = 50


def streams_app(broker, app_id, source, sink, state_dir, log):
    build = JAVA_DIR / "target" / f"kafka-{STREAMS_VERSION}"
    classpath = f"{build / 'classes'}:{(build / 'classpath.txt').read_text().strip()}"
    return subprocess.Popen(["java", "-cp", classpath, "exacta.interop.Main", "streams-app",
                             broker.bootstrap, app_id, source, sink, str(state_dir)],
                            stdout=open(log, "a"), stderr=subprocess.STDOUT)


def latest_per_key(broker, topic, partitions):
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "streams-check",
                  "isolation.level": "read_committed", "enable.auto.commit": False})
    tps = [TopicPartition(topic, p, 0) for p in range(partitions)]
    c.assign(tps)
    ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)}
    latest, seen = {}, defaultdict(int)
    deadline = time.time() + 20
    while time.time() < deadline and any(seen[p] < ends[p] for p in ends):
        m = c.poll(0.2)
        if m is None or m.error():
            continue
        seen[m.partition()] = m.offset() + 1
        latest[m.key().decode()] = m.value().decode()
    c.close()
    return latest


def test_streams_exactly_once_v2_count_and_sum(broker, tmp_path):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for f in admin.create_topics([NewTopic("streams-in", 3, 1),
                                  NewTopic("streams-out", 3, 1)]).values():
        f.result(10)
    reference = defaultdict(lambda: [0, 0])
    p = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True})
    for i in range(20_000):
        key = f"k{i % KEYS}"
        p.produce("streams-in", key=key, value=str(i))
        reference[key][0] += 1
        reference[key][1] += i
    assert p.flush(20) == 0
    want = {k: f"{c},{s}" for k, (c, s) in reference.items()}
    app = streams_app(broker, "exacta-streams", "streams-in", "streams-out",
                      tmp_path / "state", tmp_path / "streams.log")
    try:
        deadline = time.time() + 120
        got = {}
        while time.time() < deadline:
            got = latest_per_key(broker, "streams-out", 3)
            if got == want:
                break
            time.sleep(1)
        assert got == want, (f"{sum(1 for k in want if got.get(k) == want[k])} of {KEYS} keys "
                             f"right; log tail:\n{(tmp_path / 'streams.log').read_text()[-4000:]}")
    finally:
        app.send_signal(signal.SIGTERM)
        app.wait(30)
    # Kafka Streams created its repartition and changelog topics on Exacta.
    topics = admin.list_topics(timeout=10).topics
    assert any(t.startswith("exacta-streams-by-key-repartition") for t in topics), topics
    assert any(t.endswith("-changelog") for t in topics), topics
