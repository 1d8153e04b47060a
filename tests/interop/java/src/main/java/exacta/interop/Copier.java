package exacta.interop;

import java.time.Duration;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * The exactly-once copier (consume, produce, sendOffsetsToTransaction with the consumer's
 * group metadata, commit) in a classic or a KIP-848 group ({@code group.protocol}).
 */
final class Copier {
    static final int RECORDS = 1000;

    static void run(String bootstrap, String protocol) throws Exception {
        String in = "java-copy-in-" + protocol;
        String out = "java-copy-out-" + protocol;
        String group = "java-copier-" + protocol;
        Main.createTopic(bootstrap, in, 3, Map.of());
        Main.createTopic(bootstrap, out, 3, Map.of());
        Properties pp = Main.props(bootstrap);
        pp.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        pp.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        try (KafkaProducer<String, String> source = new KafkaProducer<>(pp)) {
            for (int i = 0; i < RECORDS; i++) {
                source.send(new ProducerRecord<>(in, i % 3, null, "v" + i));
            }
        }
        Properties cp = Main.props(bootstrap);
        cp.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        cp.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, protocol);
        cp.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        cp.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        cp.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        cp.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        cp.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        int copied = 0;
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(cp);
             KafkaProducer<String, String> producer = Transactions.producer(bootstrap, "java-copier-" + protocol)) {
            consumer.subscribe(List.of(in));
            long deadline = System.currentTimeMillis() + 60_000;
            while (copied < RECORDS && System.currentTimeMillis() < deadline) {
                var records = consumer.poll(Duration.ofMillis(200));
                if (records.isEmpty()) {
                    continue;
                }
                producer.beginTransaction();
                Map<TopicPartition, OffsetAndMetadata> next = new HashMap<>();
                for (ConsumerRecord<String, String> r : records) {
                    producer.send(new ProducerRecord<>(out, r.partition(), null, r.value()));
                    next.put(new TopicPartition(r.topic(), r.partition()), new OffsetAndMetadata(r.offset() + 1));
                    copied++;
                }
                producer.sendOffsetsToTransaction(next, consumer.groupMetadata());
                producer.commitTransaction();
            }
        }
        Main.check(copied == RECORDS, "copied " + copied + " of " + RECORDS);
        Set<String> output = new HashSet<>();
        var read = Main.readAll(bootstrap, out, "read_committed");
        read.forEach(r -> output.add(r.value()));
        Main.check(read.size() == RECORDS && output.size() == RECORDS,
                "output holds " + read.size() + " records, " + output.size() + " distinct");
        try (Admin admin = Admin.create(Main.props(bootstrap))) {
            var offsets = admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get();
            long sum = offsets.values().stream().mapToLong(OffsetAndMetadata::offset).sum();
            Main.check(sum == RECORDS, "committed offsets sum to " + sum);
        }
    }
}
