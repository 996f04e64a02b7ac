//! The Kafka connectors' checkpoint protocol against the local platform's broker
//! (`KAFKA_BOOTSTRAP`; feature `platform`): the exactly-once sink's two-phase commit and its
//! recovery after a crash between a checkpoint and its commit, the at-least-once flush at a
//! barrier, and the source's barrier positions and resumption from them.

#![cfg(feature = "platform")]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arrow::array::{Array, AsArray, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use millrace_connectors::{
    BarrierTrigger, ConnectorMetrics, ConnectorTable, MetadataField, SinkAck, SinkConnector, SourceConnector,
    StopSignal, recover_sink, start_sink, start_source,
};
use millrace_types::{CheckpointId, SinkMessage, SourceEvent, SourcePartition, SourcePositions};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;

const DEADLINE: Duration = Duration::from_secs(60);

fn bootstrap() -> String {
    std::env::var("KAFKA_BOOTSTRAP").expect(
        "KAFKA_BOOTSTRAP is not set: these platform tests need the local Kafka (make up, then source .local/env)",
    )
}

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("eos-{prefix}-{}-{nanos}", std::process::id())
}

fn create_topic(topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", bootstrap()).create().expect("admin client");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let results = runtime
        .block_on(admin.create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        ))
        .expect("create_topics");
    for result in results {
        result.unwrap_or_else(|(topic, err)| panic!("creating topic {topic}: {err}"));
    }
}

/// A one-column (`v BIGINT`) table with `options`, written as raw values.
fn table(options: &[(&str, &str)]) -> ConnectorTable {
    ConnectorTable {
        name: "out".into(),
        schema: Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)])),
        metadata: Vec::new(),
        primary_key: Vec::new(),
        options: options.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    }
}

fn batch(values: std::ops::Range<i64>) -> SinkMessage {
    let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)]));
    SinkMessage::Batch(
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from_iter_values(values))]).expect("batch"),
    )
}

fn metrics() -> ConnectorMetrics {
    ConnectorMetrics::register(&mut prometheus_client::registry::Registry::default())
}

/// An exactly-once sink on `topic`, started with one instance.
struct Sink {
    input: mpsc::Sender<SinkMessage>,
    acks: mpsc::UnboundedReceiver<SinkAck>,
    threads: Vec<millrace_connectors::ConnectorThread>,
}

impl Sink {
    fn start(table: &ConnectorTable, connector: SinkConnector) -> Self {
        let (acks_tx, acks) = mpsc::unbounded_channel();
        let (mut inputs, threads) =
            start_sink(table, connector, 1, 16, &metrics(), &acks_tx).expect("sink starts");
        Self { input: inputs.remove(0), acks, threads }
    }

    fn send(&self, message: SinkMessage) {
        self.input.blocking_send(message).expect("the sink takes input");
    }

    /// Sends barrier `n` and returns the sink's acknowledgement.
    fn barrier(&mut self, n: u64) -> SinkAck {
        self.send(SinkMessage::Barrier(CheckpointId(n)));
        let Some(ack) = self.acks.blocking_recv() else {
            let errors: Vec<String> =
                self.threads.drain(..).filter_map(|t| t.join().err()).map(|e| e.to_string()).collect();
            panic!("the sink stopped without acknowledging barrier {n}: {errors:?}");
        };
        assert_eq!((ack.subtask, ack.checkpoint), (0, CheckpointId(n)));
        ack
    }

    fn finish(self) {
        drop(self.input);
        for thread in self.threads {
            thread.join().expect("the sink ends cleanly");
        }
    }
}

/// Every value in `topic` a `read_committed` consumer sees, read up to the end of each
/// partition (for such a consumer, the last stable offset: an open transaction ends it).
fn read_committed(topic: &str, partitions: i32) -> Vec<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", unique("reader"))
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment.add_partition_offset(topic, p, Offset::Beginning).expect("partition");
    }
    consumer.assign(&assignment).expect("assign");
    let mut values = Vec::new();
    let mut at_end = 0;
    let started = Instant::now();
    while at_end < partitions {
        assert!(started.elapsed() < DEADLINE, "reading {topic} timed out");
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                let text = std::str::from_utf8(message.payload().expect("a value")).expect("utf8");
                values.push(text.parse().expect("a number"));
            }
            Some(Err(KafkaError::PartitionEOF(_))) => at_end += 1,
            Some(Err(err)) => panic!("reading {topic}: {err}"),
            None => {}
        }
    }
    values
}

