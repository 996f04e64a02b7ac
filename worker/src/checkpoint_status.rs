//! What the checkpoint coordinator reports: the process's checkpoint metrics (Prometheus)
//! and the last completed checkpoint as the job's control API shows it. The coordinator
//! updates both; `run` and the coordinator role serve them.

use std::sync::{Arc, Mutex};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Checkpoint metrics of the process.
#[derive(Debug, Clone, Default)]
pub struct CheckpointMetrics {
    pub completed: Counter,
    pub failed: Counter,
    pub last_duration_ms: Gauge,
    /// State bytes the last completed checkpoint references (its full state).
    pub last_bytes: Gauge,
    /// State bytes the last completed checkpoint wrote itself (the rest it references from
    /// earlier checkpoints, unchanged).
    pub last_checkpoint_bytes_written: Gauge,
    pub last_completed_id: Gauge,
}

impl CheckpointMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register("checkpoints_completed", "Checkpoints completed", metrics.completed.clone());
        registry.register(
            "checkpoints_failed",
            "Checkpoints that failed or timed out",
            metrics.failed.clone(),
        );
        registry.register(
            "last_checkpoint_duration_ms",
            "Trigger to completion of the last completed checkpoint",
            metrics.last_duration_ms.clone(),
        );
        registry.register(
            "last_checkpoint_bytes",
            "State bytes the last completed checkpoint references (its whole state)",
            metrics.last_bytes.clone(),
        );
        registry.register(
            "last_checkpoint_bytes_written",
            "State bytes the last completed checkpoint wrote (incremental: unchanged files are referenced, not written)",
            metrics.last_checkpoint_bytes_written.clone(),
        );
        registry.register(
            "last_checkpoint_id",
            "Id of the last completed checkpoint",
            metrics.last_completed_id.clone(),
        );
        metrics
    }
}

/// What the coordinator publishes about its checkpoints, for the job's HTTP API.
#[derive(Debug, Clone, Default)]
pub struct JobStatusView(Arc<Mutex<CheckpointStatus>>);

/// The last completed checkpoint, as the job's API shows it.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointStatus {
    pub last_checkpoint_id: Option<u64>,
    /// The last completed checkpoint's folder (`…/chk-<id>`).
    pub last_checkpoint_location: Option<String>,
    pub last_checkpoint_completed_at_ms: Option<i64>,
    pub last_checkpoint_duration_ms: Option<u64>,
    /// State bytes the last checkpoint references (its whole state).
    pub last_checkpoint_bytes: Option<u64>,
    /// State bytes the last checkpoint wrote itself (incremental checkpoints write only what
    /// changed).
    pub last_checkpoint_bytes_written: Option<u64>,
    pub checkpoints_completed: u64,
    pub checkpoints_failed: u64,
    pub restored_from: Option<String>,
}

impl JobStatusView {
    pub fn get(&self) -> CheckpointStatus {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn update(&self, change: impl FnOnce(&mut CheckpointStatus)) {
        if let Ok(mut status) = self.0.lock() {
            change(&mut status);
        }
    }
}
