"""Wire-level behaviour: ApiVersions negotiation and bad input, with raw frames."""

import os
import random
import struct
import time

from harness import (build_batch, connect, frame, is_closed, kstr, parse_api_versions_v0,
                     parse_produce_v3, produce_v3, roundtrip)

API_VERSIONS, METADATA, PRODUCE, CREATE_TOPICS = 18, 3, 0, 19


def api_versions(sock, version=0, correlation_id=1):
    return roundtrip(sock, frame(API_VERSIONS, version, correlation_id, b""))


def create_topic(broker, name, partitions=1, config=None):
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    futures = admin.create_topics([NewTopic(name, partitions, 1, config=config or {})])
    futures[name].result(10)


def test_api_versions_v0_lists_every_served_api(broker):
    s = connect(broker)
    cid, body = api_versions(s, 0, 42)
    assert cid == 42
    error, ranges = parse_api_versions_v0(body)
    assert error == 0
    assert ranges[API_VERSIONS] == (0, 4)
    # Produce advertised from v0 like Kafka 4.0 (KAFKA-18659), served from v3.
    assert ranges[PRODUCE][0] == 0 and ranges[PRODUCE][1] >= 3
    assert ranges[1][0] <= 4  # Fetch v4 (librdkafka's floor for read_committed)
    assert ranges[22] == (0, 5)  # InitProducerId
    assert ranges[11] == (0, 9) and ranges[10] == (0, 6)  # JoinGroup, FindCoordinator
    assert ranges[24] == (0, 5) and ranges[25] == (0, 4)  # AddPartitionsToTxn (v4+: KIP-890), AddOffsetsToTxn
    assert ranges[26] == (0, 5) and ranges[28] == (0, 5)  # EndTxn, TxnOffsetCommit (v5: KIP-890)
    assert ranges[PRODUCE][1] == 13  # v13: topic ids (KIP-516)
    assert ranges[65] == (0, 0) and ranges[66] == (0, 2)  # Describe/ListTransactions
    assert ranges[27] == (1, 1)  # WriteTxnMarkers (admin abort of hanging transactions)
    assert ranges[68] == (0, 1) and ranges[69] == (0, 1)  # ConsumerGroupHeartbeat/Describe (KIP-848)


def test_api_versions_at_unknown_version_answers_v0_with_error_and_ranges(broker):
    s = connect(broker)
    # A flexible-header request at a version we do not serve, as a newer client sends it.
    cid, body = roundtrip(s, frame(API_VERSIONS, 9, 7, b"\x00\x00\x00", flexible=True))
    assert cid == 7
    error, ranges = parse_api_versions_v0(body)
    assert error == 35  # UNSUPPORTED_VERSION
    assert ranges[API_VERSIONS] == (0, 4)
    # The client retries at v0 on the same connection, which stays open.
    _, body = api_versions(s, 0, 8)
    assert parse_api_versions_v0(body)[0] == 0


def assert_still_serving(broker):
    s = connect(broker)
    _, body = api_versions(s)
    assert parse_api_versions_v0(body)[0] == 0
    assert broker.alive()


def test_oversized_and_negative_frames_close_only_that_connection(broker):
    bystander = connect(broker)
    for size in (200 * 1024 * 1024, -5):
        s = connect(broker)
        s.sendall(struct.pack(">i", size))
        assert is_closed(s)
    _, body = api_versions(bystander)
    assert parse_api_versions_v0(body)[0] == 0
    assert "closing connection" in broker.log()


def test_unknown_api_key_and_version_close_the_connection(broker):
    s = connect(broker)
    s.sendall(frame(999, 0, 1, b""))
    assert is_closed(s)
    s = connect(broker)
    s.sendall(frame(METADATA, 99, 1, b""))
    assert is_closed(s)
    # Produce v2 is advertised (for librdkafka's codec check) but not served.
    s = connect(broker)
    s.sendall(frame(PRODUCE, 2, 1, produce_v3("t", 0, build_batch([b"x"]))))
    assert is_closed(s)
    assert_still_serving(broker)


