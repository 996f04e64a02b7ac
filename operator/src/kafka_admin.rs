//! The operator's only door to Kafka: a thin, typed wrapper over rdkafka's `AdminClient`
//! that observes a topic (metadata + configuration) and performs the five admin operations
//! the KafkaTopic controller needs. It decides nothing; the plan phase does.
//!
//! Two limits of rdkafka 0.39 shape this module:
//! - it exposes only the legacy, non-incremental `AlterConfigs`, so [`KafkaAdmin::replace_config`]
//!   sends the complete desired set of topic overrides; the broker resets every dynamic topic
//!   config not in the set to its default. That is exactly the declarative contract of a
//!   KafkaTopic (the resource owns the topic's overrides), so the legacy call is used
//!   deliberately rather than emulating `IncrementalAlterConfigs`.
//! - its metadata API carries no topic id (librdkafka has `DescribeTopics`, but the Rust
//!   binding does not expose it), so the operator does not report one rather than invent it.
//!
//! Errors are split into "Kafka refused this request" (the spec must change) and "Kafka did
//! not answer" (retry later) because the controller's error policy depends on that split.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, ConfigSource, NewPartitions, NewTopic, ResourceSpecifier,
    TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

/// How long one admin request (and one metadata fetch) may take before Kafka counts as unavailable.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// A topic as Kafka reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedTopic {
    pub name: String,
    pub partitions: i32,
    /// The largest replica count over the topic's partitions.
    pub replicas: i32,
    pub config: BTreeMap<String, ObservedConfig>,
}

/// One topic configuration entry as `DescribeConfigs` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedConfig {
    /// `None` for sensitive entries, whose value Kafka never reveals.
    pub value: Option<String>,
    /// Set on the topic itself (a topic override), rather than inherited from the broker.
    pub is_topic_override: bool,
}

/// What went wrong talking to Kafka.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KafkaAdminError {
    /// The client could not even be built: a bad property in the connection Secret.
    #[error("invalid Kafka client configuration: {0}")]
    InvalidClientConfig(String),
    /// Kafka answered and said no; retrying the same request will not help.
    #[error("Kafka refused to {op} topic {topic:?}: {code}")]
    Rejected { op: &'static str, topic: String, code: RDKafkaErrorCode },
    /// Kafka did not answer in time, or answered with a retriable error.
    #[error("Kafka did not complete {op} for topic {topic:?}: {detail}")]
    Unavailable { op: &'static str, topic: String, detail: String },
}

/// Error codes that mean the request itself is wrong (for this topic, on this cluster).
fn is_rejection(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        code,
        InvalidConfig
            | InvalidPartitions
            | InvalidReplicationFactor
            | InvalidReplicaAssignment
            | PolicyViolation
            | InvalidTopic
            | InvalidRequest
            | TopicAuthorizationFailed
            | ClusterAuthorizationFailed
            | TopicDeletionDisabled
            | UnsupportedVersion
    )
}

fn classify(op: &'static str, topic: &str, code: RDKafkaErrorCode) -> KafkaAdminError {
    if is_rejection(code) {
        KafkaAdminError::Rejected { op, topic: topic.to_owned(), code }
    } else {
        KafkaAdminError::Unavailable { op, topic: topic.to_owned(), detail: code.to_string() }
    }
}

fn request_failed(op: &'static str, topic: &str, err: KafkaError) -> KafkaAdminError {
    match err {
        KafkaError::AdminOp(code) | KafkaError::MetadataFetch(code) => classify(op, topic, code),
        other => KafkaAdminError::Unavailable { op, topic: topic.to_owned(), detail: other.to_string() },
    }
}

/// Whether a create found the topic already there (someone else won a race).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    Created,
    AlreadyExists,
}

/// Whether a delete removed the topic or found it already gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    Deleted,
    AlreadyGone,
}

/// An admin connection to one Kafka cluster. Cheap to share: rdkafka clients are thread-safe.
#[derive(Clone)]
pub struct KafkaAdmin {
    client: Arc<AdminClient<DefaultClientContext>>,
}

