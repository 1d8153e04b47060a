"""Rebalance time, classic protocol vs the KIP-848 consumer protocol (docs/benchmarks.md).

For each protocol and timing profile, against a fresh broker: MEMBERS librdkafka consumers
(threads of this process) subscribe to one topic of 2 x MEMBERS partitions; "join" is the
time from the first subscribe until every member owns exactly two partitions and no
partition is owned twice. Then one member closes (a graceful leave) and "leave" is the time
until the others own every partition again. ROUNDS rounds; the median and worst are printed.

usage: .venv/bin/python scripts/bench_rebalance.py [MEMBERS] [ROUNDS]
"""

import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "interop"))
from confluent_kafka import Consumer  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402
from harness import Broker  # noqa: E402

MEMBERS = int(sys.argv[1]) if len(sys.argv) > 1 else 10
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
PARTITIONS = 2 * MEMBERS

# (name, broker config, client config per protocol)
PROFILES = [
    ("defaults", "", {"classic": {}, "consumer": {}}),
    ("fast heartbeats",
     "group_initial_rebalance_delay_ms = 0\ngroup_consumer_heartbeat_interval_ms = 500\n",
     {"classic": {"heartbeat.interval.ms": 500, "session.timeout.ms": 6000}, "consumer": {}}),
]


class Member(threading.Thread):
    def __init__(self, bootstrap, group, protocol, extra):
        super().__init__(daemon=True)
        conf = {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
        if protocol == "consumer":
            conf["group.protocol"] = "consumer"
        conf.update(extra)
        self.consumer = Consumer(conf)
        self.protocol = protocol
        self.owned = set()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.closed = threading.Event()

    def on_assign(self, _, partitions):
        with self.lock:
            if self.protocol == "classic":
                self.owned = set()
            self.owned |= {p.partition for p in partitions}

    def on_revoke(self, _, partitions):
        with self.lock:
            self.owned -= {p.partition for p in partitions}

    def run(self):
        self.consumer.subscribe(["bench"], on_assign=self.on_assign, on_revoke=self.on_revoke)
        while not self.stop.is_set():
            self.consumer.poll(0.05)
        self.consumer.close()
        self.closed.set()

    def snapshot(self):
        with self.lock:
            return set(self.owned)


def balanced(members, per_member):
    owned = [m.snapshot() for m in members]
    union = set().union(*owned)
    return (sum(len(o) for o in owned) == len(union) == PARTITIONS
            and all(len(o) in per_member for o in owned))


def wait(members, per_member, timeout=120):
    start = time.time()
    while time.time() - start < timeout:
        if balanced(members, per_member):
            return
        time.sleep(0.01)
    raise RuntimeError("no balanced assignment in time")


def one_round(bootstrap, protocol, extra, group):
    members = [Member(bootstrap, group, protocol, extra) for _ in range(MEMBERS)]
    t0 = time.time()
    for m in members:
        m.start()
    wait(members, {2})
    joined = time.time() - t0
    leaver = members.pop()
    t0 = time.time()
    leaver.stop.set()
    wait(members, {2, 3})
    left = time.time() - t0
    for m in members:
        m.stop.set()
    for m in members + [leaver]:
        m.closed.wait(60)
    return joined, left


def main():
    print(f"{MEMBERS} members, {PARTITIONS} partitions, {ROUNDS} rounds")
    print("| profile | protocol | join median (worst) | one leaves median (worst) |")
    print("|---|---|---|---|")
    for name, broker_config, clients in PROFILES:
        for protocol in ("classic", "consumer"):
            with tempfile.TemporaryDirectory() as d:
                broker = Broker(Path(d) / "data", broker_config or None).start()
                try:
                    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
                    admin.create_topics([NewTopic("bench", PARTITIONS, 1)])["bench"].result(10)
                    runs = [one_round(broker.bootstrap, protocol, clients[protocol], f"g{r}")
                            for r in range(ROUNDS)]
                finally:
                    broker.stop()
            joins = [j for j, _ in runs]
            leaves = [l for _, l in runs]
            print(f"| {name} | {protocol} | {statistics.median(joins):.2f} s ({max(joins):.2f}) | "
                  f"{statistics.median(leaves):.2f} s ({max(leaves):.2f}) |", flush=True)


if __name__ == "__main__":
    main()
