"""`exacta sink postgres` through failures, checked against a real PostgreSQL: two sink
instances in one group SIGKILLed at random and the broker kill -9'd while records flow
(idempotent input, and transactional input with every third transaction aborted); a zombie
instance SIGSTOPped inside its commit past its session timeout while another takes over;
PostgreSQL itself crashed (immediate shutdown) and restarted. Afterwards the table (no
unique constraint) holds each committed record exactly once and the offsets table equals
the end offsets.

CI size by default; scripts/reliability.sh runs the kill loop with EXACTA_SINK_RECORDS=1000000,
EXACTA_SINK_KILLS=50 and EXACTA_SINK_BROKER_KILLS=5."""

import os
import random
import signal
import time

import psycopg
import pytest
from confluent_kafka import KafkaException, Producer

from background import Background
from harness import wait_for
from sink_harness import SinkProcess, query
from test_sink import count, create_topics, end_offsets, sink_args, stored_offsets

RECORDS = int(os.environ.get("EXACTA_SINK_RECORDS", "60000"))
KILLS = int(os.environ.get("EXACTA_SINK_KILLS", "8"))
BROKER_KILLS = int(os.environ.get("EXACTA_SINK_BROKER_KILLS", "1"))
TABLE = "CREATE TABLE rows (id bigint, payload text)"


def value(i):
    return '{"id": %d, "payload": "%s"}' % (i, "x" * 100)


def feed_idempotent(broker, topic, start, end, seconds=0.0, aborted=None):
    p = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True,
                  "message.timeout.ms": 120000, "linger.ms": 5})
    failed = []
    pause = seconds * 100 / max(1, end - start)
    for i in range(start, end):
        p.produce(topic, key=str(i), value=value(i),
                  on_delivery=lambda err, _m: err and failed.append(err))
        if i % 100 == 99:
            p.poll(0)
            time.sleep(pause)
    assert p.flush(150) == 0 and not failed, f"input not delivered: {failed[:3]}"