impl KafkaAdmin {
    /// Builds a client for `bootstrap` with extra librdkafka `properties` (e.g. SASL settings
    /// from a Secret). The connection itself is lazy: this fails only on bad configuration.
    pub fn connect(bootstrap: &str, properties: &BTreeMap<String, String>) -> Result<Self, KafkaAdminError> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", bootstrap)
            .set("client.id", "millrace-operator")
            // Admin clients are producers inside librdkafka, whose default would let a metadata
            // request auto-create the very topic we are checking for.
            .set("allow.auto.create.topics", "false")
            .set("socket.timeout.ms", REQUEST_TIMEOUT.as_millis().to_string());
        for (key, value) in properties {
            config.set(key, value);
        }
        let client = config.create().map_err(|err| KafkaAdminError::InvalidClientConfig(err.to_string()))?;
        Ok(Self { client: Arc::new(client) })
    }

    fn options(validate_only: bool) -> AdminOptions {
        AdminOptions::new()
            .request_timeout(Some(REQUEST_TIMEOUT))
            .operation_timeout(Some(REQUEST_TIMEOUT))
            .validate_only(validate_only)
    }

    /// The topic's partitions, replication factor and configuration, or `None` if it does not exist.
    pub async fn describe_topic(&self, topic: &str) -> Result<Option<ObservedTopic>, KafkaAdminError> {
        let client = Arc::clone(&self.client);
        let name = topic.to_owned();
        // fetch_metadata blocks the calling thread for up to REQUEST_TIMEOUT.
        let metadata =
            tokio::task::spawn_blocking(move || client.inner().fetch_metadata(Some(&name), REQUEST_TIMEOUT))
                .await
                .map_err(|err| KafkaAdminError::Unavailable {
                    op: "describe",
                    topic: topic.to_owned(),
                    detail: format!("metadata task failed: {err}"),
                })?
                .map_err(|err| request_failed("describe", topic, err))?;
        let Some(entry) = metadata.topics().iter().find(|t| t.name() == topic) else {
            return Ok(None);
        };
        if let Some(err) = entry.error() {
            return match RDKafkaErrorCode::from(err) {
                RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic => Ok(None),
                code => Err(classify("describe", topic, code)),
            };
        }
        let partitions = i32::try_from(entry.partitions().len()).unwrap_or(i32::MAX);
        let replicas = entry
            .partitions()
            .iter()
            .map(|p| i32::try_from(p.replicas().len()).unwrap_or(i32::MAX))
            .max()
            .unwrap_or(0);
        let config = self.describe_config(topic).await?;
        Ok(Some(ObservedTopic { name: topic.to_owned(), partitions, replicas, config }))
    }

    async fn describe_config(
        &self,
        topic: &str,
    ) -> Result<BTreeMap<String, ObservedConfig>, KafkaAdminError> {
        let results = self
            .client
            .describe_configs([&ResourceSpecifier::Topic(topic)], &Self::options(false))
            .await
            .map_err(|err| request_failed("describe the configuration of", topic, err))?;
        let mut config = BTreeMap::new();
        for result in results {
            let resource = result.map_err(|code| classify("describe the configuration of", topic, code))?;
            for entry in resource.entries {
                let is_topic_override = entry.source == ConfigSource::DynamicTopic;
                config.insert(entry.name, ObservedConfig { value: entry.value, is_topic_override });
            }
        }
        Ok(config)
    }

    /// Creates the topic; `replicas: None` uses the broker's `default.replication.factor`.
    pub async fn create_topic(
        &self,
        topic: &str,
        partitions: i32,
        replicas: Option<i32>,
        config: &BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<Created, KafkaAdminError> {
        // -1 asks the broker for its default replication factor (KIP-464).
        let mut new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(replicas.unwrap_or(-1)));
        for (key, value) in config {
            new_topic = new_topic.set(key, value);
        }
        let results = self
            .client
            .create_topics([&new_topic], &Self::options(validate_only))
            .await
            .map_err(|err| request_failed("create", topic, err))?;
        for result in results {
            match result {
                Ok(_) => {}
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => return Ok(Created::AlreadyExists),
                Err((_, code)) => return Err(classify("create", topic, code)),
            }
        }
        Ok(Created::Created)
    }

    /// Grows the topic to `total` partitions.
    pub async fn grow_partitions(
        &self,
        topic: &str,
        total: i32,
        validate_only: bool,
    ) -> Result<(), KafkaAdminError> {
        let count = usize::try_from(total)
            .map_err(|_| classify("grow", topic, RDKafkaErrorCode::InvalidPartitions))?;
        let request = NewPartitions::new(topic, count);
        let results = self
            .client
            .create_partitions([&request], &Self::options(validate_only))
            .await
            .map_err(|err| request_failed("grow", topic, err))?;
        for result in results {
            result.map_err(|(_, code)| classify("grow", topic, code))?;
        }
        Ok(())
    }

    /// Makes `config` the topic's complete set of overrides (see the module docs for why this
    /// replaces rather than patches).
    pub async fn replace_config(
        &self,
        topic: &str,
        config: &BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<(), KafkaAdminError> {
        let mut request = AlterConfig::new(ResourceSpecifier::Topic(topic));
        for (key, value) in config {
            request = request.set(key, value);
        }
        let results = self
            .client
            .alter_configs([&request], &Self::options(validate_only))
            .await
            .map_err(|err| request_failed("configure", topic, err))?;
        for result in results {
            result.map_err(|(_, code)| classify("configure", topic, code))?;
        }
        Ok(())
    }

    /// Deletes the topic; a topic that is already gone counts as deleted.
    pub async fn delete_topic(&self, topic: &str) -> Result<Deleted, KafkaAdminError> {
        let results = self
            .client
            .delete_topics(&[topic], &Self::options(false))
            .await
            .map_err(|err| request_failed("delete", topic, err))?;
        for result in results {
            match result {
                Ok(_) => {}
                Err((_, RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic)) => {
                    return Ok(Deleted::AlreadyGone);
                }
                Err((_, code)) => return Err(classify("delete", topic, code)),
            }
        }
        Ok(Deleted::Deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_and_outages_are_told_apart() {
        assert!(matches!(
            classify("configure", "t", RDKafkaErrorCode::InvalidConfig),
            KafkaAdminError::Rejected { .. }
        ));
        assert!(matches!(
            classify("grow", "t", RDKafkaErrorCode::InvalidPartitions),
            KafkaAdminError::Rejected { .. }
        ));
        assert!(matches!(
            classify("create", "t", RDKafkaErrorCode::OperationTimedOut),
            KafkaAdminError::Unavailable { .. }
        ));
        assert!(matches!(
            request_failed("describe", "t", KafkaError::MetadataFetch(RDKafkaErrorCode::AllBrokersDown)),
            KafkaAdminError::Unavailable { .. }
        ));
    }

    #[test]
    fn a_bad_client_property_is_a_configuration_error() {
        let props = BTreeMap::from([("no.such.property".to_owned(), "1".to_owned())]);
        assert!(matches!(
            KafkaAdmin::connect("127.0.0.1:1", &props),
            Err(KafkaAdminError::InvalidClientConfig(_))
        ));
    }
}
