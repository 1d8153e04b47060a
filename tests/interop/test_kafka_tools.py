"""Kafka's own test tools against Exacta, in the shape of Kafka's transactions system test:
VerifiableProducer writes the input, one TransactionalMessageCopier per input partition
copies it transactionally (offsets committed with the consumer's group metadata), a copier
is SIGKILLed mid-copy and restarted, and the read_committed output holds every input
record exactly once. The tools come from `org.apache.kafka:kafka-tools`, resolved with
Maven by scripts/test.sh (scripts/kafka-peer)."""

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
RECORDS = 20_000


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


def test_transactional_message_copier_through_a_copier_kill(broker, tmp_path):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for f in admin.create_topics([NewTopic("tools-in", 2, 1), NewTopic("tools-out", 2, 1)]).values():
        f.result(10)
    produced = tool("VerifiableProducer", "--bootstrap-server", broker.bootstrap,
                    "--topic", "tools-in", "--max-messages", str(RECORDS), "--acks", "-1",
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out, _ = produced.communicate(timeout=120)
    acked = [json.loads(line) for line in out.splitlines()
             if '"producer_send_success"' in line]
    assert produced.returncode == 0 and len(acked) == RECORDS, out[-2000:]
    logs = [tmp_path / f"copier-{p}.log" for p in (0, 1)]
    copiers = [copier(broker, p, logs[p]) for p in (0, 1)]
    # SIGKILL copier 0 once it has copied some and has some left, then start it again.
    deadline = time.time() + 60
    while time.time() < deadline:
        left = progress(logs[0])
        if left is not None and 0 < left < RECORDS // 2 * 2 // 3:
            break
        time.sleep(0.05)
    assert copiers[0].poll() is None, "copier 0 finished before it could be killed"
    copiers[0].kill()
    copiers[0].wait(10)
    copiers[0] = copier(broker, 0, logs[0])
    for c in copiers:
        assert c.wait(120) == 0
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "tools-check",
                  "isolation.level": "read_committed", "enable.auto.commit": False})
    c.assign([TopicPartition("tools-out", p, 0) for p in (0, 1)])
    values, deadline = [], time.time() + 30
    while len(values) < RECORDS and time.time() < deadline:
        m = c.poll(0.2)
        if m is not None and not m.error():
            values.append(m.value().decode())
    time.sleep(1)
    while (m := c.poll(0.5)) is not None:
        if not m.error():
            values.append(m.value().decode())
    c.close()
    counts = Counter(values)
    duplicated = [v for v, n in counts.items() if n > 1]
    want = {str(a["value"]) for a in acked}
    assert not duplicated, f"{len(duplicated)} duplicated, e.g. {duplicated[:5]}"
    assert set(counts) == want, f"missing {len(want - set(counts))}, extra {len(set(counts) - want)}"
