//! The Kafka sink (`kafka`, `upsert-kafka`) and its delivery guarantees at checkpoints
//! (`sink.delivery-guarantee`, see [`DeliveryGuarantee`]).
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
//!
//! At a checkpoint barrier:
//! - `none` acknowledges at once;
//! - `at-least-once` flushes the producer and checks every delivery first;
//! - `exactly-once` is a two-phase commit with Kafka transactions. Each sink instance
//!   (subtask) writes each checkpoint epoch in its own transaction, with its own producer
//!   and transactional id `{prefix}-{subtask}-{epoch}`. The first epoch of a run is the
//!   restored checkpoint's id + 1 (1 for a fresh job); each barrier ends an epoch and the
//!   next is the one after it. On `Barrier(n)` the sink flushes, keeps the open transaction
//!   pending for checkpoint `n` (not committed: pre-commit), opens the next epoch's
//!   transaction and acknowledges with its [`SinkState`]: every pending transaction. On
//!   `Commit(n)` it commits every pending transaction of a checkpoint up to `n`, in order.
//!   A crash between a checkpoint's completion and its commit leaves transactions open on
//!   the broker: the restored job's [`recover_sink`](crate::recover_sink) commits them from
//!   the checkpoint's acknowledged states before the sink starts, and aborts every later one.
//!   Before its first transaction, the sink also aborts transactions its subtask left open
//!   in later epochs (a previous run that never completed a checkpoint).
//!
//! The exactly-once contract with the job: the coordinator takes a final checkpoint (and
//! sends its commit) before it closes a bounded job's sink channels, so when the channel
//! closes the open transaction holds nothing that must be kept: the sink aborts it and logs.
//! Transactions still pending then (a commit that never came) are left to recovery.
//! Transactions time out after `transaction.timeout.ms` = 900000 (15 min, the broker's
//! default maximum; `properties.transaction.timeout.ms` lowers it): a job down for longer
//! loses its pre-committed output, as with Flink.
//! Readers see the output only with `isolation.level=read_committed`.

use std::time::Duration;

use arrow::record_batch::RecordBatch;
use millrace_types::changelog::split_row_kinds;
use millrace_types::{CheckpointId, SinkMessage};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};

use crate::format::{KeyEncoder, RecordEncoder};
use crate::kafka::{DeliveryTracker, FLUSH_TIMEOUT, producer, send};
use crate::kafka_recovery::{PendingTransaction, SinkState, abort_lingering, transactional_id};
use crate::options::{DeliveryGuarantee, KafkaSinkConfig};
use crate::{ConnectorError, SinkContext};

/// The transaction timeout of exactly-once producers: the broker's default maximum
/// (`transaction.max.timeout.ms`).
pub(crate) const TRANSACTION_TIMEOUT_MS: &str = "900000";
const TRANSACTION_CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Encodes batches as records and sends them to one producer.
struct RecordWriter {
    topic: String,
    upsert: bool,
    table: String,
    encoder: RecordEncoder,
    keys: KeyEncoder,
}

impl RecordWriter {
    fn write(
        &self,
        producer: &ThreadedProducer<DeliveryTracker>,
        batch: &RecordBatch,
        ctx: &SinkContext,
    ) -> Result<(), ConnectorError> {
        let (batch, kinds) = split_row_kinds(batch).map_err(ConnectorError::arrow("reading row kinds"))?;
        if kinds.is_some() && !self.upsert {
            return Err(ConnectorError::Delivery(format!(
                "table '{}': connector 'kafka' cannot write update changes (use 'upsert-kafka')",
                self.table
            )));
        }
        let values = self.encoder.encode(&batch)?;
        let keys = self.keys.encode(&batch)?;
        let mut bytes = 0;
        for (row, value) in values.iter().enumerate() {
            let delete = kinds.as_ref().is_some_and(|k| !k[row].is_upsert());
            let mut record = BaseRecord::to(&self.topic);
            if !delete {
                // A delete is a tombstone: the key with no value.
                record = record.payload(value.as_slice());
                bytes += value.len();
            }
            if let Some(key) = keys.as_ref().and_then(|k| k.get(row)) {
                record = record.key(key.as_slice());
            }
            send(producer, record)?;
        }
        producer.context().check()?;
        ctx.written(values.len(), bytes);
        Ok(())
    }
}

pub(crate) fn run_sink(config: KafkaSinkConfig, mut ctx: SinkContext) -> Result<(), ConnectorError> {
    let mut properties = Vec::new();
    if !config.key_columns.is_empty() {
        // The Java client's partitioner: a key lands where other Kafka producers put it.
        properties.push(("partitioner".to_string(), "murmur2_random".to_string()));
    }
    properties.extend(config.properties.iter().cloned());
    let writer = RecordWriter {
        topic: config.topic.clone(),
        upsert: config.upsert,
        table: ctx.table.name.clone(),
        encoder: RecordEncoder::new(config.format),
        keys: KeyEncoder::new(config.key_columns.clone()),
    };
    match &config.delivery {
        DeliveryGuarantee::ExactlyOnce { transactional_id_prefix } => {
            let transactions = Transactions {
                bootstrap: config.bootstrap_servers.clone(),
                properties,
                prefix: transactional_id_prefix.clone(),
                subtask: ctx.subtask,
            };
            let first_epoch = config.restored.map_or(1, |c| c.0 + 1);
            run_exactly_once(&transactions, first_epoch, &writer, &mut ctx)
        }
        delivery => {
            let flush_on_barrier = *delivery == DeliveryGuarantee::AtLeastOnce;
            run_buffered(&config, &properties, flush_on_barrier, &writer, &mut ctx)
        }
    }
}

