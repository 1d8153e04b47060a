package exacta.interop;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.stream.Collectors;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;

/**
 * Scenarios of the Java Kafka client against a broker: {@code Main SCENARIO BOOTSTRAP
 * [ARGS]}. Each checks what it does and exits 0 printing {@code OK scenario}, or throws
 * (exit 1 with the stack trace).
 */
public final class Main {
    public static void main(String[] args) throws Exception {
        String scenario = args[0];
        String bootstrap = args[1];
        switch (scenario) {
            case "produce" -> Produce.run(bootstrap);
            case "transactions" -> Transactions.run(bootstrap);
            case "copier" -> Copier.run(bootstrap, args[2]);
            case "admin" -> AdminCalls.run(bootstrap);
            case "streams-app" -> StreamsApp.run(bootstrap, args[2], args[3], args[4]);
            default -> throw new IllegalArgumentException("unknown scenario " + scenario);
        }
        System.out.println("OK " + scenario);
    }

    static void check(boolean condition, String what) {
        if (!condition) {
            throw new AssertionError(what);
        }
    }

    static Properties props(String bootstrap) {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        return p;
    }

    static void createTopic(String bootstrap, String name, int partitions, Map<String, String> configs)
            throws Exception {
        try (Admin admin = Admin.create(props(bootstrap))) {
            admin.createTopics(List.of(new NewTopic(name, partitions, (short) 1).configs(configs)))
                    .all().get();
        }
    }

    /** Every record of {@code topic} from the start, as a consumer at {@code isolation} sees it. */
    static List<ConsumerRecord<String, String>> readAll(String bootstrap, String topic, String isolation)
            throws Exception {
        Properties p = props(bootstrap);
        p.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, isolation);
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        List<ConsumerRecord<String, String>> out = new ArrayList<>();
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(p)) {
            List<TopicPartition> parts = c.partitionsFor(topic).stream()
                    .map(i -> new TopicPartition(topic, i.partition())).collect(Collectors.toList());
            c.assign(parts);
            c.seekToBeginning(parts);
            Map<TopicPartition, Long> ends = c.endOffsets(parts);
            long deadline = System.currentTimeMillis() + 20_000;
            while (System.currentTimeMillis() < deadline) {
                boolean done = true;
                for (TopicPartition tp : parts) {
                    done &= c.position(tp) >= ends.get(tp);
                }
                if (done) {
                    break;
                }
                c.poll(Duration.ofMillis(200)).forEach(out::add);
            }
        }
        return out;
    }
}
