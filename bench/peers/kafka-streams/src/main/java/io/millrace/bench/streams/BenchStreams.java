package io.millrace.bench.streams;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.nio.ByteBuffer;
import java.time.Duration;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.Suppressed;
import org.apache.kafka.streams.kstream.Suppressed.BufferConfig;
import org.apache.kafka.streams.kstream.TimeWindows;
import org.apache.kafka.streams.processor.TimestampExtractor;
import org.apache.kafka.streams.processor.api.FixedKeyProcessor;
import org.apache.kafka.streams.processor.api.FixedKeyProcessorContext;
import org.apache.kafka.streams.processor.api.FixedKeyRecord;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.Stores;
import org.apache.kafka.streams.state.WindowStore;

/**
 * The bench workloads as Kafka Streams topologies, written the way the Kafka Streams docs
 * write them: the DSL where it fits, a FixedKeyProcessor with a changelogged state store for
 * the "last 3 values" moving average (the DSL has no count window).
 *
 * <p>Usage: BenchStreams WORKLOAD BOOTSTRAP INPUT OUTPUT APP_ID EOS(true|false) THREADS STATE_DIR
 */
public final class BenchStreams {
  private static final ObjectMapper JSON = new ObjectMapper();
  private static final String LAST3 = "last3";
  private static final String GLOBAL_KEY = "all";

  private BenchStreams() {}

