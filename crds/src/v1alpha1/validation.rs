//! Pure semantic validation of a `KafkaTopic` and of a `StreamJob`: everything that can be
//! decided from the object alone, without Kafka or the API server (a job's SQL is the
//! planner's to check, not this module's). The schema already enforces most ranges at
//! admission; this repeats them because objects can predate a schema change and because the
//! operator must never act on a spec it has not checked.
//!
//! Checks that need the observed topic (partition decrease, replicas change) belong to the
//! operator's plan phase, not here.

use std::fmt;

use super::{KafkaConnection, KafkaTopic, StreamJob};

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
    #[error("spec.sql is empty")]
    EmptySql,
    #[error("spec.parallelism must be at least 1, got {0}")]
    ParallelismNotPositive(i32),
    #[error("spec.maxParallelism must be between 1 and 32768, got {0}")]
    MaxParallelismOutOfRange(i32),
    #[error("spec.parallelism {parallelism} exceeds spec.maxParallelism {max}")]
    ParallelismAboveMax { parallelism: i32, max: i32 },
    #[error("spec.slotsPerWorker must be between 1 and 256, got {0}")]
    SlotsOutOfRange(i32),
    #[error("{field} must be at least {min} ms, got {got}")]
    IntervalTooShort { field: &'static str, min: i64, got: i64 },
    #[error("spec.checkpointing.storage {0:?} must be a file:// or s3:// URL")]
    UnsupportedStorage(String),
    #[error("{field} must be at least 1, got {got}")]
    CountNotPositive { field: &'static str, got: i32 },
    #[error("spec.deadLetter.topic: {0}")]
    InvalidDeadLetterTopic(Box<SpecViolation>),
    #[error("spec.kafka.bootstrapServers is empty")]
    EmptyJobBootstrapServers,
    #[error(
        "spec.podOverrides.env[{index}] ({name:?}) needs exactly one of value, secretKeyRef, configMapKeyRef"
    )]
    AmbiguousEnvVar { index: usize, name: String },
    #[error("spec.podOverrides.tolerations[{index}]: {why}")]
    InvalidToleration { index: usize, why: &'static str },
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
        check_connection(connection, SpecViolation::EmptyBootstrapServers, &mut violations);
    }
    if violations.is_empty() { Ok(()) } else { Err(SpecErrors(violations)) }
}

fn check_connection(
    connection: &KafkaConnection,
    empty_servers: SpecViolation,
    out: &mut Vec<SpecViolation>,
) {
    if connection.bootstrap_servers.trim().is_empty() {
        out.push(empty_servers);
    }
    if connection.secret_ref.as_ref().is_some_and(|s| s.name.trim().is_empty()) {
        out.push(SpecViolation::EmptySecretName);
    }
}

