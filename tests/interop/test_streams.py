"""Kafka Streams with processing.guarantee=exactly_once_v2 on Exacta: a stateful count and
sum per key through a repartition topic and a RocksDB store with its changelog, all created
by Kafka Streams itself; the output, read with read_committed, equals a reference computed
from the input exactly, through SIGKILLs of the application and kill -9 of the broker.
This is the CI-sized run; the issue's full size (20+ application and 10+ broker kills, a
windowed join) is still to come in scripts/reliability.sh."""

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
    return subprocess.Popen(["java", "-Dexacta.session.timeout.ms=6000", "-cp", classpath,
                             "exacta.interop.Main", "streams-app",
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


def test_streams_exactly_once_v2_through_application_and_broker_kills(make_broker, tmp_path):
    """The application SIGKILLed and restarted while it processes, and the broker kill
    -9'd: the output still equals the reference exactly (nothing counted twice, nothing
    lost), and Kafka Streams created its repartition and changelog topics on Exacta.
    CI size: 4 application kills, 1 broker kill."""
    import random
    import threading

    broker = make_broker("group_initial_rebalance_delay_ms = 0\n")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for f in admin.create_topics([NewTopic("kill-in", 3, 1),
                                  NewTopic("kill-out", 3, 1)]).values():
        f.result(10)
    total = 20_000
    reference = defaultdict(lambda: [0, 0])
    for i in range(total):
        reference[f"k{i % KEYS}"][0] += 1
        reference[f"k{i % KEYS}"][1] += i
    want = {k: f"{c},{s}" for k, (c, s) in reference.items()}

    def produce_slowly():
        # Idempotent, and retried through broker kills: every input record exactly once.
        for start in range(0, total, 1000):
            while True:
                try:
                    p = Producer({"bootstrap.servers": broker.bootstrap,
                                  "enable.idempotence": True, "message.timeout.ms": 60000})
                    for i in range(start, start + 1000):
                        p.produce("kill-in", key=f"k{i % KEYS}", value=str(i))
                    if p.flush(60) == 0:
                        break
                except Exception:
                    time.sleep(0.5)
            time.sleep(0.3)

    feeder = threading.Thread(target=produce_slowly)
    feeder.start()
    rng = random.Random(7)
    state, log = tmp_path / "state", tmp_path / "streams.log"
    app = streams_app(broker, "exacta-streams-kills", "kill-in", "kill-out", state, log)
    app_kills = broker_kills = 0
    try:
        for round_ in range(5):
            time.sleep(rng.uniform(1.5, 3.5))
            if round_ == 2:
                broker.kill9()
                broker.start()
                broker_kills += 1
            else:
                app.kill()
                app.wait(10)
                app_kills += 1
                app = streams_app(broker, "exacta-streams-kills", "kill-in", "kill-out",
                                  state, log)
        feeder.join(120)
        assert not feeder.is_alive(), "the input was not all produced"
        deadline = time.time() + 180
        got = {}
        while time.time() < deadline:
            got = latest_per_key(broker, "kill-out", 3)
            if got == want:
                break
            time.sleep(1)
        right = sum(1 for k in want if got.get(k) == want[k])
        assert got == want, f"{right} of {KEYS} keys right; log tail:\n{log.read_text()[-4000:]}"
    finally:
        app.send_signal(signal.SIGTERM)
        app.wait(30)
    assert (app_kills, broker_kills) == (4, 1)
    assert "panicked" not in broker.log()
    topics = admin.list_topics(timeout=10).topics
    assert any(t.startswith("exacta-streams-kills-by-key-repartition") for t in topics), topics
    assert any(t.endswith("-changelog") for t in topics), topics
