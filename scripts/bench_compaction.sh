#!/usr/bin/env bash
# Compaction measurements for docs/benchmarks.md: cleaner throughput and concurrent produce
# (BENCH_SECONDS of load per configuration), and start-up time after BENCH_COUNT offset
# commits and as many transactions, with the cleaner off and on (internal topics with
# BENCH_SEGMENT_BYTES segments).
set -euo pipefail
cd "$(dirname "$0")/.."
export BENCH_SECONDS="${BENCH_SECONDS:-20}" BENCH_COUNT="${BENCH_COUNT:-1000000}"
export BENCH_SEGMENT_BYTES="${BENCH_SEGMENT_BYTES:-104857600}"
cargo test --release -p exacta --test compaction_bench -- --ignored --nocapture --test-threads 1 "$@"
