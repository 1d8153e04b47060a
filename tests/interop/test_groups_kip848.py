"""The new consumer group protocol (KIP-848, `group.protocol=consumer`) with librdkafka:
the broker assigns partitions, members join, leave, crash and come back statically, the
group survives broker restarts without a rebalance, commits carry member epochs and a
zombie's late transactional offset commit is refused; classic and new groups side by side."""

import time

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from test_groups import (PARTITIONS, Member, committed, consumed_values, end_offsets, produce,
                         wait_for)
from test_cli import cli
from test_verify import assert_exactly_once, verify

CONFIG = ("group_consumer_session_timeout_ms = 4000\n"
          "group_consumer_heartbeat_interval_ms = 300\n"
          "group_min_session_timeout_ms = 1000\n"
          "group_initial_rebalance_delay_ms = 0\n")
CLIENT = "librdkafka-consumer"


def create(broker, *topics):
    a = AdminClient({"bootstrap.servers": broker.bootstrap})
    for name, fut in a.create_topics([NewTopic(t, n, 1) for t, n in topics]).items():
        fut.result(10)
    return a


def test_members_leave_crash_and_restart_statically(make_broker, tmp_path):
    broker = make_broker(CONFIG)
    topic, group = "work848", "workers-848"
    create(broker, (topic, PARTITIONS))
    leaver = Member(CLIENT, broker, topic, group, tmp_path / "leaver")
    crasher = Member(CLIENT, broker, topic, group, tmp_path / "crasher")
    static = Member(CLIENT, broker, topic, group, tmp_path / "static", instance="static-1")
    members = [leaver, crasher, static]
    wait_for(lambda: all(m.current() is not None and len(m.current()) == 2 for m in members),
             what="three members with two partitions each")
    assert set().union(*(m.current() for m in members)) == set(range(PARTITIONS))
    produce(broker, topic, 0, 3000)
    wait_for(lambda: len(consumed_values(members)) == 3000, what="first 3000 records")

    # 1. The static member shuts down (leave with epoch -2) and comes back under a new
    #    member id: the same partitions, nothing moves for the others.
    before = {m: len(m.assignments()) for m in (leaver, crasher)}
    static_partitions = static.current()
    static.leave()
    restarted = Member(CLIENT, broker, topic, group, tmp_path / "static-restarted",
                       instance="static-1")
    members.append(restarted)
    wait_for(lambda: restarted.current() == static_partitions, what="static member back")
    produce(broker, topic, 3000, 3000)
    wait_for(lambda: len(consumed_values(members)) == 6000, what="records after static restart")
    assert {m: len(m.assignments()) for m in (leaver, crasher)} == before, "others not rebalanced"

    # 2. The group lives in __consumer_offsets: a broker restart and a kill -9 move nothing,
    #    the members go on with their epochs.
    broker.restart()
    produce(broker, topic, 6000, 1500)
    broker.kill9()
    broker.start()
    produce(broker, topic, 7500, 1500)
    wait_for(lambda: len(consumed_values(members)) == 9000, what="records after broker restarts")
    assert {m: len(m.assignments()) for m in (leaver, crasher)} == before, "no rebalance"

    # 3. A member leaves (epoch -1): its partitions move to the others.
    leaver.leave()
    wait_for(lambda: crasher.current() is not None and restarted.current() is not None
             and crasher.current() | restarted.current() == set(range(PARTITIONS))
             and len(crasher.current()) == 3, what="rebalance after leave")
    produce(broker, topic, 9000, 3000)
    wait_for(lambda: len(consumed_values(members)) == 12000, what="records after leave")

    # 4. A member crashes: its session expires, the static member takes everything.
    crasher.crash()
    wait_for(lambda: restarted.current() == set(range(PARTITIONS)), what="session expiry")
    produce(broker, topic, 12000, 3000)
    wait_for(lambda: len(consumed_values(members)) == 15000, what="records after crash")
    ends = end_offsets(broker, topic)
    wait_for(lambda: committed(broker, topic, group) == ends, what="commits at the log end")
    assert consumed_values(members) == set(range(15000))
    restarted.leave()
    broker.kill9()
    broker.start()
    assert committed(broker, topic, group) == ends


