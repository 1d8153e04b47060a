package exacta.interop;

import java.util.List;
import java.util.Map;
import java.util.Properties;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.common.TopicPartition;

import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.errors.InvalidProducerEpochException;
import org.apache.kafka.common.errors.ProducerFencedException;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * The transactional producer: commits visible to read_committed, aborts hidden, a second
 * instance fences the first. On 4.x clients this is transaction protocol v2 (KIP-890).
 */
final class Transactions {
    static KafkaProducer<String, String> producer(String bootstrap, String id) {
        Properties p = Main.props(bootstrap);
        p.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, id);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        KafkaProducer<String, String> producer = new KafkaProducer<>(p);
        producer.initTransactions();
        return producer;
    }

    static void run(String bootstrap) throws Exception {
        String topic = "java-txn";
        Main.createTopic(bootstrap, topic, 2, Map.of());
        KafkaProducer<String, String> first = producer(bootstrap, "java-txn-1");
        for (int t = 0; t < 6; t++) {
            first.beginTransaction();
            for (int i = 0; i < 50; i++) {
                first.send(new ProducerRecord<>(topic, i % 2, null, (t % 3 == 1 ? "aborted-" : "committed-") + t + "-" + i));
            }
            if (t % 3 == 1) {
                first.flush();
                first.abortTransaction();
            } else {
                first.commitTransaction();
            }
        }
        var committed = Main.readAll(bootstrap, topic, "read_committed");
        var uncommitted = Main.readAll(bootstrap, topic, "read_uncommitted");
        Main.check(committed.size() == 200, "read_committed saw " + committed.size() + ", want 200");
        Main.check(committed.stream().allMatch(r -> r.value().startsWith("committed-")), "an aborted record was visible");
        Main.check(uncommitted.size() == 300, "read_uncommitted saw " + uncommitted.size() + ", want 300");
        // Transaction protocol v2 (KIP-890, clients 4.x on a broker finalizing
        // transaction.version 2) bumps the producer epoch with every transaction; v1 keeps it.
        short epoch;
        try (Admin admin = Admin.create(Main.props(bootstrap))) {
            TopicPartition p0 = new TopicPartition(topic, 0);
            epoch = (short) admin.describeProducers(List.of(p0)).partitionResult(p0).get()
                    .activeProducers().get(0).producerEpoch();
        }
        String client = System.getProperty("exacta.client.version", "");
        boolean v2 = client.startsWith("4.");
        Main.check(v2 ? epoch >= 5 : epoch == 0, "client " + client
                + ": producer epoch " + epoch + " after 6 transactions");

        // A second instance with the same transactional id fences the first.
        first.beginTransaction();
        first.send(new ProducerRecord<>(topic, 0, null, "zombie"));
        first.flush();
        KafkaProducer<String, String> second = producer(bootstrap, "java-txn-1");
        boolean fenced = false;
        try {
            first.send(new ProducerRecord<>(topic, 0, null, "zombie-2")).get();
            first.commitTransaction();
        } catch (Exception e) {
            Throwable cause = e.getCause() == null ? e : e.getCause();
            fenced = e instanceof ProducerFencedException || cause instanceof ProducerFencedException
                    || e instanceof InvalidProducerEpochException || cause instanceof InvalidProducerEpochException;
            if (!fenced) {
                throw e;
            }
        }
        Main.check(fenced, "the first instance was not fenced");
        first.close();
        second.beginTransaction();
        second.send(new ProducerRecord<>(topic, 0, null, "committed-after-fencing"));
        second.commitTransaction();
        second.close();
        var after = Main.readAll(bootstrap, topic, "read_committed");
        Main.check(after.size() == 201, "after fencing read_committed saw " + after.size());
        Main.check(after.stream().noneMatch(r -> r.value().startsWith("zombie")), "a zombie record was visible");
    }
}
