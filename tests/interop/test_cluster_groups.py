"""Consumer groups on a 3-node cluster (docs/cluster.md): the group coordinator is the
leader of the group's `__consumer_offsets` partition, which is replicated 3 times; when its
node is SIGKILLed the new leader loads the group from its copy and carries on. Driven by
librdkafka with the classic protocol and with KIP-848 (`group.protocol=consumer`).

CI size by default; EXACTA_CLUSTER_GROUP_RECORDS and EXACTA_CLUSTER_GROUP_KILLS make it
longer."""

import os
import struct
import time
from collections import Counter

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from cluster_harness import all_in_sync, create_topic, find_coordinator, node_socket
from harness import frame, kstr, roundtrip, wait_for

RECORDS = int(os.environ.get("EXACTA_CLUSTER_GROUP_RECORDS", "6000"))
KILLS = int(os.environ.get("EXACTA_CLUSTER_GROUP_KILLS", "2"))
PARTITIONS = 3
OFFSETS = "__consumer_offsets"
NOT_COORDINATOR = 16



def coordinator(admin, group):
    """The node id FindCoordinator names for GROUP (retried while it moves)."""
    for _ in range(20):
        try:
            return admin.describe_consumer_groups([group])[group].result().coordinator.id
        except KafkaException:
            time.sleep(0.25)
    raise AssertionError(f"no coordinator for {group}")


def committed(consumer, topic, timeout=30):
    """The group's committed offsets, asked until the coordinator answers."""
    deadline = time.time() + timeout
    while True:
        try:
            got = consumer.committed([TopicPartition(topic, p) for p in range(PARTITIONS)],
                                     timeout=5)
            return [tp.offset for tp in got]
        except KafkaException:
            if time.time() > deadline:
                raise


def commit(consumer):
    for attempt in range(20):
        try:
            consumer.commit(asynchronous=False)
            return
        except KafkaException as e:
            if e.args[0].code() == KafkaError._NO_OFFSET:
                return  # Nothing consumed since the last commit.
            # NOT_COORDINATOR while the coordinator moves: librdkafka finds the new one.
            if attempt == 19:
                raise
            last = e
            time.sleep(0.25)
    raise last


def group_config(cluster, group, protocol):
    config = {"bootstrap.servers": cluster.bootstrap, "group.id": group,
              "enable.auto.commit": False, "auto.offset.reset": "earliest"}
    if protocol == "consumer":
        config["group.protocol"] = "consumer"
    else:
        config.update({"session.timeout.ms": 10000, "heartbeat.interval.ms": 500})
    return config


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_committed_offsets_and_the_group_survive_coordinator_kills(cluster, protocol):
    topic, group = "orders", f"billing-{protocol}"
    admin = create_topic(cluster, topic, PARTITIONS)
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "enable.idempotence": True})
    for i in range(RECORDS):
        producer.produce(topic, key=str(i), value=str(i))
    assert producer.flush(60) == 0
    consumer = Consumer(group_config(cluster, group, protocol))
    consumer.subscribe([topic])
    seen = Counter()
    kills, failovers, since_commit = 0, [], 0
    deadline = time.time() + 180
    while len(seen) < RECORDS and time.time() < deadline:
        m = consumer.poll(0.2)
        if m is not None and not m.error():
            seen[m.value().decode()] += 1
            since_commit += 1
        if since_commit >= 100:
            commit(consumer)
            since_commit = 0
        if kills < KILLS and len(seen) >= (kills + 1) * RECORDS // (KILLS + 1):
            commit(consumer)
            since_commit = 0
            before = committed(consumer, topic)
            victim = coordinator(admin, group)
            cluster.node(victim).kill9()
            started = time.time()
            # The new coordinator has what the old one committed, exactly.
            assert committed(consumer, topic) == before
            failovers.append(time.time() - started)
            assert coordinator(admin, group) != victim
            cluster.restart(victim)
            kills += 1
            # One failure at a time: the victim back in every ISR before the next kill.
            wait_for(lambda: all_in_sync(admin, topic, OFFSETS), 60, "replicas back in sync")
    commit(consumer)
    consumer.close()
    assert kills == KILLS
    assert len(seen) == RECORDS, f"{RECORDS - len(seen)} records never consumed"
    duplicates = sum(n - 1 for n in seen.values())
    # Every position was committed before each kill: nothing is read twice.
    assert duplicates == 0, f"{duplicates} records consumed twice"
    # A new member of the group starts at the committed end: nothing left to read.
    again = Consumer(group_config(cluster, group, protocol))
    again.subscribe([topic])
    late, deadline = [], time.time() + 30
    while time.time() < deadline and len(again.assignment()) < PARTITIONS:
        late += [m for m in [again.poll(0.2)] if m is not None and not m.error()]
    assert len(again.assignment()) == PARTITIONS
    late += [m for m in (again.poll(0.5) for _ in range(6)) if m is not None and not m.error()]
    ends = [again.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(PARTITIONS)]
    assert committed(again, topic) == ends
    again.close()
    assert late == []
    failovers.sort()
    print(f"{protocol}: committed offsets back after a coordinator kill in "
          f"{', '.join(f'{f:.2f}' for f in failovers)} s")


def heartbeat_error(node, group):
    """Heartbeat v0 for GROUP sent to NODE: the error code."""
    with node_socket(node) as s:
        body = kstr(group) + struct.pack(">i", 1) + kstr("member-x")
        _, reply = roundtrip(s, frame(12, 0, 2, body))
    return struct.unpack(">h", reply[:2])[0]


def test_find_coordinator_names_the_offsets_leader_and_others_refuse(cluster):
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    wait_for(lambda: OFFSETS in admin.list_topics(timeout=5).topics, 30, f"{OFFSETS}")
    md = admin.list_topics(OFFSETS, timeout=5).topics[OFFSETS]
    assert len(md.partitions) == 16
    assert all(sorted(p.replicas) == [1, 2, 3] for p in md.partitions.values())
    wait_for(lambda: all_in_sync(admin, OFFSETS), 30, "offsets replicas in sync")
    groups = [f"group-{i}" for i in range(8)]
    for group in groups:
        answers = {find_coordinator(n, group) for n in cluster.nodes}
        assert len(answers) == 1, f"nodes disagree on {group}'s coordinator: {answers}"
        error, node_id, host, port = answers.pop()
        assert error == 0
        leader = cluster.node(node_id)
        assert (host, port) == (leader.host, leader.port)
        # Only the coordinator answers for the group; the others say NOT_COORDINATOR.
        for n in cluster.nodes:
            code = heartbeat_error(n, group)
            if n.id == node_id:
                assert code != NOT_COORDINATOR
            else:
                assert code == NOT_COORDINATOR, f"node {n.id} answered {code} for {group}"
    # The coordinators spread over the nodes as the partition leaders do.
    assert len({find_coordinator(cluster.nodes[0], g)[1] for g in groups}) > 1
