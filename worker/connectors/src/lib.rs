//! Millrace's connectors (Kafka, the random and the Nexmark generators, files, memory): where rows come from and go to. Sources decode records into Arrow
//! batches of a table's schema and hand them to the runtime as [`SourceEvent`]s over a
//! bounded channel; sinks drain record batches from one and encode them. Records that cannot
//! be decoded never stop a job: they go to the table's dead-letter topic or are dropped, and
//! are counted either way.
//!
//! Every connector runs on its own thread (Kafka clients and file I/O block), so the async
//! runtime that drives operators never waits on I/O. This crate knows nothing of SQL or
//! DataFusion.

mod error;
mod file;
pub mod format;
mod generator;
mod json_encoders;
mod kafka;
pub mod kafka_defaults;
mod kafka_recovery;
mod kafka_sink;
mod kafka_txn;
mod memory;
mod metrics;
pub mod nexmark;
pub mod options;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use millrace_types::{CheckpointId, SinkMessage, SourceEvent, SourcePartition, SourcePositions};
use tokio::sync::mpsc;

pub use error::ConnectorError;
pub use format::{DecodedBatch, KeyEncoder, RecordDecoder, RecordEncoder, RecordRef};
pub use kafka_defaults::{KafkaDefaults, SinkDeliveryDefault};
pub use kafka_recovery::{RecoveryReport, recover_sink};
pub use memory::{MemoryRecord, MemorySink, MemorySourceConfig};
pub use metrics::ConnectorMetrics;
pub use options::{BadRecordPolicy, DeliveryGuarantee, Format, SinkConnector, SourceConnector, StartupMode};

/// A column filled from record metadata rather than the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataField {
    Timestamp,
    Partition,
    Offset,
}

/// What a connector needs to know about its table.
#[derive(Debug, Clone)]
pub struct ConnectorTable {
    pub name: String,
    /// The columns the connector fills (payload and metadata), in table order.
    pub schema: SchemaRef,
    pub metadata: Vec<(usize, MetadataField)>,
    /// `PRIMARY KEY (…)` column indices (empty: none); an `upsert-kafka` sink's record key.
    pub primary_key: Vec<usize>,
    /// `WITH (…)` options as written.
    pub options: BTreeMap<String, String>,
}

/// Asks connector threads to stop (unbounded sources run until told).
#[derive(Debug, Clone, Default)]
pub struct StopSignal(Arc<AtomicBool>);

impl StopSignal {
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Asks source instances to inject a checkpoint barrier: each instance, between two
/// batches, emits [`SourceEvent::Barrier`] with its positions for every checkpoint id
/// requested since its last barrier (only the newest, when several are pending).
#[derive(Debug, Clone, Default)]
pub struct BarrierTrigger(Arc<AtomicU64>);

impl BarrierTrigger {
    pub fn request(&self, checkpoint: CheckpointId) {
        self.0.fetch_max(checkpoint.0, Ordering::SeqCst);
    }

