"""What every Python copier for `exacta verify --copier-command` shares with
`exacta-verify copy` (crates/verify/src/copier.rs): its flags, its JSON-lines history and
its exit codes. The copiers import it from beside them (Python puts a script's own folder
on the import path)."""

import argparse
import json
import threading
import time

# Exit code asking the verifier to restart the copier (with the same transactional id).
EXIT_RESTART = 3


def parse_args():
    p = argparse.ArgumentParser()
    for flag in ("bootstrap-server", "input", "output", "group", "transactional-id", "tag",
                 "history", "stop-file", "bug"):
        p.add_argument("--" + flag)
    for flag in ("output-partitions", "records-per-txn", "seed", "transaction-timeout-ms",
                 "pause-ms"):
        p.add_argument("--" + flag, type=int, default=0)
    p.add_argument("--abort-rate", type=float)
    return p.parse_args()


class History:
    """The copier's JSON-lines history; safe to record from client callback threads."""

    def __init__(self, path):
        self._file = open(path, "a")
        self._lock = threading.Lock()

    def record(self, op, **fields):
        with self._lock:
            self._file.write(json.dumps({"op": op, **fields}) + "\n")

    def flush(self):
        with self._lock:
            self._file.flush()


def now():
    return int(time.time() * 1000)
