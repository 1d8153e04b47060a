package exacta.interop;

import java.time.Duration;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;

import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.JoinWindows;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.StreamJoined;

/**
 * A Kafka Streams application with {@code processing.guarantee=exactly_once_v2} and two
 * sub-topologies, all of whose internal topics Kafka Streams creates itself:
 * <ul>
 *   <li>{@code PREFIX-in} → the count and sum of the values per key, re-keyed through a
 *   repartition topic and kept in a RocksDB store with its changelog → {@code PREFIX-out}
 *   as {@code "count,sum"}; the store cache is off, so every input record yields one
 *   output record;</li>
 *   <li>{@code PREFIX-orders} ⋈ {@code PREFIX-payments}, a windowed stream-stream inner
 *   join (one minute apart at most, a minute's grace) through two windowed stores with
 *   changelogs → {@code PREFIX-joined} as {@code "order|payment"}.</li>
 * </ul>
 * Runs until SIGTERM ({@code streams-app BOOTSTRAP APP_ID PREFIX STATE_DIR}).
 */
final class StreamsApp {
    static void run(String bootstrap, String appId, String prefix, String stateDir)
            throws Exception {
        StreamsBuilder builder = new StreamsBuilder();
        builder.stream(prefix + "-in", Consumed.with(Serdes.String(), Serdes.String()))
                // Re-key (to the same key) so that Streams repartitions through its own topic.
                .groupBy((key, value) -> key, Grouped.with("by-key", Serdes.String(), Serdes.String()))
                .aggregate(() -> "0,0", (key, value, agg) -> {
                    String[] parts = agg.split(",");
                    long count = Long.parseLong(parts[0]) + 1;
                    long sum = Long.parseLong(parts[1]) + Long.parseLong(value);
                    return count + "," + sum;
                }, Materialized.with(Serdes.String(), Serdes.String()))
                .toStream()
                .to(prefix + "-out", Produced.with(Serdes.String(), Serdes.String()));
        KStream<String, String> orders =
                builder.stream(prefix + "-orders", Consumed.with(Serdes.String(), Serdes.String()));
        KStream<String, String> payments =
                builder.stream(prefix + "-payments", Consumed.with(Serdes.String(), Serdes.String()));
        orders.join(payments, (order, payment) -> order + "|" + payment,
                        JoinWindows.ofTimeDifferenceAndGrace(Duration.ofMinutes(1), Duration.ofMinutes(1)),
                        StreamJoined.with(Serdes.String(), Serdes.String(), Serdes.String())
                                .withName("order-payment").withStoreName("order-payment"))
                .to(prefix + "-joined", Produced.with(Serdes.String(), Serdes.String()));

        Properties p = Main.props(bootstrap);
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        p.put(StreamsConfig.STATE_DIR_CONFIG, stateDir);
        p.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, 1);
        p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 100);
        p.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, 0);
        // Results reach the log while their transaction is open, so that a kill leaves
        // aborted results behind for a read_committed reader not to see.
        p.put(StreamsConfig.producerPrefix("linger.ms"), 5);
        // A killed instance's partitions move once its session expires (tests shorten it).
        String session = System.getProperty("exacta.session.timeout.ms");
        if (session != null) {
            p.put(StreamsConfig.consumerPrefix("session.timeout.ms"), session);
            p.put(StreamsConfig.consumerPrefix("heartbeat.interval.ms"), "1000");
        }
        KafkaStreams streams = new KafkaStreams(builder.build(), p);
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            streams.close();
            stopped.countDown();
        }));
        streams.setStateListener((now, before) -> System.out.println("STATE " + now));
        streams.start();
        stopped.await();
    }
}
