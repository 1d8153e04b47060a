package exacta.interop;

import java.util.HashSet;
import java.util.Map;
import java.util.Properties;
import java.util.Set;

import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.StringSerializer;

/** The idempotent producer (the Java client's default) with every codec, read back. */
final class Produce {
    static void run(String bootstrap) throws Exception {
        String topic = "java-produce";
        Main.createTopic(bootstrap, topic, 3, Map.of());
        int n = 0;
        for (String codec : new String[] {"none", "gzip", "snappy", "lz4", "zstd"}) {
            Properties p = Main.props(bootstrap);
            p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
            p.put(ProducerConfig.ACKS_CONFIG, "all");
            p.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, codec);
            p.put(ProducerConfig.LINGER_MS_CONFIG, "5");
            p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
            p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
            try (KafkaProducer<String, String> producer = new KafkaProducer<>(p)) {
                for (int i = 0; i < 2000; i++, n++) {
                    ProducerRecord<String, String> r = new ProducerRecord<>(topic, "k" + n, codec + "-" + n);
                    r.headers().add("codec", codec.getBytes());
                    producer.send(r);
                }
                producer.flush();
            }
        }
        var records = Main.readAll(bootstrap, topic, "read_uncommitted");
        Set<String> values = new HashSet<>();
        records.forEach(r -> values.add(r.value()));
        Main.check(records.size() == n, "read " + records.size() + " records, produced " + n);
        Main.check(values.size() == n, "duplicates: " + values.size() + " distinct of " + n);
        Main.check(records.stream().allMatch(r -> r.headers().lastHeader("codec") != null), "headers kept");
    }
}