/// Polls `read_committed` until it returns `expected` (markers are written asynchronously
/// after a commit), failing with what it saw at the deadline.
fn wait_for_committed(topic: &str, expected: &[i64]) {
    let started = Instant::now();
    loop {
        let seen = read_committed(topic, 1);
        if seen == expected {
            return;
        }
        assert!(started.elapsed() < DEADLINE, "{topic}: read_committed sees {seen:?}, expected {expected:?}");
        std::thread::park_timeout(Duration::from_millis(100));
    }
}

/// The partition's high watermark, open transactions included (librdkafka's default
/// isolation, read_committed, would answer the last stable offset).
fn high_watermark(topic: &str, partition: i32) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("isolation.level", "read_uncommitted")
        .create()
        .expect("consumer");
    consumer.fetch_watermarks(topic, partition, Duration::from_secs(10)).expect("watermarks").1
}

fn exactly_once_table(topic: &str, prefix: &str) -> (ConnectorTable, SinkConnector) {
    let t = table(&[
        ("connector", "kafka"),
        ("topic", topic),
        ("sink.delivery-guarantee", "exactly-once"),
        ("sink.transactional-id-prefix", prefix),
    ]);
    let connector =
        SinkConnector::from_table(&t, &millrace_connectors::KafkaDefaults::with_bootstrap(bootstrap()))
            .expect("valid options");
    (t, connector)
}

fn pending_of(ack: &SinkAck) -> serde_json::Value {
    let state: serde_json::Value =
        serde_json::from_slice(ack.state.as_deref().expect("exactly-once acks carry state")).expect("json");
    state["pending"].clone()
}

#[test]
fn exactly_once_output_is_visible_only_once_its_checkpoint_commits() {
    let topic = unique("two-phase");
    let prefix = unique("txn");
    create_topic(&topic, 1);
    let (t, connector) = exactly_once_table(&topic, &prefix);
    let mut sink = Sink::start(&t, connector);
    sink.send(batch(0..5));
    let first = sink.barrier(1);
    sink.send(batch(5..8));
    let second = sink.barrier(2);
    assert_eq!(pending_of(&first), serde_json::json!([{"checkpoint": 1, "epoch": 1}]));
    assert_eq!(
        pending_of(&second),
        serde_json::json!([{"checkpoint": 1, "epoch": 1}, {"checkpoint": 2, "epoch": 2}]),
        "checkpoint 1 is not committed yet"
    );
    // Pre-committed is not visible, and an open transaction holds back what follows it.
    assert_eq!(read_committed(&topic, 1), Vec::<i64>::new());
    sink.send(SinkMessage::Commit(CheckpointId(1)));
    wait_for_committed(&topic, &[0, 1, 2, 3, 4]);
    sink.send(SinkMessage::Commit(CheckpointId(2)));
    wait_for_committed(&topic, &[0, 1, 2, 3, 4, 5, 6, 7]);
    // Input ends: the open epoch 3 (empty) is aborted, nothing changes.
    sink.finish();
    assert_eq!(read_committed(&topic, 1), vec![0, 1, 2, 3, 4, 5, 6, 7]);
}

#[test]
fn recovery_commits_a_completed_checkpoint_and_aborts_what_followed() {
    let topic = unique("recover");
    let prefix = unique("txn");
    create_topic(&topic, 1);
    let (t, connector) = exactly_once_table(&topic, &prefix);
    let mut sink = Sink::start(&t, connector.clone());
    sink.send(batch(0..4));
    let ack = sink.barrier(1);
    // Epoch 2 writes rows that no checkpoint covers, and they reach the broker.
    sink.send(batch(100..103));
    let started = Instant::now();
    while high_watermark(&topic, 0) < 7 {
        assert!(started.elapsed() < DEADLINE, "epoch 2's rows never reached the broker");
        std::thread::park_timeout(Duration::from_millis(50));
    }
    // The process "dies" after checkpoint 1 completed, before its commit: the sink never
    // hears of it again and its transactions stay open on the broker.
    std::mem::forget(sink);
    assert_eq!(read_committed(&topic, 1), Vec::<i64>::new());

    let states = vec![ack.state.expect("state")];
    let report = recover_sink(&connector, &states, CheckpointId(1)).expect("recovers");
    assert_eq!(report.committed, vec![format!("{prefix}-0-1")]);
    assert_eq!(report.aborted, vec![format!("{prefix}-0-2")]);
    wait_for_committed(&topic, &[0, 1, 2, 3]);
    // Recovering again finds nothing left to end.
    let again = recover_sink(&connector, &states, CheckpointId(1)).expect("recovers again");
    assert_eq!((again.committed.len(), again.aborted.len()), (0, 0), "{again:?}");

    // The restored run starts at epoch 2 and goes on.
    let mut restored = Sink::start(&t, connector.restored_from(CheckpointId(1)));
    restored.send(batch(4..6));
    let ack = restored.barrier(2);
    assert_eq!(pending_of(&ack), serde_json::json!([{"checkpoint": 2, "epoch": 2}]));
    restored.send(SinkMessage::Commit(CheckpointId(2)));
    wait_for_committed(&topic, &[0, 1, 2, 3, 4, 5]);
    restored.finish();
}