def test_malformed_bodies_close_the_connection_without_harm(broker):
    s = connect(broker)
    # Metadata v1 claiming 5 topic names but carrying none.
    s.sendall(frame(METADATA, 1, 1, struct.pack(">i", 5)))
    assert is_closed(s)
    # Array counts near i32::MAX in a tiny frame must not make the broker allocate them.
    for key, version, body in [(METADATA, 0, struct.pack(">i", 0x7FFFFFF0)),
                               (PRODUCE, 3, kstr(None) + struct.pack(">hii", 1, 1000, 0x7FFFFFF0)),
                               (METADATA, 9, b"\xff\xff\xff\xff\x07")]:
        s = connect(broker)
        s.sendall(frame(key, version, 1, body, flexible=version >= 9))
        assert is_closed(s)
    assert broker.alive()
    rng = random.Random(1234)
    for i in range(1000):
        s = connect(broker)
        key = rng.choice([0, 1, 2, 3, 18, 19, 20, 32, 37, 44, 60, rng.randrange(-5, 100)])
        version = rng.randrange(-1, 14)
        body = os.urandom(rng.randrange(0, 200))
        try:
            s.sendall(frame(key, version, i, body, flexible=rng.random() < 0.5))
            s.settimeout(5)
            s.recv(65536)  # an answer or a close; either is fine, a hang is not
        except (ConnectionResetError, BrokenPipeError):
            pass
        s.close()
    assert_still_serving(broker)


def test_corrupt_and_invalid_batches_get_kafka_errors_and_change_nothing(broker):
    create_topic(broker, "bad-batches", partitions=1)
    s = connect(broker)
    good = build_batch([b"a", b"b", b"c"])

    def produce(records, partition=0, acks=-1, topic="bad-batches"):
        _, body = roundtrip(s, frame(PRODUCE, 3, 1, produce_v3(topic, partition, records, acks)))
        (result,) = parse_produce_v3(body)
        return result[2], result[3]

    corrupt = bytearray(good)
    corrupt[-1] ^= 0xFF  # breaks the CRC
    assert produce(bytes(corrupt)) == (2, -1)  # CORRUPT_MESSAGE
    assert produce(good[:-3])[0] == 2  # truncated batch
    old_magic = bytearray(good)
    old_magic[16] = 1
    assert produce(bytes(old_magic))[0] == 87  # INVALID_RECORD
    assert produce(good, partition=7)[0] == 3  # UNKNOWN_TOPIC_OR_PARTITION
    assert produce(good, topic="no-such-topic")[0] == 3
    assert produce(good, acks=2)[0] == 21  # INVALID_REQUIRED_ACKS
    big = build_batch([os.urandom(1100 * 1024)])
    assert produce(big)[0] == 10  # MESSAGE_TOO_LARGE
    # Nothing above was appended: the first good batch lands at offset 0.
    assert produce(good) == (0, 0)
    assert produce(good) == (0, 3)
    # acks=0 gets no response at all; the next request's answer comes next on the wire.
    s.sendall(frame(PRODUCE, 3, 50, produce_v3("bad-batches", 0, good, acks=0)))
    cid, body = roundtrip(s, frame(PRODUCE, 3, 51, produce_v3("bad-batches", 0, good)))
    assert cid == 51 and parse_produce_v3(body)[0][2:] == (0, 9)


def test_connection_limit_closes_extra_connections(make_broker):
    broker = make_broker("connections_max = 2\n")
    first, second = connect(broker), connect(broker)
    for s in (first, second):
        assert parse_api_versions_v0(api_versions(s)[1])[0] == 0
    third = connect(broker)
    assert is_closed(third)
    assert "connection limit reached" in broker.log()
    second.close()
    time.sleep(0.3)
    fourth = connect(broker)
    assert parse_api_versions_v0(api_versions(fourth)[1])[0] == 0


