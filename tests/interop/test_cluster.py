"""A 3-node cluster (docs/cluster.md) driven by librdkafka: replicated topics, leader
failover under an idempotent acks=all producer, follower repair, and refused
misconfigurations. Each node is a real `exacta serve --voters ...` process on its own
loopback address.

CI size by default; scripts/reliability.sh runs EXACTA_CLUSTER_RECORDS=300000 with
EXACTA_CLUSTER_KILLS=50."""

import json
import os
import random
import subprocess
import time

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                  NewPartitions, NewTopic)

from cluster_harness import create_topic as create, partitions
from harness import BIN, wait_for

RECORDS = int(os.environ.get("EXACTA_CLUSTER_RECORDS", "40000"))
KILLS = int(os.environ.get("EXACTA_CLUSTER_KILLS", "6"))
PARTITIONS = 3



def read_all(cluster, topic, expected, timeout=60):
    consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "unused",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    seen = []
    deadline = time.time() + timeout
    while len(seen) < expected and time.time() < deadline:
        m = consumer.poll(0.5)
        if m is not None and not m.error():
            seen.append(m.value().decode())
    # Nothing more than expected arrives either.
    end = time.time() + 2
    while time.time() < end:
        m = consumer.poll(0.2)
        if m is not None and not m.error():
            seen.append(m.value().decode())
    consumer.close()
    return seen


def replicas_identical(cluster, topic):
    for p in range(PARTITIONS):
        logs = {n.id: n.partition_bytes(topic, p) for n in cluster.nodes}
        if len(set(logs.values())) != 1:
            return False
    return True


