"""Transactions with real clients: visibility under both isolation levels, an exactly-once
copier with aborts, zombie fencing, timeouts holding back the LSO, and a crash between
Prepare and Complete."""

import time

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

TXN_CONFIG = ("group_min_session_timeout_ms = 1000\n"
              "group_initial_rebalance_delay_ms = 0\n")


def create(broker, *topics):
    a = AdminClient({"bootstrap.servers": broker.bootstrap})
    fs = a.create_topics([NewTopic(name, n, 1) for name, n in topics])
    for f in fs.values():
        f.result(10)


def read_all(broker, topic, partitions, isolation, timeout=5.0):
    """Values of every partition from the start, as a consumer with `isolation` sees them."""
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "reader-" + isolation,
                  "isolation.level": isolation, "enable.auto.commit": False,
                  "auto.offset.reset": "earliest"})
    ends = {}
    for p in range(partitions):
        lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        ends[p] = hi
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out = []
    deadline = time.time() + timeout
    idle_since = time.time()
    while time.time() < deadline and time.time() - idle_since < 1.5:
        m = c.poll(0.2)
        if m is None or m.error():
            continue
        idle_since = time.time()
        out.append((m.partition(), m.offset(), m.value().decode()))
    c.close()
    return out


def lso(broker, topic, partition):
    """ListOffsets latest with read_committed: the last stable offset."""
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "lso",
                  "isolation.level": "read_committed"})
    _, hi = c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10, cached=False)
    c.close()
    return hi


def txn_producer(broker, txn_id, **extra):
    p = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": txn_id, **extra})
    p.init_transactions(15)
    return p


def test_commit_and_abort_visibility_under_both_isolation_levels(broker):
    create(broker, ("vis", 2))
    p = txn_producer(broker, "vis-1")
    p.begin_transaction()
    for i in range(20):
        p.produce("vis", value=f"c{i}".encode(), partition=i % 2)
    p.commit_transaction(15)
    p.begin_transaction()
    for i in range(20):
        p.produce("vis", value=f"a{i}".encode(), partition=i % 2)
    p.flush(15)  # make sure the aborted records really reach the log
    p.abort_transaction(15)
    p.begin_transaction()
    for i in range(5):
        p.produce("vis", value=f"d{i}".encode(), partition=i % 2)
    p.commit_transaction(15)

    committed = sorted(v for _, _, v in read_all(broker, "vis", 2, "read_committed"))
    uncommitted = sorted(v for _, _, v in read_all(broker, "vis", 2, "read_uncommitted"))
    assert committed == sorted([f"c{i}" for i in range(20)] + [f"d{i}" for i in range(5)])
    assert uncommitted == sorted(committed + [f"a{i}" for i in range(20)])
    # kafka-python sees the same, as a producer and as a read_committed consumer.
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition as KTP

    kp = KafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id="vis-kp")
    kp.init_transactions()
    kp.begin_transaction()
    kp.send("vis", b"kc", partition=0)
    kp.commit_transaction()
    kp.begin_transaction()
    kp.send("vis", b"ka", partition=0).get(10)
    kp.abort_transaction()
    kp.close()
    kc = KafkaConsumer(bootstrap_servers=broker.bootstrap, isolation_level="read_committed",
                       auto_offset_reset="earliest", consumer_timeout_ms=3000)
    kc.assign([KTP("vis", 0), KTP("vis", 1)])
    seen = sorted(m.value.decode() for m in kc)
    kc.close()
    assert seen == sorted(committed + ["kc"])


