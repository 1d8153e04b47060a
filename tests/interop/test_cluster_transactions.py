"""Transactions on a 3-node cluster (docs/cluster.md), driven by librdkafka: the
transaction coordinator is the leader of the transactional id's `__transaction_state`
partition; markers go to each partition's leader (WriteTxnMarkers), and a partition leader
checks a transaction's first write with the coordinator (KIP-890). The coordinator's node
is SIGKILLed while transactions commit: the new leader loads the state, finishes what was
prepared, and read_committed sees every committed record once and no aborted one.

CI size by default; EXACTA_CLUSTER_TXN_ROUNDS and EXACTA_CLUSTER_TXN_KILLS make it longer."""

import os
import threading
import time
from collections import Counter

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from cluster_harness import all_in_sync, create_topic, find_coordinator
from harness import wait_for

ROUNDS = int(os.environ.get("EXACTA_CLUSTER_TXN_ROUNDS", "300"))
KILLS = int(os.environ.get("EXACTA_CLUSTER_TXN_KILLS", "3"))
PARTITIONS = 3
TXN_STATE = "__transaction_state"



def read_committed(cluster, topic, expected, timeout=60):
    consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "reader",
                         "isolation.level": "read_committed", "enable.auto.commit": False,
                         "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    seen = []
    deadline = time.time() + timeout
    while len(seen) < expected and time.time() < deadline:
        m = consumer.poll(0.5)
        if m is not None and not m.error():
            seen.append(m.value().decode())
    end = time.time() + 2  # nothing more arrives either
    while time.time() < end:
        m = consumer.poll(0.2)
        if m is not None and not m.error():
            seen.append(m.value().decode())
    consumer.close()
    return seen


def coordinator_of(cluster, transactional_id):
    """The node FindCoordinator names for TRANSACTIONAL_ID (asked of a live node)."""
    live = next(n for n in cluster.nodes if n.alive())
    error, node_id, _, _ = find_coordinator(live, transactional_id, key_type=1)
    assert error == 0, f"FindCoordinator error {error}"
    return node_id


def test_exactly_once_copy_across_brokers(cluster):
    """Consume-transform-produce with offsets in the transaction: the output is the input,
    exactly, though input, output, offsets and transaction state are led by different
    brokers."""
    create_topic(cluster, "in", PARTITIONS)
    admin = create_topic(cluster, "out", PARTITIONS)
    source = Producer({"bootstrap.servers": cluster.bootstrap, "enable.idempotence": True})
    for i in range(2000):
        source.produce("in", key=str(i), value=str(i))
    assert source.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "copier",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "isolation.level": "read_committed"})
    consumer.subscribe(["in"])
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "transactional.id": "copier-1"})
    producer.init_transactions(30)
    copied, aborts, batch = 0, 0, []
    deadline = time.time() + 90
    while copied < 2000 and time.time() < deadline:
        batch += [m for m in consumer.consume(100, 0.5) if not m.error()]
        if not batch:
            continue
        producer.begin_transaction()
        for m in batch:
            producer.produce("out", key=m.key(), value=m.value())
        producer.send_offsets_to_transaction(consumer.position(consumer.assignment()),
                                             consumer.consumer_group_metadata(), 30)
        if aborts < 3 and copied >= aborts * 500:
            # An aborted round: its output is invisible and its input is copied again.
            producer.abort_transaction(30)
            aborts += 1
            positions = {}
            for m in batch:
                key = (m.topic(), m.partition())
                positions[key] = min(positions.get(key, m.offset()), m.offset())
            for (t, p), offset in positions.items():
                consumer.seek(TopicPartition(t, p, offset))
        else:
            producer.commit_transaction(30)
            copied += len(batch)
        batch = []
    consumer.close()
    assert copied == 2000
    assert aborts == 3
    out = read_committed(cluster, "out", 2000)
    counts = Counter(out)
    assert sorted(counts) == sorted(str(i) for i in range(2000))
    assert max(counts.values()) == 1, "a record copied twice"
    # The group's committed offsets are the input's end: a restarted copier reads nothing.
    check = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "copier"})
    committed = check.committed([TopicPartition("in", p) for p in range(PARTITIONS)], timeout=10)
    ends = [check.get_watermark_offsets(TopicPartition("in", p), timeout=10)[1]
            for p in range(PARTITIONS)]
    check.close()
    assert [tp.offset for tp in committed] == ends
    assert all_in_sync(admin, "out")


