"""`exacta sink postgres` against the real broker and a real PostgreSQL server (started by
scripts/test.sh): rows and their offsets in one transaction, the json and raw formats,
upserts, metrics and Kafka's committed offsets, and bad input of every kind with and without
a dead-letter topic. The crash, zombie and restart runs are in test_sink_faults.py."""

import json
import socket
import urllib.request

import psycopg

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from harness import wait_for
from sink_harness import SinkProcess, query


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def create_topics(broker, *names, partitions=3):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for f in admin.create_topics([NewTopic(n, partitions, 1) for n in names]).values():
        f.result(10)


def produce(broker, topic, values, partition=None, headers=None):
    """VALUES (bytes, str or JSON-able) in order, idempotent, keyed by their index."""
    p = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True})
    for i, v in enumerate(values):
        if not isinstance(v, (bytes, str)):
            v = json.dumps(v)
        kwargs = {} if partition is None else {"partition": partition}
        p.produce(topic, key=str(i), value=v, headers=headers, **kwargs)
    assert p.flush(30) == 0


def end_offsets(broker, topic, partitions=3):
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "sink-check"})
    ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)}
    c.close()
    return ends


def stored_offsets(dsn, group):
    """The offsets table's next offsets of GROUP (none before the sink created it)."""
    try:
        rows = query(dsn, "SELECT topic, partition, next_offset FROM exacta_sink_offsets "
                          "WHERE group_id = %s", group)
    except psycopg.errors.UndefinedTable:
        return {}
    return {(t, p): n for t, p, n in rows}


def sink_args(broker, dsn, table, group, *topics):
    args = ["--bootstrap-server", broker.bootstrap, "--group", group, "--dsn", dsn,
            "--table", table]
    for t in topics:
        args += ["--topic", t]
    return args


def count(dsn, table):
    return query(dsn, f"SELECT count(*) FROM {table}")[0][0]


def test_json_records_become_rows_with_their_offsets(broker, postgres, tmp_path):
    dsn = postgres.database()
    query(dsn, "CREATE TABLE events (id bigint, name text, amount numeric, ok boolean, "
               "at timestamptz, tags jsonb, note text DEFAULT 'none')")
    create_topics(broker, "events")
    n = 3000
    produce(broker, "events", [{"id": i, "name": f"n{i}", "amount": i * 1.5, "ok": i % 2 == 0,
                                "at": "2026-12-04T10:00:00Z", "tags": {"i": i}}
                               for i in range(n)])
    port = free_port()
    sink = SinkProcess(tmp_path / "sink.log", *sink_args(broker, dsn, "events", "g1", "events"),
                       "--metrics-listen", f"127.0.0.1:{port}").start()
    try:
        wait_for(lambda: count(dsn, "events") >= n, 60, "the rows")
        wait_for(lambda: stored_offsets(dsn, "g1") == {("events", p): e for p, e in
                                                      end_offsets(broker, "events").items()},
                 30, "the offsets table to reach the end offsets")
        metrics = ""

        def scraped():
            nonlocal metrics
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                metrics = r.read().decode()
            return 'exacta_sink_lag_records{topic="events",partition="2"} 0' in metrics
        wait_for(scraped, 30, "the lag gauges")
    finally:
        sink.stop()
    assert sink.wait() == 0, sink.log()[-3000:]
    assert query(dsn, "SELECT count(*), count(DISTINCT id), sum(id) FROM events")[0] == \
        (n, n, n * (n - 1) // 2)
    row = query(dsn, "SELECT name, amount, ok, at, tags, note FROM events WHERE id = 7")[0]
    assert row[0] == "n7" and float(row[1]) == 10.5 and row[2] is False
    assert row[3].isoformat() == "2026-12-04T10:00:00+00:00" and row[4] == {"i": 7}
    assert row[5] == "none", "a field the record lacks keeps the column default"
    assert f"exacta_sink_rows_total {n}" in metrics
    assert "exacta_sink_commit_seconds_count" in metrics
    # Kafka's committed offsets follow, for `exacta group describe`.
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "g1"})
    committed = c.committed([TopicPartition("events", p) for p in range(3)], timeout=10)
    c.close()
    assert {tp.partition: tp.offset for tp in committed} == end_offsets(broker, "events")
    # A restart reads on from the table: nothing again.
    produce(broker, "events", [{"id": n}])
    sink = SinkProcess(tmp_path / "sink2.log",
                       *sink_args(broker, dsn, "events", "g1", "events")).start()
    try:
        wait_for(lambda: count(dsn, "events") >= n + 1, 60, "the new row")
    finally:
        sink.stop()
    assert query(dsn, "SELECT count(*), count(DISTINCT id) FROM events")[0] == (n + 1, n + 1)


