"""Full reliability runs (docs/reliability.md). The `exacta verify` scenarios start a
fresh broker (the release binary), optionally a fault proxy, run the verifier and drive
broker faults, printing the verifier's verdict line; the storage and idempotence
scenarios run the CI tests at full size. Exits non-zero on any failure.

usage: scripts/reliability.sh [SCENARIO ...]   (default: all)
"""

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "interop"))
from harness import BIN, Broker, FaultProxy  # noqa: E402

CONFIG = "group_min_session_timeout_ms = 1000\ngroup_initial_rebalance_delay_ms = 0\n"
# Every injectable error, including NOT_COORDINATOR on TxnOffsetCommit (which can hang
# librdkafka, #5456: the verifier restarts such a copier and reports a stall).
INJECTED = """
seed = 5
inject_error = [
  "end_txn=0.1:NOT_COORDINATOR,COORDINATOR_LOAD_IN_PROGRESS,CONCURRENT_TRANSACTIONS",
  "add_partitions_to_txn=0.1:CONCURRENT_TRANSACTIONS,COORDINATOR_LOAD_IN_PROGRESS",
  "add_offsets_to_txn=0.1:NOT_COORDINATOR",
  "txn_offset_commit=0.1:COORDINATOR_LOAD_IN_PROGRESS,NOT_COORDINATOR",
  "find_coordinator=0.1:COORDINATOR_NOT_AVAILABLE",
  "produce=0.02:NOT_LEADER_OR_FOLLOWER,REQUEST_TIMED_OUT",
  "init_producer_id=0.2:COORDINATOR_LOAD_IN_PROGRESS",
  "heartbeat=0.05:COORDINATOR_LOAD_IN_PROGRESS",
]
duplicate = ["produce=0.05:300"]
blackhole = ["end_txn=0.01:2000", "produce=0.002:2000"]
"""
COPY = {"--records": 100000, "--input-partitions": 2, "--output-partitions": 3,
        "--records-per-txn": 750, "--abort-rate": 0.33, "--timeout-secs": 3600}


def verify(bootstrap, history, *args):
    """`exacta verify` with the COPY settings, overridden by ARGS (flag, value pairs)."""
    options = dict(COPY, **dict(zip(args[::2], args[1::2])))
    cmd = [str(BIN), "verify", "--bootstrap-server", bootstrap, "--history", str(history)]
    for flag, value in options.items():
        cmd += [flag, str(value)]
    print("$ exacta verify", " ".join(cmd[3:]), flush=True)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)


def finish(proc, started, extra=""):
    out, _ = proc.communicate()
    print(out.strip(), f"({time.time() - started:.0f} s{extra})", flush=True)
    return proc.returncode == 0


ROOT = Path(__file__).resolve().parent.parent

