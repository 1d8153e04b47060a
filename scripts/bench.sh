#!/usr/bin/env bash
# Runs the benchmark set recorded in docs/benchmarks.md against a fresh local broker
# (release build, default config: flush_policy = "always", group commit).
# Usage: scripts/bench.sh [extra exacta-bench args]
# To benchmark another broker, run target/release/exacta-bench --bootstrap-server HOST:PORT.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin exacta --bin exacta-bench
data=$(mktemp -d)
target/release/exacta serve --listen 127.0.0.1:0 --data-dir "$data" 2> "$data.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$data" "$data.log"' EXIT
for _ in $(seq 100); do
    port=$(grep -oE 'listening on 127\.0\.0\.1:[0-9]+' "$data.log" | grep -oE '[0-9]+$' || true)
    [ -n "$port" ] && break
    sleep 0.1
done
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
