"""kafkajs, a pure JavaScript client with its own protocol code and older API versions
(Produce v7, Fetch v11, ListOffsets v3, transactions v1), against the real broker:
idempotent and compressed produce, group consumption, admin calls, transactions under
both isolation levels, an exactly-once copier with aborts, and zombie fencing.

The scenarios live in kafkajs/client.js (one JSON result each); scripts/test.sh installs
the pinned kafkajs with `npm ci`."""

import json
import subprocess
from collections import Counter
from pathlib import Path

import pytest

CLIENT = Path(__file__).parent / "kafkajs" / "client.js"


def kafkajs(broker, scenario, topic, timeout=120):
    done = subprocess.run(["node", str(CLIENT), scenario, broker.bootstrap, topic],
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"kafkajs {scenario} failed:\n{done.stderr}\n{broker.log_path.read_text()[-3000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def assert_no_connection_errors(broker):
    log = broker.log_path.read_text()
    assert "could not encode a response" not in log
    assert "closing connection: bad request" not in log


def test_idempotent_compressed_produce_group_consume_and_admin_offsets(broker):
    r = kafkajs(broker, "basic", "js-basic")
    values = [m["value"] for m in r["seen"]]
    assert Counter(values) == Counter(f"v{n}" for n in range(r["sent"])), "each record exactly once"
    for m in r["seen"]:
        n = int(m["value"][1:])
        assert m["key"] == f"k{n % 7}"
        assert m["headers"] == {"n": str(n)}
    # Per partition, offsets are dense from 0 and records keep their send order.
    by_partition = {}
    for m in r["seen"]:
        by_partition.setdefault(m["partition"], []).append(m)
    for p, ms in by_partition.items():
        assert [m["offset"] for m in ms] == list(range(len(ms)))
        sent_order = [int(m["value"][1:]) for m in ms]
        assert sent_order == sorted(sent_order)
    ends = {o["partition"]: o["high"] for o in r["end_offsets"]}
    assert ends == {p: len(ms) for p, ms in by_partition.items()}
    assert all(o["low"] == 0 for o in r["end_offsets"])
    assert r["group_consumed"] == r["sent"]
    assert {c["partition"]: c["offset"] for c in r["committed"]} == ends
    assert "js-basic-group" in r["groups"]
    assert_no_connection_errors(broker)


def test_admin_operations(broker):
    r = kafkajs(broker, "admin", "js-admin")
    assert r["partitions"] == [0, 1, 2], "createPartitions grew the topic to 3"
    assert r["configs"] == {"cleanup.policy": "delete", "retention.ms": "604800000"}
    # AlterConfigs (key 33) replaces the overrides: max.message.bytes went back to default.
    assert r["altered"]["retention.ms"] == ["7200000", False]
    assert r["altered"]["max.message.bytes"][1] is True
    assert r["bad_config"] == "INVALID_CONFIG"
    assert r["brokers"] == 1 and r["controller"] == 0
    assert r["after_set"] == {"0": 1, "1": 2, "2": -1}
    # kafkajs resets by committing the special offset -2 (earliest), which its consumers
    # resolve; the broker stores it as given, as Kafka does.
    assert r["after_reset"] == {"0": -2, "1": -2, "2": -2}
    assert r["group_state"] == "Empty"
    assert "js-admin-admin-group" not in r["groups_after_delete"]
    assert r["topic_deleted"]
    assert_no_connection_errors(broker)


def test_transactions_visible_only_when_committed(broker):
    r = kafkajs(broker, "visibility", "js-visibility")
    assert r["read_committed"] == ["c1", "c2", "c3"]
    assert r["read_uncommitted"] == ["a1", "a2", "c1", "c2", "c3"]
    assert_no_connection_errors(broker)


def test_exactly_once_copier_with_aborted_transactions(broker):
    r = kafkajs(broker, "copier", "js-copier", timeout=180)
    assert r["copied"] == r["total"]
    assert r["aborted"] > 0
    # Every input record once in the output, aborted attempts invisible.
    assert Counter(r["output"]) == Counter(f"r{i}" for i in range(r["total"]))
    # The offsets committed in the transactions equal the input's end.
    assert r["committed"] == r["input_ends"]
    assert_no_connection_errors(broker)


def test_zombie_producer_is_fenced(broker):
    r = kafkajs(broker, "fencing", "js-fencing")
    # kafkajs sends EndTxn v1, which predates PRODUCER_FENCED: the broker answers
    # INVALID_PRODUCER_EPOCH, the code kafkajs knows.
    assert r["zombie_error"] == "INVALID_PRODUCER_EPOCH"
    assert r["read_committed"] == ["successor"]
    assert_no_connection_errors(broker)


@pytest.fixture(autouse=True)
def _node_available():
    if not (CLIENT.parent / "node_modules" / "kafkajs").is_dir():
        pytest.fail("kafkajs is not installed: run scripts/test.sh (npm ci in tests/interop/kafkajs)")