def test_commits_survive_transaction_coordinator_kills(cluster):
    """Transactions commit (every fourth aborts) while the node coordinating them is
    SIGKILLed: every committed record is read once, no aborted or unfinished one ever."""
    topic, tid = "payments", "payments-writer"
    admin = create_topic(cluster, topic, PARTITIONS, configs={"min.insync.replicas": "2"})
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "transactional.id": tid,
                         "transaction.timeout.ms": 20000, "message.timeout.ms": 20000})
    producer.init_transactions(60)
    committed, aborted, outcomes = set(), set(), []
    kill_at = {ROUNDS * (k + 1) // (KILLS + 1) for k in range(KILLS)}
    killer, killed, recovery = None, [], []
    for r in range(ROUNDS):
        if r in kill_at:
            wait_for(lambda: all_in_sync(admin, topic, TXN_STATE), 60, "replicas in sync")
            victim = coordinator_of(cluster, tid)

            def kill(v=victim):
                time.sleep(0.02)  # a little into the next transactions
                cluster.node(v).kill9()
                killed.append((v, time.time()))
            killer = threading.Thread(target=kill)
            killer.start()
        values = [f"{r}-{i}" for i in range(20)]
        started = time.time()
        outcome = run_transaction(producer, topic, values, abort=r % 4 == 3)
        (committed if outcome == "committed" else aborted).update(values)
        if killer is not None and not killer.is_alive() and started > killed[-1][1]:
            # The first transaction begun after the kill has ended: the new coordinator
            # answered its InitProducerId-free path (FindCoordinator, AddPartitions, EndTxn).
            killer.join()
            killer = None
            recovery.append(time.time() - killed[-1][1])
            cluster.restart(killed[-1][0])
    assert killer is None
    assert len(committed) > 0 and len(aborted) > 0
    seen = read_committed(cluster, topic, len(committed))
    counts = Counter(seen)
    assert max(counts.values(), default=1) == 1, "a committed record read twice"
    assert set(seen) & aborted == set(), "an aborted record is visible"
    assert set(seen) == committed, f"{len(committed - set(seen))} committed records missing"
    assert len(recovery) == KILLS
    recovery.sort()
    print(f"transaction coordinator kills: the next transaction ended p50 "
          f"{recovery[len(recovery) // 2]:.2f} s, max {recovery[-1]:.2f} s after the kill "
          f"({KILLS} kills, {ROUNDS} transactions)")


def run_transaction(producer, topic, values, abort):
    """One transaction, retried as librdkafka documents; 'committed' or 'aborted'."""
    for attempt in range(40):
        try:
            producer.begin_transaction()
            for v in values:
                producer.produce(topic, key=v, value=v)
            if abort:
                producer.abort_transaction(60)
                return "aborted"
            producer.commit_transaction(60)
            return "committed"
        except KafkaException as e:
            err = e.args[0]
            assert not err.fatal(), f"fatal transaction error: {err}"
            if err.txn_requires_abort():
                producer.abort_transaction(60)
                return "aborted"
            if err.retriable():
                # commit or abort may be retried; the outcome is decided by the retry.
                for _ in range(40):
                    try:
                        (producer.abort_transaction if abort else producer.commit_transaction)(60)
                        return "aborted" if abort else "committed"
                    except KafkaException as again:
                        if again.args[0].txn_requires_abort():
                            producer.abort_transaction(60)
                            return "aborted"
                        if not again.args[0].retriable():
                            raise
                        time.sleep(0.1)
            raise
    raise AssertionError("no transaction outcome")
