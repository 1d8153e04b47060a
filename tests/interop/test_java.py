"""The Java Kafka client, unchanged, against Exacta: the scenarios of
tests/interop/java (Main.java) with kafka-clients 4.x (transaction protocol v2, KIP-848
groups) and 3.9 (protocol v1, classic groups). scripts/test.sh builds them with Maven
(`JAVA_CLIENT_VERSIONS`); a version that was not built fails here, loudly."""

import os
import subprocess
from pathlib import Path

import pytest

JAVA_DIR = Path(__file__).parent / "java"
VERSIONS = os.environ.get("JAVA_CLIENT_VERSIONS", "4.4.0 3.9.1").split()


def run(version, scenario, broker, *args):
    build = JAVA_DIR / "target" / f"kafka-{version}"
    classpath_file = build / "classpath.txt"
    if not classpath_file.exists():
        pytest.fail(f"the Java scenarios for kafka-clients {version} are not built: run "
                    f"scripts/test.sh (or mvn -f {JAVA_DIR}/pom.xml -Dkafka.version={version} "
                    "package dependency:build-classpath)")
    classpath = f"{build / 'classes'}:{classpath_file.read_text().strip()}"
    done = subprocess.run(["java", f"-Dexacta.client.version={version}", "-cp", classpath,
                           "exacta.interop.Main", scenario,
                           broker.bootstrap, *args],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0 and f"OK {scenario}" in done.stdout, (
        f"kafka-clients {version} {scenario}:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}")


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("scenario", ["produce", "transactions", "admin"])
def test_java_client(broker, version, scenario):
    run(version, scenario, broker)


@pytest.mark.parametrize("version,protocol", [(v, p) for v in VERSIONS
                                              for p in ("classic", "consumer")
                                              if p == "classic" or not v.startswith("3.")])
def test_java_exactly_once_copier(make_broker, version, protocol):
    broker = make_broker("group_initial_rebalance_delay_ms = 0\n"
                         "group_consumer_heartbeat_interval_ms = 500\n")
    run(version, "copier", broker, protocol)
