package exacta.interop;

import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ExecutionException;

import org.apache.kafka.clients.admin.AbortTransactionSpec;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.ListOffsetsOptions;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.RecordsToDelete;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.ElectionType;
import org.apache.kafka.common.IsolationLevel;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.ElectionNotNeededException;

/** The AdminClient calls a Java application or tool makes, on one node. */
final class AdminCalls {
    static void run(String bootstrap) throws Exception {
        String topic = "java-admin";
        Main.createTopic(bootstrap, topic, 2, Map.of("compression.type", "zstd",
                "message.timestamp.type", "LogAppendTime", "unclean.leader.election.enable", "false"));
        TopicPartition p0 = new TopicPartition(topic, 0);
        try (Admin admin = Admin.create(Main.props(bootstrap))) {
            // Configs: the topic's with their sources, the broker's under Kafka names.
            ConfigResource topicResource = new ConfigResource(ConfigResource.Type.TOPIC, topic);
            var topicConfigs = admin.describeConfigs(List.of(topicResource)).all().get().get(topicResource);
            Main.check("zstd".equals(topicConfigs.get("compression.type").value()), "compression.type");
            Main.check(topicConfigs.get("compression.type").source() == ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG,
                    "compression.type source " + topicConfigs.get("compression.type").source());
            Main.check(topicConfigs.get("retention.ms").isDefault(), "retention.ms is a default");
            ConfigResource brokerResource = new ConfigResource(ConfigResource.Type.BROKER, "0");
            admin.incrementalAlterConfigs(Map.of(brokerResource, List.of(new AlterConfigOp(
                    new ConfigEntry("log.retention.ms", "3600000"), AlterConfigOp.OpType.SET)))).all().get();
            var brokerConfigs = admin.describeConfigs(List.of(brokerResource)).all().get().get(brokerResource);
            Main.check("3600000".equals(brokerConfigs.get("log.retention.ms").value()), "log.retention.ms");
            Main.check(brokerConfigs.get("log.retention.ms").source() == ConfigEntry.ConfigSource.DYNAMIC_BROKER_CONFIG,
                    "dynamic source");
            Main.check(brokerConfigs.get("num.partitions").isReadOnly(), "num.partitions is static");

            var described = admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic);
            Main.check(described.partitions().size() == 2 && described.topicId() != null, "describeTopics");
            var cluster = admin.describeCluster();
            Main.check(cluster.nodes().get().size() == 1 && cluster.controller().get().id() == 0, "describeCluster");
            var features = admin.describeFeatures().featureMetadata().get().finalizedFeatures();
            Main.check(features.containsKey("transaction.version"), "features " + features);

            // An open transaction: the LSO stays behind the HW; the producer and the
            // transaction are described; an admin abort ends it.
            KafkaProducer<String, String> producer = Transactions.producer(bootstrap, "java-admin-txn");
            producer.beginTransaction();
            producer.send(new ProducerRecord<>(topic, 0, null, "open")).get();
            var latest = Map.of(p0, OffsetSpec.latest());
            long hw = admin.listOffsets(latest).partitionResult(p0).get().offset();
            long lso = admin.listOffsets(latest, new ListOffsetsOptions(IsolationLevel.READ_COMMITTED))
                    .partitionResult(p0).get().offset();
            Main.check(hw == 1 && lso == 0, "HW " + hw + ", LSO " + lso);
            var listed = admin.listTransactions().all().get();
            Main.check(listed.stream().anyMatch(t -> t.transactionalId().equals("java-admin-txn")), "listTransactions");
            var txn = admin.describeTransactions(List.of("java-admin-txn")).all().get().get("java-admin-txn");
            Main.check(txn.topicPartitions().contains(p0), "describeTransactions " + txn);
            var producers = admin.describeProducers(List.of(p0)).partitionResult(p0).get().activeProducers();
            Main.check(producers.size() == 1 && producers.get(0).currentTransactionStartOffset().isPresent(),
                    "describeProducers " + producers);
            var state = producers.get(0);
            admin.abortTransaction(new AbortTransactionSpec(p0, state.producerId(), (short) state.producerEpoch(),
                    state.coordinatorEpoch().orElse(0))).all().get();
            long lsoAfter = admin.listOffsets(latest, new ListOffsetsOptions(IsolationLevel.READ_COMMITTED))
                    .partitionResult(p0).get().offset();
            Main.check(lsoAfter >= 2, "LSO after the abort " + lsoAfter);
            admin.fenceProducers(List.of("java-admin-txn")).all().get();
            producer.close();

            admin.deleteRecords(Map.of(p0, RecordsToDelete.beforeOffset(1))).all().get();
            long earliest = admin.listOffsets(Map.of(p0, OffsetSpec.earliest())).partitionResult(p0).get().offset();
            Main.check(earliest == 1, "log start after deleteRecords " + earliest);
            var dirs = admin.describeLogDirs(List.of(0)).allDescriptions().get().get(0);
            Main.check(dirs.values().stream().anyMatch(d -> d.replicaInfos().containsKey(p0)), "describeLogDirs");

            try {
                var result = admin.electLeaders(ElectionType.PREFERRED, Set.of(p0)).partitions().get();
                Main.check(result.get(p0).isPresent()
                        && result.get(p0).get() instanceof ElectionNotNeededException, "electLeaders " + result);
            } catch (ExecutionException e) {
                Main.check(e.getCause() instanceof ElectionNotNeededException, "electLeaders " + e);
            }
            Collection<?> groups = admin.listConsumerGroups().all().get();
            Main.check(groups != null, "listConsumerGroups");
        }
    }
}
