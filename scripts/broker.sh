# Sourced by the benchmark scripts: `start_broker BINARY [CONFIG_TOML]` starts a broker on
# a fresh data directory and an ephemeral loopback port, sets $port and $pid, and stops it
# (and removes its data) when the calling script exits or at `stop_broker`.
start_broker() {
    local binary="$1" config="${2:-}"
    broker_data=$(mktemp -d)
    printf '%s' "$config" > "$broker_data.toml"
    "$binary" serve --listen 127.0.0.1:0 --data-dir "$broker_data" --config "$broker_data.toml" \
        2> "$broker_data.log" &
    pid=$!
    _broker_cleanup="kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf '$broker_data' '$broker_data.log' '$broker_data.toml';"
    trap 'eval "${_broker_cleanup:-}${_kafka_cleanup:-}${_pg_cleanup:-}${_extra_cleanup:-}"' EXIT
    port=""
    for _ in $(seq 100); do
        port=$(grep -oE 'listening on 127\.0\.0\.1:[0-9]+' "$broker_data.log" | grep -oE '[0-9]+$' || true)
        [ -n "$port" ] && return 0
        sleep 0.1
    done
    echo "the broker did not start:" >&2
    cat "$broker_data.log" >&2
    return 1
}
# `stop_broker`: stop the broker start_broker last started and remove its data now.
stop_broker() {
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -rf "$broker_data" "$broker_data.log" "$broker_data.toml"
    _broker_cleanup=""
}
