#!/usr/bin/env bash
# Builds what the JVM interop tests run (scripts/test.sh and scripts/reliability.sh call
# it): the Java scenarios under tests/interop/java for each pinned kafka-clients version,
# the Flink job under tests/interop/flink, and the classpath of Kafka itself and its tools
# (scripts/kafka-peer). A JDK and Maven come from Debian if missing. Fails loudly: a JVM
# test never passes because its client could not be built.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v mvn >/dev/null || ! command -v java >/dev/null; then
    apt-get update -qq && apt-get install -y -qq default-jdk-headless maven
fi
fail() {
    echo "jvm_setup.sh: FAILED: $*" >&2
    exit 1
}
for version in ${JAVA_CLIENT_VERSIONS:-4.4.0 3.9.1}; do
    mvn -q -B -f tests/interop/java/pom.xml -Dkafka.version="$version" \
        -Dbuild.dir="target/kafka-$version" package dependency:build-classpath ||
        fail "the Java scenarios for kafka-clients $version did not build"
done
mvn -q -B -f tests/interop/flink/pom.xml package dependency:build-classpath ||
    fail "the Flink job (tests/interop/flink) did not build"
# Kafka's own tools (and the broker the benchmarks compare with): kafka_2.13 and kafka-tools.
mvn -q -B -f scripts/kafka-peer/pom.xml dependency:build-classpath ||
    fail "Kafka's tools (org.apache.kafka:kafka-tools) could not be resolved"