/// `none` and `at-least-once`: one producer for the whole run.
fn run_buffered(
    config: &KafkaSinkConfig,
    properties: &[(String, String)],
    flush_on_barrier: bool,
    writer: &RecordWriter,
    ctx: &mut SinkContext,
) -> Result<(), ConnectorError> {
    let (producer, tracker) = producer(&config.bootstrap_servers, properties)?;
    let flush = |producer: &ThreadedProducer<DeliveryTracker>| {
        producer
            .flush(FLUSH_TIMEOUT)
            .map_err(ConnectorError::kafka(format!("flushing records to {}", config.topic)))?;
        tracker.check()
    };
    while let Some(message) = ctx.input.blocking_recv() {
        match message {
            SinkMessage::Batch(batch) => writer.write(&producer, &batch, ctx)?,
            SinkMessage::Barrier(checkpoint) => {
                if flush_on_barrier {
                    flush(&producer)?;
                    tracing::debug!(subtask = ctx.subtask, %checkpoint, "kafka sink flushed for a checkpoint");
                }
                ctx.acknowledge(checkpoint, None)?;
            }
            SinkMessage::Commit(_) => {}
        }
    }
    flush(&producer)?;
    tracing::debug!(subtask = ctx.subtask, topic = %config.topic, "kafka sink flushed");
    Ok(())
}

/// How one exactly-once sink instance makes its transactional producers.
struct Transactions {
    bootstrap: String,
    properties: Vec<(String, String)>,
    prefix: String,
    subtask: usize,
}

/// One epoch's transaction, open or pre-committed.
struct Transaction {
    epoch: u64,
    id: String,
    producer: ThreadedProducer<DeliveryTracker>,
}

impl Transactions {
    /// A producer for `epoch` with its transaction begun.
    fn begin(&self, epoch: u64) -> Result<Transaction, ConnectorError> {
        let id = transactional_id(&self.prefix, self.subtask, epoch);
        let mut properties = self.properties.clone();
        properties.push(("transactional.id".into(), id.clone()));
        if !properties.iter().any(|(k, _)| k == "transaction.timeout.ms") {
            properties.push(("transaction.timeout.ms".into(), TRANSACTION_TIMEOUT_MS.into()));
        }
        let (producer, _) = producer(&self.bootstrap, &properties)?;
        producer
            .init_transactions(TRANSACTION_CALL_TIMEOUT)
            .map_err(ConnectorError::kafka(format!("initializing transactions of {id}")))?;
        producer.begin_transaction().map_err(ConnectorError::kafka(format!("beginning transaction {id}")))?;
        tracing::debug!(transactional_id = %id, "began a transaction");
        Ok(Transaction { epoch, id, producer })
    }
}

fn run_exactly_once(
    transactions: &Transactions,
    first_epoch: u64,
    writer: &RecordWriter,
    ctx: &mut SinkContext,
) -> Result<(), ConnectorError> {
    let lingering =
        abort_lingering(&transactions.bootstrap, &transactions.prefix, ctx.subtask, first_epoch + 1)?;
    if !lingering.is_empty() {
        tracing::warn!(subtask = ctx.subtask, aborted = ?lingering, "aborted transactions a previous run left open");
    }
    let mut open = transactions.begin(first_epoch)?;
    let mut pending: Vec<(CheckpointId, Transaction)> = Vec::new();
    while let Some(message) = ctx.input.blocking_recv() {
        match message {
            SinkMessage::Batch(batch) => writer.write(&open.producer, &batch, ctx)?,
            SinkMessage::Barrier(checkpoint) => {
                open.producer
                    .flush(FLUSH_TIMEOUT)
                    .map_err(ConnectorError::kafka(format!("flushing transaction {}", open.id)))?;
                open.producer.context().check()?;
                let next = transactions.begin(open.epoch + 1)?;
                pending.push((checkpoint, std::mem::replace(&mut open, next)));
                let state = SinkState {
                    prefix: transactions.prefix.clone(),
                    subtask: ctx.subtask,
                    pending: pending
                        .iter()
                        .map(|(c, t)| PendingTransaction { checkpoint: c.0, epoch: t.epoch })
                        .collect(),
                };
                tracing::debug!(subtask = ctx.subtask, %checkpoint, pending = pending.len(), "pre-committed");
                ctx.acknowledge(checkpoint, Some(state.to_bytes()?))?;
            }
            SinkMessage::Commit(checkpoint) => {
                let done = pending.iter().take_while(|(c, _)| *c <= checkpoint).count();
                for (covered, transaction) in pending.drain(..done) {
                    transaction.producer.commit_transaction(TRANSACTION_CALL_TIMEOUT).map_err(
                        ConnectorError::kafka(format!("committing transaction {}", transaction.id)),
                    )?;
                    tracing::debug!(transactional_id = %transaction.id, checkpoint = %covered, "committed");
                }
            }
        }
    }
    // The job's final checkpoint has committed everything to keep (see the module doc).
    match open.producer.abort_transaction(TRANSACTION_CALL_TIMEOUT) {
        Ok(()) => {
            tracing::info!(transactional_id = %open.id, "input ended: aborted the unfinished epoch's transaction")
        }
        Err(err) => {
            tracing::warn!(%err, transactional_id = %open.id, "could not abort the unfinished epoch's transaction")
        }
    }
    if !pending.is_empty() {
        let ids: Vec<&str> = pending.iter().map(|(_, t)| t.id.as_str()).collect();
        tracing::warn!(pending = ?ids, "input ended before these pre-committed transactions were committed; recovery commits them");
        // Dropping a producer purges nothing sent (all were flushed at the barrier) and
        // leaves its transaction open on the broker, for recovery.
    }
    Ok(())
}
