#!/usr/bin/env bash
# The same exacta-bench cases against Exacta (default: fsync before every acknowledgement,
# group commit) and Apache Kafka 4.x on this machine, one broker at a time, alternating,
# ROUNDS times: Kafka with its default flushing (the page cache; fsync left to the OS) and
# with `log.flush.interval.messages=1` (an fsync per append, the durability Exacta gives).
# Then Kafka's own ProducerPerformance (the Java client) against each: idempotent, and
# transactional with 100 ms transactions.
# Usage: scripts/bench_peer.sh [ROUNDS]      (PEER_CASES=tools: only ProducerPerformance)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
cargo build --release --locked --bin exacta --bin exacta-bench
. scripts/broker.sh
. scripts/kafka_peer.sh
cases=(
    "--records 1000000 --record-size 1024 --acks all --produce-only"
    "--records 2000000 --record-size 100 --acks all --produce-only"
    "--records 500000 --record-size 1024 --acks all"
    "--records 300000 --record-size 1024 --acks all --rate 50000 --linger-ms 1 --produce-only"
    "--records 500000 --record-size 1024 --acks all --idempotent --produce-only"
    "--records 500000 --record-size 1024 --acks all --transactional --records-per-txn 1000 --produce-only"
)
[ "${PEER_CASES:-all}" = tools ] && cases=()
mvn -q -B -f scripts/kafka-peer/pom.xml -Dkafka.version="${KAFKA_VERSION:-4.4.0}" dependency:build-classpath
perf_classpath=$(cat scripts/kafka-peer/target/kafka-"${KAFKA_VERSION:-4.4.0}"/classpath.txt)
tools=(
    "--record-size 1024 --num-records 500000 --throughput -1"
    "--record-size 1024 --num-records 500000 --throughput -1 --transactional-id perf-txn --transaction-duration-ms 100"
)
for round in $(seq "$rounds"); do
    for target in exacta kafka-default kafka-flush-1; do
        case $target in
            exacta) start_broker target/release/exacta; bench_port=$port ;;
            kafka-default) start_kafka; bench_port=$kafka_port ;;
            kafka-flush-1) start_kafka "log.flush.interval.messages=1"; bench_port=$kafka_port ;;
        esac
        for t in "${tools[@]}"; do
            echo "## round $round $target: ProducerPerformance $t"
            # shellcheck disable=SC2086
            java -Dorg.slf4j.simpleLogger.defaultLogLevel=warn -cp "$perf_classpath" \
                org.apache.kafka.tools.ProducerPerformance --topic "perf-$round" $t \
                --command-property bootstrap.servers="127.0.0.1:$bench_port" acks=all 2>&1 | tail -1
        done
        for c in "${cases[@]}"; do
            echo "## round $round $target: exacta-bench $c"
            # shellcheck disable=SC2086
            target/release/exacta-bench --bootstrap-server "127.0.0.1:$bench_port" $c
        done
        case $target in
            exacta) stop_broker ;;
            *) stop_kafka ;;
        esac
    done
done
