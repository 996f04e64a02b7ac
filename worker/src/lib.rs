//! The engine as a library: load a job (SQL file or StreamJob manifest), plan it, wire its
//! connectors and run its dataflow in this process (`run`), or spread over a coordinator
//! and worker processes ([`roles`]).

mod checkpoint_status;
pub mod control;
pub mod coordinator;
mod incremental;
pub mod job;
pub mod manifest;
pub mod restore;
pub mod roles;
mod state_files;
pub mod task_state;

pub use control::{JobControl, JobPhase, control_router};
pub use coordinator::{CheckpointMetrics, CheckpointSettings};
pub use job::{Job, JobError, JobMetrics, JobOptions, JobOverrides};
pub use manifest::{JobSource, load_job_file};
pub use millrace_connectors::{KafkaDefaults, SinkDeliveryDefault};
