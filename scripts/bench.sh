#!/usr/bin/env bash
# Runs the benchmark set recorded in docs/benchmarks.md against a fresh local broker
# (release build, default config: flush_policy = "always", group commit).
# Usage: scripts/bench.sh [extra exacta-bench args]
# To benchmark another broker, run target/release/exacta-bench --bootstrap-server HOST:PORT.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin exacta --bin exacta-bench
. scripts/broker.sh
start_broker target/release/exacta
bench() { echo "## exacta-bench $*"; target/release/exacta-bench --bootstrap-server "127.0.0.1:$port" "$@"; echo; }
bench --records 1000000 --record-size 1024 --acks 1 --produce-only
bench --records 1000000 --record-size 1024 --acks all --produce-only
bench --records 5000000 --record-size 100 --acks 1 --produce-only
bench --records 5000000 --record-size 100 --acks all --produce-only
bench --records 1000000 --record-size 1024 --acks all
bench --records 300000 --record-size 1024 --acks all --rate 50000 --linger-ms 1
bench --records 300000 --record-size 100 --acks all --rate 50000 --linger-ms 1
# Transactions next to idempotence, same broker, same run.
bench --records 500000 --record-size 1024 --acks all --idempotent --produce-only
bench --records 500000 --record-size 1024 --acks all --transactional --records-per-txn 1000 --produce-only
echo "## broker RSS after the runs: $(ps -o rss= -p $pid) KiB"
