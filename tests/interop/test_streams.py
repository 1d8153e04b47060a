"""Kafka Streams with processing.guarantee=exactly_once_v2 on Exacta, run the way a user
runs it: one application with a stateful count and sum per key (a repartition topic and a
RocksDB store with its changelog) and a windowed stream-stream join (two windowed stores
with changelogs), every internal topic created by Kafka Streams itself. The application is
SIGKILLed and the broker kill -9'd while it processes; afterwards a read_committed reader
sees exactly the reference computed from the input (every aggregate step once, in order;
every join result once) and none of the aborted results a read_uncommitted reader sees.

CI size by default; scripts/reliability.sh runs it with EXACTA_STREAMS_RECORDS=200000,
EXACTA_STREAMS_APP_KILLS=20 and EXACTA_STREAMS_BROKER_KILLS=10."""

import os
import random
import signal
import subprocess
import time
from collections import defaultdict

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from background import Background
from test_java import JAVA_DIR

STREAMS_VERSION = "4.4.0"
KEYS = 50
PARTITIONS = 3
RECORDS = int(os.environ.get("EXACTA_STREAMS_RECORDS", "12000"))
APP_KILLS = int(os.environ.get("EXACTA_STREAMS_APP_KILLS", "3"))
BROKER_KILLS = int(os.environ.get("EXACTA_STREAMS_BROKER_KILLS", "1"))


def streams_app(broker, app_id, prefix, state_dir, log):
    build = JAVA_DIR / "target" / f"kafka-{STREAMS_VERSION}"
    classpath = f"{build / 'classes'}:{(build / 'classpath.txt').read_text().strip()}"
    return subprocess.Popen(["java", "-Dexacta.session.timeout.ms=6000", "-cp", classpath,
                             "exacta.interop.Main", "streams-app",
                             broker.bootstrap, app_id, prefix, str(state_dir)],
                            stdout=open(log, "a"), stderr=subprocess.STDOUT)


def read_topic(broker, topic, isolation):
    """Every record of TOPIC as (partition, key, value) in offset order per partition, read
    until each partition's position reaches its end or nothing more comes for 2 s."""
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "streams-check",
                  "isolation.level": isolation, "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(PARTITIONS)}
    out, positions, idle = [], defaultdict(int), time.time()
    while any(positions[p] < ends[p] for p in ends) and time.time() - idle < 2:
        m = c.poll(0.2)
        if m is None or m.error():
            continue
        idle = time.time()
        positions[m.partition()] = m.offset() + 1
        out.append((m.partition(), m.key().decode(), m.value().decode()))
    c.close()
    return out


