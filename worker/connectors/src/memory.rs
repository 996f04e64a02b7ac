//! In-memory source and sink: records given up front, batches collected. They run the same
//! decoding, partitioning and dead-letter accounting as Kafka, which is what makes them
//! useful for golden tests and embedding.
//!
//! The source answers checkpoint barriers (position: records of the partition emitted) and
//! resumes from restored positions; it can be paced, so that checkpoints fall mid-input, and
//! hold part-way, so that a stop leaves input unread. A
//! [`MemorySink::transactional`] sink is the two-phase-commit model the Kafka sink follows:
//! rows become visible only when the checkpoint after them is committed, and rows of an
//! uncommitted checkpoint are dropped when the sink closes, so tests can check
//! exactly-once output without a broker.

use std::sync::{Arc, Mutex};

use arrow::record_batch::RecordBatch;
use millrace_types::{CheckpointId, SinkMessage, SourceEvent, SourcePartition, SourcePositions};

use crate::format::{RecordDecoder, RecordRef};
use crate::options::Format;
use crate::{ConnectorError, SinkContext, SourceConnector, SourceContext};

/// One record of an in-memory source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryRecord {
    pub partition: i32,
    pub timestamp_ms: Option<i64>,
    pub value: Option<Vec<u8>>,
}

/// Records for an in-memory source; instance `i` reads the partitions `p` with
/// `p mod parallelism == i`, in the order given.
#[derive(Debug, Clone)]
pub struct MemorySourceConfig {
    pub records: Arc<Vec<MemoryRecord>>,
    pub format: Format,
    /// At most this many consecutive records of one partition form a batch.
    pub batch_size: usize,
    /// Emit at most this many records per second per instance (unpaced when `None`).
    pub records_per_second: Option<f64>,
    /// Emit at most this many records per instance, then hold: answer checkpoint barriers,
    /// emit nothing more and never end, until stopped. Tests stop a job at a checkpoint
    /// while input is still unread this way, whatever the machine's speed.
    pub hold_after: Option<usize>,
}

impl SourceConnector {
    pub fn memory(records: Vec<MemoryRecord>, format: Format, batch_size: usize) -> Self {
        SourceConnector::Memory(MemorySourceConfig {
            records: Arc::new(records),
            format,
            batch_size: batch_size.max(1),
            records_per_second: None,
            hold_after: None,
        })
    }

    /// A memory source that emits at most `records_per_second` per instance.
    pub fn paced_memory(
        records: Vec<MemoryRecord>,
        format: Format,
        batch_size: usize,
        records_per_second: f64,
    ) -> Self {
        SourceConnector::Memory(MemorySourceConfig {
            records: Arc::new(records),
            format,
            batch_size: batch_size.max(1),
            records_per_second: Some(records_per_second),
            hold_after: None,
        })
    }

    /// This memory source, holding after `records` records per instance (see
    /// [`MemorySourceConfig::hold_after`]); other connectors are returned unchanged.
    pub fn holding_after(self, records: usize) -> Self {
        match self {
            SourceConnector::Memory(config) => {
                SourceConnector::Memory(MemorySourceConfig { hold_after: Some(records), ..config })
            }
            other => other,
        }
    }
}

