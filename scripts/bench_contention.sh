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
data=$(mktemp -d)
printf 'segment_bytes = 16777216\n' > "$data.toml"
"$binary" serve --listen 127.0.0.1:0 --data-dir "$data" --config "$data.toml" 2> "$data.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$data" "$data.log" "$data.toml"' EXIT
for _ in $(seq 100); do
    port=$(grep -oE 'listening on 127\.0\.0\.1:[0-9]+' "$data.log" | grep -oE '[0-9]+$' || true)
    [ -n "$port" ] && break
    sleep 0.1
done
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
