//! The Kafka source (rdkafka, on a dedicated thread), and the producer plumbing it shares
//! with the sink ([`crate::kafka_sink`]).
//!
//! The source assigns partitions itself: of the topic's partitions (sorted), instance `i` of
//! `P` reads those with `partition mod P == i`. Each partition starts at an explicit offset:
//! a restored job's checkpoint position where it has one, else the configured startup mode
//! resolved against the broker (earliest, latest, or the group's committed offset), so a
//! checkpoint barrier can name the next offset of every assigned partition, also those that
//! have produced nothing yet. Between batches the source answers checkpoint requests with a
//! barrier carrying those positions (see [`crate::SourceContext::barrier_if_due`]).
//!
//! The group's offsets are for lag monitoring and for `scan_startup_mode = 'committed'`;
//! the client never commits on its own (`enable.auto.commit=false`). Until the first barrier
//! the source commits what it has emitted every [`COMMIT_INTERVAL`] (as auto-commit would);
//! once checkpoints run it commits each barrier's positions (asynchronously), so the group
//! offsets follow the checkpoints. Records that do not decode go to the dead-letter topic
//! with the reason in a `millrace.error` header; the dead-letter producer is flushed before
//! each barrier, so a checkpoint covers them too.
//!
//! The source's consumer defaults favour throughput without adding latency (see
//! [`SOURCE_DEFAULTS`]); `properties.*` override them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use millrace_types::{SourceEvent, SourcePartition};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::format::{RecordDecoder, RecordRef};
use crate::metrics::PartitionLabels;
use crate::options::{BadRecordPolicy, KafkaSourceConfig, StartupMode};
use crate::{ConnectorError, SourceContext};

const POLL: Duration = Duration::from_millis(100);
const METADATA_TIMEOUT: Duration = Duration::from_secs(30);
pub(crate) const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);
const LAG_INTERVAL: Duration = Duration::from_secs(5);
const LAG_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a source without checkpoints commits its group offsets (librdkafka's
/// `auto.commit.interval.ms` default).
const COMMIT_INTERVAL: Duration = Duration::from_secs(5);

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
pub(crate) struct DeliveryTracker {
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
    pub(crate) fn check(&self) -> Result<(), ConnectorError> {
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

pub(crate) fn producer(
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
pub(crate) fn send(
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
        .set("enable.auto.commit", "false")
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
    // The next offset of every assigned partition: where it starts, then past what was emitted.
    let mut positions = start_offsets(&consumer, &config, &ctx, &mine)?;
    let mut assignment = TopicPartitionList::new();
    for (p, offset) in &positions {
        assignment
            .add_partition_offset(&config.topic, *p, Offset::Offset(*offset))
            .map_err(ConnectorError::kafka("building the partition assignment"))?;
    }
    consumer
        .assign(&assignment)
        .map_err(ConnectorError::kafka(format!("assigning partitions of {}", config.topic)))?;
    tracing::info!(table = %ctx.table.name, topic = %config.topic, subtask = ctx.subtask, start = ?positions, "kafka source assigned");
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
    let mut lag_checked = Instant::now();
    // Group offsets: periodically until checkpoints run, then at each barrier.
    let mut checkpointing = false;
    let mut committed = positions.clone();
    let mut committed_at = Instant::now();
    while !ctx.stop.is_stopped() {
        if ctx.barrier_due() {
            if let Some((topic, (producer, tracker))) = &dead_letters {
                producer
                    .flush(FLUSH_TIMEOUT)
                    .map_err(ConnectorError::kafka(format!("flushing dead letters to {topic}")))?;
                tracker.check()?;
            }
            if !ctx.barrier_if_due(|| positions.iter().map(|(p, o)| (SourcePartition(*p), *o)).collect()) {
                return Ok(());
            }
            checkpointing = true;
            commit_offsets(&consumer, &config.topic, &positions, CommitMode::Async);
            committed.clone_from(&positions);
        } else if !checkpointing && committed != positions && committed_at.elapsed() >= COMMIT_INTERVAL {
            commit_offsets(&consumer, &config.topic, &positions, CommitMode::Async);
            committed.clone_from(&positions);
            committed_at = Instant::now();
        }
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
    if !checkpointing && committed != positions {
        commit_offsets(&consumer, &config.topic, &positions, CommitMode::Sync);
    }
    Ok(())
}

/// Where each of `partitions` starts: its restored position, else per the startup mode.
fn start_offsets(
    consumer: &BaseConsumer,
    config: &KafkaSourceConfig,
    ctx: &SourceContext,
    partitions: &[i32],
) -> Result<BTreeMap<i32, i64>, ConnectorError> {
    let watermarks = |p: i32| {
        consumer
            .fetch_watermarks(&config.topic, p, METADATA_TIMEOUT)
            .map_err(ConnectorError::kafka(format!("reading the offsets of {}/{p}", config.topic)))
    };
    // Without a committed offset a group starts per auto.offset.reset (earliest by default).
    let reset_to_latest = config
        .properties
        .iter()
        .any(|(k, v)| k == "auto.offset.reset" && matches!(v.as_str(), "latest" | "largest" | "end"));
    let mut starts = BTreeMap::new();
    let mut by_group = TopicPartitionList::new();
    for p in partitions {
        if let Some(restored) = ctx.restored_position(SourcePartition(*p)) {
            starts.insert(*p, restored);
            continue;
        }
        match config.startup {
            StartupMode::Earliest => _ = starts.insert(*p, watermarks(*p)?.0),
            StartupMode::Latest => _ = starts.insert(*p, watermarks(*p)?.1),
            StartupMode::Committed => _ = by_group.add_partition(&config.topic, *p),
        }
    }
    if by_group.count() > 0 {
        let committed = consumer
            .committed_offsets(by_group, METADATA_TIMEOUT)
            .map_err(ConnectorError::kafka(format!("reading group {}'s offsets", config.group_id)))?;
        for element in committed.elements() {
            let start = match element.offset() {
                Offset::Offset(offset) => offset,
                _ if reset_to_latest => watermarks(element.partition())?.1,
                _ => watermarks(element.partition())?.0,
            };
            starts.insert(element.partition(), start);
        }
    }
    Ok(starts)
}

/// Commits `positions` as the group's offsets (for lag monitoring); failures are logged.
fn commit_offsets(consumer: &BaseConsumer, topic: &str, positions: &BTreeMap<i32, i64>, mode: CommitMode) {
    let mut offsets = TopicPartitionList::new();
    for (p, offset) in positions {
        if let Err(err) = offsets.add_partition_offset(topic, *p, Offset::Offset(*offset)) {
            tracing::warn!(%err, topic, partition = p, "cannot commit offset");
            return;
        }
    }
    if let Err(err) = consumer.commit(&offsets, mode) {
        tracing::warn!(%err, topic, "committing the group's offsets failed");
    }
}
