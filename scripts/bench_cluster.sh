#!/usr/bin/env bash
# Replication's cost: the same exacta-bench cases (acks=all) against a single node
# (replication factor 1) and a 3-node cluster on 127.0.0.11-13 (replication factor 3, and 1
# on the same cluster), one setup at a time, ROUNDS times, all fsyncing before every
# acknowledgement. Figures: docs/benchmarks.md.
# Usage: scripts/bench_cluster.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
cargo build --release --locked --bin exacta --bin exacta-bench
. scripts/broker.sh
cases=(
    "--records 300000 --record-size 1024 --acks all --produce-only --partitions 3"
    "--records 100000 --record-size 1024 --acks all --rate 10000 --linger-ms 1 --produce-only --partitions 3 --warmup"
)
root=$(mktemp -d)
pids=()
start_cluster() {
    local voters="" i
    for i in 1 2 3; do voters+="${voters:+,}$i@127.0.0.1$i:19$((i + 1))92"; done
    for i in 1 2 3; do
        target/release/exacta serve --node-id "$i" --listen "127.0.0.1$i:19$((i + 1))91" \
            --cluster-listen "127.0.0.1$i:19$((i + 1))92" --voters "$voters" \
            --data-dir "$root/cluster-$round/node$i" >"$root/node$i.log" 2>&1 &
        pids+=($!)
    done
    for i in 1 2 3; do
        until grep -q "cluster metadata caught up" "$root/node$i.log"; do sleep 0.2; done
    done
    # The internal topics exist once all three have registered.
    sleep 2
}
stop_cluster() {
    kill "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
    pids=()
}
_extra_cleanup="stop_cluster; rm -rf '$root';"
trap 'eval "${_broker_cleanup:-}${_extra_cleanup:-}"' EXIT
bootstrap="127.0.0.11:19291,127.0.0.12:19391,127.0.0.13:19491"
for round in $(seq "$rounds"); do
    start_broker target/release/exacta
    for c in "${cases[@]}"; do
        echo "## round $round single node, replication factor 1: exacta-bench $c"
        # shellcheck disable=SC2086
        target/release/exacta-bench --bootstrap-server "127.0.0.1:$port" $c
    done
    stop_broker
    start_cluster
    for rf in 3 1; do
        for c in "${cases[@]}"; do
            echo "## round $round 3 nodes, replication factor $rf: exacta-bench $c"
            # shellcheck disable=SC2086
            target/release/exacta-bench --bootstrap-server "$bootstrap" --replication-factor "$rf" $c
        done
    done
    stop_cluster
done
