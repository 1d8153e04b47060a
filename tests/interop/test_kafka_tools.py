"""Kafka's own test tools against Exacta, in the shape of Kafka's transactions system test
(tests/kafkatest/tests/core/transactions_test.py): VerifiableProducer writes the input,
three TransactionalMessageCopiers (one per input partition) copy it transactionally with
offsets committed under the consumer's group metadata, while the copiers or the broker are
bounced, cleanly (SIGTERM) or hard (SIGKILL); the read_committed output then holds every
input record exactly once, and VerifiableConsumer reads all of it in a consumer group.
EndToEndLatency runs too. The tools come from `org.apache.kafka:kafka-tools`, resolved with
Maven by scripts/jvm_setup.sh (scripts/kafka-peer).

CI size by default; scripts/reliability.sh runs EXACTA_TOOLS_RECORDS=100000 with
EXACTA_TOOLS_BOUNCES=3 (Kafka's test bounces three times)."""

import json
import os
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

PEER = Path(__file__).resolve().parents[2] / "scripts" / "kafka-peer"
VERSION = os.environ.get("KAFKA_VERSION", "4.4.0")
RECORDS = int(os.environ.get("EXACTA_TOOLS_RECORDS", "20000"))
BOUNCES = int(os.environ.get("EXACTA_TOOLS_BOUNCES", "1"))
PARTITIONS = 3


def tools_classpath():
    path = PEER / "target" / f"kafka-{VERSION}" / "classpath.txt"
    if not path.exists():
        pytest.fail(f"Kafka's tools {VERSION} are not resolved: run scripts/test.sh (or mvn -f "
                    f"{PEER}/pom.xml -Dkafka.version={VERSION} dependency:build-classpath)")
    return path.read_text().strip()


def tool(name, *args, **popen):
    return subprocess.Popen(["java", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-cp",
                             tools_classpath(), f"org.apache.kafka.tools.{name}", *args],
                            text=True, **popen)


def copier(broker, partition, log):
    """A TransactionalMessageCopier for input partition PARTITION."""
    return tool("TransactionalMessageCopier", "--broker-list", broker.bootstrap,
                "--input-topic", "tools-in", "--input-partition", str(partition),
                "--output-topic", "tools-out", "--transactional-id", f"copier-{partition}",
                "--consumer-group", "tools-copiers", "--transaction-size", "200",
                # A restarted copier reads its committed offset before it fences its
                # predecessor, so it waits (UNSTABLE_OFFSET_COMMIT) until the dead one's
                # transaction times out, on Kafka as here: keep that short.
                "--transaction-timeout", "3000",
                "--use-group-metadata", stdout=open(log, "a"), stderr=subprocess.STDOUT)


def progress(log):
    """The copier's last reported `remaining` (None before its first report)."""
    remaining = None
    for line in Path(log).read_text().splitlines():
        if line.startswith("{"):
            status = json.loads(line)
            remaining = status.get("remaining", remaining)
    return remaining


def produce_input(broker):
    produced = tool("VerifiableProducer", "--bootstrap-server", broker.bootstrap,
                    "--topic", "tools-in", "--max-messages", str(RECORDS), "--acks", "-1",
                    # Keyed, so the partitions (one per copier) get similar shares: without
                    # keys the sticky partitioner can leave one copier a small share that it
                    # finishes before the first bounce.
                    "--repeating-keys", "100",
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out, _ = produced.communicate(timeout=300)
    acked = [json.loads(line) for line in out.splitlines()
             if '"producer_send_success"' in line]
    assert produced.returncode == 0 and len(acked) == RECORDS, out[-2000:]
    return {str(a["value"]) for a in acked}


def remaining(logs):
    """Records each copier still has to copy (None until each has reported)."""
    left = [progress(log) for log in logs]
    return None if None in left else left


def read_output(broker):
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "tools-check",
                  "isolation.level": "read_committed", "enable.auto.commit": False})
    c.assign([TopicPartition("tools-out", p, 0) for p in range(PARTITIONS)])
    values, deadline = [], time.time() + 60
    while len(values) < RECORDS and time.time() < deadline:
        m = c.poll(0.2)
        if m is not None and not m.error():
            values.append(m.value().decode())
    time.sleep(1)
    while (m := c.poll(0.5)) is not None:
        if not m.error():
            values.append(m.value().decode())
    c.close()
    return values