def test_admin_sees_group_types_and_zombie_commits_are_refused(make_broker):
    broker = make_broker(CONFIG)
    admin = create(broker, ("z-in", 2), ("z-out", 1))
    produce_n = 20
    p = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(produce_n):
        p.produce("z-in", value=str(i).encode(), partition=i % 2)
    p.flush(10)

    def member(client_id):
        c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "zg",
                      "group.protocol": "consumer", "client.id": client_id,
                      "auto.offset.reset": "earliest", "enable.auto.commit": False,
                      "isolation.level": "read_committed"})
        c.subscribe(["z-in"])
        return c

    def settle(consumers, sizes, timeout=20):
        # The sizes, and the group Stable: every member acknowledged its revocations and
        # moved to the assignment epoch (a member that just revoked keeps its old epoch
        # until its next heartbeat).
        deadline = time.time() + timeout
        while time.time() < deadline:
            for c in consumers:
                c.poll(0.1)
            if [len(c.assignment()) for c in consumers] == sizes:
                state = admin.describe_consumer_groups(["zg"])["zg"].result(10).state
                if state.name == "STABLE":
                    return
        raise AssertionError([c.assignment() for c in consumers])

    a = member("a")
    settle([a], [2])
    stale = a.consumer_group_metadata()
    producer = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": "zombie-txn"})
    producer.init_transactions(20)
    b = member("b")
    settle([a, b], [1, 1])  # a's member epoch moved on

    # A classic member cannot join the group while it has new-protocol members.
    classic = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "zg",
                        "session.timeout.ms": 6000})
    classic.subscribe(["z-in"])
    deadline = time.time() + 10
    error = None
    while time.time() < deadline and error is None:
        m = classic.poll(0.2)
        if m is not None and m.error():
            error = m.error()
    classic.close()
    assert error is not None and "INCONSISTENT_GROUP_PROTOCOL" in error.name() + str(error), error

    # The admin client sees a consumer-type group with both members.
    listed = admin.list_consumer_groups().result(10).valid
    (zg,) = [g for g in listed if g.group_id == "zg"]
    assert zg.type.name == "CONSUMER", zg
    desc = admin.describe_consumer_groups(["zg"])["zg"].result(10)
    assert len(desc.members) == 2
    assert sorted(len(m.assignment.topic_partitions) for m in desc.members) == [1, 1]

    # The offsets of a stale member epoch are refused inside the transaction.
    producer.begin_transaction()
    producer.produce("z-out", b"late")
    with pytest.raises(KafkaException) as refused:
        producer.send_offsets_to_transaction([TopicPartition("z-in", 0, 5)], stale, 20)
        producer.commit_transaction(20)
    print("stale epoch:", refused.value)
    assert "ILLEGAL_GENERATION" in str(refused.value) or "generation" in str(refused.value).lower()
    # After a member left for good, its late commit is refused too.
    gone = b.consumer_group_metadata()
    b.close()
    settle([a], [2])
    err = refused.value.args[0]
    if err.txn_requires_abort():
        producer.abort_transaction(20)
    else:
        producer = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": "zombie-2"})
        producer.init_transactions(20)
    producer.begin_transaction()
    with pytest.raises(KafkaException) as refused:
        producer.send_offsets_to_transaction([TopicPartition("z-in", 1, 5)], gone, 20)
        producer.commit_transaction(20)
    print("member gone:", refused.value)
    assert "UNKNOWN_MEMBER_ID" in str(refused.value) or "member" in str(refused.value).lower()
    # The current member commits in a transaction with its epoch.
    fresh = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": "live-txn"})
    fresh.init_transactions(20)
    fresh.begin_transaction()
    fresh.produce("z-out", b"live")
    fresh.send_offsets_to_transaction([TopicPartition("z-in", 0, 7), TopicPartition("z-in", 1, 3)],
                                      a.consumer_group_metadata(), 20)
    fresh.commit_transaction(20)
    got = a.committed([TopicPartition("z-in", 0), TopicPartition("z-in", 1)], timeout=10)
    assert [tp.offset for tp in got] == [7, 3]
    a.close()