def test_raw_format_keeps_coordinates_key_value_headers_timestamp(broker, postgres, tmp_path):
    dsn = postgres.database()
    query(dsn, 'CREATE TABLE raw (topic text, partition int, "offset" bigint, key bytea, '
               'value bytea, headers jsonb, "timestamp" timestamptz)')
    create_topics(broker, "bin", partitions=1)
    produce(broker, "bin", [b"\x00\xffbinary", b"text"], partition=0,
            headers=[("trace", b"abc"), ("empty", None)])
    sink = SinkProcess(tmp_path / "sink.log", *sink_args(broker, dsn, "raw", "g", "bin"),
                       "--format", "raw").start()
    try:
        wait_for(lambda: count(dsn, "raw") >= 2, 60, "the rows")
    finally:
        sink.stop()
    rows = query(dsn, 'SELECT topic, partition, "offset", key, value, headers, '
                      'extract(epoch from "timestamp") FROM raw ORDER BY "offset"')
    assert [r[:5] for r in rows] == [("bin", 0, 0, b"0", b"\x00\xffbinary"),
                                     ("bin", 0, 1, b"1", b"text")]
    assert rows[0][5] == [{"key": "trace", "value": "abc"}, {"key": "empty", "value": None}]
    assert rows[0][6] > 1.7e9


def test_upsert_keeps_the_last_value_per_key(broker, postgres, tmp_path):
    dsn = postgres.database()
    query(dsn, "CREATE TABLE balances (account text PRIMARY KEY, cents bigint)")
    create_topics(broker, "balances")
    n = 2000
    produce(broker, "balances", [{"account": f"a{i % 10}", "cents": i} for i in range(n)],
            partition=0)
    sink = SinkProcess(tmp_path / "sink.log", *sink_args(broker, dsn, "balances", "g",
                                                          "balances"),
                       "--mode", "upsert", "--key-column", "account",
                       "--batch-records", "300").start()
    try:
        wait_for(lambda: stored_offsets(dsn, "g").get(("balances", 0)) == n, 60,
                 "every record")
    finally:
        sink.stop()
    assert dict(query(dsn, "SELECT account, cents FROM balances")) == \
        {f"a{k}": n - 10 + k for k in range(10)}


def bad_input_table(dsn):
    query(dsn, "CREATE TABLE orders (id bigint NOT NULL, item text, qty integer CHECK (qty > 0))")


BAD = [
    (b"{not json", "not valid JSON"),
    ({"id": "seven", "item": "x", "qty": 1}, "column id is bigint but the value is a string"),
    ({"id": 3, "item": "x", "qty": 1, "colour": "red"}, 'field "colour" is not a column'),
    ({"id": 4, "item": "x", "qty": 0}, "violates check constraint"),
    ({"item": "x", "qty": 1}, "violates not-null constraint"),
]


def test_a_bad_record_stops_the_sink_after_committing_what_came_before(broker, postgres,
                                                                       tmp_path):
    for n, (bad, reason) in enumerate(BAD):
        dsn = postgres.database()
        bad_input_table(dsn)
        topic = f"orders-{n}"
        create_topics(broker, topic, partitions=1)
        good = [{"id": i, "item": "ok", "qty": 1} for i in range(10)]
        produce(broker, topic, good + [bad] + good, partition=0)
        sink = SinkProcess(tmp_path / f"sink-{n}.log",
                           *sink_args(broker, dsn, "orders", "g", topic)).start()
        rc = sink.wait(60)
        log = sink.log()
        assert rc == 1, log[-2000:]
        assert f"bad record at {topic}/0@10" in log and reason in log, log[-2000:]
        assert count(dsn, "orders") == 10
        assert stored_offsets(dsn, "g") == {(topic, 0): 10}