    /// The newest checkpoint requested (0: none yet).
    pub fn requested(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Where a restored job's sources resume: per partition, the position its last completed
/// checkpoint recorded (see [`SourcePositions`]), over all instances of the old run. A
/// partition it does not name starts per the table's scan startup mode.
pub type SourceRestore = SourcePositions;

/// A sink instance's answer to a checkpoint barrier: what it pre-committed, as opaque bytes
/// it can recover from (see [`recover_sink`]), and nothing for sinks without two-phase commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkAck {
    pub subtask: usize,
    pub checkpoint: CheckpointId,
    pub state: Option<Vec<u8>>,
}

/// A running connector thread.
pub struct ConnectorThread {
    pub name: String,
    handle: JoinHandle<Result<(), ConnectorError>>,
}

impl ConnectorThread {
    /// Runs `work` on a thread named after the connector instance.
    pub fn spawn(
        name: String,
        work: impl FnOnce() -> Result<(), ConnectorError> + Send + 'static,
    ) -> Result<Self, ConnectorError> {
        let handle = std::thread::Builder::new()
            .name(name.chars().take(15).collect())
            .spawn(work)
            .map_err(|e| ConnectorError::Io { context: format!("starting thread {name}"), source: e })?;
        Ok(Self { name, handle })
    }

    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Waits for the thread (call from a blocking context, e.g. `spawn_blocking`).
    pub fn join(self) -> Result<(), ConnectorError> {
        self.handle.join().unwrap_or_else(|_| Err(ConnectorError::Panicked(self.name)))
    }
}

/// Starts `parallelism` instances of a source; instance `i` feeds receiver `i`. Instances
/// inject barriers when `barriers` asks, and resume from `restore` when given.
#[allow(clippy::too_many_arguments)]
pub fn start_source(
    table: &ConnectorTable,
    connector: SourceConnector,
    parallelism: usize,
    channel_capacity: usize,
    metrics: &ConnectorMetrics,
    stop: &StopSignal,
    barriers: &BarrierTrigger,
    restore: Option<&SourceRestore>,
) -> Result<(Vec<mpsc::Receiver<SourceEvent>>, Vec<ConnectorThread>), ConnectorError> {
    let all: Vec<usize> = (0..parallelism).collect();
    start_source_instances(
        table,
        connector,
        &all,
        parallelism,
        channel_capacity,
        metrics,
        stop,
        barriers,
        restore,
    )
}

/// [`start_source`] for some of the instances only (those of one worker process of a job
/// spread over several): receiver `k` is fed by instance `instances[k]` of `parallelism`.
#[allow(clippy::too_many_arguments)]
pub fn start_source_instances(
    table: &ConnectorTable,
    connector: SourceConnector,
    instances: &[usize],
    parallelism: usize,
    channel_capacity: usize,
    metrics: &ConnectorMetrics,
    stop: &StopSignal,
    barriers: &BarrierTrigger,
    restore: Option<&SourceRestore>,
) -> Result<(Vec<mpsc::Receiver<SourceEvent>>, Vec<ConnectorThread>), ConnectorError> {
    let mut receivers = Vec::with_capacity(instances.len());
    let mut threads = Vec::with_capacity(instances.len());
    for &subtask in instances {
        let (tx, rx) = mpsc::channel(channel_capacity);
        receivers.push(rx);
        let name = format!("src-{}-{subtask}", table.name);
        let ctx = SourceContext {
            table: table.clone(),
            subtask,
            parallelism,
            out: tx,
            metrics: metrics.clone(),
            stop: stop.clone(),
            barriers: barriers.clone(),
            last_barrier: std::cell::Cell::new(barriers.requested()),
            restore: restore.cloned(),
        };
        let thread = match connector.clone() {
            SourceConnector::Kafka(config) => {
                ConnectorThread::spawn(name, move || kafka::run_source(config, ctx))?
            }
            SourceConnector::Generator(config) => {
                ConnectorThread::spawn(name, move || generator::run_source(config, ctx))?
            }
            SourceConnector::Nexmark(config) => {
                ConnectorThread::spawn(name, move || nexmark::run_source(config, ctx))?
            }
            SourceConnector::File(config) => {
                ConnectorThread::spawn(name, move || file::run_source(config, ctx))?
            }
            SourceConnector::Memory(config) => {
                ConnectorThread::spawn(name, move || memory::run_source(config, ctx))?
            }
        };
        threads.push(thread);
    }
    Ok((receivers, threads))
}

/// Starts `instances` sink instances; sender `i` feeds instance `i`, and every instance
/// answers barriers on `acks`.
pub fn start_sink(
    table: &ConnectorTable,
    connector: SinkConnector,
    instances: usize,
    channel_capacity: usize,
    metrics: &ConnectorMetrics,
    acks: &mpsc::UnboundedSender<SinkAck>,
) -> Result<(Vec<mpsc::Sender<SinkMessage>>, Vec<ConnectorThread>), ConnectorError> {
    let all: Vec<usize> = (0..instances).collect();
    start_sink_instances(table, connector, &all, channel_capacity, metrics, acks)
}

/// [`start_sink`] for some of the instances only: sender `k` feeds instance `instances[k]`.
pub fn start_sink_instances(
    table: &ConnectorTable,
    connector: SinkConnector,
    instances: &[usize],
    channel_capacity: usize,
    metrics: &ConnectorMetrics,
    acks: &mpsc::UnboundedSender<SinkAck>,
) -> Result<(Vec<mpsc::Sender<SinkMessage>>, Vec<ConnectorThread>), ConnectorError> {
    let mut senders = Vec::with_capacity(instances.len());
    let mut threads = Vec::with_capacity(instances.len());
    for &subtask in instances {
        let (tx, rx) = mpsc::channel(channel_capacity);
        senders.push(tx);
        let name = format!("sink-{}-{subtask}", table.name);
        let ctx = SinkContext {
            table: table.clone(),
            subtask,
            input: rx,
            metrics: metrics.clone(),
            acks: acks.clone(),
        };
        let thread = match connector.clone() {
            SinkConnector::Kafka(config) => {
                ConnectorThread::spawn(name, move || kafka_sink::run_sink(config, ctx))?
            }
            SinkConnector::Stdout(format) => {
                ConnectorThread::spawn(name, move || file::run_stdout_sink(format, ctx))?
            }
            SinkConnector::File(config) => {
                ConnectorThread::spawn(name, move || file::run_file_sink(config, ctx))?
            }
            SinkConnector::Memory(sink) => ConnectorThread::spawn(name, move || memory::run_sink(sink, ctx))?,
        };
        threads.push(thread);
    }
    Ok((senders, threads))
}

/// What a source instance works with.
pub(crate) struct SourceContext {
    pub table: ConnectorTable,
    pub subtask: usize,
    pub parallelism: usize,
    pub out: mpsc::Sender<SourceEvent>,
    pub metrics: ConnectorMetrics,
    pub stop: StopSignal,
    pub barriers: BarrierTrigger,
    /// The newest checkpoint this instance has emitted a barrier for.
    pub last_barrier: std::cell::Cell<u64>,
    /// Where to resume (a restored job), over all partitions of the old run.
    pub restore: Option<SourceRestore>,
}

impl SourceContext {
    /// `true` if a checkpoint was requested since this instance's last barrier (for sources
    /// that must make their state durable before [`Self::barrier_if_due`]).
    pub fn barrier_due(&self) -> bool {
        self.barriers.requested() > self.last_barrier.get()
    }