def verifiable_consumer(broker, tmp_path):
    """Kafka's VerifiableConsumer reads the output in a group with read_committed: how
    many records it consumed, and whether all of its offset commits succeeded."""
    config = tmp_path / "consumer.properties"
    config.write_text("isolation.level=read_committed\n")
    r = subprocess.run(["java", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-cp",
                        tools_classpath(), "org.apache.kafka.tools.VerifiableConsumer",
                        "--bootstrap-server", broker.bootstrap, "--topic", "tools-out",
                        "--group-id", "tools-verifiable", "--max-messages", str(RECORDS),
                        "--reset-policy", "earliest", "--consumer.config", str(config)],
                       capture_output=True, text=True, timeout=180)
    events = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    consumed = sum(e["count"] for e in events if e["name"] == "records_consumed")
    commits = [e["success"] for e in events if e["name"] == "offsets_committed"]
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return consumed, commits


@pytest.mark.parametrize("target,mode", [("copiers", "hard"), ("copiers", "clean"),
                                         ("broker", "hard"), ("broker", "clean")])
def test_transactional_message_copiers_through_bounces(broker, tmp_path, target, mode):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for f in admin.create_topics([NewTopic("tools-in", PARTITIONS, 1),
                                  NewTopic("tools-out", PARTITIONS, 1)]).values():
        f.result(10)
    want = produce_input(broker)
    logs = [tmp_path / f"copier-{p}.log" for p in range(PARTITIONS)]
    copiers = [copier(broker, p, logs[p]) for p in range(PARTITIONS)]
    started = time.time()
    try:
        # Bounce at evenly spaced points of the copy, or sooner when one copier is close
        # to the end of its partition (a copier exits once it has copied everything), so
        # that every copier has work left when it is bounced.
        for n in range(BOUNCES):
            mark = RECORDS * (BOUNCES - n) // (BOUNCES + 1)
            near_end = RECORDS // (PARTITIONS * 20)
            deadline = time.time() + 120
            while time.time() < deadline:
                left = remaining(logs)
                if left is not None and (sum(left) <= mark or min(left) <= near_end):
                    break
                time.sleep(0.05)
            assert all(c.poll() is None for c in copiers), "a copier finished before the bounce"
            if target == "broker":
                broker.kill9() if mode == "hard" else broker.stop()
                broker.start()
            else:
                for c in copiers:
                    c.kill() if mode == "hard" else c.terminate()
                for c in copiers:
                    c.wait(30)
                copiers = [copier(broker, p, logs[p]) for p in range(PARTITIONS)]
        for c in copiers:
            assert c.wait(300) == 0, "a copier failed"
    finally:
        for c in copiers:
            if c.poll() is None:
                c.kill()
    elapsed = time.time() - started
    counts = Counter(read_output(broker))
    duplicated = [v for v, n in counts.items() if n > 1]
    assert not duplicated, f"{len(duplicated)} duplicated, e.g. {duplicated[:5]}"
    assert set(counts) == want, f"missing {len(want - set(counts))}, extra {len(set(counts) - want)}"
    consumed, commits = verifiable_consumer(broker, tmp_path)
    assert consumed == RECORDS and commits and all(commits), (consumed, commits)
    print(f"records={RECORDS} copiers={PARTITIONS} {mode}_bounces_of_{target}={BOUNCES} "
          f"copy_s={elapsed:.1f}")
    assert "panicked" not in broker.log()


def test_end_to_end_latency(broker):
    """Kafka's EndToEndLatency: produce one record, consume it, repeat (acks=all)."""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("latency", 1, 1)])["latency"].result(10)
    r = subprocess.run(["java", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-cp",
                        tools_classpath(), "org.apache.kafka.tools.EndToEndLatency",
                        "--bootstrap-server", broker.bootstrap, "--topic", "latency",
                        "--num-records", "2000", "--producer-acks", "all",
                        "--record-size", "1024"],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "Avg latency" in r.stdout and "Percentiles" in r.stdout, r.stdout
    print(r.stdout.strip().splitlines()[-2:])