/// Validates everything about `job` that needs neither Kafka, the cluster nor the planner.
pub fn validate_stream_job(job: &StreamJob) -> Result<(), SpecErrors> {
    let mut violations = Vec::new();
    let spec = &job.spec;
    if job.metadata.name.is_none() {
        violations.push(SpecViolation::MissingName);
    }
    if spec.sql.trim().is_empty() {
        violations.push(SpecViolation::EmptySql);
    }
    if spec.parallelism < 1 {
        violations.push(SpecViolation::ParallelismNotPositive(spec.parallelism));
    }
    let max = spec.effective_max_parallelism();
    if !(1..=32768).contains(&max) {
        violations.push(SpecViolation::MaxParallelismOutOfRange(max));
    } else if spec.parallelism > max {
        violations.push(SpecViolation::ParallelismAboveMax { parallelism: spec.parallelism, max });
    }
    let slots = spec.effective_slots_per_worker();
    if !(1..=256).contains(&slots) {
        violations.push(SpecViolation::SlotsOutOfRange(slots));
    }
    if let Some(checkpointing) = &spec.checkpointing {
        if let Some(ms) = checkpointing.interval_ms.filter(|ms| *ms < 100) {
            violations.push(SpecViolation::IntervalTooShort {
                field: "spec.checkpointing.intervalMs",
                min: 100,
                got: ms,
            });
        }
        if let Some(storage) = &checkpointing.storage
            && !(storage.starts_with("file:///") || storage.starts_with("s3://"))
        {
            violations.push(SpecViolation::UnsupportedStorage(storage.clone()));
        }
        if let Some(n) = checkpointing.retained.filter(|n| *n < 1) {
            violations.push(SpecViolation::CountNotPositive { field: "spec.checkpointing.retained", got: n });
        }
    }
    if let Some(savepoints) = &spec.savepoints {
        if let Some(ms) = savepoints.interval_ms.filter(|ms| *ms < 1000) {
            violations.push(SpecViolation::IntervalTooShort {
                field: "spec.savepoints.intervalMs",
                min: 1000,
                got: ms,
            });
        }
        if let Some(n) = savepoints.history_size.filter(|n| *n < 1) {
            violations.push(SpecViolation::CountNotPositive { field: "spec.savepoints.historySize", got: n });
        }
    }
    if let Some(topic) = spec.dead_letter.as_ref().and_then(|d| d.topic.as_deref())
        && let Err(v) = check_topic_name(topic)
    {
        violations.push(SpecViolation::InvalidDeadLetterTopic(Box::new(v)));
    }
    if let Some(connection) = &spec.kafka {
        check_connection(connection, SpecViolation::EmptyJobBootstrapServers, &mut violations);
    }
    if let Some(pod) = &spec.pod_overrides {
        for (index, var) in pod.env.iter().enumerate() {
            let sources =
                [var.value.is_some(), var.secret_key_ref.is_some(), var.config_map_key_ref.is_some()];
            if sources.iter().filter(|s| **s).count() != 1 {
                violations.push(SpecViolation::AmbiguousEnvVar { index, name: var.name.clone() });
            }
        }
        for (index, toleration) in pod.tolerations.iter().enumerate() {
            match toleration.operator.as_deref() {
                None | Some("Equal") => {}
                Some("Exists") if toleration.value.is_some() => violations
                    .push(SpecViolation::InvalidToleration { index, why: "operator Exists takes no value" }),
                Some("Exists") => {}
                Some(_) => violations.push(SpecViolation::InvalidToleration {
                    index,
                    why: "operator must be Exists or Equal",
                }),
            }
            if toleration
                .effect
                .as_deref()
                .is_some_and(|e| !matches!(e, "NoSchedule" | "PreferNoSchedule" | "NoExecute"))
            {
                violations.push(SpecViolation::InvalidToleration {
                    index,
                    why: "effect must be NoSchedule, PreferNoSchedule or NoExecute",
                });
            }
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

    fn job(yaml: &str) -> StreamJob {
        serde_saphyr::from_str(yaml).expect("fixture parses as a StreamJob")
    }

    #[test]
    fn the_seed_examples_are_valid_stream_jobs() {
        for yaml in [
            include_str!("../../../examples/seed/seed-a-rolling-average.yaml"),
            include_str!("../../../examples/seed/seed-b-tumbling-average.yaml"),
            include_str!("../../../examples/seed/seed-b-tumbling-average-event-time.yaml"),
        ] {
            let j = job(yaml);
            assert_eq!(validate_stream_job(&j), Ok(()));
            assert_eq!(j.spec.worker_replicas(), 1);
            assert_eq!(j.spec.upgrade_mode, super::super::UpgradeMode::Savepoint);
        }
    }

    #[test]
    fn a_full_stream_job_is_valid_and_sizes_its_workers() {
        let j = job(include_str!("../../tests/fixtures/stream-job-full.yaml"));
        assert_eq!(validate_stream_job(&j), Ok(()));
        assert_eq!(j.spec.parallelism, 5);
        assert_eq!(j.spec.worker_replicas(), 3, "ceil(5 / 2)");
        assert_eq!(j.spec.effective_max_parallelism(), 64);
        assert_eq!(j.spec.upgrade_mode, super::super::UpgradeMode::LastState);
        assert_eq!(j.spec.state, super::super::JobState::Suspended);
        let checkpointing = j.spec.checkpointing.as_ref().expect("fixture sets checkpointing");
        assert_eq!(checkpointing.delivery, super::super::DeliveryGuarantee::AtLeastOnce);
    }

    #[test]
    fn every_stream_job_violation_is_reported_at_once() {
        let j = job(include_str!("../../tests/fixtures/stream-job-invalid.yaml"));
        let errors = validate_stream_job(&j).expect_err("the fixture is invalid");
        assert_eq!(
            errors.0,
            vec![
                SpecViolation::EmptySql,
                SpecViolation::ParallelismAboveMax { parallelism: 9, max: 8 },
                SpecViolation::SlotsOutOfRange(0),
                SpecViolation::IntervalTooShort { field: "spec.checkpointing.intervalMs", min: 100, got: 10 },
                SpecViolation::UnsupportedStorage("hdfs://nn/checkpoints".into()),
                SpecViolation::InvalidDeadLetterTopic(Box::new(SpecViolation::InvalidTopicName {
                    name: "bad topic".into(),
                    why: "only ASCII letters, digits, '.', '_' and '-' are allowed"
                })),
                SpecViolation::AmbiguousEnvVar { index: 0, name: "BOTH".into() },
                SpecViolation::InvalidToleration { index: 0, why: "operator must be Exists or Equal" },
            ]
        );
        assert!(errors.to_string().contains("spec.parallelism 9 exceeds spec.maxParallelism 8"));
    }
}
