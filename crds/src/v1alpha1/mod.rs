//! API version `millrace.io/v1alpha1`: the resource types and the status types they share.
//! Types only, plus pure validation; nothing here performs I/O.

mod condition;
mod kafka_topic;
pub mod validation;

pub use condition::{Condition, ConditionStatus, READY};
pub use kafka_topic::{
    DeletionPolicy, KafkaConnection, KafkaTopic, KafkaTopicSpec, KafkaTopicStatus,
    SKIP_KAFKA_CLEANUP_ANNOTATION, SecretReference,
};
