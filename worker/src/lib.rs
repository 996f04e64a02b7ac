//! The engine as a library: load a job (SQL file or StreamJob manifest), plan it, wire its
//! connectors and run its dataflow in this process. The binary's `run` role and the tests
//! use this; the coordinator and worker roles will build on it.

pub mod control;
pub mod coordinator;
mod incremental;
pub mod job;
pub mod manifest;
pub mod restore;
mod state_files;

pub use control::{JobControl, JobPhase, control_router};
pub use coordinator::{CheckpointMetrics, CheckpointSettings};
pub use job::{Job, JobError, JobMetrics, JobOptions, JobOverrides};
pub use manifest::{JobSource, load_job_file};
