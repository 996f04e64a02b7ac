//! A worker's task acknowledgements: the worker writes each task's state files to the job's
//! checkpoint storage itself ([`crate::task_state`], incremental against the last completed
//! checkpoint the barrier named) and sends the coordinator only the files' descriptions; the
//! coordinator writes the `_metadata` once every task and sink acknowledged.

use std::collections::BTreeMap;

use millrace_checkpoint::CheckpointStorage;
use millrace_runtime::TaskAck;
use millrace_types::{SourcePartition, SourcePositions};

use crate::incremental::{FileIndex, StateWriter};
use crate::task_state::{WrittenAck, write_task_state};

pub fn positions_to_wire(positions: &SourcePositions) -> Vec<(i32, i64)> {
    positions.iter().map(|(p, o)| (p.0, *o)).collect()
}

pub fn positions_from_wire(positions: &[(i32, i64)]) -> SourcePositions {
    positions.iter().map(|(p, o)| (SourcePartition(*p), *o)).collect()
}

/// Writes the state of task acknowledgements, reusing the unchanged files of the last
/// completed checkpoint (whose index it loads once per checkpoint it is named for).
pub struct AckWriter {
    storage: CheckpointStorage,
    stage_parallelism: Vec<usize>,
    max_parallelism: u32,
    previous: Option<(u64, FileIndex)>,
}

impl AckWriter {
    pub fn new(storage: CheckpointStorage, stage_parallelism: Vec<usize>, max_parallelism: u32) -> Self {
        Self { storage, stage_parallelism, max_parallelism, previous: None }
    }

    /// Writes `ack`'s state files; `previous` is the last completed checkpoint when its
    /// barrier was triggered.
    pub async fn write(&mut self, ack: &TaskAck, previous: Option<u64>) -> Result<WrittenAck, String> {
        let index = match (previous, &self.previous) {
            (None, _) => FileIndex::default(),
            (Some(id), Some((cached, index))) if *cached == id => index.clone(),
            (Some(id), _) => {
                // A checkpoint already removed, or unreadable: write everything.
                let index = match self.storage.load_checkpoint(id).await {
                    Ok(metadata) => FileIndex::of_checkpoint(&metadata),
                    Err(err) => {
                        tracing::debug!(checkpoint = id, %err, "no files to reuse from the last checkpoint");
                        FileIndex::default()
                    }
                };
                self.previous = Some((id, index.clone()));
                index
            }
        };
        let mut writer = StateWriter::new(&self.storage, ack.checkpoint.0, &index);
        let mut operators = BTreeMap::new();
        let stage_parallelism = self.stage_parallelism.get(ack.stage).copied().unwrap_or(1);
        write_task_state(&mut writer, ack, stage_parallelism, self.max_parallelism, &mut operators).await?;
        Ok(WrittenAck {
            checkpoint: ack.checkpoint.0,
            stage: ack.stage,
            subtask: ack.subtask,
            positions: ack.positions.as_ref().map(positions_to_wire),
            operators: operators.into_iter().collect(),
            referenced: writer.referenced,
            written: writer.written,
        })
    }
}
