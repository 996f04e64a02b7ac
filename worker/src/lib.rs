//! The engine as a library: load a job (SQL file or StreamJob manifest), plan it, wire its
//! connectors and run its dataflow in this process. The binary's `run` role and the tests
//! use this; the coordinator and worker roles will build on it.

pub mod job;
pub mod manifest;

pub use job::{Job, JobError, JobMetrics, JobOptions, JobOverrides};
pub use manifest::{JobSource, load_job_file};
