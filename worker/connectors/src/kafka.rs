//! Kafka source and sink (rdkafka, on dedicated threads).
//!
//! The source assigns partitions itself: of the topic's partitions (sorted), instance `i` of
//! `P` reads those with `partition mod P == i`, from the configured start. Offsets are
//! committed by the client automatically (at-least-once across restarts only once
//! checkpoints own the offsets; that is the fault-tolerance work). Records that do not decode
//! go to the dead-letter topic with the reason in a `millrace.error` header.
//!
//! The source's consumer defaults favour throughput without adding latency (see
//! [`SOURCE_DEFAULTS`]); `properties.*` override them.
//!
//! The sink produces one record per row and fails the job if any delivery fails, so data is
//! never lost silently. With `key_columns` the record key is the rows' key (see
//! [`KeyEncoder`]) and the partitioner is `murmur2_random` (the Java client's), so every
//! record of a key goes to one partition; records are sent in row order and the producer is
//! idempotent, so a key's records keep their order there. Without it records have no key
//! and librdkafka's partitioner spreads them.
//!
//! `upsert-kafka` is the same sink keyed by the table's primary key, taking an upsert stream
//! (see [`millrace_types::changelog`]): an upsert (`+I`/`+U`) is a record with the key and
//! the row as its value, a delete (`-D`) a tombstone, the key with a null value, so a
//! compacted topic keeps the latest row per key. A plain `kafka` sink refuses deletes (the
//! planner never sends it a changelog).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use millrace_types::changelog::split_row_kinds;
use millrace_types::{SourceEvent, SourcePartition};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::format::{KeyEncoder, RecordDecoder, RecordEncoder, RecordRef};
use crate::metrics::PartitionLabels;
use crate::options::{BadRecordPolicy, KafkaSinkConfig, KafkaSourceConfig, StartupMode};
use crate::{ConnectorError, SinkContext, SourceContext};

const POLL: Duration = Duration::from_millis(100);
const METADATA_TIMEOUT: Duration = Duration::from_secs(30);
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);
const LAG_INTERVAL: Duration = Duration::from_secs(5);
const LAG_TIMEOUT: Duration = Duration::from_secs(2);

/// Consumer settings of a Kafka source, before the table's `properties.*`:
/// - `max.partition.fetch.bytes` 16 MiB (librdkafka: 1 MiB): a fetch brings up to 16 MiB per
///   partition, so a backlog is read in few round trips (the seed benchmark ran 6-10x faster);
/// - `fetch.min.bytes` 1: the broker answers as soon as there is any data, so a fetch never
///   waits for more (latency stays that of one round trip);
/// - `fetch.wait.max.ms` 100 (librdkafka: 500): how long the broker holds a fetch with no
///   data at all; only idle partitions wait for it.
const SOURCE_DEFAULTS: [(&str, &str); 3] =
    [("max.partition.fetch.bytes", "16777216"), ("fetch.min.bytes", "1"), ("fetch.wait.max.ms", "100")];

/// Counts failed deliveries and keeps the first error, for the producing thread to act on.
#[derive(Default, Clone)]
struct DeliveryTracker {
    failed: Arc<AtomicU64>,
    first_error: Arc<Mutex<Option<String>>>,
}

impl ClientContext for DeliveryTracker {}

impl ProducerContext for DeliveryTracker {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {
        if let Err((err, message)) = result {
            self.failed.fetch_add(1, Ordering::SeqCst);
            tracing::error!(%err, topic = message.topic(), "delivery failed");
            if let Ok(mut first) = self.first_error.lock() {
                first.get_or_insert_with(|| format!("delivery to {} failed: {err}", message.topic()));
            }
        }
    }
}

impl DeliveryTracker {
    fn check(&self) -> Result<(), ConnectorError> {
        if self.failed.load(Ordering::SeqCst) == 0 {
            return Ok(());
        }
        let first = self.first_error.lock().ok().and_then(|f| f.clone()).unwrap_or_default();
        Err(ConnectorError::Delivery(format!(
            "{} record(s) could not be delivered; {first}",
            self.failed.load(Ordering::SeqCst)
        )))
    }
}

fn producer(
    bootstrap: &str,
    properties: &[(String, String)],
) -> Result<(ThreadedProducer<DeliveryTracker>, DeliveryTracker), ConnectorError> {
    let tracker = DeliveryTracker::default();
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap).set("linger.ms", "5").set("enable.idempotence", "true");
    for (k, v) in properties {
        config.set(k, v);
    }
    let producer = config
        .create_with_context(tracker.clone())
        .map_err(ConnectorError::kafka(format!("creating a producer for {bootstrap}")))?;
    Ok((producer, tracker))
}

