"""Apache Flink on Exacta, run the way a user runs it: a standalone session cluster (a
JobManager and a TaskManager JVM), the DataStream job of tests/interop/flink submitted with
`flink run`: KafkaSource (read_committed) → count and sum per key in keyed state →
KafkaSink with DeliveryGuarantee.EXACTLY_ONCE. The TaskManager is SIGKILLed while the job
processes and a new one started; the job restarts from its last checkpoint and the output
a read_committed reader sees is exactly the reference: every aggregate step once, in order,
none of the aborted results a read_uncommitted reader sees.

CI size by default; scripts/reliability.sh runs it with EXACTA_FLINK_RECORDS=200000 and
EXACTA_FLINK_KILLS=20."""

import os
import random
import time
from collections import defaultdict

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from flink_cluster import FlinkCluster
from test_streams import read_topic

KEYS = 50
RECORDS = int(os.environ.get("EXACTA_FLINK_RECORDS", "20000"))
KILLS = int(os.environ.get("EXACTA_FLINK_KILLS", "3"))


def feed(broker, topic, start, end):
    """Records START..END, idempotent: every input record exactly once."""
    p = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True})
    for i in range(start, end):
        p.produce(topic, key=f"k{i % KEYS}", value=str(i))
    assert p.flush(60) == 0


def reference():
    steps, count, total = defaultdict(list), defaultdict(int), defaultdict(int)
    for i in range(RECORDS):
        k = f"k{i % KEYS}"
        count[k] += 1
        total[k] += i
        steps[k].append(f"{count[k]},{total[k]}")
    return dict(steps)


def test_flink_exactly_once_through_taskmanager_kills(broker, tmp_path):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for f in admin.create_topics([NewTopic("flink-in", 3, 1),
                                  NewTopic("flink-out", 3, 1)]).values():
        f.result(10)
    want = reference()
    cluster = FlinkCluster(tmp_path / "flink")
    rng = random.Random(11)
    bursts = [RECORDS * n // (KILLS + 1) for n in range(KILLS + 2)]
    try:
        cluster.start()
        job = cluster.submit("exacta.flink.CountJob", broker.bootstrap, "flink-in", "flink-out",
                             "exacta-flink", 60000)
        checkpoints = 0
        for n in range(KILLS):
            # Kill while the job runs, has checkpointed since its last restore, and
            # processes a burst of input.
            cluster.wait(lambda: cluster.running_tasks(job) == cluster.total_tasks(job) > 0
                         and cluster.checkpoints_completed(job) > checkpoints, 120,
                         "the job to run and checkpoint")
            feed(broker, "flink-in", bursts[n], bursts[n + 1])
            time.sleep(rng.uniform(0.2, 1.5))
            checkpoints = cluster.checkpoints_completed(job)
            cluster.kill_taskmanager()
            cluster.start_taskmanager()
        feed(broker, "flink-in", bursts[-2], bursts[-1])
        want_latest = {k: v[-1] for k, v in want.items()}
        cluster.wait(lambda: {k: v for _, k, v in read_topic(broker, "flink-out", "read_committed")}
                     == want_latest, 120 + RECORDS / 500, "the output to be complete")
        assert cluster.job_state(job) == "RUNNING"
        restored = cluster.restarts(job)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{cluster.log_tail()}") from None
    finally:
        cluster.stop()

    committed = read_topic(broker, "flink-out", "read_committed")
    everything = read_topic(broker, "flink-out", "read_uncommitted")
    steps = defaultdict(list)
    for _, k, v in committed:
        steps[k].append(v)
    wrong = [k for k in want if steps.get(k) != want[k]]
    assert not wrong, (f"{len(wrong)} of {KEYS} keys have wrong aggregate steps, e.g. "
                       f"{wrong[0]}: {steps.get(wrong[0], [])[:5]}...")
    assert len(committed) == RECORDS
    aborted = len(everything) - len(committed)
    print(f"records={RECORDS} taskmanager_kills={KILLS} restored_from_checkpoint={restored} "
          f"aborted_results_hidden={aborted}")
    assert restored >= KILLS
    assert aborted > 0
    assert "panicked" not in broker.log()
