#!/usr/bin/env bash
# Rows/s into PostgreSQL, `exacta sink postgres` exactly once vs at least once
# (scripts/bench_sink.py) on an Exacta broker and Debian's PostgreSQL started here.
# Usage: scripts/bench_sink.sh [ROUNDS]   (BENCH_SINK_RECORDS, default 200000)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin exacta --bin exacta-sink
. scripts/broker.sh
. scripts/postgres.sh
start_postgres
start_broker target/release/exacta "group_initial_rebalance_delay_ms = 0"
.venv/bin/python scripts/bench_sink.py "127.0.0.1:$port" "$EXACTA_PG_DSN" "${1:-3}"
