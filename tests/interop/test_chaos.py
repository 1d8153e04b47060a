"""Exactly-once under network faults: a transactional copier whose requests are delayed and
whose EndTxn / TxnOffsetCommit responses are lost (connection cut) through `exacta proxy`."""

import os
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from harness import FaultProxy

RECORDS = int(os.environ.get("EXACTA_CHAOS_RECORDS", "2000"))
CONFIG = "group_min_session_timeout_ms = 1000\ngroup_initial_rebalance_delay_ms = 0\n"


def read_committed(bootstrap, topic, partitions):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "verify", "isolation.level":
                  "read_committed", "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)}
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out, idle = [], time.time()
    while time.time() - idle < 2:
        m = c.poll(0.2)
        if m is not None and not m.error():
            out.append(int(m.value()))
            idle = time.time()
    c.close()
    return out, ends


def test_copier_exactly_once_through_delays_and_lost_responses(make_broker, tmp_path):
    broker = make_broker(CONFIG)
    a = AdminClient({"bootstrap.servers": broker.bootstrap})
    for f in a.create_topics([NewTopic("chaos-in", 2, 1), NewTopic("chaos-out", 3, 1)]).values():
        f.result(10)
    seed = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True})
    for i in range(RECORDS):
        seed.produce("chaos-in", value=str(i).encode(), partition=i % 2)
    assert seed.flush(20) == 0

    proxy = FaultProxy(broker.bootstrap, tmp_path / "proxy.log", seed=21,
                       delay=["produce=50", "add_partitions_to_txn=50", "end_txn=200",
                              "txn_offset_commit=100", "add_offsets_to_txn=50"],
                       drop=["end_txn=0.2", "txn_offset_commit=0.1", "add_partitions_to_txn=0.05"])
    consumer = Consumer({"bootstrap.servers": proxy.bootstrap, "group.id": "chaos-copier",
                         "isolation.level": "read_committed", "enable.auto.commit": False,
                         "auto.offset.reset": "earliest", "session.timeout.ms": 10000})
    consumer.subscribe(["chaos-in"])
    producer = Producer({"bootstrap.servers": proxy.bootstrap, "transactional.id": "chaos-1",
                         "transaction.timeout.ms": 60000, "retry.backoff.ms": 20,
                         "reconnect.backoff.ms": 10, "reconnect.backoff.max.ms": 100})
    producer.init_transactions(30)

    def rewind():
        for tp in consumer.committed(consumer.assignment(), timeout=10):
            consumer.seek(TopicPartition(tp.topic, tp.partition, max(tp.offset, 0)))

    def done():
        tps = consumer.committed([TopicPartition("chaos-in", p) for p in range(2)], timeout=10)
        return [tp.offset for tp in tps] == [RECORDS // 2, RECORDS // 2]

    commits = aborts = retries = 0
    deadline = time.time() + 240
    while time.time() < deadline:
        msgs = [m for m in consumer.consume(50, timeout=0.5) if not m.error()]
        if not msgs:
            if consumer.assignment() and done():
                break
            continue
        producer.begin_transaction()
        try:
            for m in msgs:
                v = int(m.value())
                producer.produce("chaos-out", value=str(v).encode(), partition=v % 3)
            producer.send_offsets_to_transaction(
                consumer.position(consumer.assignment()), consumer.consumer_group_metadata(), 30)
            while True:
                try:
                    producer.commit_transaction(30)
                    commits += 1
                    break
                except KafkaException as e:
                    if e.args[0].retriable():
                        retries += 1
                        continue
                    raise
        except KafkaException as e:
            if not e.args[0].txn_requires_abort():
                raise
            producer.abort_transaction(30)
            aborts += 1
            rewind()
    consumer.close()
    faults = (proxy.delayed(), proxy.dropped())
    proxy.stop()
    out, ends = read_committed(broker.bootstrap, "chaos-out", 3)
    duplicates = len(out) - len(set(out))
    lost = RECORDS - len(set(out))
    print(f"chaos copier: records={RECORDS} commits={commits} aborts={aborts} commit_retries={retries} "
          f"delayed={faults[0]} responses_dropped={faults[1]} duplicates={duplicates} lost={lost}")
    assert faults[0] > 50 and faults[1] > 0, f"too few faults injected: {faults}"
    assert sorted(out) == list(range(RECORDS)), f"duplicates={duplicates} lost={lost}"
    check = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "chaos-copier"})
    tps = check.committed([TopicPartition("chaos-in", p) for p in range(2)], timeout=10)
    check.close()
    assert [tp.offset for tp in tps] == [RECORDS // 2, RECORDS // 2]


def test_copier_killed_and_broker_paused_still_exactly_once(make_broker, tmp_path):
    """SIGKILL the copier mid-transaction and restart it (fencing its predecessor), and
    SIGSTOP/SIGCONT the broker: every input record is in the output once."""
    import random
    import signal
    import subprocess
    import sys
    from pathlib import Path

    broker = make_broker(CONFIG)
    n = 6000
    a = AdminClient({"bootstrap.servers": broker.bootstrap})
    for f in a.create_topics([NewTopic("kill-in", 2, 1), NewTopic("kill-out", 3, 1)]).values():
        f.result(10)
    seed = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True})
    for i in range(n):
        seed.produce("kill-in", value=str(i).encode(), partition=i % 2)
    assert seed.flush(20) == 0

    worker = Path(__file__).parent / "copier_worker.py"
    args = [sys.executable, str(worker), broker.bootstrap, "kill-in", "kill-out", "killers",
            "killer-1", str(n // 2), "30"]
    log = open(tmp_path / "copier.err", "a")
    rng = random.Random(5)
    kills = pauses = starts = 0
    proc = None
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc is None or proc.poll() is not None:
            if proc is not None and proc.returncode == 0:
                break
            proc = subprocess.Popen(args, stderr=log)
            starts += 1
        time.sleep(rng.uniform(1.0, 1.8))
        if kills < 3 and proc.poll() is None:
            proc.kill()  # mid-transaction, no cleanup
            proc.wait(10)
            kills += 1
        elif pauses < 3:
            broker.proc.send_signal(signal.SIGSTOP)
            time.sleep(rng.uniform(0.5, 1.5))
            broker.proc.send_signal(signal.SIGCONT)
            pauses += 1
    assert proc is not None and proc.wait(120) == 0, "the copier finished"
    out, _ = read_committed(broker.bootstrap, "kill-out", 3)
    duplicates = len(out) - len(set(out))
    lost = n - len(set(out))
    print(f"copier kills={kills} restarts={starts - 1} broker_pauses={pauses} records={n} "
          f"duplicates={duplicates} lost={lost}")
    assert kills == 3 and pauses >= 1
    assert sorted(out) == list(range(n)), f"duplicates={duplicates} lost={lost}"

