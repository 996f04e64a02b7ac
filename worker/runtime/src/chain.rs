//! The operators of one stage subtask, chained: instantiated from the plan, restored from a
//! checkpoint's state when the job restores, run batch by batch (each operator's output is
//! the next one's input, a watermark reaches each operator after the rows before it), and
//! snapshotted when barriers align. It owns no channels; the stage task does.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use millrace_types::{SubtaskIndex, Watermark};

use crate::checkpointing::{OperatorSnapshot, RestoredState};
use crate::dataflow::Dataflow;
use crate::error::{OperatorError, RuntimeError};
use crate::metrics::{OperatorLabels, RuntimeMetrics};
use crate::operator::{Operator, OperatorContext};
use crate::state::{KeyGroupRange, TableSnapshot};
use crate::state_budget::StateBudget;

/// Where a chain runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Placement {
    pub stage: usize,
    pub subtask: usize,
    pub parallelism: usize,
    pub max_parallelism: u32,
}

/// The operators of one stage subtask, chained.
pub(crate) struct Chain {
    operators: Vec<(Box<dyn Operator>, OperatorContext, OperatorLabels)>,
    /// Each operator's stable id (its state's name in checkpoints).
    ids: Vec<String>,
    /// Rows the operators set aside in the last `run` (late rows).
    pub side_output: Vec<RecordBatch>,
    pub subtask: usize,
    metrics: RuntimeMetrics,
    /// The process's state budget, and what each operator last reported to it.
    budget: Arc<StateBudget>,
    state_bytes: Vec<u64>,
}

/// The metric label of each operator of stage `stage`, in chain order: `s<stage>.<name>`, and
/// `s<stage>.<name>.<n>` (n from 1, in chain order) for a name that occurs more than once in
/// the stage, so every operator counts its own rows.
pub(crate) fn operator_labels(stage: usize, names: &[&str]) -> Vec<String> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    names
        .iter()
        .map(|name| {
            let n = seen.entry(name).or_default();
            *n += 1;
            if names.iter().filter(|other| *other == name).count() > 1 {
                format!("s{stage}.{name}.{n}")
            } else {
                format!("s{stage}.{name}")
            }
        })
        .collect()
}

impl Chain {
    pub fn new(
        dataflow: &Dataflow,
        placement: Placement,
        ids: &[String],
        restore: Option<&RestoredState>,
        metrics: &RuntimeMetrics,
        budget: Arc<StateBudget>,
    ) -> Result<Self, RuntimeError> {
        let Placement { stage, subtask, parallelism, max_parallelism } = placement;
        let mut instantiated = Vec::new();
        let specs = dataflow
            .stage(stage)
            .ok_or_else(|| RuntimeError::InvalidDataflow(format!("no stage {stage}")))?;
        for spec in &specs.operators {
            instantiated.push(spec.instantiate().map_err(|source| RuntimeError::Operator {
                operator: "instantiate",
                subtask,
                source,
            })?);
        }
        let names: Vec<&'static str> = instantiated.iter().map(|o| o.name()).collect();
        let mut operators = Vec::new();
        for (operator, label) in instantiated.into_iter().zip(operator_labels(stage, &names)) {
            let labels = RuntimeMetrics::labels(label);
            let ctx = OperatorContext {
                subtask: SubtaskIndex(subtask),
                parallelism,
                max_parallelism,
                key_groups: KeyGroupRange::of_subtask(subtask, parallelism, max_parallelism),
                watermark: Watermark::MIN,
                late_records: metrics.late_records.get_or_create(&labels).clone(),
            };
            operators.push((operator, ctx, labels));
        }
        let state_bytes = vec![0; operators.len()];
        let mut chain = Self {
            operators,
            ids: ids.to_vec(),
            side_output: Vec::new(),
            subtask,
            metrics: metrics.clone(),
            budget,
            state_bytes,
        };
        for ((operator, ctx, _), id) in chain.operators.iter_mut().zip(&chain.ids) {
            let name = operator.name();
            let fail = |source| RuntimeError::Operator { operator: name, subtask, source };
            operator.on_start(ctx).map_err(fail)?;
            if let Some(restore) = restore {
                let tables = restore.tables_for(id, &operator.state_tables(), ctx).map_err(fail)?;
                if !tables.is_empty() {
                    operator.restore_state(tables, ctx).map_err(fail)?;
                }
            }
        }
        // Restored state counts from the start: a limit lowered below it fails here.
        for i in 0..chain.operators.len() {
            chain.account(i)?;
        }
        Ok(chain)
    }

