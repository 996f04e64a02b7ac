//! The status phase: computes a KafkaTopic's next status from the outcome of a reconcile
//! (pure, unit-tested) and writes it with server-side apply. Only the operator writes status,
//! so it always sends the whole status under one field manager.

use kube::Api;
use kube::api::{Patch, PatchParams};
use millrace_crds::v1alpha1::{Condition, ConditionStatus, KafkaTopic, KafkaTopicStatus, READY};

use super::apply::Synced;
use super::error::Error;

/// The field manager for everything the operator writes.
pub const FIELD_MANAGER: &str = "millrace-operator";

/// Reason of a Ready=True condition.
pub const READY_REASON: &str = "TopicReady";

/// Builds the Ready condition, keeping `lastTransitionTime` when the status did not flip
/// (the Kubernetes convention, so `kubectl wait` and alerts see real transitions only).
pub fn ready_condition(
    previous: Option<&Condition>,
    status: ConditionStatus,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &str,
) -> Condition {
    let last_transition_time = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => now.to_owned(),
    };
    Condition {
        type_: READY.to_owned(),
        status,
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

/// True when the Ready condition says something new (status or reason), i.e. worth an Event.
pub fn is_transition(previous: Option<&Condition>, next: &Condition) -> bool {
    previous.is_none_or(|p| p.status != next.status || p.reason != next.reason)
}

/// The status after a reconcile that ended in `outcome`.
pub fn next_status(topic: &KafkaTopic, outcome: Result<&Synced, &Error>, now: &str) -> KafkaTopicStatus {
    let mut status = topic.status.clone().unwrap_or_default();
    let generation = topic.metadata.generation;
    let previous = topic.ready_condition();
    let ready = match outcome {
        Ok(synced) => {
            status.topic_name = Some(synced.topic.clone());
            status.partitions = Some(synced.partitions);
            if synced.replicas.is_some() {
                status.replicas = synced.replicas;
            }
            let message = format!(
                "topic {:?} has {} partitions{} and the configuration of the spec",
                synced.topic,
                synced.partitions,
                status.replicas.map(|r| format!(", {r} replicas")).unwrap_or_default()
            );
            ready_condition(previous, ConditionStatus::True, READY_REASON, message, generation, now)
        }
        Err(error) => ready_condition(
            previous,
            ConditionStatus::False,
            error.reason(),
            error.to_string(),
            generation,
            now,
        ),
    };
    status.observed_generation = generation;
    status.conditions.retain(|c| c.type_ != READY);
    status.conditions.push(ready);
    status
}

/// Writes `status` as the object's complete status.
pub async fn write(api: &Api<KafkaTopic>, name: &str, status: &KafkaTopicStatus) -> Result<(), kube::Error> {
    let patch = serde_json::json!({
        "apiVersion": "millrace.io/v1alpha1",
        "kind": "KafkaTopic",
        "status": status,
    });
    api.patch_status(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka_topic::plan::Refusal;

    fn topic(yaml: &str) -> KafkaTopic {
        serde_saphyr::from_str(yaml).expect("fixture parses")
    }

    const NOW: &str = "2026-11-25T12:00:00Z";

    #[test]
    fn a_synced_topic_is_ready_and_bound() {
        let t = topic(include_str!("../../tests/fixtures/status/new.yaml"));
        let synced = Synced { topic: "orders".into(), partitions: 3, replicas: Some(1), changes: vec![] };
        let status = next_status(&t, Ok(&synced), NOW);
        assert_eq!(status.topic_name.as_deref(), Some("orders"));
        assert_eq!(status.partitions, Some(3));
        assert_eq!(status.replicas, Some(1));
        assert_eq!(status.observed_generation, Some(2));
        let ready = &status.conditions[0];
        assert_eq!((ready.status, ready.reason.as_str()), (ConditionStatus::True, READY_REASON));
        assert_eq!(ready.last_transition_time, NOW);
        assert_eq!(ready.observed_generation, Some(2));
    }

    #[test]
    fn a_refusal_keeps_the_binding_and_flips_ready_with_the_reason() {
        let t = topic(include_str!("../../tests/fixtures/status/ready.yaml"));
        let error = Error::Refused(vec![Refusal::PartitionDecrease { observed: 3, requested: 1 }]);
        let status = next_status(&t, Err(&error), NOW);
        assert_eq!(status.topic_name.as_deref(), Some("orders"), "binding kept");
        assert_eq!(status.partitions, Some(3), "last observation kept");
        assert_eq!(status.observed_generation, Some(5));
        assert_eq!(status.conditions.len(), 1);
        let ready = &status.conditions[0];
        assert_eq!(ready.status, ConditionStatus::False);
        assert_eq!(ready.reason, "PartitionDecreaseRefused");
        assert!(ready.message.contains("cannot decrease from 3 to 1"), "{}", ready.message);
        assert_eq!(ready.last_transition_time, NOW);
        assert!(is_transition(t.ready_condition(), ready));
    }

    #[test]
    fn staying_ready_keeps_the_transition_time_and_sends_no_event() {
        let t = topic(include_str!("../../tests/fixtures/status/ready.yaml"));
        let synced = Synced { topic: "orders".into(), partitions: 3, replicas: None, changes: vec![] };
        let status = next_status(&t, Ok(&synced), NOW);
        let ready = &status.conditions[0];
        assert_eq!(ready.last_transition_time, "2026-11-01T00:00:00Z");
        assert_eq!(status.replicas, Some(1), "an unknown replica count keeps the last observation");
        assert!(!is_transition(t.ready_condition(), ready));
    }
}
