//! Starting a job from a checkpoint or savepoint: check that the snapshot fits the plan
//! (same maxParallelism; every operator state maps to an operator of the plan, unless the
//! user allows dropping what does not), read its state files back into operator state, and
//! collect where the sources resume and what the sinks had pre-committed. Any parallelism
//! works: keyed state is cut to key groups by the runtime when each subtask starts.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use millrace_checkpoint::{CheckpointStorage, SnapshotMetadata};
use millrace_connectors::SourceRestore;
use millrace_runtime::{RestoredState, TableSnapshot};
use millrace_types::SourcePartition;

use crate::coordinator::{SINK_TABLE, sink_operator_id};
use crate::job::JobError;
use crate::state_files;

/// A snapshot, read and checked against the plan.
#[derive(Debug)]
pub struct Restored {
    pub checkpoint_id: u64,
    /// Where the snapshot was read from, for logs.
    pub location: String,
    pub finished: bool,
    pub state: Arc<RestoredState>,
    pub sources: SourceRestore,
    /// Where each source table resumes, by name (the join sources of a job with joins).
    pub by_table: std::collections::HashMap<String, SourceRestore>,
    /// The pre-commit state of every instance of the sink (and of the late output).
    pub sink_states: Vec<Vec<u8>>,
    pub late_sink_states: Vec<Vec<u8>>,
}

/// What the plan expects of a snapshot.
pub struct PlanState<'a> {
    pub operator_ids: &'a [Vec<String>],
    pub max_parallelism: u32,
    pub sink_table: &'a str,
    pub late_table: Option<&'a str>,
    pub allow_non_restored_state: bool,
}

/// Reads and checks the snapshot `metadata` stored in `storage`.
pub async fn restore(
    storage: &CheckpointStorage,
    metadata: SnapshotMetadata,
    plan: &PlanState<'_>,
) -> Result<Restored, JobError> {
    let location = format!("{} (checkpoint {})", storage.url(), metadata.checkpoint_id);
    let refuse = |why: String| JobError::Restore(format!("cannot restore from {location}: {why}"));
    if metadata.max_parallelism != plan.max_parallelism {
        return Err(refuse(format!(
            "it was taken with maxParallelism {}, the job has {}; maxParallelism cannot change (it fixes the key groups)",
            metadata.max_parallelism, plan.max_parallelism
        )));
    }
    let sink_id = sink_operator_id(plan.sink_table);
    let late_id = plan.late_table.map(sink_operator_id);
    let known: BTreeSet<&str> = plan
        .operator_ids
        .iter()
        .flatten()
        .map(String::as_str)
        .chain([sink_id.as_str()])
        .chain(late_id.as_deref())
        .collect();
    let unmapped: Vec<&str> =
        metadata.operators.iter().map(|o| o.operator_id.as_str()).filter(|id| !known.contains(id)).collect();
    if !unmapped.is_empty() {
        if !plan.allow_non_restored_state {
            return Err(refuse(format!(
                "state of operator(s) {} does not map to the job's plan (operators: {}); the SQL changed in a way that drops state. Set allowNonRestoredState to start without it",
                unmapped.join(", "),
                plan.operator_ids.iter().flatten().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        tracing::warn!(unmapped = ?unmapped, "dropping state that does not map to the plan (allowNonRestoredState)");
    }

    let mut state = RestoredState::default();
    let mut sink_states = Vec::new();
    let mut late_sink_states = Vec::new();
    for operator in &metadata.operators {
        if !known.contains(operator.operator_id.as_str()) {
            continue;
        }
        let is_sink = operator.operator_id == sink_id;
        let is_late = late_id.as_deref() == Some(operator.operator_id.as_str());
        for table in &operator.tables {
            for file in &table.files {
                let bytes = storage.read(&file.path).await.map_err(|e| refuse(e.to_string()))?;
                if bytes.len() as u64 != file.bytes {
                    return Err(refuse(format!(
                        "state file {} has {} bytes, the metadata says {}",
                        file.path,
                        bytes.len(),
                        file.bytes
                    )));
                }
                if is_sink || is_late {
                    if table.name == SINK_TABLE {
                        if is_sink { &mut sink_states } else { &mut late_sink_states }.push(bytes.to_vec());
                    }
                    continue;
                }
                let batches = state_files::decode(&bytes)
                    .map_err(|why| refuse(format!("state file {}: {why}", file.path)))?;
                let tables: &mut HashMap<String, TableSnapshot> =
                    state.operators.entry(operator.operator_id.clone()).or_default();
                tables
                    .entry(table.name.clone())
                    .or_insert_with(|| TableSnapshot { name: table.name.clone(), batches: Vec::new() })
                    .batches
                    .extend(batches);
            }
        }
    }
    let positions = |s: &millrace_checkpoint::SourcePosition| -> SourceRestore {
        s.next_offsets.iter().map(|(p, o)| (SourcePartition(*p), *o)).collect()
    };
    // The main source is written first; a job with joins writes one entry per source table.
    let sources = metadata.sources.first().map(positions).unwrap_or_default();
    let by_table = metadata.sources.iter().map(|s| (s.table.clone(), positions(s))).collect();
    Ok(Restored {
        checkpoint_id: metadata.checkpoint_id,
        location,
        finished: metadata.finished,
        state: Arc::new(state),
        sources,
        by_table,
        sink_states,
        late_sink_states,
    })
}
