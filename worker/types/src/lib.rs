//! Small shared types at the bottom of the Millrace engine: ids as newtypes, event time and
//! watermarks, key groups, and the messages that flow between operators.
//!
//! This crate owns vocabulary only. It must not depend on DataFusion, Kafka or an async
//! runtime, so that every other engine crate can use it without paying for them.

pub mod changelog;
mod key_group;
mod time;

pub use changelog::RowKind;
pub use key_group::{DEFAULT_MAX_PARALLELISM, KeyGroup, KeyGroupError, subtask_for_key_group};
pub use time::{EventTime, Watermark};

use arrow::record_batch::RecordBatch;

/// Index of one parallel instance of an operator chain, `0..parallelism`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubtaskIndex(pub usize);

/// A partition of a source (a Kafka partition, or the single split of a generator instance).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourcePartition(pub i32);

/// A checkpoint's sequence number: checkpoints are numbered 1, 2, … per job, and a restored
/// job goes on from the number after the checkpoint it restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CheckpointId(pub u64);

impl std::fmt::Display for CheckpointId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Identifies a node of a job's dataflow graph (stable within one plan).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OperatorId(pub u32);

impl std::fmt::Display for SubtaskIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::fmt::Display for OperatorId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "op{}", self.0)
    }
}

/// What travels on a channel between operator chains. Control messages share the channel
/// with data so that they stay ordered with respect to the rows around them (a watermark
/// must never overtake the rows it vouches for).
#[derive(Debug, Clone)]
pub enum StreamMessage {
    /// A batch of rows in the edge's schema.
    Batch(RecordBatch),
    /// No row with event time at or below this watermark will follow on this channel.
    Watermark(Watermark),
    /// Checkpoint barrier: every row before it belongs to the checkpoint, every row after it
    /// to the next. A task with several inputs snapshots once it has the barrier from all.
    Barrier(CheckpointId),
    /// The sender has finished (bounded sources); no message follows.
    EndOfStream,
}

/// What a source connector hands the runtime. Rows carry the table's physical and metadata
/// columns; the runtime adds processing time and derives watermarks from them.
#[derive(Debug, Clone)]
pub enum SourceEvent {
    /// The partitions this source instance reads from now on (watermarks wait for all of them).
    Assigned(Vec<SourcePartition>),
    /// Decoded rows read from one partition, in partition order.
    Batch { partition: SourcePartition, batch: RecordBatch },
    /// The source's answer to a checkpoint request: every batch before it is covered by
    /// the checkpoint, and `positions` is where reading resumes after a restore from it.
    Barrier { checkpoint: CheckpointId, positions: SourcePositions },
    /// A bounded source has no more rows; `positions` is where it ended (a restore from a
    /// checkpoint taken after this reads nothing more from these partitions).
    End { positions: SourcePositions },
}

/// Where a source instance stands: per partition it reads, the position of the next record
/// (a Kafka offset; for generators and files, the number of records already emitted).
pub type SourcePositions = std::collections::BTreeMap<SourcePartition, i64>;

/// What reaches a sink instance: rows, and the checkpoint protocol of two-phase commit.
#[derive(Debug, Clone)]
pub enum SinkMessage {
    /// Rows to write (an upsert stream carries the row-kind column last).
    Batch(RecordBatch),
    /// Every row of checkpoint `0` has arrived: make it durable (pre-commit), then
    /// acknowledge with the sink's state.
    Barrier(CheckpointId),
    /// Checkpoint `0` is complete everywhere: make what it covers visible (commit). Commits
    /// every pre-committed checkpoint up to and including it.
    Commit(CheckpointId),
}
