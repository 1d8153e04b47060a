#!/usr/bin/env bash
# Broker-side recompression (`compression.type`) against storing batches as sent: the same
# lz4-compressing producer (1 KiB records, acks=all) into a broker whose topics default to
# `producer` and into one whose default is `zstd`, alternating, ROUNDS times each.
# Usage: scripts/bench_recompression.sh [ROUNDS] [RECORDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-2}"
records="${2:-500000}"
cargo build --release --locked --bin exacta --bin exacta-bench
. scripts/broker.sh
run() {
    local label="$1" config="$2"
    (
        start_broker target/release/exacta "$config"
        echo "## $label"
        target/release/exacta-bench --bootstrap-server "127.0.0.1:$port" --records "$records" \
            --record-size 1024 --acks all --compression lz4 --produce-only
        echo "## $label: bytes on disk $(du -sb "$broker_data" | cut -f1)"
    )
}
for round in $(seq "$rounds"); do
    run "round $round: compression.type=producer (stored as sent, lz4)" ''
    run "round $round: compression.type=zstd (recompressed lz4 -> zstd)" 'compression_type = "zstd"'
done