/// Sends, waiting while librdkafka's queue is full (the sink's backpressure).
fn send(
    producer: &ThreadedProducer<DeliveryTracker>,
    mut record: BaseRecord<'_, [u8], [u8]>,
) -> Result<(), ConnectorError> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((err, back)) => {
                return Err(ConnectorError::kafka(format!("producing to {}", back.topic))(err));
            }
        }
    }
}

pub(crate) fn run_source(config: KafkaSourceConfig, ctx: SourceContext) -> Result<(), ConnectorError> {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.bootstrap_servers)
        .set("group.id", &config.group_id)
        .set("enable.auto.commit", "true")
        .set("auto.offset.reset", if config.startup == StartupMode::Latest { "latest" } else { "earliest" });
    for (k, v) in SOURCE_DEFAULTS {
        client.set(k, v);
    }
    for (k, v) in &config.properties {
        client.set(k, v);
    }
    let consumer: BaseConsumer = client
        .create()
        .map_err(ConnectorError::kafka(format!("creating a consumer for {}", config.bootstrap_servers)))?;
    let metadata = consumer
        .fetch_metadata(Some(&config.topic), METADATA_TIMEOUT)
        .map_err(ConnectorError::kafka(format!("reading metadata of topic {}", config.topic)))?;
    let topic = metadata.topics().iter().find(|t| t.name() == config.topic);
    let mut partitions: Vec<i32> =
        topic.map(|t| t.partitions().iter().map(|p| p.id()).collect()).unwrap_or_default();
    if let Some(err) = topic.and_then(|t| t.error()).filter(|_| partitions.is_empty()) {
        return Err(ConnectorError::kafka(format!("topic {}", config.topic))(KafkaError::MetadataFetch(
            err.into(),
        )));
    }
    if partitions.is_empty() {
        return Err(ConnectorError::Options {
            table: ctx.table.name.clone(),
            message: format!("topic '{}' has no partitions", config.topic),
        });
    }
    partitions.sort_unstable();
    let mine: Vec<i32> = partitions
        .into_iter()
        .filter(|p| p.rem_euclid(ctx.parallelism as i32) as usize == ctx.subtask)
        .collect();
    let mut assignment = TopicPartitionList::new();
    for p in &mine {
        let offset = match config.startup {
            StartupMode::Earliest => Offset::Beginning,
            StartupMode::Latest => Offset::End,
            StartupMode::Committed => Offset::Stored,
        };
        assignment
            .add_partition_offset(&config.topic, *p, offset)
            .map_err(ConnectorError::kafka("building the partition assignment"))?;
    }
    consumer
        .assign(&assignment)
        .map_err(ConnectorError::kafka(format!("assigning partitions of {}", config.topic)))?;
    tracing::info!(table = %ctx.table.name, topic = %config.topic, subtask = ctx.subtask, partitions = ?mine, "kafka source assigned");
    if !ctx.emit(SourceEvent::Assigned(mine.iter().map(|p| SourcePartition(*p)).collect())) || mine.is_empty()
    {
        // No partitions: this instance is done, which lets downstream watermarks ignore it.
        return Ok(());
    }
    let dead_letters = match &config.bad_records {
        BadRecordPolicy::DeadLetterTopic(topic) => {
            Some((topic.clone(), producer(&config.bootstrap_servers, &config.properties)?))
        }
        BadRecordPolicy::Drop => None,
    };
    let decoder = RecordDecoder::new(&ctx.table, config.format)?;
    let bytes_in = ctx.metrics.bytes_in.get_or_create(&ctx.metrics.labels(&ctx.table.name)).clone();

    // Consumer lag needs the partitions' high watermarks, a broker round trip: refresh it now
    // and then, not per batch.
    let mut positions: BTreeMap<i32, i64> = BTreeMap::new();
    let mut lag_checked = Instant::now();
    while !ctx.stop.is_stopped() {
        if lag_checked.elapsed() >= LAG_INTERVAL {
            lag_checked = Instant::now();
            for (partition, position) in &positions {
                match consumer.fetch_watermarks(&config.topic, *partition, LAG_TIMEOUT) {
                    Ok((_, high)) => {
                        let labels = PartitionLabels {
                            table: ctx.table.name.clone(),
                            partition: partition.to_string(),
                        };
                        ctx.metrics.consumer_lag.get_or_create(&labels).set((high - position).max(0));
                    }
                    Err(err) => tracing::debug!(%err, partition, "could not read the high watermark"),
                }
            }
        }
        let first = match consumer.poll(POLL) {
            None => continue,
            Some(Err(err)) => {
                tracing::warn!(%err, topic = %config.topic, "kafka consumer error");
                continue;
            }
            Some(Ok(message)) => message,
        };
        let mut messages: Vec<BorrowedMessage<'_>> = vec![first];
        while messages.len() < config.batch_size {
            match consumer.poll(Duration::ZERO) {
                Some(Ok(message)) => messages.push(message),
                Some(Err(err)) => tracing::warn!(%err, topic = %config.topic, "kafka consumer error"),
                None => break,
            }
        }
        let mut by_partition: BTreeMap<i32, Vec<&BorrowedMessage<'_>>> = BTreeMap::new();
        for message in &messages {
            by_partition.entry(message.partition()).or_default().push(message);
        }
        for (partition, messages) in by_partition {
            let records: Vec<RecordRef<'_>> = messages
                .iter()
                .map(|m| RecordRef {
                    value: m.payload(),
                    timestamp_ms: m.timestamp().to_millis(),
                    partition,
                    offset: m.offset(),
                })
                .collect();
            bytes_in.inc_by(records.iter().map(|r| r.value.map_or(0, <[u8]>::len) as u64).sum());
            if let Some(last) = messages.last() {
                positions.insert(partition, last.offset() + 1);
            }
            let decoded = decoder.decode(&records)?;
            match &dead_letters {
                Some((topic, (producer, tracker))) => {
                    for (index, reason) in &decoded.bad {
                        let source = messages[*index];
                        let headers = OwnedHeaders::new()
                            .insert(Header { key: "millrace.error", value: Some(reason.as_str()) })
                            .insert(Header {
                                key: "millrace.source",
                                value: Some(&format!("{}/{}/{}", source.topic(), partition, source.offset())),
                            });
                        let mut record = BaseRecord::to(topic).headers(headers);
                        if let Some(payload) = source.payload() {
                            record = record.payload(payload);
                        }
                        if let Some(key) = source.key() {
                            record = record.key(key);
                        }
                        send(producer, record)?;
                    }
                    tracker.check()?;
                    if !decoded.bad.is_empty() {
                        tracing::warn!(table = %ctx.table.name, count = decoded.bad.len(), dlq = %topic, "dead-lettered undecodable records");
                        ctx.metrics
                            .dead_lettered
                            .get_or_create(&ctx.metrics.dlq_labels(&ctx.table.name, "dlq"))
                            .inc_by(decoded.bad.len() as u64);
                    }
                }
                None => ctx.dropped(decoded.bad.len(), "undecodable record"),
            }
            if decoded.batch.num_rows() > 0
                && !ctx
                    .emit(SourceEvent::Batch { partition: SourcePartition(partition), batch: decoded.batch })
            {
                return Ok(());
            }
        }
    }
    if let Some((_, (producer, tracker))) = dead_letters {
        producer.flush(FLUSH_TIMEOUT).map_err(ConnectorError::kafka("flushing dead letters"))?;
        tracker.check()?;
    }
    Ok(())
}

