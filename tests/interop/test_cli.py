"""`exacta topic|group|txn` against the real broker (the CLI speaks the Kafka protocol
through exacta-client, so it works against any Kafka-compatible cluster)."""

import json
import os
import subprocess
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from harness import BIN


def cli(broker, *args, check=True):
    """Runs `exacta ARGS --bootstrap-server B`; returns stdout (parsed with --output json)."""
    cmd = [str(BIN), *map(str, args), "--bootstrap-server", broker.bootstrap]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, RUST_BACKTRACE="0"))
    if check:
        assert r.returncode == 0, (cmd, r.stdout, r.stderr)
    if "--output" in args and r.returncode == 0:
        return json.loads(r.stdout)
    return r


def read_committed_count(broker, topic, partition):
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "cli-check",
                  "isolation.level": "read_committed", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, partition, 0)])
    n, idle = 0, time.time()
    while time.time() - idle < 1.5:
        m = c.poll(0.2)
        if m is not None and not m.error():
            n += 1
            idle = time.time()
    c.close()
    return n


def test_topic_commands(broker):
    out = cli(broker, "topic", "create", "cli-orders", "--partitions", 3,
              "--config", "retention.ms=3600000")
    assert "created topic cli-orders" in out.stdout
    topics = {t["topic"]: t for t in cli(broker, "topic", "list", "--output", "json")}
    assert topics["cli-orders"]["partitions"] == 3 and not topics["cli-orders"]["internal"]
    p = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(7):
        p.produce("cli-orders", b"x", partition=1)
    assert p.flush(10) == 0
    cli(broker, "topic", "alter-config", "cli-orders", "--set", "exacta.write.guarantee=idempotent")
    described = cli(broker, "topic", "describe", "cli-orders", "--output", "json")
    size = described["partitions"][1].pop("size")
    assert size > 61, f"the seven records on disk, {size} bytes"
    assert described["partitions"][1] == {"partition": 1, "leader": 0, "start": 0, "end": 7,
                                           "lso": 7, "lso_lag": 0}, described
    configs = {c["config"]: c for c in described["configs"]}
    assert configs["exacta.write.guarantee"] == {"config": "exacta.write.guarantee",
                                                 "value": "idempotent", "default": False}
    table = cli(broker, "topic", "describe", "cli-orders").stdout
    lines = [line.split() for line in table.splitlines()]
    assert ["exacta.write.guarantee", "idempotent", "false"] in lines, table
    assert ["retention.ms", "3600000", "false"] in lines, table
    assert ["1", "0", "0", "7", "7", "0", str(size)] in lines, table  # partition leader start end lso lag size
    bad = cli(broker, "topic", "describe", "no-such-topic", check=False)
    assert bad.returncode == 1
    assert "UNKNOWN_TOPIC_OR_PARTITION" in bad.stderr and "hint" in bad.stderr, bad.stderr
    dup = cli(broker, "topic", "create", "cli-orders", check=False)
    assert dup.returncode == 1 and "TOPIC_ALREADY_EXISTS" in dup.stderr
    cli(broker, "topic", "delete", "cli-orders")
    assert "cli-orders" not in {t["topic"] for t in cli(broker, "topic", "list", "--output", "json")}


def test_group_describe_shows_lag(broker):
    cli(broker, "topic", "create", "cli-lag", "--partitions", 2)
    p = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(10):
        p.produce("cli-lag", b"x", partition=i % 2)
    assert p.flush(10) == 0
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "cli-group",
                  "enable.auto.commit": False})
    c.commit(offsets=[TopicPartition("cli-lag", 0, 2), TopicPartition("cli-lag", 1, 5)],
             asynchronous=False)
    c.close()
    groups = {g["group"] for g in cli(broker, "group", "list", "--output", "json")}
    assert "cli-group" in groups
    rows = cli(broker, "group", "describe", "cli-group", "--output", "json")
    assert [(r["partition"], r["committed"], r["end"], r["lag"]) for r in rows] == \
        [(0, 2, 5, 3), (1, 5, 5, 0)], rows
    plan = cli(broker, "group", "reset-offsets", "cli-group", "--topic", "cli-lag",
               "--to-earliest", "--output", "json")
    assert [(r["partition"], r["new_offset"]) for r in plan] == [(0, 0), (1, 0)]
    unchanged = cli(broker, "group", "describe", "cli-group", "--output", "json")
    assert [r["committed"] for r in unchanged] == [2, 5]  # a dry run changes nothing
    cli(broker, "group", "reset-offsets", "cli-group", "--topic", "cli-lag", "--to-offset", 4,
        "--execute")
    moved = cli(broker, "group", "describe", "cli-group", "--output", "json")
    assert [(r["committed"], r["lag"]) for r in moved] == [(4, 1), (4, 1)], moved
    cli(broker, "group", "delete", "cli-group")
    assert "cli-group" not in {g["group"] for g in cli(broker, "group", "list", "--output", "json")}


