//! Task acknowledgements across the RPC: a worker encodes each operator snapshot's tables as
//! Arrow IPC (the same bytes a state file holds, [`crate::state_files`]); the coordinator
//! decodes them and finds each table's declaration in its own copy of the plan (the plan is
//! the same SQL on both ends, so the operator ids match).

use std::collections::HashMap;

use millrace_runtime::{Dataflow, OperatorSnapshot, StateTable, TableSnapshot, TaskAck, operator_ids};
use millrace_types::{CheckpointId, SourcePartition, SourcePositions};

use super::rpc::{WireAck, WireOperator, decode_bytes, encode_bytes};
use crate::state_files;

/// Every operator's declared state tables, by operator id.
pub fn declared_tables(dataflow: &Dataflow) -> Result<HashMap<String, Vec<StateTable>>, String> {
    let ids = operator_ids(dataflow).map_err(|e| e.to_string())?;
    let mut declared = HashMap::new();
    for (stage, ids) in dataflow.stages.iter().zip(ids) {
        for (spec, id) in stage.operators.iter().zip(ids) {
            let operator = spec.instantiate().map_err(|e| e.to_string())?;
            declared.insert(id, operator.state_tables());
        }
    }
    Ok(declared)
}

pub fn positions_to_wire(positions: &SourcePositions) -> Vec<(i32, i64)> {
    positions.iter().map(|(p, o)| (p.0, *o)).collect()
}

pub fn positions_from_wire(positions: &[(i32, i64)]) -> SourcePositions {
    positions.iter().map(|(p, o)| (SourcePartition(*p), *o)).collect()
}

pub fn encode_ack(ack: &TaskAck) -> Result<WireAck, String> {
    let mut operators = Vec::with_capacity(ack.operators.len());
    for operator in &ack.operators {
        let mut tables = Vec::with_capacity(operator.tables.len());
        for (declared, snapshot) in &operator.tables {
            let rows = if snapshot.batches.iter().all(|b| b.num_rows() == 0) {
                None
            } else {
                let bytes = state_files::encode(&snapshot.batches)
                    .map_err(|e| format!("state of {} table {}: {e}", operator.operator_id, declared.name))?;
                Some(encode_bytes(&bytes))
            };
            tables.push((declared.name.to_owned(), rows));
        }
        operators.push(WireOperator { operator_id: operator.operator_id.clone(), tables });
    }
    Ok(WireAck {
        checkpoint: ack.checkpoint.0,
        stage: ack.stage,
        subtask: ack.subtask,
        operators,
        positions: ack.positions.as_ref().map(positions_to_wire),
    })
}

pub fn decode_ack(ack: WireAck, declared: &HashMap<String, Vec<StateTable>>) -> Result<TaskAck, String> {
    let mut operators = Vec::with_capacity(ack.operators.len());
    for operator in ack.operators {
        let tables_of = declared
            .get(&operator.operator_id)
            .ok_or_else(|| format!("operator {} is not in the coordinator's plan", operator.operator_id))?;
        let mut tables = Vec::with_capacity(operator.tables.len());
        for (name, rows) in operator.tables {
            let table = tables_of
                .iter()
                .find(|t| t.name == name)
                .ok_or_else(|| format!("operator {} declares no table {name}", operator.operator_id))?;
            let batches = match rows {
                None => Vec::new(),
                Some(text) => state_files::decode(&decode_bytes(&text)?)
                    .map_err(|e| format!("state of {} table {name}: {e}", operator.operator_id))?,
            };
            tables.push((table.clone(), TableSnapshot { name, batches }));
        }
        operators.push(OperatorSnapshot { operator_id: operator.operator_id, tables });
    }
    Ok(TaskAck {
        checkpoint: CheckpointId(ack.checkpoint),
        stage: ack.stage,
        subtask: ack.subtask,
        operators,
        positions: ack.positions.as_deref().map(positions_from_wire),
    })
}