def feed_transactional(broker, topic, start, end, seconds=0.0, aborted=None):
    """Transactions of 100 records; every third is aborted (its ids go to ABORTED). A
    transaction the broker's death aborted is written again; a fenced or fatal producer is
    replaced (the new one fences the old)."""
    pause = seconds * 100 / max(1, end - start)

    def producer():
        p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5,
                      "transactional.id": f"sink-feed-{start}",
                      "transaction.timeout.ms": 30000})
        p.init_transactions(60)
        return p

    p = producer()
    for first in range(start, end, 100):
        ids = range(first, min(first + 100, end))
        abort = (first // 100) % 3 == 2
        while True:
            try:
                p.begin_transaction()
                for i in ids:
                    p.produce(topic, key=str(i), value=value(i))
                finish = p.abort_transaction if abort else p.commit_transaction
                while True:
                    try:
                        finish(60)
                        break
                    except KafkaException as e:
                        if not e.args[0].retriable():
                            raise
                break
            except KafkaException as e:
                if e.args[0].txn_requires_abort():
                    p.abort_transaction(60)
                else:
                    p = producer()
        if abort:
            aborted.update(ids)
        time.sleep(pause)


def check_table(dsn, broker, topic, want):
    ids = [r[0] for r in query(dsn, "SELECT id FROM rows")]
    dupes = len(ids) - len(set(ids))
    assert dupes == 0, f"{dupes} records are in the table more than once"
    missing, extra = want - set(ids), set(ids) - want
    assert not missing and not extra, \
        f"{len(missing)} records missing (e.g. {sorted(missing)[:5]}), {len(extra)} that " \
        f"should not be there (e.g. {sorted(extra)[:5]})"
    assert stored_offsets(dsn, "g") == {(topic, p): e for p, e in
                                        end_offsets(broker, topic).items()}


@pytest.mark.parametrize("input_kind", ["idempotent", "transactional"])
def test_sink_instances_and_broker_killed_while_records_flow(input_kind, make_broker, postgres,
                                                             tmp_path):
    broker = make_broker("group_initial_rebalance_delay_ms = 0\n")
    dsn = postgres.database()
    query(dsn, TABLE)
    create_topics(broker, "in")
    feed = feed_idempotent if input_kind == "idempotent" else feed_transactional
    aborted = set()
    args = sink_args(broker, dsn, "rows", "g", "in") + ["--session-timeout-ms", "6000"]
    sinks = [SinkProcess(tmp_path / f"sink-{n}.log", *args).start() for n in range(2)]
    rng = random.Random(5)
    kills = ["sink"] * KILLS + ["broker"] * BROKER_KILLS
    rng.shuffle(kills)
    bursts = [RECORDS * n // (len(kills) + 1) for n in range(len(kills) + 2)]
    started = time.time()
    try:
        for n, kill in enumerate(kills):
            feeding = Background(feed, broker, "in", bursts[n], bursts[n + 1], seconds=1.5,
                                 aborted=aborted)
            time.sleep(rng.uniform(0.3, 1.5))
            if kill == "broker":
                broker.kill9()
                broker.start()
            else:
                victim = rng.choice(sinks)
                victim.kill()
                victim.start()
            feeding.join()
            for s in sinks:
                assert s.alive(), s.log()[-3000:]
        feed(broker, "in", bursts[-2], bursts[-1], aborted=aborted)
        wait_for(lambda: stored_offsets(dsn, "g") == {("in", p): e for p, e in
                                                      end_offsets(broker, "in").items()},
                 120 + RECORDS / 1000, "the offsets table to reach the end offsets")
    finally:
        for s in sinks:
            s.stop()
    elapsed = time.time() - started
    want = set(range(RECORDS)) - aborted
    check_table(dsn, broker, "in", want)
    fenced = sum(s.log().count("another instance owns this partition") for s in sinks)
    print(f"input={input_kind} records={RECORDS} aborted={len(aborted)} sink_kills={KILLS} "
          f"broker_kills={BROKER_KILLS} rows={len(want)} fenced_batches={fenced} "
          f"elapsed_s={elapsed:.0f}")
    if input_kind == "transactional":
        assert aborted, "the feed aborted no transaction"
    for s in sinks:
        assert "panicked" not in s.log()
    assert "panicked" not in broker.log()


def test_a_zombie_paused_inside_its_commit_is_refused(make_broker, postgres, tmp_path):
    """The zombie is held inside its batch's transaction (the test locks the table), then
    SIGSTOPped past its session timeout; another instance takes the partitions over and
    writes everything; the zombie, resumed, reaches its owner check and rolls back."""
    broker = make_broker("group_initial_rebalance_delay_ms = 0\n")
    dsn = postgres.database()
    query(dsn, TABLE)
    create_topics(broker, "in")
    n = 3000
    args = sink_args(broker, dsn, "rows", "g", "in") + ["--session-timeout-ms", "6000"]
    zombie = SinkProcess(tmp_path / "zombie.log", *args).start()
    zombie.wait_log("assigned")
    lock = psycopg.connect(dsn)
    lock.execute("LOCK TABLE rows IN ACCESS EXCLUSIVE MODE")
    try:
        feed_idempotent(broker, "in", 0, n)

        def zombie_waits_for_the_lock():
            return query(dsn, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = "
                              "'Lock' AND query LIKE 'INSERT INTO%%rows%%'")[0][0] > 0
        wait_for(zombie_waits_for_the_lock, 30, "the zombie's batch to wait for the lock")
        zombie.signal(signal.SIGSTOP)
        successor = SinkProcess(tmp_path / "successor.log", *args).start()
        successor.wait_log("assigned", timeout=60)
        assert "in/0" in successor.log() and "in/1" in successor.log() \
            and "in/2" in successor.log(), successor.log()
    finally:
        lock.rollback()
        lock.close()
    try:
        wait_for(lambda: stored_offsets(dsn, "g") == {("in", p): e for p, e in
                                                      end_offsets(broker, "in").items()},
                 60, "the successor to write everything")
        zombie.signal(signal.SIGCONT)
        zombie.wait_log("another instance owns this partition now", timeout=30)
        time.sleep(1)
        check_table(dsn, broker, "in", set(range(n)))
        assert zombie.alive(), zombie.log()[-3000:]
    finally:
        zombie.signal(signal.SIGCONT)
        zombie.stop()
        successor.stop()
    check_table(dsn, broker, "in", set(range(n)))


def test_postgres_crashed_and_restarted_loses_and_repeats_nothing(broker, postgres, tmp_path):
    dsn = postgres.database()
    query(dsn, TABLE)
    create_topics(broker, "in")
    n = 30000
    sink = SinkProcess(tmp_path / "sink.log", *sink_args(broker, dsn, "rows", "g", "in")).start()
    try:
        for k in range(3):
            feeding = Background(feed_idempotent, broker, "in", k * n // 3, (k + 1) * n // 3,
                                 seconds=2)
            time.sleep(0.5 + k * 0.3)
            postgres.crash()
            time.sleep(2)
            postgres.start()
            feeding.join()
        wait_for(lambda: stored_offsets(dsn, "g") == {("in", p): e for p, e in
                                                      end_offsets(broker, "in").items()},
                 120, "the offsets table to reach the end offsets")
        assert sink.alive(), sink.log()[-3000:]
    finally:
        sink.stop()
    check_table(dsn, broker, "in", set(range(n)))
    assert "retrying" in sink.log()
    assert count(dsn, "rows") == n
