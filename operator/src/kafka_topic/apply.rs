//! The apply phase: carries out a [`Plan`] against Kafka and reports what changed. When a
//! plan holds two changes (new partitions and new configuration), both are first sent with
//! `validate_only` so that a change Kafka would reject stops the whole plan before anything
//! is applied.

use millrace_crds::v1alpha1::KafkaTopic;

use super::plan::{ConfigChange, Plan};
use crate::kafka_admin::{Created, KafkaAdmin, KafkaAdminError, ObservedTopic};

/// One change made in Kafka, reported as an Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Created { partitions: i32, replicas: Option<i32> },
    Adopted,
    PartitionsGrown { from: i32, to: i32 },
    ConfigUpdated { changed: Vec<String>, reverted: Vec<String> },
}

impl Change {
    /// Event reason and note.
    pub fn event(&self, topic: &str) -> (&'static str, String) {
        match self {
            Change::Created { partitions, replicas } => (
                "TopicCreated",
                format!(
                    "created topic {topic:?} with {partitions} partitions and {}",
                    replicas.map_or("the cluster's default replication factor".to_owned(), |r| format!(
                        "{r} replicas"
                    ))
                ),
            ),
            Change::Adopted => ("TopicAdopted", format!("adopted existing topic {topic:?}")),
            Change::PartitionsGrown { from, to } => {
                ("PartitionsIncreased", format!("grew topic {topic:?} from {from} to {to} partitions"))
            }
            Change::ConfigUpdated { changed, reverted } => {
                let mut parts = Vec::new();
                if !changed.is_empty() {
                    parts.push(format!("set {}", changed.join(", ")));
                }
                if !reverted.is_empty() {
                    parts.push(format!(
                        "reverted overrides made outside the resource: {}",
                        reverted.join(", ")
                    ));
                }
                ("ConfigUpdated", format!("topic {topic:?}: {}", parts.join("; ")))
            }
        }
    }
}

/// The topic as it stands after a successful sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synced {
    pub topic: String,
    pub partitions: i32,
    /// Unknown right after a creation that left the replication factor to the cluster.
    pub replicas: Option<i32>,
    pub changes: Vec<Change>,
}

/// What applying a plan came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Synced(Synced),
    /// The plan said create, and Kafka said the topic already exists: it was created between
    /// the look and the create (by someone else, or by this operator just before, while the
    /// broker's metadata did not show it yet). The caller looks again and plans against what
    /// is there, rather than assume it matches the spec.
    CreateRaced,
}

/// Applies `plan` to `topic_name`. `observed` is what the plan was made from.
pub async fn execute(
    admin: &KafkaAdmin,
    resource: &KafkaTopic,
    topic_name: &str,
    plan: Plan,
    observed: Option<&ObservedTopic>,
) -> Result<Applied, KafkaAdminError> {
    let bound = resource.status.as_ref().and_then(|s| s.topic_name.as_deref()).is_some();
    match (plan, observed) {
        (Plan::Create { partitions, replicas, config }, _) => {
            match admin.create_topic(topic_name, partitions, replicas, &config, false).await? {
                Created::Created => Ok(Applied::Synced(Synced {
                    topic: topic_name.to_owned(),
                    partitions,
                    replicas,
                    changes: vec![Change::Created { partitions, replicas }],
                })),
                Created::AlreadyExists => Ok(Applied::CreateRaced),
            }
        }
        (Plan::Update { grow_to, config }, Some(observed)) => {
            if grow_to.is_some() && config.is_some() {
                apply_update(admin, topic_name, grow_to, config.as_ref(), true).await?;
            }
            apply_update(admin, topic_name, grow_to, config.as_ref(), false).await?;
            let mut changes = Vec::new();
            if !bound {
                changes.push(Change::Adopted);
            }
            if let Some(to) = grow_to {
                changes.push(Change::PartitionsGrown { from: observed.partitions, to });
            }
            if let Some(ConfigChange { changed, reverted, .. }) = config {
                changes.push(Change::ConfigUpdated { changed, reverted });
            }
            Ok(Applied::Synced(Synced {
                topic: topic_name.to_owned(),
                partitions: grow_to.unwrap_or(observed.partitions),
                replicas: Some(observed.replicas),
                changes,
            }))
        }
        // plan() only returns Update for an observed topic; if that ever breaks, treat it
        // as a missing observation and look again.
        (Plan::Update { .. }, None) => Err(KafkaAdminError::Unavailable {
            op: "update",
            topic: topic_name.to_owned(),
            detail: "no observation of the topic to update".into(),
        }),
    }
}

async fn apply_update(
    admin: &KafkaAdmin,
    topic: &str,
    grow_to: Option<i32>,
    config: Option<&ConfigChange>,
    validate_only: bool,
) -> Result<(), KafkaAdminError> {
    if let Some(total) = grow_to {
        admin.grow_partitions(topic, total, validate_only).await?;
    }
    if let Some(change) = config {
        admin.replace_config(topic, &change.desired, validate_only).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_say_what_changed() {
        let (reason, note) = Change::ConfigUpdated {
            changed: vec!["retention.ms".into()],
            reverted: vec!["segment.bytes".into()],
        }
        .event("orders");
        assert_eq!(reason, "ConfigUpdated");
        assert_eq!(
            note,
            "topic \"orders\": set retention.ms; reverted overrides made outside the resource: segment.bytes"
        );
        let (reason, note) = Change::Created { partitions: 3, replicas: None }.event("orders");
        assert_eq!(reason, "TopicCreated");
        assert!(note.contains("3 partitions and the cluster's default replication factor"), "{note}");
    }
}
