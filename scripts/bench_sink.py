"""Rows/s into PostgreSQL for 1 KiB JSON records, `exacta sink postgres` exactly once (rows and
offsets in one transaction) against the same sink at least once (rows, then offsets to
Kafka), alternating, ROUNDS times, on the broker at BOOTSTRAP and the database at DSN.

Each run preloads RECORDS records on 3 partitions of a fresh topic, starts one sink on an
empty table and reads its debug log: rows/s from its first to its last commit, and each
batch's write-and-commit latency (p50/p99).

Usage: bench_sink.py BOOTSTRAP DSN [ROUNDS]   (BENCH_SINK_RECORDS, default 200000)"""

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import psycopg
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(os.environ.get("EXACTA_BIN", ROOT / "target" / "release" / "exacta"))
RECORDS = int(os.environ.get("BENCH_SINK_RECORDS", "200000"))
COMMIT = re.compile(r"^(\S+)Z .*batch committed rows=(\d+) micros=(\d+)")


def preload(bootstrap, topic):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 3, 1)])[topic].result(10)
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 20,
                  "queue.buffering.max.messages": 1000000})
    pad = "x" * 960
    for i in range(RECORDS):
        v = json.dumps({"id": i, "account": f"acct-{i % 1000:04d}", "payload": pad})
        while True:
            try:
                p.produce(topic, key=str(i), value=v)
                break
            except BufferError:
                p.poll(0.05)
    assert p.flush(120) == 0


def run(bootstrap, dsn, delivery, n, work):
    topic, group = f"bench-{delivery}-{n}", f"bench-{delivery}-{n}"
    preload(bootstrap, topic)
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("DROP TABLE IF EXISTS bench_rows")
        c.execute("CREATE TABLE bench_rows (id bigint, account text, payload text)")
    log = work / f"{topic}.log"
    with open(log, "w") as out:
        sink = subprocess.Popen(
            [str(BIN), "sink", "postgres", "--bootstrap-server", bootstrap, "--topic", topic,
             "--group", group, "--dsn", dsn, "--table", "bench_rows", "--delivery", delivery],
            stdout=out, stderr=out, env=dict(os.environ, EXACTA_LOG="info,exacta_sink=debug"))
    try:
        deadline = time.time() + 600
        while time.time() < deadline:
            with psycopg.connect(dsn, autocommit=True) as c:
                if c.execute("SELECT count(*) FROM bench_rows").fetchone()[0] >= RECORDS:
                    break
            time.sleep(0.5)
        else:
            raise SystemExit(f"the sink did not finish:\n{log.read_text()[-3000:]}")
    finally:
        sink.terminate()
        sink.wait(60)
    commits = [(datetime.fromisoformat(m[1]).timestamp(), int(m[2]), int(m[3]))
               for m in map(COMMIT.match, log.read_text().splitlines()) if m]
    rows = sum(r for _, r, _ in commits[1:])
    elapsed = commits[-1][0] - commits[0][0]
    micros = sorted(us for _, _, us in commits)
    p = lambda q: micros[min(len(micros) - 1, int(len(micros) * q))] / 1000  # noqa: E731
    print(f"{delivery}: rows_per_s={rows / elapsed:.0f} ({RECORDS} rows, {len(commits)} "
          f"batches) commit_ms p50={p(0.5):.1f} p99={p(0.99):.1f}", flush=True)
    return rows / elapsed


def main():
    bootstrap, dsn = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    rates = {"exactly-once": [], "at-least-once": []}
    with tempfile.TemporaryDirectory() as work:
        for n in range(rounds):
            for delivery in rates:
                print(f"## round {n + 1} {delivery}", flush=True)
                rates[delivery].append(run(bootstrap, dsn, delivery, n, Path(work)))
    eos, alo = (sorted(v)[len(v) // 2] for v in rates.values())
    print(f"median rows/s: exactly-once {eos:.0f}, at-least-once {alo:.0f}, "
          f"ratio {eos / alo:.2f}")


if __name__ == "__main__":
    main()
