//! Pure semantic validation of a `KafkaTopic`: everything that can be decided from the
//! object alone, without Kafka or the API server. The schema already enforces most ranges at
//! admission; this repeats them because objects can predate a schema change and because the
//! operator must never act on a spec it has not checked.
//!
//! Checks that need the observed topic (partition decrease, replicas change) belong to the
//! operator's plan phase, not here.

use std::fmt;

use super::KafkaTopic;

/// Kafka's limit on topic name length.
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// One reason a spec is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecViolation {
    #[error("the resource has no name")]
    MissingName,
    #[error("topic name {name:?} is invalid: {why}")]
    InvalidTopicName { name: String, why: &'static str },
    #[error("spec.partitions must be at least 1, got {0}")]
    PartitionsNotPositive(i32),
    #[error("spec.replicas must be between 1 and 32767, got {0}")]
    ReplicasOutOfRange(i32),
    #[error("spec.config has an empty key")]
    EmptyConfigKey,
    #[error("spec.connection.bootstrapServers is empty")]
    EmptyBootstrapServers,
    #[error("spec.connection.secretRef.name is empty")]
    EmptySecretName,
}

/// Every violation found in one spec, so the user sees them all at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecErrors(pub Vec<SpecViolation>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join("; "))
    }
}

impl std::error::Error for SpecErrors {}

/// Checks a Kafka topic name the way the broker does (`Topic.validate`).
pub fn check_topic_name(name: &str) -> Result<(), SpecViolation> {
    let invalid = |why| Err(SpecViolation::InvalidTopicName { name: name.to_owned(), why });
    if name.is_empty() {
        return invalid("it is empty");
    }
    if name == "." || name == ".." {
        return invalid("\".\" and \"..\" are reserved");
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return invalid("it is longer than 249 characters");
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
        return invalid("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

/// Validates everything about `topic` that needs neither Kafka nor the cluster.
pub fn validate(topic: &KafkaTopic) -> Result<(), SpecErrors> {
    let mut violations = Vec::new();
    match topic.kafka_topic_name() {
        None => violations.push(SpecViolation::MissingName),
        Some(name) => {
            if let Err(v) = check_topic_name(name) {
                violations.push(v);
            }
        }
    }
    let spec = &topic.spec;
    if spec.partitions < 1 {
        violations.push(SpecViolation::PartitionsNotPositive(spec.partitions));
    }
    if let Some(replicas) = spec.replicas
        && !(1..=i32::from(i16::MAX)).contains(&replicas)
    {
        violations.push(SpecViolation::ReplicasOutOfRange(replicas));
    }
    if spec.config.keys().any(|k| k.trim().is_empty()) {
        violations.push(SpecViolation::EmptyConfigKey);
    }
    if let Some(connection) = &spec.connection {
        if connection.bootstrap_servers.trim().is_empty() {
            violations.push(SpecViolation::EmptyBootstrapServers);
        }
        if connection.secret_ref.as_ref().is_some_and(|s| s.name.trim().is_empty()) {
            violations.push(SpecViolation::EmptySecretName);
        }
    }
    if violations.is_empty() { Ok(()) } else { Err(SpecErrors(violations)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(yaml: &str) -> KafkaTopic {
        serde_saphyr::from_str(yaml).expect("fixture parses as a KafkaTopic")
    }

    #[test]
    fn a_minimal_topic_is_valid_and_takes_its_name_from_metadata() {
        let t = topic(include_str!("../../tests/fixtures/minimal.yaml"));
        assert_eq!(validate(&t), Ok(()));
        assert_eq!(t.kafka_topic_name(), Some("orders"));
        assert_eq!(t.spec.deletion_policy, super::super::DeletionPolicy::Delete);
        assert!(!t.skips_kafka_cleanup());
    }

    #[test]
    fn a_full_topic_is_valid_and_uses_its_topic_name() {
        let t = topic(include_str!("../../tests/fixtures/full.yaml"));
        assert_eq!(validate(&t), Ok(()));
        assert_eq!(t.kafka_topic_name(), Some("payments.v1"));
        assert_eq!(t.spec.replicas, Some(1));
        assert_eq!(t.spec.config.get("retention.ms").map(String::as_str), Some("3600000"));
        assert_eq!(t.spec.deletion_policy, super::super::DeletionPolicy::Retain);
        assert!(t.skips_kafka_cleanup());
    }

    #[test]
    fn every_violation_is_reported_at_once() {
        let t = topic(include_str!("../../tests/fixtures/invalid.yaml"));
        let errors = validate(&t).expect_err("the fixture is invalid");
        assert_eq!(
            errors.0,
            vec![
                SpecViolation::InvalidTopicName {
                    name: "bad name!".into(),
                    why: "only ASCII letters, digits, '.', '_' and '-' are allowed"
                },
                SpecViolation::PartitionsNotPositive(0),
                SpecViolation::ReplicasOutOfRange(0),
                SpecViolation::EmptyConfigKey,
                SpecViolation::EmptyBootstrapServers,
            ]
        );
        assert!(errors.to_string().contains("spec.partitions must be at least 1, got 0"));
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(check_topic_name("a.b_c-D9").is_ok());
        assert!(check_topic_name("").is_err());
        assert!(check_topic_name("..").is_err());
        assert!(check_topic_name(&"x".repeat(250)).is_err());
        assert!(check_topic_name(&"x".repeat(249)).is_ok());
        assert!(check_topic_name("ü").is_err());
    }
}