    /// Reports operator `i`'s state size to the budget and its metric; fails when it took
    /// the process over the limit.
    fn account(&mut self, i: usize) -> Result<(), RuntimeError> {
        let (operator, _, labels) = &self.operators[i];
        let now = operator.state_bytes() as u64;
        let before = std::mem::replace(&mut self.state_bytes[i], now);
        if now == before {
            return Ok(());
        }
        let gauge = self.metrics.state_bytes.get_or_create(labels);
        gauge.inc_by(now as i64 - before as i64);
        self.metrics.process_state_bytes.inc_by(now as i64 - before as i64);
        self.budget.change(before, now).map_err(|source| RuntimeError::StateLimit {
            operator: labels.operator.clone(),
            subtask: self.subtask,
            source,
        })
    }

    /// Snapshots every operator with declared state.
    pub fn snapshot(&mut self) -> Result<Vec<OperatorSnapshot>, RuntimeError> {
        let mut snapshots = Vec::new();
        for ((operator, ctx, _), id) in self.operators.iter_mut().zip(&self.ids) {
            let declared = operator.state_tables();
            if declared.is_empty() {
                continue;
            }
            let (name, subtask) = (operator.name(), self.subtask);
            let fail = |source| RuntimeError::Operator { operator: name, subtask, source };
            let mut written = operator.snapshot_state(ctx).map_err(fail)?;
            let mut tables = Vec::with_capacity(declared.len());
            for table in declared {
                let snapshot = match written.iter().position(|t| t.name == table.name) {
                    Some(i) => written.swap_remove(i),
                    None => TableSnapshot { name: table.name.to_owned(), batches: Vec::new() },
                };
                tables.push((table, snapshot));
            }
            if let Some(stray) = written.first() {
                return Err(fail(OperatorError::Invalid(format!(
                    "snapshot has table '{}', which the operator does not declare",
                    stray.name
                ))));
            }
            snapshots.push(OperatorSnapshot { operator_id: id.clone(), tables });
        }
        Ok(snapshots)
    }

    fn fail(&self, operator: &dyn Operator, source: OperatorError) -> RuntimeError {
        RuntimeError::Operator { operator: operator.name(), subtask: self.subtask, source }
    }

    /// Pushes `input` (rows of stage input `from`: a join's stage has several, and its first
    /// operator gets them through [`Operator::process_input`]) through every operator;
    /// `watermark` (if any) reaches each operator after the rows its upstream emitted for it.
    pub fn run_input(
        &mut self,
        from: usize,
        input: Vec<RecordBatch>,
        watermark: Option<Watermark>,
        close: bool,
    ) -> Result<Vec<RecordBatch>, RuntimeError> {
        let mut current = input;
        for i in 0..self.operators.len() {
            let mut next = Vec::new();
            let (operator, ctx, labels) = &mut self.operators[i];
            let rows_in: usize = current.iter().map(|b| b.num_rows()).sum();
            self.metrics.records_in.get_or_create(labels).inc_by(rows_in as u64);
            let mut result = Ok(());
            for batch in current {
                result = if i == 0 && from > 0 {
                    operator.process_input(from, batch, ctx, &mut next)
                } else {
                    operator.process_batch(batch, ctx, &mut next)
                };
                if result.is_err() {
                    break;
                }
            }
            if result.is_ok()
                && let Some(w) = watermark
            {
                ctx.watermark = w;
                result = operator.handle_watermark(w, ctx, &mut next);
            }
            if result.is_ok() && close {
                result = operator.on_close(ctx, &mut next);
            }
            if let Err(source) = result {
                let operator = &self.operators[i].0;
                return Err(self.fail(operator.as_ref(), source));
            }
            self.account(i)?;
            self.side_output.extend(self.operators[i].0.take_side_output());
            let rows_out: usize = next.iter().map(|b| b.num_rows()).sum();
            self.metrics.records_out.get_or_create(&self.operators[i].2).inc_by(rows_out as u64);
            current = next;
        }
        Ok(current)
    }
}

impl Drop for Chain {
    /// The instance's state is gone with it: the process's count and metric drop by it.
    fn drop(&mut self) {
        for ((_, _, labels), bytes) in self.operators.iter().zip(&self.state_bytes) {
            if *bytes > 0 {
                self.metrics.state_bytes.get_or_create(labels).dec_by(*bytes as i64);
                self.metrics.process_state_bytes.dec_by(*bytes as i64);
                let _ = self.budget.change(*bytes, 0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::operator_labels;

    #[test]
    fn operator_labels_are_unique_within_a_stage() {
        let names = ["over_rows", "projection", "filter", "projection", "projection"];
        assert_eq!(
            operator_labels(1, &names),
            vec!["s1.over_rows", "s1.projection.1", "s1.filter", "s1.projection.2", "s1.projection.3"]
        );
        assert_eq!(operator_labels(0, &["filter", "projection"]), vec!["s0.filter", "s0.projection"]);
    }
}
