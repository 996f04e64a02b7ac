//! The one operator trait. Every streaming operator implements [`Operator`]: a required
//! [`Operator::process_batch`] and lifecycle hooks with sensible defaults, modelled on Flink's
//! operator lifecycle. Operators are synchronous and work on whole Arrow batches; the
//! executor owns channels, tasks and the async runtime.

use arrow::record_batch::RecordBatch;
use millrace_types::{SubtaskIndex, Watermark};
use prometheus_client::metrics::counter::Counter;

use crate::error::OperatorError;
use crate::state::{KeyGroupRange, TableSnapshot};

/// What an operator knows about where it runs.
#[derive(Debug, Clone)]
pub struct OperatorContext {
    pub subtask: SubtaskIndex,
    pub parallelism: usize,
    /// The job's key groups (Flink's maxParallelism).
    pub max_parallelism: u32,
    /// The key groups this subtask owns (all of them for a global operator).
    pub key_groups: KeyGroupRange,
    /// The last watermark this operator has seen (rows at or below it are late).
    pub watermark: Watermark,
    /// Rows that arrived after their window's allowed lateness (dropped or side-output).
    pub late_records: Counter,
}

/// How an operator's state is partitioned; decides how it is redistributed on rescale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateScope {
    /// One entry per key, grouped by key group.
    KeyGroups,
    /// One value for the whole operator instance (global windows run with parallelism 1).
    Instance,
}

/// A state table an operator declares, so checkpoints and rescaling know what to move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateTable {
    pub name: &'static str,
    pub scope: StateScope,
}

/// A streaming operator on Arrow record batches.
pub trait Operator: Send {
    /// A short name for logs, metrics and errors.
    fn name(&self) -> &'static str;

    /// The state this operator keeps between batches.
    fn state_tables(&self) -> Vec<StateTable> {
        Vec::new()
    }

    /// The bytes this operator's state holds in memory now (keys, accumulators, held rows and
    /// their indexes), for the process's state budget ([`crate::state_budget`]) and the
    /// `state_bytes` metric. Called after every batch and watermark: it must be cheap (kept
    /// up to date as the state changes, not computed by walking it). Stateless: 0.
    fn state_bytes(&self) -> usize {
        0
    }

    /// Called once before the first message.
    fn on_start(&mut self, _ctx: &OperatorContext) -> Result<(), OperatorError> {
        Ok(())
    }

    /// Processes one batch, pushing any output batches to `out`.
    fn process_batch(
        &mut self,
        batch: RecordBatch,
        ctx: &OperatorContext,
        out: &mut Vec<RecordBatch>,
    ) -> Result<(), OperatorError>;

    /// Processes one batch from input `input` (from 1) of an operator with several inputs (a
    /// join); input 0 goes to [`Operator::process_batch`]. Single-input operators refuse it.
    fn process_input(
        &mut self,
        input: usize,
        _batch: RecordBatch,
        _ctx: &OperatorContext,
        _out: &mut Vec<RecordBatch>,
    ) -> Result<(), OperatorError> {
        Err(OperatorError::Invalid(format!("{} has one input, not input {input}", self.name())))
    }

    /// Called when the watermark advances, before it is forwarded downstream; time-driven
    /// operators emit what the watermark completes.
    fn handle_watermark(
        &mut self,
        _watermark: Watermark,
        _ctx: &OperatorContext,
        _out: &mut Vec<RecordBatch>,
    ) -> Result<(), OperatorError> {
        Ok(())
    }

    /// Rows this operator set aside since the last call (late rows, for the job's late side
    /// output). Called after every batch and watermark.
    fn take_side_output(&mut self) -> Vec<RecordBatch> {
        Vec::new()
    }

    /// Called when checkpoint barriers have aligned: every row before the barrier has been
    /// processed, none after it. Returns the rows of every declared state table (one
    /// [`TableSnapshot`] per table, named as in [`Operator::state_tables`]); keyed tables
    /// start with the key-group column (see [`crate::state`]). Must not change the state.
    fn snapshot_state(&mut self, _ctx: &OperatorContext) -> Result<Vec<TableSnapshot>, OperatorError> {
        Ok(Vec::new())
    }

    /// Called before the first message of a restored job, with the rows of its tables as
    /// [`Operator::snapshot_state`] wrote them, possibly by other subtasks at another
    /// parallelism: keyed tables hold exactly the key groups in `ctx.key_groups`, instance
    /// tables this subtask's rows. A table may be missing (no state was written).
    fn restore_state(
        &mut self,
        _tables: Vec<TableSnapshot>,
        _ctx: &OperatorContext,
    ) -> Result<(), OperatorError> {
        Ok(())
    }

    /// Called once after the last message (end of a bounded input or shutdown).
    fn on_close(&mut self, _ctx: &OperatorContext, _out: &mut Vec<RecordBatch>) -> Result<(), OperatorError> {
        Ok(())
    }
}
