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

from background import Background
from flink_cluster import FlinkCluster
from test_streams import read_topic

KEYS = 50
RECORDS = int(os.environ.get("EXACTA_FLINK_RECORDS", "12000"))
KILLS = int(os.environ.get("EXACTA_FLINK_KILLS", "2"))


def feed(broker, topic, start, end, seconds=0.0):
    """Records START..END spread over about SECONDS, idempotent: every input record once."""
    p = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True,
                  "linger.ms": 5})
    pause = seconds * 50 / max(1, end - start)
    for i in range(start, end):
        p.produce(topic, key=f"k{i % KEYS}", value=str(i))
        if i % 50 == 49:
            p.poll(0)
            time.sleep(pause)
    assert p.flush(60) == 0


def reference_of(records):
    """Per key, "count,sum" after each of its records."""
    steps, count, total = defaultdict(list), defaultdict(int), defaultdict(int)
    for i in range(records):
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
    want = reference_of(RECORDS)
    cluster = FlinkCluster(tmp_path / "flink")
    rng = random.Random(11)
    bursts = [RECORDS * n // (KILLS + 1) for n in range(KILLS + 2)]
    try:
        cluster.start()
        job = cluster.submit("exacta.flink.CountJob", broker.bootstrap, "flink-in", "flink-out",
                             "exacta-flink", 60000)
        checkpoints = 0
        for n in range(KILLS):
            # Kill while the job runs, has restored from the previous kill and checkpointed
            # since, and processes input that still arrives (an open transaction to abort).
            cluster.wait(lambda: cluster.restarts(job) >= n
                         and cluster.running_tasks(job) == cluster.total_tasks(job) > 0
                         and cluster.checkpoints_completed(job) > checkpoints, 120,
                         "the job to restore, run and checkpoint")
            feeding = Background(feed, broker, "flink-in", bursts[n], bursts[n + 1], seconds=2)
            time.sleep(rng.uniform(0.3, 1.5))
            checkpoints = cluster.checkpoints_completed(job)
            cluster.kill_taskmanager()
            cluster.start_taskmanager()
            feeding.join()
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


def test_flink_job_down_longer_than_the_transaction_timeout(make_broker, tmp_path):
    """Flink's known failure mode: the job is down for longer than its sink's
    transaction.timeout.ms. While it is down an operator sees the open transaction
    (`exacta txn find-hanging`, the open-transaction gauges) holding back read_committed
    readers; at the timeout the broker aborts it (exacta_transactions_timed_out_total) and
    readers move on; the restored job redoes the aborted work. (A transaction whose
    checkpoint had completed but whose commit had not run is lost in the same way, on Kafka
    too: Flink logs that its producer "is already fenced"; docs/flink.md.)"""
    from test_cli import cli
    from test_transactions import scrape

    broker = make_broker('metrics_listen = "127.0.0.1:0"\n')
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for f in admin.create_topics([NewTopic("down-in", 3, 1),
                                  NewTopic("down-out", 3, 1)]).values():
        f.result(10)
    half = 5000
    cluster = FlinkCluster(tmp_path / "flink")

    def output():
        return read_topic(broker, "down-out", "read_committed")

    try:
        cluster.start()
        job = cluster.submit("exacta.flink.CountJob", broker.bootstrap, "down-in", "down-out",
                             "exacta-flink-down", 8000)
        cluster.wait(lambda: cluster.running_tasks(job) == cluster.total_tasks(job) > 0, 120,
                     "the job to run")
        feed(broker, "down-in", 0, half)
        cluster.wait(lambda: len(output()) == half, 60, "the first half to be committed")
        feed(broker, "down-in", half, 2 * half)
        time.sleep(0.3)
        cluster.kill_taskmanager()
        down = time.time()
        # The sink's open transaction, seen by an operator while the job is down.
        cluster.wait(lambda: cli(broker, "txn", "find-hanging", "--topic", "down-out",
                                 "--older-than-secs", 1, "--output", "json") != [], 10,
                     "find-hanging to report the open transaction")
        ongoing = cli(broker, "txn", "list", "--state", "Ongoing", "--output", "json")
        assert any(t["transactional_id"].startswith("exacta-flink-down") for t in ongoing), ongoing
        m = scrape(broker)
        assert m["exacta_transactions_open"] >= 1 and m["exacta_transactions_timed_out_total"] == 0
        assert len(output()) < 2 * half  # held back by the open transaction
        # At the timeout the broker aborts it.
        cluster.wait(lambda: scrape(broker)["exacta_transactions_timed_out_total"] >= 1, 30,
                     "the broker to abort the transaction at its timeout")
        aborted_after = time.time() - down
        assert cli(broker, "txn", "find-hanging", "--topic", "down-out", "--older-than-secs", 0,
                   "--output", "json") == []
        time.sleep(2)
        cluster.start_taskmanager()
        want = reference_of(2 * half)
        cluster.wait(lambda: {k: v for _, k, v in output()} == {k: v[-1] for k, v in want.items()},
                     120, "the restored job to finish")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{cluster.log_tail()}") from None
    finally:
        cluster.stop()
    steps = defaultdict(list)
    for _, k, v in output():
        steps[k].append(v)
    assert steps == want
    print(f"transaction aborted by its timeout {aborted_after:.1f} s after the TaskManager died")
