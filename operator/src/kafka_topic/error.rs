//! Everything that can stop a KafkaTopic reconcile, and what each means for the error policy.
//! Each variant's [`Error::reason`] is at once the Ready condition reason, the Event reason
//! and the `reason` label of the failure metric, so the three always agree.

use std::time::Duration;

use kube::runtime::finalizer;
use millrace_crds::v1alpha1::validation::SpecErrors;

use super::plan::Refusal;
use crate::kafka_admin::KafkaAdminError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the object does not match the KafkaTopic schema: {0}")]
    MalformedObject(String),

    #[error("invalid spec: {0}")]
    InvalidSpec(#[from] SpecErrors),

    #[error("{}; nothing was changed in Kafka", join(.0))]
    Refused(Vec<Refusal>),

    #[error(
        "topic {topic:?} on this Kafka cluster is managed by the older KafkaTopic {owner}; \
         delete one of the two resources"
    )]
    ResourceConflict { topic: String, owner: String },

    #[error("connection Secret {namespace}/{name}: {detail}")]
    ConnectionSecret { namespace: String, name: String, detail: String },

    #[error("{0}")]
    Kafka(#[from] KafkaAdminError),

    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),

    #[error("{0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
}

fn join(refusals: &[Refusal]) -> String {
    refusals.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// How the controller should come back to an object after an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// The spec must change: come back only after a long while, or on the next change.
    AfterChange,
    /// Something outside this object must change (another resource, a Secret): look again
    /// at the normal resync interval, since no watch event will tell us.
    AtResync,
    /// A transient fault: retry with exponential backoff.
    WithBackoff,
}

impl Error {
    /// PascalCase reason for the condition, the Event and the metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::MalformedObject(_) => "MalformedObject",
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::Refused(refusals) => refusals.first().map_or("ChangeRefused", Refusal::reason),
            Error::ResourceConflict { .. } => "ResourceConflict",
            Error::ConnectionSecret { .. } => "ConnectionSecretUnavailable",
            Error::Kafka(KafkaAdminError::InvalidClientConfig(_)) => "InvalidConnection",
            Error::Kafka(KafkaAdminError::Rejected { .. }) => "KafkaRejected",
            Error::Kafka(KafkaAdminError::Unavailable { .. }) => "KafkaUnavailable",
            Error::Kube(_) => "KubernetesApiError",
            Error::Finalizer(inner) => match inner.as_ref() {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e.reason(),
                _ => "FinalizerError",
            },
        }
    }

    pub fn retry(&self) -> Retry {
        match self {
            Error::MalformedObject(_) | Error::InvalidSpec(_) | Error::Refused(_) => Retry::AfterChange,
            Error::Kafka(KafkaAdminError::Rejected { .. }) => Retry::AfterChange,
            // Client properties come from the connection Secret, whose changes no watch reports.
            Error::ResourceConflict { .. }
            | Error::ConnectionSecret { .. }
            | Error::Kafka(KafkaAdminError::InvalidClientConfig(_)) => Retry::AtResync,
            Error::Kafka(KafkaAdminError::Unavailable { .. }) | Error::Kube(_) => Retry::WithBackoff,
            Error::Finalizer(inner) => match inner.as_ref() {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e.retry(),
                finalizer::Error::AddFinalizer(_) | finalizer::Error::RemoveFinalizer(_) => {
                    Retry::WithBackoff
                }
                finalizer::Error::UnnamedObject | finalizer::Error::InvalidFinalizer => Retry::AfterChange,
            },
        }
    }
}

/// Exponential backoff for the `attempt`-th consecutive transient failure (1-based):
/// 1s, 2s, 4s … capped at `max`.
pub fn backoff(attempt: u32, max: Duration) -> Duration {
    let exponent = attempt.saturating_sub(1).min(16);
    Duration::from_secs(1u64 << exponent).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::types::RDKafkaErrorCode;

    #[test]
    fn invalid_specs_wait_and_outages_back_off() {
        let refused = Error::Refused(vec![Refusal::PartitionDecrease { observed: 3, requested: 1 }]);
        assert_eq!(refused.retry(), Retry::AfterChange);
        assert_eq!(refused.reason(), "PartitionDecreaseRefused");
        assert!(refused.to_string().ends_with("nothing was changed in Kafka"));

        let down = Error::Kafka(KafkaAdminError::Unavailable {
            op: "create",
            topic: "t".into(),
            detail: "x".into(),
        });
        assert_eq!(down.retry(), Retry::WithBackoff);
        assert_eq!(down.reason(), "KafkaUnavailable");

        let rejected = Error::Kafka(KafkaAdminError::Rejected {
            op: "configure",
            topic: "t".into(),
            code: RDKafkaErrorCode::InvalidConfig,
        });
        assert_eq!(rejected.retry(), Retry::AfterChange);

        let conflict = Error::ResourceConflict { topic: "t".into(), owner: "a/b".into() };
        assert_eq!(conflict.retry(), Retry::AtResync);
        assert_eq!(conflict.reason(), "ResourceConflict");

        let bad_secret = Error::Kafka(KafkaAdminError::InvalidClientConfig("no.such.property".into()));
        assert_eq!(bad_secret.retry(), Retry::AtResync, "a fixed Secret is picked up at the next resync");
    }

    #[test]
    fn finalizer_errors_keep_the_inner_classification() {
        let inner = Error::Kafka(KafkaAdminError::Unavailable {
            op: "delete",
            topic: "t".into(),
            detail: "x".into(),
        });
        let wrapped = Error::Finalizer(Box::new(finalizer::Error::CleanupFailed(inner)));
        assert_eq!(wrapped.reason(), "KafkaUnavailable");
        assert_eq!(wrapped.retry(), Retry::WithBackoff);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let max = Duration::from_secs(300);
        assert_eq!(backoff(1, max), Duration::from_secs(1));
        assert_eq!(backoff(2, max), Duration::from_secs(2));
        assert_eq!(backoff(5, max), Duration::from_secs(16));
        assert_eq!(backoff(40, max), max);
    }
}
