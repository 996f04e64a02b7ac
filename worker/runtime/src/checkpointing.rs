//! The runtime's side of checkpoints: what a task reports when its barriers have aligned
//! ([`TaskAck`]: its operators' snapshots and, at a source, where the source stood), the
//! stable operator ids state is filed under, and the state a restored job starts from
//! ([`RestoredState`]), handed to each subtask already cut to the key groups it owns. The
//! coordinator (in the worker) decides when checkpoints happen and where the bytes go.

use std::collections::HashMap;
use std::sync::Arc;

use millrace_types::{CheckpointId, SourcePositions};
use tokio::sync::mpsc;

use crate::dataflow::Dataflow;
use crate::error::OperatorError;
use crate::operator::{OperatorContext, StateScope, StateTable};
use crate::state::{TableSnapshot, retain_key_groups};

/// One operator's state at a checkpoint.
#[derive(Debug, Clone)]
pub struct OperatorSnapshot {
    /// The operator's stable id (see [`operator_ids`]).
    pub operator_id: String,
    /// Every declared table with its rows (an empty snapshot for tables with no rows).
    pub tables: Vec<(StateTable, TableSnapshot)>,
}

/// A task's acknowledgement of a checkpoint: its barriers aligned and it snapshotted.
#[derive(Debug, Clone)]
pub struct TaskAck {
    pub checkpoint: CheckpointId,
    pub stage: usize,
    pub subtask: usize,
    pub operators: Vec<OperatorSnapshot>,
    /// At a first-stage task: where its source instance stood at the barrier.
    pub positions: Option<SourcePositions>,
}

/// What tasks tell the coordinator.
#[derive(Debug, Clone)]
pub enum TaskEvent {
    /// Barriers aligned and the task snapshotted.
    Ack(TaskAck),
    /// The task has finished (its input ended): it acknowledges no later checkpoint, and
    /// needs not, having no state left.
    /// A first-stage task whose source ended names where it ended (`positions`), so that
    /// later checkpoints record it as read to the end.
    Finished { stage: usize, subtask: usize, positions: Option<SourcePositions> },
}

/// What the executor needs to take part in checkpoints.
#[derive(Debug, Clone)]
pub struct CheckpointIo {
    pub events: mpsc::UnboundedSender<TaskEvent>,
    /// The state to start from (a restored job).
    pub restore: Option<Arc<RestoredState>>,
}

/// The operator state of a checkpoint or savepoint, over all subtasks of the run that wrote
/// it, by operator id and table name.
#[derive(Debug, Default)]
pub struct RestoredState {
    pub operators: HashMap<String, HashMap<String, TableSnapshot>>,
}

impl RestoredState {
    /// The tables of `operator_id` for the subtask of `ctx`: keyed tables cut to its key
    /// groups; instance tables whole (instance state belongs to global operators, which run
    /// as one subtask).
    pub fn tables_for(
        &self,
        operator_id: &str,
        declared: &[StateTable],
        ctx: &OperatorContext,
    ) -> Result<Vec<TableSnapshot>, OperatorError> {
        let Some(tables) = self.operators.get(operator_id) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for table in declared {
            let Some(snapshot) = tables.get(table.name) else { continue };
            let batches = match table.scope {
                StateScope::Instance => snapshot.batches.clone(),
                StateScope::KeyGroups => snapshot
                    .batches
                    .iter()
                    .map(|b| retain_key_groups(b, ctx.key_groups))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| OperatorError::Invalid(format!("state table {}: {e}", table.name)))?
                    .into_iter()
                    .filter(|b| b.num_rows() > 0)
                    .collect(),
            };
            out.push(TableSnapshot { name: table.name.to_owned(), batches });
        }
        Ok(out)
    }
}

/// The stable id of every operator, per stage in chain order: `s<stage>.<name>-<fingerprint>`,
/// where the fingerprint hashes the operator's planned description (its expressions, keys
/// and aggregates). The same SQL gets the same ids on every run; a change to an operator's
/// keys or aggregates gets a new id, so its old state is not silently restored into it.
pub fn operator_ids(dataflow: &Dataflow) -> Result<Vec<Vec<String>>, OperatorError> {
    let mut ids = Vec::with_capacity(dataflow.stage_count());
    for (k, stage) in (0..dataflow.stage_count()).filter_map(|k| dataflow.stage(k).map(|s| (k, s))) {
        let names = stage
            .operators
            .iter()
            .map(|o| o.instantiate().map(|o| o.name()))
            .collect::<Result<Vec<_>, _>>()?;
        ids.push(
            crate::chain::operator_labels(k, &names)
                .into_iter()
                .zip(&stage.operators)
                .map(|(label, spec)| format!("{label}-{:08x}", fnv1a(&spec.fingerprint()) as u32))
                .collect(),
        );
    }
    Ok(ids)
}

/// FNV-1a: a stable hash (the std hasher may change between Rust releases).
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::fnv1a;

    #[test]
    fn the_fingerprint_hash_is_stable() {
        // Pinned: operator ids in existing checkpoints depend on it.
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
    }
}
