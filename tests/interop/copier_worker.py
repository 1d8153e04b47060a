"""An exactly-once copier in its own process, so a test can SIGKILL and restart it.

usage: copier_worker.py BOOTSTRAP INPUT OUTPUT GROUP TRANSACTIONAL_ID INPUT_END_PER_PARTITION [PAUSE_MS]

Reads INPUT (2 partitions) in GROUP with read_committed, writes each value to OUTPUT
(partition value % 3) and commits the input offsets in the same transaction. Exits 0 once
the group's committed offsets reach INPUT_END_PER_PARTITION on both partitions. A restart
with the same transactional id fences the previous instance (its open transaction is
aborted by the broker).
"""

import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

bootstrap, source, sink, group, txn_id, end = sys.argv[1:7]
end = int(end)
pause = int(sys.argv[7]) / 1000 if len(sys.argv) > 7 else 0  # per transaction, to pace the run

consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                     "isolation.level": "read_committed", "enable.auto.commit": False,
                     "auto.offset.reset": "earliest", "session.timeout.ms": 6000})
consumer.subscribe([source])
producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": txn_id,
                     "transaction.timeout.ms": 10000, "retry.backoff.ms": 20,
                     "reconnect.backoff.ms": 10, "reconnect.backoff.max.ms": 200})
producer.init_transactions(60)


def done():
    tps = consumer.committed([TopicPartition(source, p) for p in range(2)], timeout=10)
    return all(tp.offset == end for tp in tps)


def rewind():
    for tp in consumer.committed(consumer.assignment(), timeout=10):
        consumer.seek(TopicPartition(tp.topic, tp.partition, max(tp.offset, 0)))


deadline = time.time() + 300
while time.time() < deadline:
    msgs = [m for m in consumer.consume(50, timeout=0.5) if not m.error()]
    if not msgs:
        if consumer.assignment() and done():
            consumer.close()
            sys.exit(0)
        continue
    producer.begin_transaction()
    try:
        time.sleep(pause)
        for m in msgs:
            v = int(m.value())
            producer.produce(sink, value=str(v).encode(), partition=v % 3)
        producer.send_offsets_to_transaction(
            consumer.position(consumer.assignment()), consumer.consumer_group_metadata(), 60)
        while True:
            try:
                producer.commit_transaction(60)
                break
            except KafkaException as e:
                print(f"commit error: {e}", file=sys.stderr, flush=True)
                if e.args[0].retriable():
                    continue
                raise
    except KafkaException as e:
        print(f"transaction error: {e}", file=sys.stderr, flush=True)
        if e.args[0].fatal():
            sys.exit(3)  # fenced or otherwise unusable: the test restarts us
        if not e.args[0].txn_requires_abort():
            raise
        producer.abort_transaction(60)
        rewind()
sys.exit(4)
