"""The same Kafka Streams application and the same Flink job against the broker at
BOOTSTRAP (Exacta or Apache Kafka; scripts/bench_jvm.sh runs them alternating), both exactly
once: Kafka Streams `exactly_once_v2` (tests/interop/java StreamsApp: count and sum per key
through a repartition topic and a RocksDB store, and a windowed stream-stream join; commits
every 100 ms) and Flink (tests/interop/flink CountJob: KafkaSource read_committed, keyed
count and sum, KafkaSink EXACTLY_ONCE; a checkpoint every second).

For each, after a warm-up:
- end-to-end latency: input at a fixed rate; for each output record, the time from its input
  record's creation (the producer's CreateTime, which both carry over to their output) to a
  read_committed consumer receiving it: what a downstream reader waits, commit included;
- throughput: a burst of input records produced at once, and the input records per second
  from its start until a read_committed consumer has every output record.

Usage: bench_jvm.py BOOTSTRAP LABEL (BENCH_JVM_RECORDS, BENCH_JVM_RATE, BENCH_JVM_SECONDS)."""

import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "interop"))
from flink_cluster import FlinkCluster  # noqa: E402
from test_streams import streams_app, wait_running  # noqa: E402

PARTITIONS, KEYS = 3, 50
RECORDS = int(os.environ.get("BENCH_JVM_RECORDS", "300000"))
RATE = int(os.environ.get("BENCH_JVM_RATE", "2000"))
SECONDS = int(os.environ.get("BENCH_JVM_SECONDS", "20"))


class Meter(threading.Thread):
    """A read_committed consumer of TOPICS from their start: how many output records have
    arrived, when the last one did, and each one's latency since its CreateTime."""

    def __init__(self, bootstrap, topics):
        super().__init__(daemon=True)
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-meter",
                                  "isolation.level": "read_committed",
                                  "enable.auto.commit": False, "fetch.wait.max.ms": 10})
        self.consumer.assign([TopicPartition(t, p, 0) for t in topics for p in range(PARTITIONS)])
        self.count, self.last, self.latencies, self.running = 0, 0.0, [], True
        self.start()

    def run(self):
        while self.running:
            for m in self.consumer.consume(1000, 0.1):
                if m.error():
                    continue
                now = time.time()
                self.latencies.append(now * 1000 - m.timestamp()[1])
                self.count, self.last = self.count + 1, now
        self.consumer.close()

    def wait_for(self, count, timeout):
        deadline = time.time() + timeout
        while self.count < count:
            if time.time() > deadline:
                raise SystemExit(f"only {self.count} of {count} output records arrived")
            time.sleep(0.05)

    def stop(self):
        self.running = False
        self.join()


def produce(bootstrap, topics_of, start, end, rate=None):
    """Input records START..END (each to every topic topics_of(i) names), at RATE per
    second or as fast as they go."""
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5,
                  "queue.buffering.max.messages": 1000000})
    began = time.time()
    for i in range(start, end):
        for topic in topics_of:
            key = f"k{i % KEYS}" if topic.endswith("-in") else f"o{i}"
            while True:
                try:
                    p.produce(topic, key=key, value=str(i))
                    break
                except BufferError:
                    p.poll(0.05)
        if rate and i % 10 == 9:
            p.poll(0)
            ahead = began + (i - start + 1) / rate - time.time()
            if ahead > 0:
                time.sleep(ahead)
        elif i % 10000 == 0:
            p.poll(0)
    assert p.flush(60) == 0


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))]


def measure(label, bootstrap, inputs, outputs_per_input, meter):
    """Warm-up, the latency run, the throughput burst; prints one result line."""
    outputs = lambda n: n * outputs_per_input  # noqa: E731
    warm = 2000
    produce(bootstrap, inputs, 0, warm)
    meter.wait_for(outputs(warm), 180)
    seen = len(meter.latencies)
    n = RATE * SECONDS
    produce(bootstrap, inputs, warm, warm + n, rate=RATE)
    meter.wait_for(outputs(warm + n), 120)
    lat = meter.latencies[seen:]
    began = time.time()
    produce(bootstrap, inputs, warm + n, warm + n + RECORDS)
    meter.wait_for(outputs(warm + n + RECORDS), 120 + RECORDS / 200)
    elapsed = meter.last - began
    per_s = RECORDS * len(inputs) / elapsed
    print(f"{label}: input_records_per_s={per_s:.0f} (burst of {RECORDS * len(inputs)} in "
          f"{elapsed:.1f} s) latency_ms p50={percentile(lat, 0.5):.0f} "
          f"p99={percentile(lat, 0.99):.0f} max={max(lat):.0f} (at {RATE * len(inputs)}/s "
          f"for {SECONDS} s)", flush=True)


def create(bootstrap, names):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in names]).values():
        f.result(30)


def bench_streams(bootstrap, label, work):
    prefix = "bench-streams"
    create(bootstrap, [f"{prefix}-{t}" for t in ("in", "out", "orders", "payments", "joined")])
    meter = Meter(bootstrap, [f"{prefix}-out", f"{prefix}-joined"])
    log = work / "streams.log"
    app = streams_app(SimpleNamespace(bootstrap=bootstrap), "bench-streams", prefix,
                      work / "state", log)
    try:
        wait_running(log, 1)
        # Per input index: a record to -in (one aggregate result) and an order and its
        # payment (one join result): three input records, two output records.
        measure(f"{label} kafka-streams", bootstrap,
                [f"{prefix}-in", f"{prefix}-orders", f"{prefix}-payments"], 2, meter)
    finally:
        app.terminate()
        app.wait(60)
        meter.stop()


def bench_flink(bootstrap, label, work):
    create(bootstrap, ["bench-flink-in", "bench-flink-out"])
    meter = Meter(bootstrap, ["bench-flink-out"])
    cluster = FlinkCluster(work / "flink")
    try:
        cluster.start()
        job = cluster.submit("exacta.flink.CountJob", bootstrap, "bench-flink-in",
                             "bench-flink-out", "bench-flink", 60000)
        cluster.wait(lambda: cluster.running_tasks(job) == cluster.total_tasks(job) > 0, 120,
                     "the Flink job to run")
        measure(f"{label} flink", bootstrap, ["bench-flink-in"], 1, meter)
    finally:
        cluster.stop()
        meter.stop()


def main():
    bootstrap, label = sys.argv[1], sys.argv[2]
    with tempfile.TemporaryDirectory() as work:
        bench_streams(bootstrap, label, Path(work))
        bench_flink(bootstrap, label, Path(work))


if __name__ == "__main__":
    main()
