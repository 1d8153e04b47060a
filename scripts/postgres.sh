# Sourced by scripts/test.sh and scripts/reliability.sh: `start_postgres` starts Debian's
# PostgreSQL server (installing the postgresql package when it is missing) on a free
# loopback port with a fresh data directory, run as the postgres user when this is root,
# and exports EXACTA_PG_DSN (a superuser DSN), EXACTA_PG_BIN (its bin directory),
# EXACTA_PG_DATA, EXACTA_PG_PORT and EXACTA_PG_USER (who runs it) for the tests. It is
# stopped, and its data removed, when the calling script exits.
start_postgres() {
    local bin
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
    if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
        echo "postgres: installing Debian's postgresql package" >&2
        apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
        bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
    fi
    if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
        echo "postgres: FAILED: no PostgreSQL server (initdb) and it could not be installed" >&2
        return 1
    fi
    local user="" run=()
    if [ "$(id -u)" = 0 ]; then
        user=postgres
        id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
        run=(runuser -u postgres --)
    fi
    pg_data=$(mktemp -d)
    chmod 755 "$pg_data"
    [ -n "$user" ] && chown "$user" "$pg_data"
    local port
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "${run[@]}" "$bin/initdb" -D "$pg_data/db" -U postgres -A trust -E UTF8 --no-sync > "$pg_data/initdb.log" 2>&1 \
        || { cat "$pg_data/initdb.log" >&2; return 1; }
    cat >> "$pg_data/db/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$pg_data'
max_connections = 200
CONF
    "${run[@]}" "$bin/pg_ctl" -D "$pg_data/db" -l "$pg_data/server.log" -w -t 60 start >/dev/null \
        || { cat "$pg_data/server.log" >&2; return 1; }
    export EXACTA_PG_DSN="postgres://postgres@127.0.0.1:$port/postgres"
    export EXACTA_PG_BIN="$bin" EXACTA_PG_DATA="$pg_data/db" EXACTA_PG_PORT="$port" EXACTA_PG_USER="$user"
    _pg_cleanup="${run[*]} $bin/pg_ctl -D $pg_data/db -m immediate stop >/dev/null 2>&1 || true; rm -rf '$pg_data';"
    trap 'eval "${_broker_cleanup:-}${_kafka_cleanup:-}${_pg_cleanup:-}${_extra_cleanup:-}"' EXIT
    echo "postgres: PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port" >&2
}
