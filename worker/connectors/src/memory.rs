//! In-memory source and sink: records given up front, batches collected. They run the same
//! decoding, partitioning and dead-letter accounting as Kafka, which is what makes them
//! useful for golden tests and embedding.

use std::sync::{Arc, Mutex};

use arrow::record_batch::RecordBatch;
use millrace_types::{SourceEvent, SourcePartition};

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
}

impl SourceConnector {
    pub fn memory(records: Vec<MemoryRecord>, format: Format, batch_size: usize) -> Self {
        SourceConnector::Memory(MemorySourceConfig {
            records: Arc::new(records),
            format,
            batch_size: batch_size.max(1),
        })
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
    let mut start = 0;
    while start < records.len() {
        if ctx.stop.is_stopped() {
            return Ok(());
        }
        let positions = || offsets.iter().map(|(p, o)| (SourcePartition(*p), *o)).collect();
        if !ctx.barrier_if_due(positions) {
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
    ctx.emit(SourceEvent::End);
    Ok(())
}

/// Collects every batch a sink receives.
#[derive(Debug, Clone, Default)]
pub struct MemorySink(Arc<Mutex<Vec<RecordBatch>>>);

impl MemorySink {
    /// The batches received so far, in arrival order.
    pub fn batches(&self) -> Vec<RecordBatch> {
        self.0.lock().map(|b| b.clone()).unwrap_or_default()
    }
}

pub(crate) fn run_sink(sink: MemorySink, mut ctx: SinkContext) -> Result<(), ConnectorError> {
    while let Some(batch) = ctx.next_batch()? {
        ctx.written(batch.num_rows(), batch.get_array_memory_size());
        if let Ok(mut batches) = sink.0.lock() {
            batches.push(batch);
        }
    }
    Ok(())
}
