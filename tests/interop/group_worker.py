"""A consumer-group member in its own process, so a test can SIGTERM it (graceful leave)
or SIGKILL it (crash, no LeaveGroup).

usage: group_worker.py CLIENT BOOTSTRAP TOPIC GROUP OUT_FILE [INSTANCE_ID]

CLIENT: librdkafka (classic protocol), librdkafka-consumer (the KIP-848 consumer protocol,
group.protocol=consumer: the broker assigns, timeouts are the broker's) or kafka-python.

Writes to OUT_FILE, one line each, flushed:
  A <partitions>          an assignment (comma-separated partitions)
  R <partition> <offset> <value>   a record, written before its offset is committed
  C                       a synchronous commit completed
"""

import signal
import sys
import time

client, bootstrap, topic, group, out_path = sys.argv[1:6]
instance = sys.argv[6] if len(sys.argv) > 6 else None
out = open(out_path, "a", buffering=1)
stop = False


def on_term(*_):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_term)


def run_librdkafka(consumer_protocol=False):
    from confluent_kafka import Consumer

    conf = {"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
            "enable.auto.commit": False}
    if consumer_protocol:
        conf["group.protocol"] = "consumer"
    else:
        conf.update({"session.timeout.ms": 4000, "heartbeat.interval.ms": 300,
                     "partition.assignment.strategy": "range"})
    if instance:
        conf["group.instance.id"] = instance
    c = Consumer(conf)

    owned = set()

    def on_assign(consumer, partitions):
        if consumer_protocol:  # incremental: the callback gets what is added
            owned.update(p.partition for p in partitions)
        else:
            owned.clear()
            owned.update(p.partition for p in partitions)
        out.write("A " + ",".join(str(p) for p in sorted(owned)) + "\n")

    def on_revoke(consumer, partitions):
        if consumer_protocol:
            owned.difference_update(p.partition for p in partitions)
            out.write("A " + ",".join(str(p) for p in sorted(owned)) + "\n")

    c.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
    uncommitted = 0
    last_commit = time.time()
    while not stop:
        m = c.poll(0.2)
        if m is not None and not m.error():
            out.write(f"R {m.partition()} {m.offset()} {m.value().decode()}\n")
            uncommitted += 1
        if uncommitted and (uncommitted >= 50 or time.time() - last_commit > 0.3):
            try:
                c.commit(asynchronous=False)
                out.write("C\n")
                uncommitted = 0
            except Exception as e:  # a rebalance in progress: commit again later
                out.write(f"E {e}\n")
            last_commit = time.time()
    if uncommitted:
        try:
            c.commit(asynchronous=False)
        except Exception:
            pass
    c.close()


def run_kafka_python():
    from kafka import KafkaConsumer
    from kafka.consumer.subscription_state import ConsumerRebalanceListener

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked):
            pass

        def on_partitions_assigned(self, assigned):
            out.write("A " + ",".join(str(p.partition) for p in assigned) + "\n")

    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
                      enable_auto_commit=False, session_timeout_ms=4000,
                      heartbeat_interval_ms=300, group_instance_id=instance)
    c.subscribe([topic], listener=Listener())
    while not stop:
        batch = c.poll(200)
        n = 0
        for tp, msgs in batch.items():
            for m in msgs:
                out.write(f"R {m.partition} {m.offset} {m.value.decode()}\n")
                n += 1
        if n:
            try:
                c.commit()
                out.write("C\n")
            except Exception as e:
                out.write(f"E {e}\n")
    c.close()


if client == "kafka-python":
    run_kafka_python()
else:
    run_librdkafka(consumer_protocol=client == "librdkafka-consumer")