#[test]
fn a_fresh_run_aborts_what_a_run_without_a_completed_checkpoint_left_open() {
    let topic = unique("fresh");
    let prefix = unique("txn");
    create_topic(&topic, 1);
    let (t, connector) = exactly_once_table(&topic, &prefix);
    let mut crashed = Sink::start(&t, connector.clone());
    crashed.send(batch(0..3));
    crashed.barrier(1);
    crashed.send(batch(100..102));
    crashed.barrier(2);
    crashed.send(batch(200..202));
    let started = Instant::now();
    while high_watermark(&topic, 0) < 7 {
        assert!(started.elapsed() < DEADLINE, "epoch 3's rows never reached the broker");
        std::thread::park_timeout(Duration::from_millis(50));
    }
    // No checkpoint completed: the job starts afresh, without recovery, and gets only to
    // epoch 2.
    std::mem::forget(crashed);
    let mut fresh = Sink::start(&t, connector);
    fresh.send(batch(7..9));
    fresh.barrier(1);
    fresh.send(SinkMessage::Commit(CheckpointId(1)));
    // The crashed run's epochs 1 and 2 are fenced by the fresh run's producers of those
    // epochs; its epoch 3 was aborted before the fresh run began (left open, it would hide
    // everything after it from read_committed readers): only the fresh run's rows show.
    wait_for_committed(&topic, &[7, 8]);
    fresh.finish();
}

#[test]
fn at_least_once_flushes_at_a_barrier() {
    let topic = unique("flush");
    create_topic(&topic, 1);
    // A long linger: without a flush the records would sit in the producer for 5 s (a flush
    // ends the linger of records already in a partition queue; those of a fresh producer still
    // waiting for metadata may linger, so not longer than the flush timeout).
    let options = |guarantee| {
        table(&[
            ("connector", "kafka"),
            ("topic", topic.as_str()),
            ("sink.delivery-guarantee", guarantee),
            ("properties.linger.ms", "5000"),
        ])
    };
    let t = options("at-least-once");
    let mut sink = Sink::start(
        &t,
        SinkConnector::from_table(&t, &millrace_connectors::KafkaDefaults::with_bootstrap(bootstrap()))
            .expect("valid"),
    );
    sink.send(batch(0..10));
    let ack = sink.barrier(1);
    assert_eq!(ack.state, None);
    assert_eq!(high_watermark(&topic, 0), 10, "every row is on the broker when the barrier is acknowledged");
    sink.finish();

    let t = options("none");
    let mut sink = Sink::start(
        &t,
        SinkConnector::from_table(&t, &millrace_connectors::KafkaDefaults::with_bootstrap(bootstrap()))
            .expect("valid"),
    );
    sink.send(batch(10..20));
    sink.barrier(1);
    assert_eq!(high_watermark(&topic, 0), 10, "'none' acknowledges without flushing");
    sink.finish();
    assert_eq!(high_watermark(&topic, 0), 20, "the end of input flushes");
}

