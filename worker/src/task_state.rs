//! Writing one task's acknowledged state as checkpoint state files: keyed tables in
//! key-group chunks, instance tables as one file of the subtask, each file reused from the
//! last completed checkpoint when its bytes are unchanged (see [`crate::incremental`]). The
//! checkpoint coordinator does it for the tasks of its own process (`run`); a worker of a job
//! spread over processes does it for its own tasks and acknowledges with the files
//! ([`WrittenAck`]), so state never travels through the coordinator. Either way the
//! coordinator writes the `_metadata` last.

use std::collections::BTreeMap;

use millrace_checkpoint::{StateScope as StoredScope, TableState};
use millrace_runtime::{KeyGroupRange, StateScope, TaskAck};
use millrace_types::SourcePositions;
use serde::{Deserialize, Serialize};

use crate::incremental::{self, Slot, StateWriter};
use crate::state_files;

/// A task's acknowledgement whose state files are already in checkpoint storage.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WrittenAck {
    pub checkpoint: u64,
    pub stage: usize,
    pub subtask: usize,
    /// At a first-stage task: where its source instance stood at the barrier.
    pub positions: Option<Vec<(i32, i64)>>,
    /// Every operator's tables with the files written (or reused) for this task.
    pub operators: Vec<(String, Vec<TableState>)>,
    /// Bytes of the files referenced, and of those written.
    pub referenced: u64,
    pub written: u64,
}

impl WrittenAck {
    pub fn source_positions(&self) -> Option<SourcePositions> {
        self.positions.as_ref().map(|p| {
            p.iter().map(|(partition, o)| (millrace_types::SourcePartition(*partition), *o)).collect()
        })
    }
}

/// Writes `ack`'s operator state and adds its tables to `operators` (by operator id; a
/// declared table with no rows is listed with no files).
pub async fn write_task_state(
    writer: &mut StateWriter<'_>,
    ack: &TaskAck,
    stage_parallelism: usize,
    max_parallelism: u32,
    operators: &mut BTreeMap<String, Vec<TableState>>,
) -> Result<(), String> {
    let owned = KeyGroupRange::of_subtask(ack.subtask, stage_parallelism, max_parallelism);
    for operator in &ack.operators {
        let id = operator.operator_id.as_str();
        let tables = operators.entry(id.to_owned()).or_default();
        for (declared, snapshot) in &operator.tables {
            let scope = match declared.scope {
                StateScope::KeyGroups => StoredScope::KeyGroups,
                StateScope::Instance => StoredScope::Instance,
            };
            let index = table_index(tables, declared.name, scope);
            if snapshot.batches.iter().all(|b| b.num_rows() == 0) {
                continue;
            }
            let failed = |e: String| format!("state of {id} table {}: {e}", declared.name);
            let pieces = match scope {
                StoredScope::KeyGroups => {
                    let rows = snapshot.batches.iter().map(|b| b.num_rows()).sum();
                    let width = incremental::chunk_width(max_parallelism, rows);
                    incremental::key_group_chunks(&snapshot.batches, owned, width)
                        .map_err(failed)?
                        .into_iter()
                        .map(|(r, batch)| (Slot::KeyGroups { first: r.first, last: r.last }, vec![batch]))
                        .collect()
                }
                StoredScope::Instance => vec![(Slot::Subtask(ack.subtask as u32), snapshot.batches.clone())],
            };
            for (slot, batches) in pieces {
                let bytes = state_files::encode(&batches).map_err(failed)?;
                let file = writer.file(id, declared.name, slot, "arrow", bytes).await?;
                tables[index].files.push(file);
            }
        }
    }
    Ok(())
}

/// Adds a written acknowledgement's tables to `operators`.
pub fn merge_written(operators: &mut BTreeMap<String, Vec<TableState>>, ack: &WrittenAck) {
    for (id, written) in &ack.operators {
        let tables = operators.entry(id.clone()).or_default();
        for table in written {
            let index = table_index(tables, &table.name, table.scope);
            tables[index].files.extend(table.files.iter().cloned());
        }
    }
}

/// The position of table `name` in `tables`, added (without files) if missing.
fn table_index(tables: &mut Vec<TableState>, name: &str, scope: StoredScope) -> usize {
    match tables.iter().position(|t| t.name == name) {
        Some(i) => i,
        None => {
            tables.push(TableState { name: name.to_owned(), scope, files: Vec::new() });
            tables.len() - 1
        }
    }
}