def test_bad_records_go_to_the_dead_letter_topic_and_the_rest_flows(broker, postgres, tmp_path):
    dsn = postgres.database()
    bad_input_table(dsn)
    create_topics(broker, "orders", "orders-dlt", partitions=1)
    values = []
    for i in range(50):
        values.append({"id": i, "item": "ok", "qty": 1})
        if i % 10 == 5:
            values.append(BAD[(i // 10) % len(BAD)][0])
    produce(broker, "orders", values, partition=0)
    port = free_port()
    sink = SinkProcess(tmp_path / "sink.log", *sink_args(broker, dsn, "orders", "g", "orders"),
                       "--dead-letter-topic", "orders-dlt",
                       "--metrics-listen", f"127.0.0.1:{port}").start()
    try:
        wait_for(lambda: stored_offsets(dsn, "g").get(("orders", 0)) == len(values), 60,
                 "every record")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            metrics = r.read().decode()
    finally:
        sink.stop()
    assert query(dsn, "SELECT count(*), count(DISTINCT id) FROM orders")[0] == (50, 50)
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "dlt-check",
                  "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
    c.assign([TopicPartition("orders-dlt", 0, 0)])
    dead = []
    while len(dead) < 5:
        m = c.poll(10)
        assert m is not None, f"only {len(dead)} dead letters"
        dead.append(m)
    c.close()
    for m, (bad, reason) in zip(dead, BAD):
        h = {k: v.decode() for k, v in m.headers()}
        assert h["exacta.dlt.topic"] == "orders" and h["exacta.dlt.partition"] == "0"
        assert values[int(h["exacta.dlt.offset"])] == bad
        assert reason in h["exacta.dlt.error"], h
    assert "exacta_sink_dead_lettered_total 5" in metrics
    assert "exacta_sink_bad_records_total 5" in metrics


def test_configuration_errors_are_clear(broker, postgres, tmp_path):
    dsn = postgres.database()
    bad_input_table(dsn)
    query(dsn, "CREATE TABLE halfraw (topic text, partition int)")
    create_topics(broker, "t")
    port = dsn.split(":")[-1].split("/")[0]
    cases = [
        (sink_args(broker, dsn, "missing", "g", "t"), "table missing does not exist"),
        (sink_args(broker, dsn, "halfraw", "g", "t") + ["--format", "raw"],
         'has no column offset'),
        (sink_args(broker, dsn, "orders", "g", "t") + ["--mode", "upsert", "--key-column",
                                                       "nope"], "has no column nope"),
        (sink_args(broker, dsn, "orders", "g", "t") + ["--mode", "upsert"],
         "upsert mode needs a key column"),
        (sink_args(broker, dsn, "orders", "g", "nope"), "topic nope does not exist"),
        (sink_args(broker, "postgres://nobody@127.0.0.1:" + port + "/postgres", "orders", "g",
                   "t"), 'role "nobody" does not exist'),
        (sink_args(broker, dsn.rsplit("/", 1)[0] + "/nodb", "orders", "g", "t"),
         'database "nodb" does not exist'),
        (sink_args(broker, "postgres://x@127.0.0.1:notaport/db", "orders", "g", "t"),
         "the DSN does not parse"),
        (sink_args(broker, dsn, "orders", "g", "t") + ["--batch-records", "0"],
         "batch_records must be at least 1"),
    ]
    for n, (args, message) in enumerate(cases):
        sink = SinkProcess(tmp_path / f"sink-{n}.log", *args).start()
        assert sink.wait(60) != 0
        assert message in sink.log(), (args, sink.log()[-2000:])
    config = tmp_path / "sink.toml"
    config.write_text(f'bootstrap_server = "{broker.bootstrap}"\ntopics = ["t"]\n'
                      f'group = "g"\ndsn = "{dsn}"\ntable = "orders"\nbatch_size = 5\n')
    sink = SinkProcess(tmp_path / "sink-toml.log", "--config", config).start()
    assert sink.wait(60) != 0
    assert "unknown field `batch_size`" in sink.log(), sink.log()


def test_the_toml_file_carries_the_same_keys(broker, postgres, tmp_path):
    dsn = postgres.database()
    bad_input_table(dsn)
    create_topics(broker, "t", "u", partitions=1)
    produce(broker, "t", [{"id": 1, "qty": 1}], partition=0)
    produce(broker, "u", [{"id": 2, "qty": 2}], partition=0)
    config = tmp_path / "sink.toml"
    config.write_text(f'bootstrap_server = "{broker.bootstrap}"\ntopics = ["t", "u"]\n'
                      f'group = "toml"\ndsn = "{dsn}"\ntable = "orders"\nbatch_ms = 50\n'
                      f'[consumer]\n"client.id" = "sink-from-toml"\n')
    sink = SinkProcess(tmp_path / "sink.log", "--config", config).start()
    try:
        wait_for(lambda: count(dsn, "orders") >= 2, 60, "both rows")
    finally:
        sink.stop()
    assert sorted(query(dsn, "SELECT id, qty FROM orders")) == [(1, 1), (2, 2)]
    assert stored_offsets(dsn, "toml") == {("t", 0): 1, ("u", 0): 1}
