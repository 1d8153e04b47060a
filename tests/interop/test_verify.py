"""`exacta verify` (crates/verify): transactional copiers (librdkafka) copy a seeded input
topic under faults, a read_committed reader watches, and the history checker judges the
run. Short versions of the runs in docs/reliability.md (scripts/reliability.sh)."""

import json
import os
import signal
import subprocess
import time

import sys
from pathlib import Path

import pytest

from harness import BIN, FaultProxy

VERIFY = BIN.with_name("exacta-verify")
CONFIG = "group_min_session_timeout_ms = 1000\ngroup_initial_rebalance_delay_ms = 0\n"


def verify(bootstrap, tmp_path, *args, timeout=240):
    """Runs `exacta verify`; returns (exit code, report, stdout+stderr)."""
    return finish(start(bootstrap, tmp_path, *args), timeout)


def start(bootstrap, tmp_path, *args):
    cmd = [str(BIN), "verify", "--bootstrap-server", bootstrap, "--json",
           "--history", str(tmp_path / "history"), *map(str, args)]
    # Its own process group, so a timeout can stop the copiers too.
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def finish(proc, timeout=240):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    lines = out.strip().splitlines()
    assert lines and lines[0].startswith("exacta verify: "), out + err
    print(lines[0])
    return proc.returncode, json.loads(lines[-1]), out + err


def assert_exactly_once(code, report, output, records):
    assert code == 0, output
    assert report["passed"], output
    assert report["records"] == records and report["output_records"] == records, output
    for finding in ("lost", "duplicates", "aborted_reads", "precommitted_reads",
                    "offset_errors", "order_errors", "unknown"):
        assert report[finding]["count"] == 0, (finding, output)
    assert report["txns_aborted_deliberately"] > 0, output
    assert report["live_reads"] > 0, output


def test_verifier_is_installed_next_to_the_broker():
    assert VERIFY.exists(), f"build it: cargo build --release --bin exacta-verify ({VERIFY})"


def test_copier_kills_fence_and_keep_exactly_once(make_broker, tmp_path):
    broker = make_broker(CONFIG)
    code, report, output = verify(broker.bootstrap, tmp_path, "--records", 8000, "--copiers", 2,
                                  "--records-per-txn", 250, "--txn-pause-ms", 30,
                                  "--copier-kills", 3, "--kill-interval-ms", 1500, "--seed", 7)
    assert_exactly_once(code, report, output, 8000)
    assert report["copier_kills"] == 3, output


def test_kafka_python_copiers_keep_exactly_once_through_kills(make_broker, tmp_path):
    """The same verification with copiers built on kafka-python (--copier-command)."""
    broker = make_broker(CONFIG)
    copier = f"{sys.executable} {Path(__file__).parent / 'verify_copier_kafka_python.py'}"
    code, report, output = verify(broker.bootstrap, tmp_path, "--records", 5000, "--copiers", 2,
                                  "--records-per-txn", 200, "--txn-pause-ms", 50,
                                  "--copier-kills", 2, "--kill-interval-ms", 2000,
                                  "--copier-command", copier)
    assert_exactly_once(code, report, output, 5000)
    assert report["copier_kills"] == 2, output


AIOKAFKA_COPIER = f"{sys.executable} {Path(__file__).parent / 'verify_copier_aiokafka.py'}"
KAFKAJS_COPIER = f"node {Path(__file__).parent / 'kafkajs' / 'verify_copier.js'}"


@pytest.mark.parametrize("copier", [AIOKAFKA_COPIER, KAFKAJS_COPIER], ids=["aiokafka", "kafkajs"])
def test_other_clients_copiers_keep_exactly_once_through_copier_and_broker_kills(
        make_broker, tmp_path, copier):
    """Copiers built on aiokafka and on kafkajs (their own protocol code, transaction
    protocol v1 at older versions, offsets without KIP-447 member checks): copier SIGKILLs
    from the verifier and broker SIGKILLs from the test."""
    broker = make_broker(CONFIG)
    proc = start(broker.bootstrap, tmp_path, "--records", 6000, "--copiers", 2,
                 "--records-per-txn", 200, "--txn-pause-ms", 50, "--copier-kills", 2,
                 "--kill-interval-ms", 2500, "--timeout-secs", 200, "--stall-secs", 30,
                 "--copier-command", copier)
    kills = 0
    for _ in range(2):
        time.sleep(3)
        if proc.poll() is not None:
            break
        broker.kill9()
        time.sleep(0.3)
        broker.start()
        kills += 1
    code, report, output = finish(proc)
    assert kills >= 1, f"the copy ended before the broker kills\n{output}"
    assert_exactly_once(code, report, output, 6000)
    assert report["copier_kills"] == 2, output


def test_broker_sigkill_and_sigstop_during_copy(make_broker, tmp_path):
    broker = make_broker(CONFIG)
    proc = start(broker.bootstrap, tmp_path, "--records", 12000, "--copiers", 2,
                 "--records-per-txn", 250, "--txn-pause-ms", 100, "--timeout-secs", 200)
    faults = []
    for round in range(4):
        time.sleep(2.5)
        if proc.poll() is not None:
            break
        if round % 2 == 0:
            broker.kill9()
            time.sleep(0.3)
            broker.start()
            faults.append("kill")
        else:
            broker.proc.send_signal(signal.SIGSTOP)
            time.sleep(1.5)
            broker.proc.send_signal(signal.SIGCONT)
            faults.append("stop")
    code, report, output = finish(proc)
    assert len(faults) >= 2, f"the copy ended before the faults: {faults}\n{output}"
    assert_exactly_once(code, report, output, 12000)


