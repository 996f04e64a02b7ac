//! Everything that can stop a StreamJob reconcile, and what each means for the error policy.
//! Each variant's [`Error::reason`] is at once the Ready condition reason, the Event reason
//! and the `reason` label of the failure metric, so the three always agree.

use millrace_crds::v1alpha1::validation::SpecErrors;
use millrace_sql::SqlError;

use super::control::ControlError;
pub use crate::kafka_topic::error::Retry;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the object does not match the StreamJob schema: {0}")]
    MalformedObject(String),

    #[error("invalid spec: {0}; nothing was deployed")]
    InvalidSpec(#[from] SpecErrors),

    #[error("invalid SQL: {0}; nothing was deployed")]
    InvalidSql(#[from] SqlError),

    #[error("the job's coordinator: {0}")]
    Coordinator(#[from] ControlError),

    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),

    /// The job's checkpoint storage could not be disposed of (`disposeOnDelete`).
    #[error("checkpoint storage: {0}")]
    Storage(String),
}

impl Error {
    /// PascalCase reason for the condition, the Event and the metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::MalformedObject(_) => "MalformedObject",
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::InvalidSql(_) => "InvalidSql",
            Error::Coordinator(_) => "CoordinatorUnavailable",
            Error::Kube(_) => "KubernetesApiError",
            Error::Storage(_) => "StorageError",
        }
    }

    pub fn retry(&self) -> Retry {
        match self {
            Error::MalformedObject(_) | Error::InvalidSpec(_) | Error::InvalidSql(_) => Retry::AfterChange,
            Error::Coordinator(_) | Error::Kube(_) | Error::Storage(_) => Retry::WithBackoff,
        }
    }

    /// True for errors in the spec itself (the user must change it), as opposed to faults.
    pub fn is_invalid_spec(&self) -> bool {
        self.retry() == Retry::AfterChange
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_errors_wait_for_a_change_and_faults_back_off() {
        let sql = Error::InvalidSql(SqlError { message: "bad".into(), line: 2, column: 5, hint: None });
        assert_eq!(sql.reason(), "InvalidSql");
        assert_eq!(sql.retry(), Retry::AfterChange);
        assert!(sql.to_string().contains("line 2, column 5"), "{sql}");
        let down = Error::Coordinator(ControlError::Unreachable {
            url: "http://x".into(),
            detail: "refused".into(),
        });
        assert_eq!(down.retry(), Retry::WithBackoff);
        assert_eq!(down.reason(), "CoordinatorUnavailable");
    }
}