def test_copier_exactly_once_with_aborts(make_broker):
    broker = make_broker(TXN_CONFIG)
    n = 3000
    create(broker, ("copy-in", 2), ("copy-out", 3))
    seed = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True})
    for i in range(n):
        seed.produce("copy-in", value=str(i).encode(), partition=i % 2)
    assert seed.flush(20) == 0

    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "copier",
                         "isolation.level": "read_committed", "enable.auto.commit": False,
                         "auto.offset.reset": "earliest", "session.timeout.ms": 6000})
    consumer.subscribe(["copy-in"])
    producer = txn_producer(broker, "copier-1")
    txns = aborted = 0
    deadline = time.time() + 120
    ends = [n // 2, n // 2]

    def done():
        tps = consumer.committed([TopicPartition("copy-in", p) for p in range(2)], timeout=10)
        return [tp.offset for tp in tps] == ends

    while time.time() < deadline:
        msgs = [m for m in consumer.consume(100, timeout=0.5) if not m.error()]
        if not msgs:
            if consumer.assignment() and done():
                break
            continue
        producer.begin_transaction()
        for m in msgs:
            out = int(m.value())
            producer.produce("copy-out", value=f"{out}".encode(), partition=out % 3)
        producer.send_offsets_to_transaction(
            consumer.position(consumer.assignment()), consumer.consumer_group_metadata(), 15)
        txns += 1
        if txns % 3 == 0:
            producer.flush(15)
            producer.abort_transaction(15)
            aborted += 1
            # Rewind to the last committed offsets and process those records again.
            for tp in consumer.committed(consumer.assignment(), timeout=10):
                consumer.seek(TopicPartition(tp.topic, tp.partition, max(tp.offset, 0)))
        else:
            producer.commit_transaction(15)
    consumer.close()
    assert aborted > 3
    out = [int(v) for _, _, v in read_all(broker, "copy-out", 3, "read_committed", timeout=20)]
    assert sorted(out) == list(range(n)), "each input record exactly once in the output"
    raw = read_all(broker, "copy-out", 3, "read_uncommitted", timeout=20)
    assert len(raw) > n, "aborted copies are in the log, hidden from read_committed"
    check = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "copier"})
    tps = check.committed([TopicPartition("copy-in", p) for p in range(2)], timeout=10)
    check.close()
    assert [tp.offset for tp in tps] == ends
    print(f"copier: input={n} transactions={txns} aborted={aborted} output_committed={len(out)} "
          f"duplicates=0 raw_records={len(raw)}")


def test_zombie_is_fenced_and_its_records_stay_invisible(broker):
    create(broker, ("zombie", 1))
    old = txn_producer(broker, "z")
    old.begin_transaction()
    old.produce("zombie", value=b"zombie", partition=0)
    old.flush(10)
    new = txn_producer(broker, "z")  # fences `old`, aborting its open transaction
    new.begin_transaction()
    new.produce("zombie", value=b"fresh", partition=0)
    new.commit_transaction(15)
    with pytest.raises(KafkaException) as e:
        old.commit_transaction(15)
    assert e.value.args[0].code() in (90, 47) or "fenced" in str(e.value).lower()
    assert [v for _, _, v in read_all(broker, "zombie", 1, "read_committed")] == ["fresh"]


def test_open_transaction_holds_back_the_lso_until_it_times_out(broker):
    create(broker, ("stuck", 1))
    stuck = txn_producer(broker, "stuck-1", **{"transaction.timeout.ms": 3000})
    stuck.begin_transaction()
    stuck.produce("stuck", value=b"never", partition=0)
    stuck.flush(10)
    plain = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True})
    for i in range(5):
        plain.produce("stuck", value=f"p{i}".encode(), partition=0)
    assert plain.flush(10) == 0
    assert lso(broker, "stuck", 0) == 0, "the open transaction starts at offset 0"
    assert read_all(broker, "stuck", 1, "read_committed", timeout=2) == []
    # The coordinator aborts it after the timeout; the LSO and readers move on.
    deadline = time.time() + 20
    while lso(broker, "stuck", 0) == 0 and time.time() < deadline:
        time.sleep(0.2)
    assert lso(broker, "stuck", 0) >= 6
    assert [v for _, _, v in read_all(broker, "stuck", 1, "read_committed")] == [f"p{i}" for i in range(5)]
    assert "transaction timed out" in broker.log()
    # The timed-out producer was fenced by the epoch bump.
    with pytest.raises(KafkaException):
        stuck.commit_transaction(10)


def test_crash_between_prepare_and_complete_completes_on_restart(broker):
    create(broker, ("crash", 2))
    p = txn_producer(broker, "crash-1")
    p.begin_transaction()
    for i in range(10):
        p.produce("crash", value=f"x{i}".encode(), partition=i % 2)
    p.flush(10)
    # Restart the broker with the crash hook armed: it dies after the Prepare record.
    broker.stop()
    broker.start(env={"EXACTA_TEST_CRASH_AFTER_PREPARE": "1"})
    with pytest.raises(KafkaException):
        p.commit_transaction(5)  # the broker dies mid-commit
    broker.proc.wait(10)
    assert broker.proc.returncode == 137
    broker.proc = None
    broker.start()
    deadline = time.time() + 20
    values = []
    while time.time() < deadline:
        values = sorted(v for _, _, v in read_all(broker, "crash", 2, "read_committed", timeout=2))
        if values:
            break
    assert values == sorted(f"x{i}" for i in range(10)), "all of the transaction, atomically"
    assert "completing a transaction prepared before the restart" in broker.log()