  public static void main(String[] args) throws InterruptedException {
    if (args.length != 8) {
      System.err.println(
          "usage: BenchStreams seed|keyed|window BOOTSTRAP INPUT OUTPUT APP_ID EOS THREADS STATE_DIR");
      System.exit(2);
    }
    String workload = args[0];
    Properties props = new Properties();
    props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, args[1]);
    props.put(StreamsConfig.APPLICATION_ID_CONFIG, args[4]);
    props.put(
        StreamsConfig.PROCESSING_GUARANTEE_CONFIG,
        Boolean.parseBoolean(args[5]) ? StreamsConfig.EXACTLY_ONCE_V2 : StreamsConfig.AT_LEAST_ONCE);
    props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, Integer.parseInt(args[6]));
    props.put(StreamsConfig.STATE_DIR_CONFIG, args[7]);
    props.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, 1);
    props.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");

    Topology topology =
        switch (workload) {
          case "seed" -> seed(args[2], args[3]);
          case "keyed" -> keyed(args[2], args[3]);
          case "window" -> window(args[2], args[3]);
          default -> throw new IllegalArgumentException("unknown workload " + workload);
        };
    KafkaStreams streams = new KafkaStreams(topology, props);
    CountDownLatch done = new CountDownLatch(1);
    Runtime.getRuntime()
        .addShutdownHook(
            new Thread(
                () -> {
                  streams.close(Duration.ofSeconds(10));
                  done.countDown();
                }));
    streams.setUncaughtExceptionHandler(
        e -> {
          e.printStackTrace();
          return org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler
              .StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
    streams.start();
    done.await();
  }

  /** Workload 1: integers as text, drop < 50, mean of the last 3 kept values, one partition. */
  static Topology seed(String input, String output) {
    StreamsBuilder builder = new StreamsBuilder();
    builder.addStateStore(last3Store());
    builder.stream(input, Consumed.with(Serdes.ByteArray(), Serdes.String()))
        .mapValues(text -> Long.parseLong(text.trim()))
        .filter((k, v) -> v >= 50)
        .processValues(() -> new MovingAverage<byte[]>(k -> GLOBAL_KEY), LAST3)
        .mapValues(BenchStreams::formatDouble)
        .to(output, Produced.with(Serdes.ByteArray(), Serdes.String()));
    return builder.build();
  }

  /** Workload 2: JSON {key, value} keyed by key, drop < 50, per-key mean of the last 3. */
  static Topology keyed(String input, String output) {
    StreamsBuilder builder = new StreamsBuilder();
    builder.addStateStore(last3Store());
    builder.stream(input, Consumed.with(Serdes.String(), new ReadingSerde()))
        .filter((k, r) -> r.value >= 50)
        .mapValues(r -> r.value)
        .processValues(() -> new MovingAverage<String>(k -> k), LAST3)
        .mapValues(
            (k, avg) -> {
              ObjectNode out = JSON.createObjectNode();
              out.put("key", k);
              out.put("avg", avg);
              return out.toString();
            })
        .to(output, Produced.with(Serdes.String(), Serdes.String()));
    return builder.build();
  }

  /** Workload 3: 10-second tumbling event-time windows, count and mean per key, on close. */
  static Topology window(String input, String output) {
    StreamsBuilder builder = new StreamsBuilder();
    builder.stream(
            input,
            Consumed.with(Serdes.String(), new ReadingSerde())
                .withTimestampExtractor(new ReadingTime()))
        .mapValues(r -> r.value)
        .groupByKey(Grouped.with(Serdes.String(), Serdes.Long()))
        .windowedBy(TimeWindows.ofSizeWithNoGrace(Duration.ofSeconds(10)))
        .aggregate(
            () -> new long[] {0, 0},
            (k, v, agg) -> new long[] {agg[0] + 1, agg[1] + v},
            Materialized.<String, long[], WindowStore<Bytes, byte[]>>as("window-agg")
                .withKeySerde(Serdes.String())
                .withValueSerde(new CountSumSerde())
                // suppress() holds the updates itself; a cache would delay them to each commit.
                .withCachingDisabled())
        // Final results only. (emitStrategy(onWindowClose()) checks for closed windows only
        // when a record arrives, at most once a second, so the last windows of a finished
        // input would never be emitted.)
        .suppress(Suppressed.untilWindowCloses(BufferConfig.unbounded()))
        .toStream()
        .map(
            (wk, agg) -> {
              ObjectNode out = JSON.createObjectNode();
              out.put("key", wk.key());
              out.put("window_start", wk.window().start());
              out.put("count", agg[0]);
              out.put("avg", (double) agg[1] / agg[0]);
              return KeyValue.pair(wk.key(), out.toString());
            })
        .to(output, Produced.with(Serdes.String(), Serdes.String()));
    return builder.build();
  }

  static org.apache.kafka.streams.state.StoreBuilder<KeyValueStore<String, String>> last3Store() {
    return Stores.keyValueStoreBuilder(
        Stores.persistentKeyValueStore(LAST3), Serdes.String(), Serdes.String());
  }

  /** Java's shortest round-trip form, as the reference expects any float text. */
  static String formatDouble(double d) {
    return Double.toString(d);
  }

  /** Keeps the last two kept values per state key; emits the mean once three are known. */
  static final class MovingAverage<K> implements FixedKeyProcessor<K, Long, Double> {
    private final java.util.function.Function<K, String> stateKey;
    private FixedKeyProcessorContext<K, Double> context;
    private KeyValueStore<String, String> store;

    MovingAverage(java.util.function.Function<K, String> stateKey) {
      this.stateKey = stateKey;
    }

    @Override
    public void init(FixedKeyProcessorContext<K, Double> context) {
      this.context = context;
      this.store = context.getStateStore(LAST3);
    }

    @Override
    public void process(FixedKeyRecord<K, Long> record) {
      String key = stateKey.apply(record.key());
      String previous = store.get(key);
      long v = record.value();
      if (previous == null) {
        store.put(key, Long.toString(v));
        return;
      }
      int comma = previous.indexOf(',');
      if (comma < 0) {
        store.put(key, previous + "," + v);
        return;
      }
      long a = Long.parseLong(previous, 0, comma, 10);
      long b = Long.parseLong(previous, comma + 1, previous.length(), 10);
      store.put(key, b + "," + v);
      context.forward(record.withValue((a + b + v) / 3.0));
    }
  }

  /** A workload 2/3 input record. */
  static final class Reading {
    final long value;
    final long ts;

    Reading(long value, long ts) {
      this.value = value;
      this.ts = ts;
    }
  }

  static final class ReadingSerde implements Serde<Reading> {
    @Override
    public Serializer<Reading> serializer() {
      return (topic, r) -> {
        throw new UnsupportedOperationException("input only");
      };
    }

    @Override
    public Deserializer<Reading> deserializer() {
      return (topic, bytes) -> {
        try {
          JsonNode node = JSON.readTree(bytes);
          JsonNode ts = node.get("ts");
          return new Reading(node.get("value").asLong(), ts == null ? -1 : ts.asLong());
        } catch (java.io.IOException e) {
          throw new org.apache.kafka.common.errors.SerializationException(e);
        }
      };
    }
  }

  static final class ReadingTime implements TimestampExtractor {
    @Override
    public long extract(ConsumerRecord<Object, Object> record, long partitionTime) {
      return ((Reading) record.value()).ts;
    }
  }

  static final class CountSumSerde implements Serde<long[]> {
    @Override
    public Serializer<long[]> serializer() {
      return (topic, agg) -> ByteBuffer.allocate(16).putLong(agg[0]).putLong(agg[1]).array();
    }

    @Override
    public Deserializer<long[]> deserializer() {
      return (topic, bytes) -> {
        ByteBuffer buf = ByteBuffer.wrap(bytes);
        return new long[] {buf.getLong(), buf.getLong()};
      };
    }
  }
}
