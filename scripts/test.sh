#!/usr/bin/env bash
# Runs every test: formatting and lints, the Rust unit and integration tests (the
# hostile-client suites among them), every fuzz target for a bounded time, and the
# interoperability suite that starts the real `exacta` binary and drives it with real
# Kafka clients (librdkafka through confluent-kafka, kafka-python, aiokafka, kafkajs and the
# Java client). Installs what it needs: a Python venv in .venv with the pinned client
# libraries, the pinned kafkajs under tests/interop/kafkajs (Node.js and npm from Debian if
# missing), the Java scenarios under tests/interop/java built with Maven for each pinned
# kafka-clients version, the Flink job, and Kafka's own tools (scripts/jvm_setup.sh; a JDK
# and Maven from Debian if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    apt-get update -qq && apt-get install -y -qq python3-venv
fi
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
if ! command -v npm >/dev/null; then
    apt-get update -qq && apt-get install -y -qq nodejs npm
fi
npm ci --prefix tests/interop/kafkajs --no-audit --no-fund --loglevel=error
export JAVA_CLIENT_VERSIONS="${JAVA_CLIENT_VERSIONS:-4.4.0 3.9.1}"
scripts/jvm_setup.sh

cargo fmt --all --check
cargo clippy --release --locked --all-targets -- -D warnings
cargo build --release --locked --bin exacta --bin exacta-verify --bin exacta-sink
cargo test --release --locked --workspace
# Every fuzz target for a bounded time (full-length runs: FUZZ_SECONDS=600 scripts/fuzz.sh).
FUZZ_SECONDS="${FUZZ_SECONDS:-8}" scripts/fuzz.sh
# A real PostgreSQL server for the sink tests (Debian's package; installed when missing).
. scripts/postgres.sh
start_postgres
EXACTA_BIN="$PWD/target/release/exacta" .venv/bin/pytest --durations=15 tests/interop "$@"