def test_classic_and_new_protocol_groups_side_by_side(make_broker, tmp_path):
    broker = make_broker(CONFIG)
    topic = "both"
    create(broker, (topic, PARTITIONS))
    new = [Member(CLIENT, broker, topic, "g-new", tmp_path / f"new{i}") for i in range(2)]
    old = [Member("librdkafka", broker, topic, "g-classic", tmp_path / f"old{i}") for i in range(2)]
    produce(broker, topic, 0, 2000)
    wait_for(lambda: len(consumed_values(new)) == 2000 and len(consumed_values(old)) == 2000,
             what="each group consumes everything")
    listed = {g["group"]: g for g in cli(broker, "group", "list", "--output", "json")}
    assert listed["g-new"]["type"] == "consumer" and listed["g-classic"]["type"] == "classic"
    assert listed["g-new"]["state"] in ("Stable", "Reconciling"), listed
    header = cli(broker, "group", "describe", "g-new").stdout.splitlines()[0]
    assert "consumer protocol" in header and "assignor uniform, 2 member(s)" in header, header
    header = cli(broker, "group", "describe", "g-classic").stdout.splitlines()[0]
    assert "classic protocol" in header and "2 member(s)" in header, header
    for m in new + old:
        m.leave()
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    types = {g.group_id: g.type.name for g in admin.list_consumer_groups().result(10).valid}
    assert types["g-new"] == "CONSUMER" and types["g-classic"] == "CLASSIC", types
    # An empty consumer group can become a classic one again (and back).
    again = Member("librdkafka", broker, topic, "g-new", tmp_path / "again")
    wait_for(lambda: again.current() == set(range(PARTITIONS)), what="classic member in old new group")
    again.leave()


def test_exactly_once_copiers_with_member_epochs_through_kills(make_broker, tmp_path):
    broker = make_broker(CONFIG)
    code, report, output = verify(broker.bootstrap, tmp_path, "--records", 6000, "--copiers", 2,
                                  "--records-per-txn", 200, "--txn-pause-ms", 30,
                                  "--copier-kills", 3, "--kill-interval-ms", 2000, "--seed", 11,
                                  "--group-protocol", "consumer")
    assert_exactly_once(code, report, output, 6000)
    assert report["copier_kills"] == 3, output
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    types = {g.type.name for g in admin.list_consumer_groups().result(10).valid}
    assert types == {"CONSUMER"}, f"the copiers' group used the new protocol: {types}"


def test_a_killed_static_member_holds_its_partitions_until_its_session_expires(make_broker,
                                                                               tmp_path):
    """KIP-848 static membership through a SIGKILL: the dead member's partitions stay its own
    (no rebalance for the others) while its session lives; a replacement under the same
    group.instance.id meanwhile is refused with UNRELEASED_INSTANCE_ID (fatal for librdkafka,
    as against Kafka); once the session has expired the partitions move, and a replacement
    started then joins."""
    broker = make_broker(CONFIG)
    topic, group = "static848", "static-848"
    create(broker, (topic, PARTITIONS))
    other = Member(CLIENT, broker, topic, group, tmp_path / "other")
    static = Member(CLIENT, broker, topic, group, tmp_path / "static", instance="s-1")
    wait_for(lambda: all(m.current() is not None and len(m.current()) == PARTITIONS // 2
                         for m in (other, static)), what="two members with half each")
    produce(broker, topic, 0, 1200)
    wait_for(lambda: len(consumed_values([other, static])) == 1200, what="first records")
    before = len(other.assignments())
    static.crash()
    killed_at = time.time()
    early = Member(CLIENT, broker, topic, group, tmp_path / "early", instance="s-1")
    err = tmp_path / "early.err"
    wait_for(lambda: "instance ID is still used" in err.read_text(), timeout=10,
             what="UNRELEASED_INSTANCE_ID for the early replacement")
    early.crash()
    assert early.current() in (None, set()), "the instance id was taken over early"
    assert len(other.assignments()) == before, "the dead static member's partitions moved early"
    wait_for(lambda: other.current() == set(range(PARTITIONS)), what="session expiry")
    assert time.time() - killed_at >= 3.5, "moved before the 4 s session expired"
    late = Member(CLIENT, broker, topic, group, tmp_path / "late", instance="s-1")
    wait_for(lambda: late.current() is not None and len(late.current()) == PARTITIONS // 2
             and other.current() == set(range(PARTITIONS)) - late.current(),
             what="the late replacement joins")
    produce(broker, topic, 1200, 1200)
    wait_for(lambda: len(consumed_values([other, static, late])) == 2400,
             what="records after the takeover")
    assert consumed_values([other, static, late]) == set(range(2400))
    other.leave()
    late.leave()