/// The source table: the raw value and the record's offset.
fn source_table(topic: &str, group: &str) -> ConnectorTable {
    ConnectorTable {
        name: "input".into(),
        schema: Arc::new(Schema::new(vec![
            Field::new("v", DataType::Utf8, true),
            Field::new("off", DataType::Int64, true),
        ])),
        metadata: vec![(1, MetadataField::Offset)],
        primary_key: Vec::new(),
        options: [
            ("connector", "kafka"),
            ("topic", topic),
            ("group_id", group),
            ("scan_startup_mode", "earliest"),
            ("batch_size", "3"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    }
}

/// A running source instance (parallelism 1) and what it has emitted.
struct Source {
    events: mpsc::Receiver<SourceEvent>,
    barriers: BarrierTrigger,
    stop: StopSignal,
    /// Per partition, the offsets emitted so far.
    seen: BTreeMap<i32, Vec<i64>>,
}

impl Source {
    fn start(table: &ConnectorTable, restore: Option<&SourcePositions>) -> Self {
        let connector = SourceConnector::from_table(
            table,
            &millrace_connectors::KafkaDefaults::with_bootstrap(bootstrap()),
        )
        .expect("valid");
        let barriers = BarrierTrigger::default();
        let stop = StopSignal::default();
        let (mut events, _threads) =
            start_source(table, connector, 1, 16, &metrics(), &stop, &barriers, restore)
                .expect("source starts");
        Self { events: events.remove(0), barriers, stop, seen: BTreeMap::new() }
    }

    fn next(&mut self) -> SourceEvent {
        let started = Instant::now();
        loop {
            match self.events.try_recv() {
                Ok(event) => {
                    if let SourceEvent::Batch { partition, batch } = &event {
                        let offsets = batch.column(1).as_primitive::<Int64Type>();
                        assert_eq!(offsets.null_count(), 0);
                        self.seen.entry(partition.0).or_default().extend(offsets.values().iter());
                    }
                    return event;
                }
                Err(mpsc::error::TryRecvError::Empty) => {
                    assert!(started.elapsed() < DEADLINE, "the source emitted nothing");
                    std::thread::park_timeout(Duration::from_millis(20));
                }
                Err(err) => panic!("the source stopped: {err}"),
            }
        }
    }

    /// Requests checkpoint `n` and reads up to its barrier; returns its positions.
    fn checkpoint(&mut self, n: u64) -> SourcePositions {
        self.barriers.request(CheckpointId(n));
        loop {
            if let SourceEvent::Barrier { checkpoint, positions } = self.next() {
                assert_eq!(checkpoint, CheckpointId(n));
                return positions;
            }
        }
    }

    fn rows(&self) -> usize {
        self.seen.values().map(Vec::len).sum()
    }
}

fn produce(topic: &str, partitions: i32, per_partition: i64) {
    let producer: BaseProducer =
        ClientConfig::new().set("bootstrap.servers", bootstrap()).create().expect("producer");
    for p in 0..partitions {
        for i in 0..per_partition {
            let value = format!("p{p}-{i}");
            producer.send(BaseRecord::<(), str>::to(topic).partition(p).payload(&value)).expect("enqueue");
        }
    }
    producer.flush(Duration::from_secs(30)).expect("all acknowledged");
}

#[test]
fn kafka_source_barriers_carry_positions_and_a_restore_resumes_from_them() {
    let topic = unique("source");
    let group = unique("group");
    create_topic(&topic, 3);
    // Partition 2 stays empty: its position is still its start offset.
    produce(&topic, 2, 10);
    let table = source_table(&topic, &group);

    let mut first = Source::start(&table, None);
    assert!(matches!(first.next(), SourceEvent::Assigned(p) if p.len() == 3));
    while first.rows() < 7 {
        first.next();
    }
    let positions = first.checkpoint(1);
    assert_eq!(
        positions.keys().copied().collect::<Vec<_>>(),
        (0..3).map(SourcePartition).collect::<Vec<_>>()
    );
    assert_eq!(positions[&SourcePartition(2)], 0, "an empty partition is at its start");
    for (partition, position) in &positions {
        let seen = first.seen.get(&partition.0).cloned().unwrap_or_default();
        assert_eq!(
            seen,
            (0..*position).collect::<Vec<_>>(),
            "partition {}: rows before the barrier",
            partition.0
        );
    }
    assert!(positions.values().sum::<i64>() >= 7);
    first.stop.stop();

    // The group's offsets follow the barrier (committed asynchronously).
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", &group)
        .create()
        .expect("consumer");
    let mut partitions = TopicPartitionList::new();
    for p in 0..3 {
        partitions.add_partition(&topic, p);
    }
    let started = Instant::now();
    loop {
        let committed =
            consumer.committed_offsets(partitions.clone(), Duration::from_secs(10)).expect("offsets");
        let offsets: BTreeMap<SourcePartition, i64> = committed
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((SourcePartition(e.partition()), o)),
                _ => None,
            })
            .collect();
        if offsets == positions {
            break;
        }
        assert!(started.elapsed() < DEADLINE, "group offsets {offsets:?}, barrier {positions:?}");
        std::thread::park_timeout(Duration::from_millis(100));
    }

    // A restored source emits exactly the records at and after the positions.
    let mut second = Source::start(&table, Some(&positions));
    assert!(matches!(second.next(), SourceEvent::Assigned(_)));
    let remaining = 20 - positions.values().sum::<i64>() as usize;
    while second.rows() < remaining {
        second.next();
    }
    for p in 0..2 {
        let start = positions[&SourcePartition(p)];
        assert_eq!(
            second.seen.get(&p).cloned().unwrap_or_default(),
            (start..10).collect::<Vec<_>>(),
            "partition {p}"
        );
    }
    assert_eq!(
        second.checkpoint(2),
        (0..3).map(|p| (SourcePartition(p), if p == 2 { 0 } else { 10 })).collect::<SourcePositions>()
    );
    second.stop.stop();
}