def test_delayed_transactional_requests_tear_nothing(make_broker, tmp_path):
    """KAFKA-17754's attack: EndTxn, AddPartitionsToTxn, Produce and TxnOffsetCommit held
    back for random times, so late requests could land in a later transaction."""
    broker = make_broker(CONFIG)
    proxy = FaultProxy(broker.bootstrap, tmp_path / "proxy.log", seed=17,
                       delay=["end_txn=800", "add_partitions_to_txn=800", "produce=400",
                              "txn_offset_commit=800"])
    try:
        code, report, output = verify(proxy.bootstrap, tmp_path, "--records", 1200,
                                      "--records-per-txn", 100, "--transaction-timeout-ms", 30000)
    finally:
        proxy.stop()
    assert_exactly_once(code, report, output, 1200)
    assert proxy.delayed() >= 40, proxy.delayed()


INJECTED = """
seed = 5
inject_error = [
  "end_txn=0.2:NOT_COORDINATOR,COORDINATOR_LOAD_IN_PROGRESS,CONCURRENT_TRANSACTIONS",
  "add_partitions_to_txn=0.2:CONCURRENT_TRANSACTIONS,COORDINATOR_LOAD_IN_PROGRESS",
  "add_offsets_to_txn=0.2:NOT_COORDINATOR",
  "txn_offset_commit=0.2:COORDINATOR_LOAD_IN_PROGRESS",
  "find_coordinator=0.2:COORDINATOR_NOT_AVAILABLE",
  "produce=0.05:NOT_LEADER_OR_FOLLOWER,REQUEST_TIMED_OUT",
  "init_producer_id=0.3:COORDINATOR_LOAD_IN_PROGRESS",
  "heartbeat=0.1:COORDINATOR_LOAD_IN_PROGRESS",
]
duplicate = ["produce=0.1:300"]
blackhole = ["end_txn=0.03:2000", "produce=0.01:2000"]
"""

# Records per client library in the injected-faults run (CI size; scripts/reliability.sh
# runs 3000).
INJECTED_RECORDS = int(os.environ.get("EXACTA_VERIFY_INJECTED_RECORDS", "2000"))
# CI runs two of the four client libraries here (each library also has its own long
# injected run in scripts/reliability.sh); the sized run takes all four.
INJECTED_CLIENTS = os.environ.get("EXACTA_VERIFY_INJECTED_CLIENTS",
                                  "librdkafka,kafkajs").split(",")


def test_injected_errors_duplicates_and_blackholes(make_broker, tmp_path):
    """The proxy answers coordinator and produce requests with retriable errors in the
    broker's place, sends copies of Produce requests on other connections, and freezes
    connections; the copiers of each client library keep exactly-once. (NOT_COORDINATOR on
    TxnOffsetCommit followed by failed FindCoordinators can hang librdkafka's
    send_offsets_to_transaction for good, librdkafka #5456/#5511; the verifier restarts a
    copier stuck like that after --stall-secs, and CI leaves that combination out.)"""
    broker = make_broker(CONFIG)
    proxy = FaultProxy(broker.bootstrap, tmp_path / "proxy.log", scenario=INJECTED)
    copier = f"{sys.executable} {Path(__file__).parent / 'verify_copier_kafka_python.py'}"
    try:
        clients = (("librdkafka", []), ("kafka-python", ["--copier-command", copier]),
                   ("aiokafka", ["--copier-command", AIOKAFKA_COPIER]),
                   ("kafkajs", ["--copier-command", KAFKAJS_COPIER]))
        for name, extra in clients:
            if name not in INJECTED_CLIENTS:
                continue
            code, report, output = verify(proxy.bootstrap, tmp_path / name,
                                          "--records", INJECTED_RECORDS,
                                          "--records-per-txn", 100, "--copiers", 2,
                                          "--stall-secs", 20, *extra)
            assert_exactly_once(code, report, output, INJECTED_RECORDS)
    finally:
        proxy.stop()
    assert proxy.injected() >= 30, proxy.injected()
    assert proxy.duplicated() >= 5, proxy.duplicated()
    assert proxy.blackholed() >= 1, proxy.blackholed()


def test_checker_catches_a_broken_copier_and_a_read_uncommitted_reader(make_broker, tmp_path):
    """The verifier must be able to fail: copiers that skip the rewind after an abort lose
    records (and, when the last transaction aborts, never finish: the run times out), and a
    read_uncommitted reader sees aborted and undecided records."""
    broker = make_broker(CONFIG)
    code, report, output = verify(broker.bootstrap, tmp_path, "--records", 4000,
                                  "--records-per-txn", 200, "--abort-rate", 0.5,
                                  "--copier-bug", "no-rewind",
                                  "--reader-isolation", "read_uncommitted", "--seed", 3,
                                  "--timeout-secs", 15)
    assert code == 1, output
    assert not report["passed"]
    assert report["lost"]["count"] > 0, output
    assert report["aborted_reads"]["count"] > 0, output
    assert report["duplicates"]["count"] == 0, output
    # The same history judged again by `exacta verify check`.
    again = subprocess.run([str(BIN), "verify", "check", str(tmp_path / "history"), "--json"],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 1
    assert json.loads(again.stdout.strip().splitlines()[-1]) == report
