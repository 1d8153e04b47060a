package exacta.flink;

import java.nio.charset.StandardCharsets;

import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.serialization.SerializationSchema;
import org.apache.flink.connector.base.DeliveryGuarantee;
import org.apache.flink.connector.kafka.sink.KafkaRecordSerializationSchema;
import org.apache.flink.connector.kafka.sink.KafkaSink;
import org.apache.flink.connector.kafka.source.KafkaSource;
import org.apache.flink.connector.kafka.source.enumerator.initializer.OffsetsInitializer;
import org.apache.flink.connector.kafka.source.reader.deserializer.KafkaRecordDeserializationSchema;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.util.Collector;
import org.apache.kafka.clients.consumer.ConsumerRecord;

/**
 * A Flink DataStream job, exactly once from Kafka to Kafka: a KafkaSource reading
 * {@code INPUT} with read_committed, the count and sum of the values per key in keyed
 * state (restored from checkpoints after a failure), and a KafkaSink with
 * {@code DeliveryGuarantee.EXACTLY_ONCE} writing {@code "count,sum"} per key to
 * {@code OUTPUT} in transactions committed when a checkpoint completes.
 * ({@code CountJob BOOTSTRAP INPUT OUTPUT TRANSACTIONAL_ID_PREFIX TRANSACTION_TIMEOUT_MS})
 */
public final class CountJob {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        String input = args[1];
        String output = args[2];
        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment();
        KafkaSource<String[]> source = KafkaSource.<String[]>builder()
                .setBootstrapServers(bootstrap)
                .setTopics(input)
                .setGroupId(args[3])
                .setStartingOffsets(OffsetsInitializer.earliest())
                .setProperty("isolation.level", "read_committed")
                .setDeserializer(new KeyValue())
                .build();
        KafkaSink<String[]> sink = KafkaSink.<String[]>builder()
                .setBootstrapServers(bootstrap)
                .setRecordSerializer(KafkaRecordSerializationSchema.<String[]>builder()
                        .setTopic(output)
                        .setKeySerializationSchema(new Part(0))
                        .setValueSerializationSchema(new Part(1))
                        .build())
                .setDeliveryGuarantee(DeliveryGuarantee.EXACTLY_ONCE)
                .setTransactionalIdPrefix(args[3])
                .setProperty("transaction.timeout.ms", args[4])
                .setProperty("linger.ms", "5")
                .build();
        env.fromSource(source, WatermarkStrategy.noWatermarks(), "input")
                .keyBy(kv -> kv[0])
                .process(new CountAndSum())
                .sinkTo(sink);
        env.execute("exacta-count-" + args[3]);
    }

    /** A record as {key, value}, both UTF-8. */
    static final class KeyValue implements KafkaRecordDeserializationSchema<String[]> {
        @Override
        public void deserialize(ConsumerRecord<byte[], byte[]> record, Collector<String[]> out) {
            out.collect(new String[] {
                new String(record.key(), StandardCharsets.UTF_8),
                new String(record.value(), StandardCharsets.UTF_8)});
        }

        @Override
        public TypeInformation<String[]> getProducedType() {
            return Types.OBJECT_ARRAY(Types.STRING);
        }
    }

    /** One part of {key, value}, as UTF-8. */
    static final class Part implements SerializationSchema<String[]> {
        private final int index;

        Part(int index) {
            this.index = index;
        }

        @Override
        public byte[] serialize(String[] kv) {
            return kv[index].getBytes(StandardCharsets.UTF_8);
        }
    }

    /** Per key: {key, "count,sum"} after each of its records. */
    static final class CountAndSum extends KeyedProcessFunction<String, String[], String[]> {
        private transient ValueState<Long> count;
        private transient ValueState<Long> sum;

        @Override
        public void open(OpenContext context) {
            count = getRuntimeContext().getState(new ValueStateDescriptor<>("count", Types.LONG));
            sum = getRuntimeContext().getState(new ValueStateDescriptor<>("sum", Types.LONG));
        }

        @Override
        public void processElement(String[] kv, Context ctx, Collector<String[]> out) throws Exception {
            long c = (count.value() == null ? 0 : count.value()) + 1;
            long s = (sum.value() == null ? 0 : sum.value()) + Long.parseLong(kv[1]);
            count.update(c);
            sum.update(s);
            out.collect(new String[] {kv[0], c + "," + s});
        }
    }
}
