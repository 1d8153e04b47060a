#!/usr/bin/env bash
# The same exacta-bench cases against Exacta (default: fsync before every acknowledgement,
# group commit) and Apache Kafka 4.x on this machine, alternating, ROUNDS times: Kafka with
# its default flushing (the page cache; fsync left to the OS) and with
# `log.flush.interval.messages=1` (an fsync per append, the durability Exacta gives).
# Then Kafka's own ProducerPerformance (the Java client) against each: idempotent, and
# transactional with 100 ms transactions.
# Usage: scripts/bench_peer.sh [ROUNDS]      (PEER_CASES=tools: only ProducerPerformance)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-2}"
cargo build --release --locked --bin exacta --bin exacta-bench
. scripts/broker.sh
. scripts/kafka_peer.sh
start_broker target/release/exacta
exacta_port=$port
start_kafka
kafka_default_port=$kafka_port
start_kafka "log.flush.interval.messages=1"
kafka_flush_port=$kafka_port
cases=(
    "--records 1000000 --record-size 1024 --acks all --produce-only"
    "--records 2000000 --record-size 100 --acks all --produce-only"
    "--records 500000 --record-size 1024 --acks all"
    "--records 300000 --record-size 1024 --acks all --rate 50000 --linger-ms 1 --produce-only"
    "--records 500000 --record-size 1024 --acks all --idempotent --produce-only"
    "--records 500000 --record-size 1024 --acks all --transactional --records-per-txn 1000 --produce-only"
)
[ "${PEER_CASES:-all}" = tools ] && cases=()
perf_classpath=$(cat scripts/kafka-peer/target/kafka-"${KAFKA_VERSION:-4.4.0}"/classpath.txt)
tools=(
    "--record-size 1024 --num-records 500000 --throughput -1"
    "--record-size 1024 --num-records 500000 --throughput -1 --transactional-id perf-txn --transaction-duration-ms 100"
)
for round in $(seq "$rounds"); do
    for t in "${tools[@]}"; do
        for target in "exacta:$exacta_port" "kafka-default:$kafka_default_port" "kafka-flush-1:$kafka_flush_port"; do
            echo "## round $round ${target%%:*}: ProducerPerformance $t"
            # shellcheck disable=SC2086
            java -Dorg.slf4j.simpleLogger.defaultLogLevel=warn -cp "$perf_classpath" \
                org.apache.kafka.tools.ProducerPerformance --topic "perf-$round-${target%%:*}" $t \
                --command-property bootstrap.servers="127.0.0.1:${target##*:}" acks=all 2>&1 | tail -1
        done
    done
    for c in "${cases[@]}"; do
        for target in "exacta:$exacta_port" "kafka-default:$kafka_default_port" "kafka-flush-1:$kafka_flush_port"; do
            echo "## round $round ${target%%:*}: exacta-bench $c"
            # shellcheck disable=SC2086
            target/release/exacta-bench --bootstrap-server "127.0.0.1:${target##*:}" $c
        done
    done
done