def wait_running(log, runs, timeout=120):
    """Wait until the application log shows its RUNS-th transition to RUNNING."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if log.exists() and log.read_text().count("STATE RUNNING") >= runs:
            return
        time.sleep(0.2)
    raise AssertionError(f"the application did not reach RUNNING:\n{log.read_text()[-4000:]}")


def reference():
    """Per key, the aggregate after each of its records; per order, its join result."""
    steps, count, total = defaultdict(list), defaultdict(int), defaultdict(int)
    for i in range(RECORDS):
        k = f"k{i % KEYS}"
        count[k] += 1
        total[k] += i
        steps[k].append(f"{count[k]},{total[k]}")
    joined = {f"o{i}": f"{i}|{2 * i}" for i in range(RECORDS)}
    return dict(steps), joined


def feed(broker, prefix, base_ms, start, end, seconds=0.0):
    """Records START..END, spread over about SECONDS so that a kill lands while the
    application processes them; idempotent, one producer retrying through broker kills:
    every input record exactly once. Orders and their payments carry the same timestamp,
    so each order joins its payment."""
    failed = []
    p = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True,
                  "message.timeout.ms": 120000, "linger.ms": 5})

    def report(err, _msg):
        if err is not None:
            failed.append(err)

    pause = seconds * 50 / max(1, end - start)
    for i in range(start, end):
        p.produce(f"{prefix}-in", key=f"k{i % KEYS}", value=str(i), on_delivery=report)
        p.produce(f"{prefix}-orders", key=f"o{i}", value=str(i), timestamp=base_ms + i,
                  on_delivery=report)
        p.produce(f"{prefix}-payments", key=f"o{i}", value=str(2 * i),
                  timestamp=base_ms + i, on_delivery=report)
        if i % 50 == 49:
            p.poll(0)
            time.sleep(pause)
    assert p.flush(150) == 0, "input records still undelivered"
    assert not failed, f"input records not delivered: {failed[:3]}"


def test_streams_exactly_once_v2_through_application_and_broker_kills(make_broker, tmp_path):
    broker = make_broker("group_initial_rebalance_delay_ms = 0\n")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    prefix = "eos"
    for f in admin.create_topics([NewTopic(f"{prefix}-{t}", PARTITIONS, 1) for t in
                                  ("in", "out", "orders", "payments", "joined")]).values():
        f.result(10)
    want_steps, want_joined = reference()
    want_latest = {k: v[-1] for k, v in want_steps.items()}

    rng = random.Random(7)
    kills = ["app"] * APP_KILLS + ["broker"] * BROKER_KILLS
    rng.shuffle(kills)
    state, log = tmp_path / "state", tmp_path / "streams.log"
    app_id = "exacta-streams-kills"
    app = streams_app(broker, app_id, prefix, state, log)
    started, runs, base_ms = time.time(), 1, int(time.time() * 1000)
    bursts = [RECORDS * n // (len(kills) + 1) for n in range(len(kills) + 2)]
    try:
        for n, kill in enumerate(kills):
            # Each kill lands while input still arrives and the application processes it
            # (not while it starts up or idles), so it leaves an open transaction behind.
            wait_running(log, runs)
            feeding = Background(feed, broker, prefix, base_ms, bursts[n], bursts[n + 1],
                                 seconds=1.5)
            time.sleep(rng.uniform(0.3, 1.2))
            if kill == "broker":
                broker.kill9()
                broker.start()
            else:
                app.kill()
                app.wait(10)
                runs = log.read_text().count("STATE RUNNING") + 1
                app = streams_app(broker, app_id, prefix, state, log)
            feeding.join()
        feed(broker, prefix, base_ms, bursts[-2], bursts[-1])
        deadline = time.time() + 120 + RECORDS / 500
        while time.time() < deadline:
            latest = {k: v for _, k, v in read_topic(broker, f"{prefix}-out", "read_committed")}
            joined = {k for _, k, _ in read_topic(broker, f"{prefix}-joined", "read_committed")}
            if latest == want_latest and len(joined) == RECORDS:
                break
            time.sleep(1)
    finally:
        app.send_signal(signal.SIGTERM)
        app.wait(60)
    elapsed = time.time() - started

    committed_out = read_topic(broker, f"{prefix}-out", "read_committed")
    committed_joined = read_topic(broker, f"{prefix}-joined", "read_committed")
    all_out = read_topic(broker, f"{prefix}-out", "read_uncommitted")
    all_joined = read_topic(broker, f"{prefix}-joined", "read_uncommitted")
    # Every aggregate step once and in order: nothing counted twice, nothing lost, no
    # result of an aborted transaction (those would repeat a step or skip ahead).
    steps = defaultdict(list)
    for _, k, v in committed_out:
        steps[k].append(v)
    wrong = [k for k in want_steps if steps.get(k) != want_steps[k]]
    assert not wrong, (f"{len(wrong)} of {KEYS} keys have wrong aggregate steps, e.g. "
                       f"{wrong[0]}: {steps.get(wrong[0], [])[:5]}...; log tail:\n"
                       f"{log.read_text()[-4000:]}")
    assert len(committed_out) == RECORDS
    # Every order joined with its payment exactly once.
    joined = defaultdict(list)
    for _, k, v in committed_joined:
        joined[k].append(v)
    assert {k: v for k, v in joined.items()} == {k: [v] for k, v in want_joined.items()}
    aborted = len(all_out) - len(committed_out) + len(all_joined) - len(committed_joined)
    print(f"records={RECORDS} app_kills={APP_KILLS} broker_kills={BROKER_KILLS} "
          f"aborted_results_hidden={aborted} elapsed_s={elapsed:.0f}")
    # The kills left aborted results in the log: the reader above really had some to skip.
    assert aborted > 0
    assert "panicked" not in broker.log()
    topics = sorted(admin.list_topics(timeout=10).topics)
    print("topics:", topics)
    for internal in ("by-key-repartition", "changelog", "order-payment-this-join-store-changelog",
                     "order-payment-other-join-store-changelog"):
        assert any(t.startswith(app_id) and t.endswith(internal) for t in topics), (internal, sorted(topics))