pub(crate) fn run_source(config: MemorySourceConfig, ctx: SourceContext) -> Result<(), ConnectorError> {
    let decoder = RecordDecoder::new(&ctx.table, config.format)?;
    let mine = |p: i32| p.rem_euclid(ctx.parallelism as i32) as usize == ctx.subtask;
    let mut partitions: Vec<i32> = config.records.iter().map(|r| r.partition).filter(|p| mine(*p)).collect();
    partitions.sort_unstable();
    partitions.dedup();
    if !ctx.emit(SourceEvent::Assigned(partitions.iter().map(|p| SourcePartition(*p)).collect())) {
        return Ok(());
    }
    // Offsets count a partition's records from 0; a restored job skips those before its
    // checkpoint's position.
    let mut offsets = std::collections::BTreeMap::<i32, i64>::new();
    let records: Vec<&MemoryRecord> = config
        .records
        .iter()
        .filter(|r| mine(r.partition))
        .filter(|r| {
            let offset = offsets.entry(r.partition).or_insert(0);
            *offset += 1;
            ctx.restored_position(SourcePartition(r.partition)).is_none_or(|resume| *offset > resume)
        })
        .collect();
    for (partition, offset) in offsets.iter_mut() {
        *offset = ctx.restored_position(SourcePartition(*partition)).unwrap_or(0);
    }
    let started = std::time::Instant::now();
    let held_at = config.hold_after.filter(|n| *n < records.len());
    let records = &records[..held_at.unwrap_or(records.len())];
    let mut start = 0;
    while start < records.len() {
        if ctx.stop.is_stopped() {
            return Ok(());
        }
        if let Some(rate) = config.records_per_second.filter(|r| *r > 0.0) {
            let due = started + std::time::Duration::from_secs_f64(start as f64 / rate);
            let wait = due.saturating_duration_since(std::time::Instant::now());
            if !wait.is_zero() {
                std::thread::sleep(wait.min(std::time::Duration::from_millis(20)));
                continue;
            }
        }
        if !ctx.barrier_if_due(|| positions(&offsets)) {
            return Ok(());
        }
        let partition = records[start].partition;
        let mut end = start;
        while end < records.len() && end - start < config.batch_size && records[end].partition == partition {
            end += 1;
        }
        let refs: Vec<RecordRef<'_>> = records[start..end]
            .iter()
            .map(|r| {
                let offset = offsets.entry(r.partition).or_insert(0);
                *offset += 1;
                RecordRef {
                    value: r.value.as_deref(),
                    timestamp_ms: r.timestamp_ms,
                    partition: r.partition,
                    offset: *offset - 1,
                }
            })
            .collect();
        let decoded = decoder.decode(&refs)?;
        ctx.dropped(decoded.bad.len(), "undecodable record (memory source has no dead-letter topic)");
        if decoded.batch.num_rows() > 0
            && !ctx.emit(SourceEvent::Batch { partition: SourcePartition(partition), batch: decoded.batch })
        {
            return Ok(());
        }
        start = end;
    }
    if held_at.is_some() {
        while !ctx.stop.is_stopped() {
            if !ctx.barrier_if_due(|| positions(&offsets)) {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        return Ok(());
    }
    ctx.emit(SourceEvent::End { positions: positions(&offsets) });
    Ok(())
}

/// The source's positions (records of each partition emitted), as barriers and the end carry them.
fn positions(offsets: &std::collections::BTreeMap<i32, i64>) -> SourcePositions {
    offsets.iter().map(|(p, o)| (SourcePartition(*p), *o)).collect()
}

/// Collects every batch a sink receives (or, transactional, every committed batch).
#[derive(Debug, Clone, Default)]
pub struct MemorySink {
    batches: Arc<Mutex<Vec<RecordBatch>>>,
    transactional: bool,
}

impl MemorySink {
    /// A sink whose batches become visible when the checkpoint after them commits.
    pub fn transactional() -> Self {
        Self { batches: Arc::default(), transactional: true }
    }

    /// The batches received (committed, if transactional) so far, in arrival order.
    pub fn batches(&self) -> Vec<RecordBatch> {
        self.batches.lock().map(|b| b.clone()).unwrap_or_default()
    }

    fn publish(&self, batches: impl IntoIterator<Item = RecordBatch>) {
        if let Ok(mut visible) = self.batches.lock() {
            visible.extend(batches);
        }
    }
}

pub(crate) fn run_sink(sink: MemorySink, mut ctx: SinkContext) -> Result<(), ConnectorError> {
    if !sink.transactional {
        while let Some(batch) = ctx.next_batch()? {
            ctx.written(batch.num_rows(), batch.get_array_memory_size());
            sink.publish([batch]);
        }
        return Ok(());
    }
    // The open transaction, and the pre-committed ones by checkpoint id.
    let mut open: Vec<RecordBatch> = Vec::new();
    let mut pre_committed: std::collections::BTreeMap<CheckpointId, Vec<RecordBatch>> = Default::default();
    while let Some(message) = ctx.input.blocking_recv() {
        match message {
            SinkMessage::Batch(batch) => {
                ctx.written(batch.num_rows(), batch.get_array_memory_size());
                open.push(batch);
            }
            SinkMessage::Barrier(checkpoint) => {
                pre_committed.entry(checkpoint).or_default().append(&mut open);
                ctx.acknowledge(checkpoint, None)?;
            }
            SinkMessage::Commit(checkpoint) => {
                let later = pre_committed.split_off(&CheckpointId(checkpoint.0 + 1));
                for (_, batches) in std::mem::replace(&mut pre_committed, later) {
                    sink.publish(batches);
                }
            }
        }
    }
    if !open.is_empty() || !pre_committed.is_empty() {
        tracing::debug!(subtask = ctx.subtask, "memory sink closed: uncommitted rows dropped");
    }
    Ok(())
}