pub(crate) fn run_sink(config: KafkaSinkConfig, mut ctx: SinkContext) -> Result<(), ConnectorError> {
    let mut properties = Vec::new();
    if !config.key_columns.is_empty() {
        // The Java client's partitioner: a key lands where other Kafka producers put it.
        properties.push(("partitioner".to_string(), "murmur2_random".to_string()));
    }
    properties.extend(config.properties.iter().cloned());
    let (producer, tracker) = producer(&config.bootstrap_servers, &properties)?;
    let encoder = RecordEncoder::new(config.format);
    let keys = KeyEncoder::new(config.key_columns.clone());
    while let Some(batch) = ctx.next_batch()? {
        let (batch, kinds) = split_row_kinds(&batch).map_err(ConnectorError::arrow("reading row kinds"))?;
        if kinds.is_some() && !config.upsert {
            return Err(ConnectorError::Delivery(format!(
                "table '{}': connector 'kafka' cannot write update changes (use 'upsert-kafka')",
                ctx.table.name
            )));
        }
        let values = encoder.encode(&batch)?;
        let keys = keys.encode(&batch)?;
        let mut bytes = 0;
        for (row, value) in values.iter().enumerate() {
            let delete = kinds.as_ref().is_some_and(|k| !k[row].is_upsert());
            let mut record = BaseRecord::to(&config.topic);
            if !delete {
                // A delete is a tombstone: the key with no value.
                record = record.payload(value.as_slice());
                bytes += value.len();
            }
            if let Some(key) = keys.as_ref().and_then(|k| k.get(row)) {
                record = record.key(key.as_slice());
            }
            send(&producer, record)?;
        }
        tracker.check()?;
        ctx.written(values.len(), bytes);
    }
    producer
        .flush(FLUSH_TIMEOUT)
        .map_err(ConnectorError::kafka(format!("flushing records to {}", config.topic)))?;
    tracing::debug!(subtask = ctx.subtask, topic = %config.topic, "kafka sink flushed");
    tracker.check()
}
