"""Consumer groups with real clients: members join, leave, crash and restart statically;
every record is consumed and the committed offsets end exactly at the log end, also
across broker restarts and kill -9."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from harness import wait_for

WORKER = Path(__file__).parent / "group_worker.py"
GROUP_CONFIG = ("group_min_session_timeout_ms = 1000\n"
                "group_initial_rebalance_delay_ms = 300\n")
PARTITIONS = 6


class Member:
    def __init__(self, client, broker, topic, group, out, instance=None):
        self.out = Path(out)
        args = [sys.executable, str(WORKER), client, broker.bootstrap, topic, group, str(out)]
        if instance:
            args.append(instance)
        self.proc = subprocess.Popen(args, stderr=open(str(out) + ".err", "a"))

    def lines(self, kind):
        if not self.out.exists():
            return []
        return [line.split()[1:] for line in self.out.read_text().splitlines()
                if line.startswith(kind + " ") or line == kind]

    def assignments(self):
        return [set(map(int, a[0].split(","))) if a and a[0] else set() for a in self.lines("A")]

    def current(self):
        a = self.assignments()
        return a[-1] if a else None

    def leave(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)

    def crash(self):
        self.proc.kill()
        self.proc.wait(10)


def produce(broker, topic, start, count):
    p = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True, "linger.ms": 5})
    for i in range(start, start + count):
        p.produce(topic, value=str(i).encode(), partition=i % PARTITIONS)
    assert p.flush(20) == 0


def end_offsets(broker, topic):
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "probe"})
    ends = [c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(PARTITIONS)]
    c.close()
    return ends


def committed(broker, topic, group):
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
    tps = c.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10)
    c.close()
    return [tp.offset for tp in tps]


def consumed_values(members):
    return {int(r[2]) for m in members for r in m.lines("R")}


@pytest.mark.parametrize("client", ["librdkafka", "kafka-python"])
def test_members_leave_crash_and_restart_statically(make_broker, tmp_path, client):
    broker = make_broker(GROUP_CONFIG)
    topic, group = "work", f"workers-{client}"
    a = AdminClient({"bootstrap.servers": broker.bootstrap})
    a.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(10)

    leaver = Member(client, broker, topic, group, tmp_path / "leaver")
    crasher = Member(client, broker, topic, group, tmp_path / "crasher")
    static = Member(client, broker, topic, group, tmp_path / "static", instance="static-1")
    members = [leaver, crasher, static]
    wait_for(lambda: all(m.current() is not None and len(m.current()) == 2 for m in members),
             what="three members with two partitions each")
    assert set().union(*(m.current() for m in members)) == set(range(PARTITIONS))
    produce(broker, topic, 0, 3000)
    wait_for(lambda: len(consumed_values(members)) == 3000, what="first 3000 records")

    # 1. The static member restarts within its session (as a follower: the leader is the
    #    first member id, a dynamic one): same partitions back, no rebalance for the others.
    before = {m: len(m.assignments()) for m in (leaver, crasher)}
    static_partitions = static.current()
    static.crash()
    restarted = Member(client, broker, topic, group, tmp_path / "static-restarted", instance="static-1")
    members.append(restarted)
    wait_for(lambda: restarted.current() is not None, what="static member back")
    assert restarted.current() == static_partitions, "same partitions, no reassignment"
    produce(broker, topic, 3000, 3000)
    wait_for(lambda: len(consumed_values(members)) == 6000, what="records after static restart")
    assert {m: len(m.assignments()) for m in (leaver, crasher)} == before, "others not rebalanced"

    # 2. A member leaves gracefully (LeaveGroup): its partitions move to the others.
    leaver.leave()
    wait_for(lambda: crasher.current() is not None and restarted.current() is not None
             and len(crasher.current() | restarted.current()) == PARTITIONS
             and len(crasher.current()) == 3, what="rebalance after leave")
    produce(broker, topic, 6000, 3000)
    wait_for(lambda: len(consumed_values(members)) == 9000, what="records after leave")

    # 3. A member crashes (no LeaveGroup): its session expires, the static member takes all.
    crasher.crash()
    wait_for(lambda: restarted.current() == set(range(PARTITIONS)), timeout=30,
             what="session expiry of the crashed member")
    produce(broker, topic, 9000, 3000)
    wait_for(lambda: len(consumed_values(members)) == 12000, what="records after crash")

    # Every record consumed; committed offsets exactly at the end of every partition.
    ends = end_offsets(broker, topic)
    wait_for(lambda: committed(broker, topic, group) == ends, what="commits at the log end")
    assert consumed_values(members) == set(range(12000))
    restarted.leave()

    # Committed offsets survive a clean restart and a kill -9.
    broker.restart()
    assert committed(broker, topic, group) == ends
    broker.kill9()
    broker.start()
    assert committed(broker, topic, group) == ends


def test_commit_fencing_and_admin_apis(make_broker):
    from kafka import KafkaConsumer, TopicPartition as KTP
    from kafka.admin import KafkaAdminClient
    from kafka.structs import OffsetAndMetadata

    broker = make_broker(GROUP_CONFIG)
    a = AdminClient({"bootstrap.servers": broker.bootstrap})
    a.create_topics([NewTopic("adm", 2, 1), NewTopic("other", 1, 1)])["adm"].result(10)
    produce(broker, "adm", 0, 60)

    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id="adm-group",
                      enable_auto_commit=False, auto_offset_reset="earliest",
                      session_timeout_ms=4000, heartbeat_interval_ms=300)
    c.subscribe(["adm"])
    deadline = time.time() + 20
    while len(c.assignment()) < 2 and time.time() < deadline:
        c.poll(200)
    c.commit({KTP("adm", 0): OffsetAndMetadata(7, "meta", -1)})

    desc = a.describe_consumer_groups(["adm-group"])["adm-group"].result(10)
    assert desc.state.name == "STABLE" and len(desc.members) == 1
    assert {tp.partition for tp in desc.members[0].assignment.topic_partitions} == {0, 1}
    assert "adm-group" in {g.group_id for g in a.list_consumer_groups().result(10).valid}
    # A live group cannot be deleted, and an outsider without a generation cannot commit.
    with pytest.raises(Exception, match="NON_EMPTY_GROUP|not empty"):
        a.delete_consumer_groups(["adm-group"])["adm-group"].result(10)
    outsider = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "adm-group"})
    with pytest.raises(Exception, match="UNKNOWN_MEMBER_ID|[Uu]nknown member"):
        outsider.commit(offsets=[TopicPartition("adm", 1, 3)], asynchronous=False)
    outsider.close()
    # Offsets of a topic the group consumes cannot be deleted while it is active.
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    result = admin.delete_group_offsets("adm-group", [KTP("adm", 0)])
    assert result[KTP("adm", 0)].errno == 86  # GROUP_SUBSCRIBED_TO_TOPIC
    c.close()  # LeaveGroup: the group becomes empty

    # (Read back with kafka-python, the committer: confluent-kafka's Python binding treats
    # commit metadata as a NUL-terminated C string, against any broker.)
    reader = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id="adm-group")
    committed_adm = reader.committed(KTP("adm", 0), metadata=True)
    assert (committed_adm.offset, committed_adm.metadata) == (7, "meta")
    reader.close()
    check = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "adm-group"})
    # An empty group takes generation-less commits (as tools do) and offset deletion.
    check.commit(offsets=[TopicPartition("other", 0, 5)], asynchronous=False)
    result = admin.delete_group_offsets("adm-group", [KTP("other", 0)])
    assert result[KTP("other", 0)].errno == 0
    (tp,) = check.committed([TopicPartition("other", 0)], timeout=10)
    assert tp.offset < 0
    check.close()
    a.delete_consumer_groups(["adm-group"])["adm-group"].result(10)
    check = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "adm-group"})
    (tp,) = check.committed([TopicPartition("adm", 0)], timeout=10)
    assert tp.offset < 0
    check.close()
    # The internal topic is the broker's: clients cannot write to or delete it.
    from kafka import KafkaProducer

    p = KafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=False)
    with pytest.raises(Exception):
        p.send("__consumer_offsets", b"x", partition=0).get(10)
    p.close()
    with pytest.raises(Exception):
        a.delete_topics(["__consumer_offsets"])["__consumer_offsets"].result(10)
    # Offset records are never aged out (the topic is not compacted yet).
    from confluent_kafka.admin import ConfigResource

    res = ConfigResource(ConfigResource.Type.TOPIC, "__consumer_offsets")
    configs = a.describe_configs([res])[res].result(10)
    assert configs["retention.ms"].value == "-1" and configs["retention.bytes"].value == "-1"
