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
    /// The process's operator state passed its limit (see [`crate::state_budget`]).
    #[error(
        "keyed state over the limit: this operator instance holds {operator_bytes} bytes, the process's operators {process_bytes} bytes, over {key} = {limit} bytes (raise SET '{key}' or --state-max-bytes, run at a higher parallelism, or set 'table.exec.state.ttl')",
        key = crate::state_budget::STATE_MAX_BYTES
    )]
    StateLimitExceeded { operator_bytes: u64, process_bytes: u64, limit: u64 },
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
    /// An operator's state took the process over its state limit; `operator` is its metric
    /// label (`s1.updating_aggregate`), which names the stage too.
    #[error("operator {operator} (subtask {subtask}): {source}")]
    StateLimit {
        operator: String,
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
