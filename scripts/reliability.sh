#!/usr/bin/env bash
# The full reliability runs of docs/reliability.md (hours). CI runs short
# versions of each (tests/interop/test_verify.py, test_chaos.py, test_durability.py,
# test_streams.py, test_flink.py, test_kafka_tools.py, test_sink_faults.py, test_cluster*.py).
# Usage: scripts/reliability.sh [baseline|copier-kills|broker-kills|broker-pauses|delays|injected|
#        kafka-python|aiokafka|aiokafka-injected|kafkajs|kafkajs-injected|idempotence|idempotence-kafka-python|idempotence-other-clients|kill9|power-loss|corrupt-tails|streams|flink|kafka-tools|sink|verify-injected|cluster|cluster-groups|cluster-transactions|cluster-verify ...]
# (default: all, a few hours on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin exacta --bin exacta-verify --bin exacta-sink
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
npm ci --prefix tests/interop/kafkajs --no-audit --no-fund --loglevel=error
scripts/jvm_setup.sh
. scripts/postgres.sh
start_postgres
EXACTA_BIN="$PWD/target/release/exacta" .venv/bin/python scripts/reliability.py "$@"
