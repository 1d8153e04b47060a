#!/usr/bin/env bash
# The same Kafka Streams application and the same Flink job (scripts/bench_jvm.py) on
# Exacta and on Apache Kafka 4.x (default flushing, and `log.flush.interval.messages=1`),
# one broker at a time, alternating, ROUNDS times: records/s and end-to-end latency.
# Usage: scripts/bench_jvm.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-2}"
cargo build --release --locked --bin exacta
scripts/jvm_setup.sh
. scripts/broker.sh
. scripts/kafka_peer.sh
for round in $(seq "$rounds"); do
    for target in exacta kafka-default kafka-flush-1; do
        echo "## round $round $target"
        case $target in
            exacta) start_broker target/release/exacta "group_initial_rebalance_delay_ms = 0"
                    bootstrap="127.0.0.1:$port" ;;
            kafka-default) start_kafka; bootstrap="127.0.0.1:$kafka_port" ;;
            kafka-flush-1) start_kafka "log.flush.interval.messages=1"
                           bootstrap="127.0.0.1:$kafka_port" ;;
        esac
        .venv/bin/python scripts/bench_jvm.py "$bootstrap" "$target"
        case $target in
            exacta) stop_broker ;;
            *) stop_kafka ;;
        esac
    done
done