def test_admin_lists_and_describes_transactions(broker):
    from kafka import TopicPartition as KTP
    from kafka.admin import KafkaAdminClient

    create(broker, ("adm-txn", 1))
    done = txn_producer(broker, "adm-done")
    done.begin_transaction()
    done.produce("adm-txn", value=b"d", partition=0)
    done.commit_transaction(15)
    hanging = txn_producer(broker, "adm-open")
    hanging.begin_transaction()
    hanging.produce("adm-txn", value=b"h", partition=0)
    hanging.flush(10)

    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    listed = {t.transactional_id: t.state.value for ts in admin.list_transactions().values() for t in ts}
    assert listed == {"adm-done": "CompleteCommit", "adm-open": "Ongoing"}
    desc = admin.describe_transactions(["adm-open"])["adm-open"]
    assert desc.state.value == "Ongoing" and desc.producer_epoch == 0
    assert desc.topic_partitions == {KTP("adm-txn", 0)}
    producers = admin.describe_producers([KTP("adm-txn", 0)])[KTP("adm-txn", 0)].active_producers
    open_starts = {p.producer_id: p.current_transaction_start_offset for p in producers}
    assert open_starts[desc.producer_id] == 2, "the open transaction starts after the committed one and its marker"
    assert sorted(open_starts.values()) == [-1, 2]


def scrape(broker):
    """The broker's Prometheus exposition as {name{labels}: value} (no histograms)."""
    import re
    import urllib.request
    port = re.search(r"metrics listening on 127\.0\.0\.1:(\d+)", broker.log()).group(1)
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "_bucket{" not in line:
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def test_metrics_count_commits_aborts_timeouts_and_fencing(make_broker):
    """`metrics_listen`: counters and gauges follow real transactions from librdkafka."""
    broker = make_broker(TXN_CONFIG + 'metrics_listen = "127.0.0.1:0"\n')
    create(broker, ("metered", 1))
    p = txn_producer(broker, "metered-1")
    p.begin_transaction()
    p.produce("metered", b"committed")
    p.commit_transaction(10)
    p.begin_transaction()
    p.produce("metered", b"aborted")
    p.flush(10)
    p.abort_transaction(10)
    # An open transaction holds back the LSO and shows as open.
    p.begin_transaction()
    p.produce("metered", b"open")
    p.flush(10)
    time.sleep(0.3)
    m = scrape(broker)
    assert m["exacta_transactions_open"] == 1, m
    assert m["exacta_transaction_oldest_open_seconds"] > 0
    assert m['exacta_partition_lso_lag{topic="metered",partition="0"}'] >= 1
    # A second instance fences the first (its open transaction is aborted).
    fencer = txn_producer(broker, "metered-1")
    # A transaction that stalls past its timeout is aborted by the coordinator.
    stalled = txn_producer(broker, "metered-2", **{"transaction.timeout.ms": 1000})
    stalled.begin_transaction()
    stalled.produce("metered", b"stalled")
    stalled.flush(10)
    deadline = time.time() + 20
    while time.time() < deadline and scrape(broker)["exacta_transactions_timed_out_total"] < 1:
        time.sleep(0.2)
    m = scrape(broker)
    assert m["exacta_transactions_committed_total"] == 1, m
    assert m["exacta_transactions_aborted_total"] == 3, m  # on request, fenced, timed out
    assert m["exacta_transactions_timed_out_total"] == 1, m
    assert m["exacta_producer_fencings_total"] == 2, m  # the new instance, the timeout
    assert m["exacta_transactions_open"] == 0, m
    assert m['exacta_partition_lso_lag{topic="metered",partition="0"}'] == 0, m
    hw = m['exacta_partition_high_watermark{topic="metered",partition="0"}']
    assert hw == m['exacta_partition_last_stable_offset{topic="metered",partition="0"}'] >= 8
    assert m['exacta_requests_total{api="EndTxn"}'] >= 2
    assert m['exacta_requests_total{api="Produce"}'] >= 4
    assert m["exacta_fsync_duration_seconds_count"] > 0
    assert m["exacta_txn_marker_duration_seconds_count"] == 4
    assert m["exacta_produce_request_bytes_total"] > 0
    assert m['exacta_coordinator_load_seconds{coordinator="transaction"}'] >= 0
    # The fenced instance's commit is refused, and the refusal is counted.
    with pytest.raises(KafkaException):
        p.commit_transaction(10)
    m = scrape(broker)
    refused = {k: v for k, v in m.items()
               if k.startswith('exacta_response_errors_total{api="EndTxn"')}
    assert refused and all(("FENCED" in k or "EPOCH" in k) for k in refused), refused
    # A consumer group shows its members and generation (one per rebalance).
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "metered-g",
                  "auto.offset.reset": "earliest"})
    c.subscribe(["metered"])
    deadline = time.time() + 20
    while not c.assignment() and time.time() < deadline:
        c.poll(0.2)
    m = scrape(broker)
    assert m['exacta_group_members{group="metered-g"}'] == 1, m
    assert m['exacta_group_generation{group="metered-g"}'] >= 1, m
    c.close()
    del fencer