# Runs that are the CI tests at full size (pytest / cargo test with larger counts).
SIZED = {
    "idempotence": ({"EXACTA_IDEMPOTENCE_RECORDS": "1000000"},
                    ["-k", "librdkafka_idempotent_producer_through_dropped_responses"]),
    "idempotence-kafka-python": ({"EXACTA_IDEMPOTENCE_RECORDS": "200000"},
                                 ["-k", "kafka_python_idempotent_producer_through_dropped"]),
    # aiokafka writes half of these records, kafkajs a quarter (4x the drop rate).
    "idempotence-other-clients": ({"EXACTA_IDEMPOTENCE_RECORDS": "200000"},
                                  ["-k", "aiokafka_idempotent or kafkajs_idempotent"]),
    "kill9": ({"EXACTA_KILL_ROUNDS": "1000"}, ["-k", "kill9_loop"]),
    "power-loss": ({"EXACTA_POWER_LOSS_ROUNDS": "1000"}, ["-k", "power_loss_loses"]),
    "streams": ({"EXACTA_STREAMS_RECORDS": "200000", "EXACTA_STREAMS_APP_KILLS": "20",
                 "EXACTA_STREAMS_BROKER_KILLS": "10"}, []),
    "flink": ({"EXACTA_FLINK_RECORDS": "200000", "EXACTA_FLINK_KILLS": "20"}, ["-k", "kills"]),
    "kafka-tools": ({"EXACTA_TOOLS_RECORDS": "100000", "EXACTA_TOOLS_BOUNCES": "3"},
                    ["-k", "bounces"]),
    "sink": ({"EXACTA_SINK_RECORDS": "1000000", "EXACTA_SINK_KILLS": "50",
              "EXACTA_SINK_BROKER_KILLS": "5"}, ["-k", "killed_while_records_flow"]),
    "cluster": ({"EXACTA_CLUSTER_RECORDS": "300000", "EXACTA_CLUSTER_KILLS": "50"},
                ["-k", "leader_kills"]),
    "cluster-groups": ({"EXACTA_CLUSTER_GROUP_RECORDS": "200000",
                        "EXACTA_CLUSTER_GROUP_KILLS": "20"}, ["-k", "coordinator_kills"]),
    "cluster-transactions": ({"EXACTA_CLUSTER_TXN_ROUNDS": "5000",
                              "EXACTA_CLUSTER_TXN_KILLS": "30"}, ["-k", "coordinator_kills"]),
    "cluster-verify": ({"EXACTA_CLUSTER_VERIFY_RECORDS": "1000000",
                        "EXACTA_CLUSTER_VERIFY_KILLS": "200"}, ["-k", "librdkafka"]),
    "verify-injected": ({"EXACTA_VERIFY_INJECTED_RECORDS": "3000",
                         "EXACTA_VERIFY_INJECTED_CLIENTS": "librdkafka,kafka-python,aiokafka,kafkajs"},
                        ["-k", "injected_errors_duplicates_and_blackholes"]),
}
SIZED_FILES = {"idempotence": "test_idempotence.py", "streams": "test_streams.py",
               "flink": "test_flink.py", "kafka": "test_kafka_tools.py",
               "sink": "test_sink_faults.py", "cluster": "test_cluster.py",
               "cluster-groups": "test_cluster_groups.py",
               "cluster-transactions": "test_cluster_transactions.py",
               "cluster-verify": "test_cluster_verify.py", "verify": "test_verify.py"}


def sized(name):
    env, selection = SIZED[name]
    test = SIZED_FILES.get(name) or SIZED_FILES.get(name.split("-")[0], "test_durability.py")
    cmd = [sys.executable, "-m", "pytest", "-q", "-s", "--timeout", "7200", "-p",
           "no:cacheprovider", str(ROOT / "tests" / "interop" / test), *selection]
    print("$", " ".join(f"{k}={v}" for k, v in env.items()), "pytest", test, *selection, flush=True)
    r = subprocess.run(cmd, env=dict(os.environ, **env), capture_output=True, text=True)
    for line in r.stdout.splitlines():
        if "rounds=" in line or "records=" in line or "passed" in line or "failed" in line:
            print(line, flush=True)
    return r.returncode == 0


def corrupt_tails():
    cmd = ["cargo", "test", "--release", "--locked", "-p", "exacta-log", "--test", "log",
           "corrupted", "--", "--nocapture"]
    print("$ EXACTA_CORRUPT_TAILS=10000", " ".join(cmd), flush=True)
    r = subprocess.run(cmd, env=dict(os.environ, EXACTA_CORRUPT_TAILS="10000"), cwd=ROOT,
                       capture_output=True, text=True)
    for line in r.stdout.splitlines():
        if "corrupted tails" in line or "test result" in line:
            print(line, flush=True)
    return r.returncode == 0


