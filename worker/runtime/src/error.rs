//! Errors of the runtime. Operator errors carry the operator's name so that a failed job
//! says where it failed.

use arrow::error::ArrowError;
use datafusion_common::DataFusionError;

/// A failure inside one operator while it processed a batch or a watermark.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
    #[error(transparent)]
    Arrow(#[from] ArrowError),
    #[error("{0}")]
    Invalid(String),
}

/// A failure of a running dataflow.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("operator {operator} (subtask {subtask}): {source}")]
    Operator {
        operator: &'static str,
        subtask: usize,
        #[source]
        source: OperatorError,
    },
    #[error("invalid dataflow: {0}")]
    InvalidDataflow(String),
    #[error("a task of the dataflow panicked or was cancelled: {0}")]
    Task(String),
    /// The network exchange to or from another worker process failed (it died, or the
    /// connection was lost).
    #[error("network exchange: {0}")]
    Exchange(String),
}