def test_find_hanging_and_abort_a_transaction_left_by_librdkafka(broker):
    """A librdkafka producer opens a transaction (long timeout) and dies: read_committed
    consumers are stuck. find-hanging shows it; abort ends it; consumers advance."""
    cli(broker, "topic", "create", "cli-hang", "--partitions", 1)
    done = Producer({"bootstrap.servers": broker.bootstrap})
    for _ in range(3):
        done.produce("cli-hang", b"before")
    assert done.flush(10) == 0
    code = ("from confluent_kafka import Producer\n"
            "import os, sys\n"
            f"p = Producer({{'bootstrap.servers': '{broker.bootstrap}', 'transactional.id': "
            "'cli-zombie', 'transaction.timeout.ms': 900000})\n"
            "p.init_transactions(10); p.begin_transaction()\n"
            "for _ in range(5): p.produce('cli-hang', b'open')\n"
            "p.flush(10); os._exit(0)\n")
    subprocess.run([os.sys.executable, "-c", code], check=True, timeout=60)
    after = Producer({"bootstrap.servers": broker.bootstrap})
    for _ in range(4):
        after.produce("cli-hang", b"after")
    assert after.flush(10) == 0
    assert read_committed_count(broker, "cli-hang", 0) == 3  # held back by the open txn

    txns = cli(broker, "txn", "list", "--state", "Ongoing", "--output", "json")
    assert [t["transactional_id"] for t in txns] == ["cli-zombie"], txns
    described = cli(broker, "txn", "describe", "cli-zombie", "--output", "json")[0]
    assert described["state"] == "Ongoing" and described["partitions"] == "cli-hang-0"
    hanging = cli(broker, "txn", "find-hanging", "--older-than-secs", 0, "--output", "json")
    assert len(hanging) == 1, hanging
    h = hanging[0]
    assert (h["topic"], h["partition"], h["start_offset"], h["held_back"]) == \
        ("cli-hang", 0, 3, 9), h  # 5 open records and the 4 written after them
    producers = cli(broker, "txn", "producers", "cli-hang", 0, "--output", "json")
    assert h["producer_id"] in [p["producer_id"] for p in producers]
    assert cli(broker, "txn", "find-hanging", "--older-than-secs", 3600,
               "--output", "json") == []
    # Young, but holding back records from read_committed consumers.
    held = cli(broker, "txn", "find-hanging", "--older-than-secs", 3600, "--held-back", 5,
               "--output", "json")
    assert [x["producer_id"] for x in held] == [h["producer_id"]], held
    assert cli(broker, "txn", "find-hanging", "--older-than-secs", 3600, "--held-back", 10,
               "--output", "json") == []

    out = cli(broker, "txn", "abort", "--topic", "cli-hang", "--partition", 0,
              "--producer-id", h["producer_id"])
    assert "aborted the open transaction" in out.stdout
    assert cli(broker, "txn", "find-hanging", "--older-than-secs", 0, "--output", "json") == []
    assert cli(broker, "txn", "describe", "cli-zombie", "--output", "json")[0]["state"] == \
        "CompleteAbort"
    # The aborted records stay hidden and the consumers move past them.
    assert read_committed_count(broker, "cli-hang", 0) == 7
    again = cli(broker, "txn", "abort", "--topic", "cli-hang", "--partition", 0,
                "--producer-id", h["producer_id"], check=False)
    assert again.returncode == 1 and "no open transaction" in again.stderr


def test_produce_and_consume_with_keys_headers_and_isolation(broker):
    cli(broker, "topic", "create", "cli-data", "--partitions", 3)
    lines = "".join(f"user{i % 4}:event {i}\n" for i in range(20))
    r = subprocess.run([str(BIN), "produce", "cli-data", "--key-separator", ":", "--header",
                        "source=cli", "--bootstrap-server", broker.bootstrap], input=lines,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    records = [json.loads(x) for x in cli(broker, "consume", "cli-data", "--format", "json")
               .stdout.splitlines()]
    assert sorted(x["value"] for x in records) == sorted(f"event {i}" for i in range(20))
    assert all(x["headers"] == {"source": "cli"} for x in records)
    # Kafka's default partitioner: one key, one partition; the same as librdkafka's choice.
    by_key = {}
    for x in records:
        by_key.setdefault(x["key"], set()).add(x["partition"])
    assert all(len(p) == 1 for p in by_key.values()), by_key
    p = Producer({"bootstrap.servers": broker.bootstrap, "partitioner": "murmur2_random"})
    delivered = {}
    for k in by_key:
        p.produce("cli-data", key=k.encode(), value=b"x",
                  on_delivery=lambda err, msg: delivered.__setitem__(msg.key().decode(),
                                                                      msg.partition()))
    p.flush(10)
    assert {k: v.pop() for k, v in by_key.items()} == delivered

    # Isolation: an aborted transaction's records only with read_uncommitted.
    cli(broker, "topic", "create", "cli-iso", "--partitions", 1)
    t = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": "cli-iso"})
    t.init_transactions(10)
    for value, commit in ((b"kept-1", True), (b"dropped", False), (b"kept-2", True)):
        t.begin_transaction()
        t.produce("cli-iso", value)
        t.flush(10)
        (t.commit_transaction if commit else t.abort_transaction)(10)
    committed = cli(broker, "consume", "cli-iso").stdout.split()
    assert committed == ["kept-1", "kept-2"], committed
    everything = cli(broker, "consume", "cli-iso", "--isolation", "read_uncommitted").stdout.split()
    assert everything == ["kept-1", "dropped", "kept-2"], everything
    assert cli(broker, "consume", "cli-iso", "--max-messages", 1).stdout.split() == ["kept-1"]
