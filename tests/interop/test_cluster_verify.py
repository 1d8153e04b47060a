"""`exacta verify` on a 3-node cluster (docs/cluster.md): transactional copiers of each
client family copy a replicated topic (replication factor 3) while brokers are SIGKILLed
and restarted one at a time; the history
checker finds nothing lost, duplicated, aborted-but-read or out of order.

CI size by default; EXACTA_CLUSTER_VERIFY_RECORDS and EXACTA_CLUSTER_VERIFY_KILLS make it
longer (scripts/reliability.sh cluster-verify)."""

import os
import random
import sys
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from cluster_harness import all_in_sync
from harness import wait_for
from test_verify import AIOKAFKA_COPIER, KAFKAJS_COPIER, assert_exactly_once, finish, start

RECORDS = int(os.environ.get("EXACTA_CLUSTER_VERIFY_RECORDS", "12000"))
KILLS = int(os.environ.get("EXACTA_CLUSTER_VERIFY_KILLS", "4"))
KAFKA_PYTHON_COPIER = f"{sys.executable} {Path(__file__).parent / 'verify_copier_kafka_python.py'}"



class Killer:
    """SIGKILLs a random node every INTERVAL seconds and restarts it once its partitions
    have new leaders; one failure at a time (every replica back in sync first)."""

    def __init__(self, cluster, kills, interval, seed=3):
        self.cluster, self.kills, self.interval = cluster, kills, interval
        self.rng = random.Random(seed)
        self.done, self.error, self.victims = threading.Event(), None, []
        self.thread = threading.Thread(target=self.run, daemon=True)

    def in_sync(self):
        admin = AdminClient({"bootstrap.servers": self.cluster.bootstrap})
        topics = list(admin.list_topics(timeout=5).topics)
        return all_in_sync(admin, *topics)

    def run(self):
        try:
            for _ in range(self.kills):
                if self.done.wait(self.interval):
                    return
                wait_for(self.in_sync, 60, "every replica in sync before a kill")
                victim = self.rng.choice(self.cluster.nodes)
                victim.kill9()
                self.victims.append(victim.id)
                time.sleep(1.0)  # fenced, leaders moved
                self.cluster.restart(victim.id)
        except Exception as e:  # reported by the test
            self.error = e

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join(120)


def run_verify(cluster, tmp_path, records, kills, *extra):
    # Long runs: about 700 records/s on 2 cores, a kill every 3-5 s.
    timeout = 600 + records // 100
    proc = start(cluster.bootstrap, tmp_path, "--records", records, "--copiers", 2,
                 "--records-per-txn", 150, "--txn-pause-ms", 20, "--replication-factor", 3,
                 "--transaction-timeout-ms", 20000, "--seed", 11, "--timeout-secs", timeout,
                 *extra)
    with Killer(cluster, kills, interval=2) as killer:
        code, report, output = finish(proc, timeout=timeout + 60)
    assert killer.error is None, killer.error
    return code, report, output, killer


def test_librdkafka_copiers_through_broker_kills(cluster, tmp_path):
    code, report, output, killer = run_verify(cluster, tmp_path, RECORDS, KILLS,
                                              "--copier-kills", 1, "--kill-interval-ms", 5000)
    assert_exactly_once(code, report, output, RECORDS)
    assert len(killer.victims) == KILLS, f"only {len(killer.victims)} broker kills landed"


@pytest.mark.parametrize("client", ["kafka-python", "aiokafka", "kafkajs"])
def test_other_clients_keep_exactly_once_on_a_cluster(cluster, tmp_path, client):
    copier = {"kafka-python": KAFKA_PYTHON_COPIER, "aiokafka": AIOKAFKA_COPIER,
              "kafkajs": KAFKAJS_COPIER}[client]
    code, report, output, killer = run_verify(cluster, tmp_path, 2000, 1,
                                              "--copier-command", copier)
    assert_exactly_once(code, report, output, 2000)
    assert len(killer.victims) == 1