def test_metadata_lists_every_broker_replica_and_isr(cluster):
    admin = create(cluster, "meta", configs={"min.insync.replicas": "2"})
    md = admin.list_topics("meta", timeout=10)
    assert sorted(md.brokers) == [1, 2, 3]
    assert {b.host for b in md.brokers.values()} == {"127.0.0.11", "127.0.0.12", "127.0.0.13"}
    leaders = set()
    for p in md.topics["meta"].partitions.values():
        assert sorted(p.replicas) == [1, 2, 3]
        assert sorted(p.isrs) == [1, 2, 3]
        assert p.leader == p.replicas[0]
        leaders.add(p.leader)
    assert leaders == {1, 2, 3}, "leaders are spread over the brokers"
    # A replication factor larger than the cluster is refused, as Kafka refuses it.
    too_many = admin.create_topics([NewTopic("too-many", 1, 4)], operation_timeout=10)
    with pytest.raises(KafkaException) as refused:
        too_many["too-many"].result()
    assert refused.value.args[0].name() == "INVALID_REPLICATION_FACTOR"
    # Admin changes the quorum does not carry yet are refused, not applied to one copy.
    grow = admin.create_partitions([NewPartitions("meta", 6)], operation_timeout=10)
    with pytest.raises(KafkaException) as refused:
        grow["meta"].result()
    assert refused.value.args[0].name() == "INVALID_REQUEST"
    assert "not available in a cluster yet" in refused.value.args[0].str()
    change = ConfigResource("topic", "meta", incremental_configs=[
        ConfigEntry("retention.ms", "1000", incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(KafkaException) as refused:
        list(admin.incremental_alter_configs([change]).values())[0].result()
    assert refused.value.args[0].name() == "INVALID_REQUEST"
    assert len(partitions(admin, "meta")) == PARTITIONS
    described = admin.describe_cluster(request_timeout=10).result()
    assert sorted(n.id for n in described.nodes) == [1, 2, 3]
    assert described.controller is not None and described.controller.id in (1, 2, 3)
    # Every node answers the same metadata.
    for n in cluster.nodes:
        one = AdminClient({"bootstrap.servers": n.address}).list_topics("meta", timeout=10)
        assert {i: p.leader for i, p in one.topics["meta"].partitions.items()} == \
            {i: p.leader for i, p in md.topics["meta"].partitions.items()}


def test_acknowledged_records_survive_leader_kills(cluster):
    """Idempotent acks=all producing while partition leaders are SIGKILLed and restarted:
    every acknowledged record is read exactly once, and the replicas end identical."""
    topic = "failover"
    admin = create(cluster, topic, configs={"min.insync.replicas": "2"})
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "enable.idempotence": True,
                         "acks": "all", "linger.ms": 5, "message.timeout.ms": 120000})
    acked, errors = set(), []

    def delivered(err, msg):
        if err:
            errors.append(str(err))
        else:
            acked.add(msg.value().decode())

    rng = random.Random(7)
    kills, failovers = 0, []
    per_kill = max(1, RECORDS // (KILLS + 1))
    for i in range(RECORDS):
        producer.produce(topic, key=str(i), value=str(i), on_delivery=delivered)
        producer.poll(0)
        if kills < KILLS and i == (kills + 1) * per_kill:
            # One failure at a time: the last victim is back in every ISR (a partition
            # whose only in-sync replica dies stays offline: no unclean election).
            wait_for(lambda: all(len(p.isrs) == 3 for p in partitions(admin, topic).values()),
                     30, "every replica back in sync")
            # Kill a leader while this chunk is in flight; restart it once another
            # replica leads its partition (the controller fenced it).
            producer.poll(0.05)
            part = rng.randrange(PARTITIONS)
            leader = partitions(admin, topic)[part].leader
            cluster.node(leader).kill9()
            started = time.time()
            wait_for(lambda: partitions(admin, topic)[part].leader != leader, 10,
                     "a new leader")
            failovers.append(time.time() - started)
            cluster.restart(leader)
            kills += 1
    assert producer.flush(180) == 0, "records left undelivered"
    assert kills == KILLS
    assert errors == []
    assert len(acked) == RECORDS
    seen = read_all(cluster, topic, RECORDS)
    assert len(seen) == len(set(seen)), f"{len(seen) - len(set(seen))} duplicates"
    assert acked - set(seen) == set(), f"{len(acked - set(seen))} acknowledged records lost"
    # Every replica caught up to the same bytes, the killed leaders truncated to their
    # new leader's log where they diverged.
    wait_for(lambda: replicas_identical(cluster, topic), 60, "identical replicas")
    failovers.sort()
    print(f"leader failover seen by metadata: p50 {failovers[len(failovers) // 2]:.2f} s, "
          f"max {failovers[-1]:.2f} s over {len(failovers)} kills")


def test_a_torn_replica_refetches_from_its_leader(cluster):
    topic = "torn"
    admin = create(cluster, topic)
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all"})
    for i in range(3000):
        producer.produce(topic, value=str(i), partition=0)
    assert producer.flush(30) == 0
    follower_id = next(r for r in partitions(admin, topic)[0].replicas
                       if r != partitions(admin, topic)[0].leader)
    follower = cluster.node(follower_id)
    wait_for(lambda: replicas_identical(cluster, topic), 30, "replicas in sync")
    follower.kill9()
    segment = sorted((follower.data_dir / f"{topic}-0").glob("*.log"))[-1]
    size = segment.stat().st_size
    with open(segment, "r+b") as f:
        f.truncate(size // 2 + 7)  # mid-batch
    cluster.restart(follower_id)
    wait_for(lambda: replicas_identical(cluster, topic), 30, "the torn replica repaired")
    assert segment.stat().st_size == size


def status(cluster):
    out = subprocess.run([str(BIN), "cluster", "--bootstrap-server", cluster.bootstrap,
                          "--output", "json", "status"], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def run_node(args, timeout=20):
    return subprocess.run([str(BIN), "serve", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_inconsistent_voters_and_foreign_data_are_refused(tmp_path):
    base = ["--listen", "127.0.0.11:0", "--data-dir", str(tmp_path / "d")]
    three = "1@127.0.0.11:1,2@127.0.0.12:1,3@127.0.0.13:1"
    cases = [
        (["--node-id", "1", "--voters", "1@127.0.0.11:1,1@127.0.0.12:1,3@127.0.0.13:1"],
         "node id 1 is given twice"),
        (["--node-id", "4", "--voters", three], "not in the list"),
        (["--node-id", "1", "--voters", "1@127.0.0.11,2@127.0.0.12:1,3@127.0.0.13:1"],
         "ID@HOST:PORT"),
        (["--node-id", "1", "--voters", "1@127.0.0.11:1,2@127.0.0.11:1,3@127.0.0.13:1"],
         "given twice"),
        (["--node-id", "1", "--voters", "1@127.0.0.11:1,2@127.0.0.12:1"], "odd number"),
    ]
    for args, message in cases:
        out = run_node(base + args)
        assert out.returncode != 0
        assert message in out.stderr, out.stderr
    assert not (tmp_path / "d" / "__cluster").exists(), "no data was written"
    # A single node's data directory does not join a cluster, nor the reverse.
    single = tmp_path / "single"
    single.mkdir()
    (single / "orders-0").mkdir()
    out = run_node(["--listen", "127.0.0.11:0", "--data-dir", str(single), "--node-id", "1",
                    "--voters", three])
    assert out.returncode != 0 and "single node's data" in out.stderr, out.stderr
    assert sorted(p.name for p in single.iterdir()) == ["orders-0"]


def test_a_node_restarted_with_other_voters_is_refused(cluster):
    node = cluster.node(1)
    node.kill9()
    others = cluster.voters.replace("1@", "9@", 1)
    out = run_node(node.args(others)[2:])
    assert out.returncode != 0 and "not in the list" in out.stderr, out.stderr
    moved = ",".join(cluster.voters.split(",")[:2] + ["3@127.0.0.14:1"])
    out = run_node(node.args(moved)[2:])
    assert out.returncode != 0 and "was formatted for voters" in out.stderr, out.stderr
    cluster.restart(1)


def test_sigterm_moves_leadership_before_the_node_stops(cluster):
    topic = "controlled"
    admin = create(cluster, topic, configs={"min.insync.replicas": "2"})
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all",
                         "enable.idempotence": True})
    for i in range(1000):
        producer.produce(topic, value=f"a{i}")
    assert producer.flush(30) == 0
    leader = partitions(admin, topic)[0].leader
    node = cluster.node(leader)
    # Replication and quorum metrics before: one controller, every replica caught up.
    before = {n.id: n.metrics() for n in cluster.nodes}
    assert sum(m["exacta_raft_leader"] for m in before.values()) == 1
    assert all(m["exacta_raft_term"] >= 1 for m in before.values())
    lags = {k: v for m in before.values() for k, v in m.items()
            if k.startswith(f'exacta_partition_replica_lag{{topic="{topic}"')}
    assert len(lags) == 2 * PARTITIONS and set(lags.values()) == {0}, lags
    assert all(m["exacta_under_replicated_partitions"] == 0 for m in before.values())
    changes = {n: m["exacta_leader_changes_total"] for n, m in before.items()}
    node.stop()  # SIGTERM, waits for the exit
    assert "controlled shutdown: leadership moved to other replicas" in node.this_start(), \
        node.this_start()[-2000:]
    # Moved before the process ended: no session timeout to wait for.
    assert partitions(admin, topic)[0].leader != leader
    assert leader not in partitions(admin, topic)[0].isrs
    # `exacta cluster status` shows the node down and its partitions under-replicated.
    down = status(cluster)
    assert {n["node"]: n["answers"] for n in down["nodes"]} == \
        {n.id: n.id != leader for n in cluster.nodes}
    assert down["under_replicated"] >= PARTITIONS and down["offline"] == 0, down
    assert all(str(leader) not in p["isr"].split(",") for p in down["listed"]), down
    after = {n.id: n.metrics() for n in cluster.nodes if n.id != leader}
    assert sum(m["exacta_under_replicated_partitions"] for m in after.values()) >= PARTITIONS
    assert any(m["exacta_leader_changes_total"] > changes[n] for n, m in after.items())

    for i in range(1000):
        producer.produce(topic, value=f"b{i}")
    assert producer.flush(30) == 0
    cluster.restart(leader)
    wait_for(lambda: all(len(p.isrs) == 3 for p in partitions(admin, topic).values()), 30,
             "the restarted node back in every ISR")
    healthy = status(cluster)
    assert healthy["under_replicated"] == 0 and healthy["offline"] == 0, healthy
    # The leaders proposed the ISR changes that took the node back, timed per commit.
    commits = lambda metrics: sum(m["exacta_raft_commit_duration_seconds_count"]
                                  for m in metrics.values())
    assert commits({n.id: n.metrics() for n in cluster.nodes}) > commits(after)
    assert all(n["answers"] for n in healthy["nodes"])
    assert sum(n["controller"] for n in healthy["nodes"]) == 1
    seen = read_all(cluster, topic, 2000)
    assert sorted(seen) == sorted([f"a{i}" for i in range(1000)] + [f"b{i}" for i in range(1000)])
    wait_for(lambda: replicas_identical(cluster, topic), 30, "identical replicas")
