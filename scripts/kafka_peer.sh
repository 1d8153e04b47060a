# Sourced by the benchmark scripts: `start_kafka [EXTRA_PROPERTIES]` starts Apache Kafka
# (one KRaft node, combined broker and controller, `kafka_2.13` from Maven Central at
# KAFKA_VERSION, default 4.4.0) on a fresh log directory and free loopback ports, sets
# $kafka_port and $kafka_pid, and stops it (and removes its data) when the calling
# script exits. Several may run at once, beside an Exacta from broker.sh. EXTRA_PROPERTIES are server.properties lines (e.g. `log.flush.interval.messages=1`).
start_kafka() {
    local extra="${1:-}" version="${KAFKA_VERSION:-4.4.0}"
    local peer_dir
    peer_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/kafka-peer"
    if ! mvn -q -B -f "$peer_dir/pom.xml" -Dkafka.version="$version" dependency:build-classpath; then
        echo "kafka peer: FAILED: could not resolve org.apache.kafka:kafka_2.13:$version" >&2
        return 1
    fi
    local classpath
    classpath=$(cat "$peer_dir/target/kafka-$version/classpath.txt")
    kafka_data=$(mktemp -d)
    read -r kafka_port controller_port < <(python3 -c '
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')
    cat > "$kafka_data/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$kafka_port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$kafka_port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$kafka_data/logs
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
$extra
PROPS
    local java=(java -Xms1g -Xmx1g -Dorg.slf4j.simpleLogger.defaultLogLevel=warn -cp "$classpath")
    "${java[@]}" kafka.tools.StorageTool format --standalone -t "$("${java[@]}" kafka.tools.StorageTool random-uuid)" \
        -c "$kafka_data/server.properties" > "$kafka_data/format.log" 2>&1 \
        || { cat "$kafka_data/format.log" >&2; return 1; }
    "${java[@]}" kafka.Kafka "$kafka_data/server.properties" > "$kafka_data/kafka.log" 2>&1 &
    kafka_pid=$!
    _kafka_cleanup="${_kafka_cleanup:-}kill $kafka_pid 2>/dev/null || true; wait $kafka_pid 2>/dev/null || true; rm -rf '$kafka_data';"
    trap 'eval "${_broker_cleanup:-}${_kafka_cleanup:-}${_pg_cleanup:-}${_extra_cleanup:-}"' EXIT
    for _ in $(seq 300); do
        if python3 -c "import socket; socket.create_connection(('127.0.0.1', $kafka_port), 1)" 2>/dev/null; then
            sleep 1
            return 0
        fi
        kill -0 $kafka_pid 2>/dev/null || break
        sleep 0.2
    done
    echo "kafka peer: did not start:" >&2
    tail -40 "$kafka_data/kafka.log" >&2
    return 1
}
# `stop_kafka`: stop the Kafka start_kafka last started and remove its data now.
stop_kafka() {
    kill "$kafka_pid" 2>/dev/null || true
    wait "$kafka_pid" 2>/dev/null || true
    rm -rf "$kafka_data"
    _kafka_cleanup="${_kafka_cleanup//"kill $kafka_pid 2>/dev/null || true; wait $kafka_pid 2>/dev/null || true; rm -rf '$kafka_data';"/}"
}