    /// Emits a barrier with `positions` if a checkpoint was requested since the last one;
    /// call between batches. `false` once the runtime has gone away.
    pub fn barrier_if_due(&self, positions: impl FnOnce() -> SourcePositions) -> bool {
        let requested = self.barriers.requested();
        if requested <= self.last_barrier.get() {
            return true;
        }
        self.last_barrier.set(requested);
        self.out
            .blocking_send(SourceEvent::Barrier {
                checkpoint: CheckpointId(requested),
                positions: positions(),
            })
            .is_ok()
    }

    /// For sources whose partition is their instance (the generators): this instance's
    /// restored position (0 without a restore). A checkpoint taken at another parallelism
    /// cannot be honoured (the instances' rows would differ), so it is refused.
    pub fn restored_instance_position(&self) -> Result<i64, ConnectorError> {
        let Some(restore) = self.restore.as_ref().filter(|r| !r.is_empty()) else {
            return Ok(0);
        };
        let instances = (0..self.parallelism).map(|i| SourcePartition(i as i32));
        match restore.get(&SourcePartition(self.subtask as i32)) {
            Some(position) if restore.keys().copied().eq(instances) => Ok(*position),
            _ => Err(ConnectorError::Options {
                table: self.table.name.clone(),
                message: format!(
                    "cannot restore this generated source at parallelism {}: its checkpoint was taken \
                     with {} instance(s), and generated rows depend on the instance",
                    self.parallelism,
                    restore.len()
                ),
            }),
        }
    }

    /// The restored position of `partition`, if the job was restored and recorded one.
    pub fn restored_position(&self, partition: SourcePartition) -> Option<i64> {
        self.restore.as_ref().and_then(|r| r.get(&partition).copied())
    }

    /// Sends an event; `false` once the runtime has gone away (stop quietly).
    pub fn emit(&self, event: SourceEvent) -> bool {
        if let SourceEvent::Batch { batch, .. } = &event {
            self.metrics
                .records_in
                .get_or_create(&self.metrics.labels(&self.table.name))
                .inc_by(batch.num_rows() as u64);
        }
        self.out.blocking_send(event).is_ok()
    }

    /// Counts (and logs) records that were dropped per the table's policy.
    pub fn dropped(&self, count: usize, reason: &str) {
        if count > 0 {
            tracing::warn!(table = %self.table.name, count, reason, "dropping undecodable records");
            self.metrics
                .dead_lettered
                .get_or_create(&self.metrics.dlq_labels(&self.table.name, "dropped"))
                .inc_by(count as u64);
        }
    }
}

/// What a sink instance works with.
pub(crate) struct SinkContext {
    pub table: ConnectorTable,
    pub subtask: usize,
    pub input: mpsc::Receiver<SinkMessage>,
    pub metrics: ConnectorMetrics,
    pub acks: mpsc::UnboundedSender<SinkAck>,
}

impl SinkContext {
    /// Acknowledges checkpoint `checkpoint` with what this instance pre-committed.
    pub fn acknowledge(
        &self,
        checkpoint: CheckpointId,
        state: Option<Vec<u8>>,
    ) -> Result<(), ConnectorError> {
        self.acks.send(SinkAck { subtask: self.subtask, checkpoint, state }).map_err(|_| {
            ConnectorError::Delivery("the job stopped taking checkpoint acknowledgements".into())
        })
    }

    /// The next batch to write, answering barriers and commits on the way (for sinks
    /// without two-phase commit: everything they got is written when they take the next
    /// message, so a barrier needs no pre-commit). `None` at end of input.
    pub fn next_batch(&mut self) -> Result<Option<RecordBatch>, ConnectorError> {
        loop {
            match self.input.blocking_recv() {
                None => return Ok(None),
                Some(SinkMessage::Batch(batch)) => return Ok(Some(batch)),
                Some(SinkMessage::Barrier(checkpoint)) => self.acknowledge(checkpoint, None)?,
                Some(SinkMessage::Commit(_)) => {}
            }
        }
    }

    pub fn written(&self, rows: usize, bytes: usize) {
        let labels = self.metrics.labels(&self.table.name);
        self.metrics.records_out.get_or_create(&labels).inc_by(rows as u64);
        self.metrics.bytes_out.get_or_create(&labels).inc_by(bytes as u64);
    }
}
