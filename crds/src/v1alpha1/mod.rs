//! API version `millrace.io/v1alpha1`: the resource types and the status types they share.
//! Types only, plus pure validation; nothing here performs I/O.

mod condition;
mod kafka_topic;
mod stream_job;
pub mod validation;

pub use condition::{Condition, ConditionStatus, READY};
pub use kafka_topic::{
    DeletionPolicy, KafkaConnection, KafkaTopic, KafkaTopicSpec, KafkaTopicStatus,
    SKIP_KAFKA_CLEANUP_ANNOTATION, SecretReference,
};
pub use stream_job::{
    CheckpointInfo, Checkpointing, DEFAULT_MAX_PARALLELISM, DeadLetterPolicy, DeliveryGuarantee,
    DeploymentRecord, EnvVar, JobPhase, JobState, KeyReference, PendingSavepoint, PodOverrides, PodRestarts,
    Resources, RestartPolicy, RollbackPolicy, SavepointInfo, SavepointPolicy, SavepointTrigger, StreamJob,
    StreamJobSpec, StreamJobStatus, Toleration, UpgradeMode,
};
