"""The PostgreSQL server scripts/test.sh starts (scripts/postgres.sh: EXACTA_PG_*), a fresh
database per test, and `exacta sink postgres` processes."""

import os
import signal
import subprocess
import time
import uuid

import psycopg
import pytest

from harness import BIN


class Postgres:
    def __init__(self):
        missing = [v for v in ("EXACTA_PG_DSN", "EXACTA_PG_BIN", "EXACTA_PG_DATA")
                   if not os.environ.get(v)]
        if missing:
            pytest.fail(f"no PostgreSQL server: {', '.join(missing)} unset; run the tests "
                        "through scripts/test.sh (it starts one with scripts/postgres.sh)")
        self.dsn = os.environ["EXACTA_PG_DSN"]
        self.bin = os.environ["EXACTA_PG_BIN"]
        self.data = os.environ["EXACTA_PG_DATA"]
        user = os.environ.get("EXACTA_PG_USER", "")
        self.run_as = ["runuser", "-u", user, "--"] if user else []

    def database(self):
        """A fresh database; its DSN."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.dsn, autocommit=True) as c:
            c.execute(f"CREATE DATABASE {name}")
        return self.dsn.rsplit("/", 1)[0] + "/" + name

    def ctl(self, *args):
        subprocess.run([*self.run_as, f"{self.bin}/pg_ctl", "-D", self.data, *args],
                       check=True, capture_output=True, timeout=120)

    def crash(self):
        """Immediate shutdown: no checkpoint, crash recovery at the next start."""
        self.ctl("-m", "immediate", "stop")

    def start(self):
        self.ctl("-w", "-t", "60", "-l", f"{self.data}/../server.log", "start")


def query(dsn, sql, *params):
    """SQL's rows (None for a statement that returns none)."""
    with psycopg.connect(dsn, autocommit=True) as c:
        cur = c.execute(sql, params or None)
        return cur.fetchall() if cur.description is not None else None


class SinkProcess:
    """`exacta sink postgres ARGS`, its stderr appended to LOG across restarts."""

    def __init__(self, log, *args):
        self.log_path, self.args, self.proc = log, [str(a) for a in args], None

    def start(self):
        with open(self.log_path, "a") as out:
            self.proc = subprocess.Popen([str(BIN), "sink", "postgres", *self.args],
                                         stdout=out, stderr=out, stdin=subprocess.DEVNULL)
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        self.proc.kill()
        self.proc.wait(10)

    def stop(self, timeout=60):
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout)

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout=60):
        return self.proc.wait(timeout)

    def log(self):
        return self.log_path.read_text() if self.log_path.exists() else ""

    def wait_log(self, text, timeout=60, count=1):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.log().count(text) >= count:
                return
            if not self.alive():
                break
            time.sleep(0.1)
        raise AssertionError(f"the sink never logged {text!r}:\n{self.log()[-3000:]}")

