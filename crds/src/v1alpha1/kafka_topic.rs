//! `KafkaTopic` (short name `kt`): one Kafka topic declared as a Kubernetes resource.
//!
//! This module owns the shape of the resource and the admission-time schema rules (ranges,
//! patterns, the CEL rule that keeps the effective topic name immutable). Semantic checks
//! that need no cluster live in [`super::validation`]; anything that needs Kafka lives in
//! the operator.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Condition;

/// Annotation that lets the cleanup finalizer go without touching Kafka, for when the
/// cluster is unreachable (or gone) and the resource must not hang in Terminating.
pub const SKIP_KAFKA_CLEANUP_ANNOTATION: &str = "millrace.io/skip-kafka-cleanup";

/// A Kafka topic managed by the Millrace operator: created, grown and configured in Kafka
/// to match this spec, and deleted with the resource unless `deletionPolicy: retain`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "millrace.io",
    version = "v1alpha1",
    kind = "KafkaTopic",
    plural = "kafkatopics",
    singular = "kafkatopic",
    shortname = "kt",
    namespaced,
    status = "KafkaTopicStatus",
    derive = "PartialEq",
    doc = "A Kafka topic managed by the Millrace operator.",
    printcolumn(name = "Topic", type_ = "string", json_path = ".status.topicName"),
    printcolumn(name = "Partitions", type_ = "integer", json_path = ".status.partitions"),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".status.replicas"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(
        name = "Reason",
        type_ = "string",
        priority = 1,
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = ::kube::core::Rule::new(
        "(has(self.spec.topicName) ? self.spec.topicName : self.metadata.name) == \
         (has(oldSelf.spec.topicName) ? oldSelf.spec.topicName : oldSelf.metadata.name)"
    )
    .message("the Kafka topic name (spec.topicName, default metadata.name) is immutable; create a new KafkaTopic instead")
)]
#[serde(rename_all = "camelCase")]
pub struct KafkaTopicSpec {
    /// Name of the topic in Kafka. Defaults to `metadata.name`. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 249), regex(pattern = r"^[a-zA-Z0-9._-]+$"))]
    pub topic_name: Option<String>,

    /// Number of partitions. Can grow; Kafka cannot shrink a topic, so a decrease is refused.
    #[schemars(range(min = 1))]
    pub partitions: i32,

    /// Replication factor. Omit it to use the cluster's `default.replication.factor`.
    /// Changing it after creation is refused (it needs a partition reassignment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 32767))]
    pub replicas: Option<i32>,

    /// Topic-level configuration (e.g. `retention.ms`, `cleanup.policy`). The resource owns
    /// the topic's dynamic configuration: keys set outside it are reverted to the broker default.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,

    /// What happens to the Kafka topic when this resource is deleted.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// Which Kafka cluster to use. Omit it for the operator's default cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<KafkaConnection>,
}

/// What deleting a `KafkaTopic` does to the topic in Kafka.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum DeletionPolicy {
    /// Delete the topic (and its data) from Kafka.
    #[default]
    Delete,
    /// Leave the topic in Kafka; only the resource goes.
    Retain,
}

/// A Kafka cluster other than the operator's default one.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaConnection {
    /// Comma-separated `host:port` list.
    #[schemars(length(min = 1))]
    pub bootstrap_servers: String,

    /// A Secret in the resource's namespace whose keys are librdkafka client properties
    /// (e.g. `security.protocol`, `sasl.mechanism`, `sasl.username`, `sasl.password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretReference>,
}

/// A Secret in the same namespace as the referring resource.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct SecretReference {
    #[schemars(length(min = 1))]
    pub name: String,
}

/// What the operator last observed and did.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaTopicStatus {
    /// `Ready`: the topic exists in Kafka as the spec says. When False, `reason` says why
    /// (e.g. `PartitionDecreaseRefused`, `ResourceConflict`, `KafkaUnavailable`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// The `metadata.generation` the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The Kafka topic this resource is bound to, once it was created or adopted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_name: Option<String>,

    /// Partitions observed in Kafka.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<i32>,

    /// Replication factor observed in Kafka.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
}

impl KafkaTopic {
    /// The name the topic has in Kafka: `spec.topicName`, else `metadata.name`.
    /// `None` only for an object without a name, which the API server never returns.
    pub fn kafka_topic_name(&self) -> Option<&str> {
        self.spec.topic_name.as_deref().or(self.metadata.name.as_deref())
    }

    /// True when the skip-cleanup annotation is set to `"true"`.
    pub fn skips_kafka_cleanup(&self) -> bool {
        self.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(SKIP_KAFKA_CLEANUP_ANNOTATION))
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    /// The Ready condition, if any.
    pub fn ready_condition(&self) -> Option<&Condition> {
        self.status.as_ref()?.conditions.iter().find(|c| c.type_ == super::READY)
    }
}