def scenario(name, tmp):
    if name in SIZED:
        return sized(name)
    if name == "corrupt-tails":
        return corrupt_tails()
    broker = Broker(tmp / "data", config=CONFIG).start()
    started = time.time()
    rng = random.Random(name)
    try:
        if name == "baseline":
            return finish(verify(broker.bootstrap, tmp / "h"), started)
        if name == "copier-kills":
            # Three rounds of kills for each of the two copiers.
            return finish(verify(broker.bootstrap, tmp / "h", "--copiers", 2, "--copier-kills", 6,
                                 "--kill-interval-ms", 2500, "--txn-pause-ms", 20), started)
        if name == "injected":
            proxy = FaultProxy(broker.bootstrap, tmp / "proxy.log", scenario=INJECTED)
            try:
                ok = finish(verify(proxy.bootstrap, tmp / "h", "--copiers", 2,
                                   "--stall-secs", 30), started)
                print(f"injected errors: {proxy.injected()}, duplicated requests: "
                      f"{proxy.duplicated()}, blackholes: {proxy.blackholed()}", flush=True)
                return ok
            finally:
                proxy.stop()
        if name == "kafka-python":
            return finish(verify(broker.bootstrap, tmp / "h", "--copiers", 2, "--copier-kills", 6,
                                 "--kill-interval-ms", 2500, "--txn-pause-ms", 20,
                                 "--copier-command", COPIERS[name]), started)
        if name in ("aiokafka", "kafkajs"):
            # 6 copier SIGKILLs from the verifier and 10 broker SIGKILLs from here.
            proc = verify(broker.bootstrap, tmp / "h", "--copiers", 2, "--copier-kills", 6,
                          "--kill-interval-ms", 2500, "--txn-pause-ms", 40, "--stall-secs", 60,
                          "--copier-command", COPIERS[name])
            kills = 0
            while proc.poll() is None and kills < 10:
                time.sleep(rng.uniform(1.0, 3.0))
                if proc.poll() is not None:
                    break
                broker.kill9()
                broker.start()
                kills += 1
            return finish(proc, started, f", {kills} broker kills") and kills == 10
        if name in ("aiokafka-injected", "kafkajs-injected"):
            proxy = FaultProxy(broker.bootstrap, tmp / "proxy.log", scenario=INJECTED)
            try:
                ok = finish(verify(proxy.bootstrap, tmp / "h", "--copiers", 2, "--stall-secs", 30,
                                   "--copier-command", COPIERS[name.split("-")[0]]), started)
                print(f"injected errors: {proxy.injected()}, duplicated requests: "
                      f"{proxy.duplicated()}, blackholes: {proxy.blackholed()}", flush=True)
                return ok
            finally:
                proxy.stop()
        if name in ("broker-kills", "broker-pauses"):
            # Paced so that the 20 faults land while the copy runs.
            pause = 40 if name == "broker-kills" else 300
            proc = verify(broker.bootstrap, tmp / "h", "--copiers", 2, "--txn-pause-ms", pause)
            faults = 0
            while proc.poll() is None and faults < 20:
                time.sleep(rng.uniform(1.0, 3.0) if name == "broker-kills" else rng.uniform(0.3, 1.0))
                if proc.poll() is not None:
                    break
                if name == "broker-kills":
                    broker.kill9()
                    broker.start()
                else:
                    broker.proc.send_signal(signal.SIGSTOP)
                    time.sleep(rng.uniform(0.3, 1.5))
                    broker.proc.send_signal(signal.SIGCONT)
                faults += 1
            return finish(proc, started, f", {faults} broker {name.split('-')[1]}") and faults == 20
        if name == "delays":
            proxy = FaultProxy(broker.bootstrap, tmp / "proxy.log", seed=17754,
                               delay=["end_txn=5000", "add_partitions_to_txn=5000",
                                      "produce=5000", "txn_offset_commit=5000"])
            try:
                ok = finish(verify(proxy.bootstrap, tmp / "h", "--records", 10000,
                                   "--input-partitions", 4, "--records-per-txn", 50,
                                   "--copiers", 4, "--transaction-timeout-ms", 60000),
                            started)
                print(f"injected delays: {proxy.delayed()}", flush=True)
                return ok and proxy.delayed() >= 1000
            finally:
                proxy.stop()
        raise SystemExit(f"unknown scenario {name}")
    finally:
        if broker.alive():
            broker.kill9()


INTEROP = Path(__file__).resolve().parent.parent / "tests" / "interop"
COPIERS = {
    "kafka-python": f"{sys.executable} {INTEROP / 'verify_copier_kafka_python.py'}",
    "aiokafka": f"{sys.executable} {INTEROP / 'verify_copier_aiokafka.py'}",
    "kafkajs": f"node {INTEROP / 'kafkajs' / 'verify_copier.js'}",
}


def main():
    names = sys.argv[1:] or ["baseline", "copier-kills", "broker-kills", "broker-pauses", "delays",
                             "injected", "kafka-python", "aiokafka", "aiokafka-injected", "kafkajs",
                             "kafkajs-injected", "idempotence", "idempotence-kafka-python",
                             "idempotence-other-clients",
                             "kill9", "power-loss", "corrupt-tails", "streams", "flink", "kafka-tools", "sink",
                             "verify-injected", "cluster", "cluster-groups",
                             "cluster-transactions", "cluster-verify"]
    failed = []
    for name in names:
        print(f"## {name}", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            if not scenario(name, Path(tmp)):
                failed.append(name)
    print("FAILED: " + " ".join(failed) if failed else "all scenarios passed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