def test_invalid_topic_names_and_partition_counts_are_refused(broker):
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import InvalidPartitionsError, InvalidTopicError, TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    for name in ["bad name", "a/b", "x" * 250, ".", ".."]:
        try:
            admin.create_topics([NewTopic(name, 1, 1)])
            raise AssertionError(f"{name!r} was accepted")
        except InvalidTopicError:
            pass
    try:
        admin.create_topics([NewTopic("zero-partitions", 0, 1)])
        raise AssertionError("0 partitions accepted")
    except InvalidPartitionsError:
        pass
    admin.create_topics([NewTopic("twice", 2, 1)])
    try:
        admin.create_topics([NewTopic("twice", 2, 1)])
        raise AssertionError("duplicate accepted")
    except TopicAlreadyExistsError:
        pass
    assert "twice" in admin.list_topics()
    assert "zero-partitions" not in admin.list_topics()
    admin.close()


def test_metadata_does_not_auto_create_invalid_names(broker):
    s = connect(broker)
    body = struct.pack(">i", 1) + kstr("bad name!") + b"\x01"  # Metadata v4 allow_auto_topic_creation
    _, resp = roundtrip(s, frame(METADATA, 4, 3, body))
    assert b"bad name!" in resp
    assert not (broker.data_dir / "bad name!-0").exists()


def test_find_coordinator_single_and_batched(broker):
    s = connect(broker)
    # v1 (single key): key "grp", key_type 0.
    _, body = roundtrip(s, frame(10, 1, 5, kstr("grp") + b"\x00"))
    throttle, error = struct.unpack(">ih", body[:6])
    assert error == 0
    pos = 6 + 2  # skip the nullable error message (null: -1 length)
    node, = struct.unpack(">i", body[pos:pos + 4])
    assert node == 0
    # v4 (batched, flexible): two group keys, one empty (INVALID_GROUP_ID).
    keys = b"\x03" + b"\x02a" + b"\x01"  # compact array of 2: "a", ""
    _, body = roundtrip(s, frame(10, 4, 6, b"\x00" + keys + b"\x00", flexible=True))
    body = body[1:]  # response header v1 tagged fields
    assert body[4] == 3  # compact array: 2 coordinators
    pos = 5
    results = []
    for _ in range(2):
        klen = body[pos] - 1
        key = body[pos + 1:pos + 1 + klen].decode()
        pos += 1 + klen
        node, = struct.unpack(">i", body[pos:pos + 4])
        pos += 4
        hlen = body[pos] - 1
        pos += 1 + hlen
        port, err = struct.unpack(">ih", body[pos:pos + 6])
        pos += 6
        mlen = body[pos]
        pos += 1 + max(mlen - 1, 0)
        pos += 1  # tagged fields
        results.append((key, node, port, err))
    assert results[0] == ("a", 0, broker.port, 0)
    assert results[1][0] == "" and results[1][3] == 24  # INVALID_GROUP_ID


def test_json_logs_are_one_object_per_line(tmp_path):
    """`exacta --log-format json serve`: every stderr line is a JSON object with level,
    message and fields, including the listening line and the shutdown line."""
    import json
    import signal
    import subprocess
    from harness import BIN

    log = tmp_path / "broker.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([str(BIN), "--log-format", "json", "serve", "--listen",
                                 "127.0.0.1:0", "--data-dir", str(tmp_path / "data")],
                                stdout=out, stderr=out, stdin=subprocess.DEVNULL)
    deadline = time.time() + 30
    while "listening" not in log.read_text() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert all(e["level"] in ("INFO", "WARN", "ERROR", "DEBUG") for e in lines), lines
    messages = [e["fields"]["message"] for e in lines]
    assert any(m.startswith("exacta listening on 127.0.0.1:") for m in messages), messages
    assert "shutdown complete" in messages, messages
