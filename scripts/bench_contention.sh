#!/usr/bin/env bash
# Produce latency of one client while others load the transaction coordinator (see
# docs/benchmarks.md, "Produce latency under a transactional load"). A fresh broker with
# small segments (so rolls and their fsyncs happen during the run); a rate-limited
# idempotent probe producer alone, then beside 4 transactional producers at full speed.
# Usage: scripts/bench_contention.sh [BROKER_BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin exacta --bin exacta-bench >/dev/null
binary="${1:-target/release/exacta}"
. scripts/broker.sh
start_broker "$binary" $'segment_bytes = 16777216\n'
data="$broker_data"
bench() { target/release/exacta-bench --bootstrap-server "127.0.0.1:$port" "$@"; }
probe() {
    bench --topic probe --records "${1:-20000}" --record-size 100 --acks all --idempotent \
        --rate 2000 --linger-ms 0 --produce-only --warmup | grep -E "produce ack latency"
}
probe 2000 >/dev/null   # creates the topic; the runs below start warm
echo "## probe alone: $(probe)"
bench --records 2000000 --record-size 1024 --acks all --transactional --records-per-txn 200 \
    --producers 4 --partitions 4 --produce-only > "$data.load" 2>&1 &
load=$!
sleep 2
echo "## probe beside 4 transactional producers: $(probe)"
wait $load || true
grep -E "records/s|commit latency" "$data.load" | sed 's/^/## load: /'
rm -f "$data.load"
