//! The pure heart of the KafkaTopic controller: given a validated resource and what Kafka
//! reports, decide the complete set of changes, or refuse them all. Nothing is applied from
//! here, and a refusal of any part refuses the whole plan, so a topic is never changed
//! half-way (for example partitions grown while a replicas change is rejected).
//!
//! Also pure and here: who owns a topic when several resources name it, and whether the
//! resource still names the topic it was bound to.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use millrace_crds::v1alpha1::KafkaTopic;

use crate::kafka_admin::ObservedTopic;

/// Changes that would be unsafe or impossible to apply; each names its condition reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("partitions cannot decrease from {observed} to {requested}: Kafka cannot remove partitions")]
    PartitionDecrease { observed: i32, requested: i32 },
    #[error(
        "replicas cannot change from {observed} to {requested}: that needs a partition reassignment, \
         which the operator does not perform"
    )]
    ReplicasChange { observed: i32, requested: i32 },
    #[error("the resource is bound to topic {bound:?} and cannot switch to {requested:?}")]
    TopicNameChange { bound: String, requested: String },
}

impl Refusal {
    /// The Ready condition reason (and Event reason) for this refusal.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::PartitionDecrease { .. } => "PartitionDecreaseRefused",
            Refusal::ReplicasChange { .. } => "ReplicasChangeRefused",
            Refusal::TopicNameChange { .. } => "TopicNameChangeRefused",
        }
    }
}

/// A change to the topic's configuration overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigChange {
    /// The complete set of overrides the topic must end up with.
    pub desired: BTreeMap<String, String>,
    /// Keys of `desired` whose current value differs (or that are not set at all).
    pub changed: Vec<String>,
    /// Overrides set outside the resource, to be reset to the broker default.
    pub reverted: Vec<String>,
}

/// What to do in Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    Create { partitions: i32, replicas: Option<i32>, config: BTreeMap<String, String> },
    Update { grow_to: Option<i32>, config: Option<ConfigChange> },
}

impl Plan {
    /// True when Kafka already matches the resource.
    pub fn is_noop(&self) -> bool {
        matches!(self, Plan::Update { grow_to: None, config: None })
    }
}

/// The resource must keep naming the topic recorded in its status when it was bound.
pub fn check_binding(topic: &KafkaTopic, requested: &str) -> Result<(), Refusal> {
    match topic.status.as_ref().and_then(|s| s.topic_name.as_deref()) {
        Some(bound) if bound != requested => {
            Err(Refusal::TopicNameChange { bound: bound.to_owned(), requested: requested.to_owned() })
        }
        _ => Ok(()),
    }
}

/// Plans every change needed to bring `observed` (None: the topic does not exist) to the spec.
/// Returns every refusal at once if any part cannot be applied.
pub fn plan(topic: &KafkaTopic, observed: Option<&ObservedTopic>) -> Result<Plan, Vec<Refusal>> {
    let spec = &topic.spec;
    let Some(observed) = observed else {
        return Ok(Plan::Create {
            partitions: spec.partitions,
            replicas: spec.replicas,
            config: spec.config.clone(),
        });
    };
    let mut refusals = Vec::new();
    if spec.partitions < observed.partitions {
        refusals
            .push(Refusal::PartitionDecrease { observed: observed.partitions, requested: spec.partitions });
    }
    if let Some(requested) = spec.replicas
        && requested != observed.replicas
    {
        refusals.push(Refusal::ReplicasChange { observed: observed.replicas, requested });
    }
    if !refusals.is_empty() {
        return Err(refusals);
    }
    let grow_to = (spec.partitions > observed.partitions).then_some(spec.partitions);
    Ok(Plan::Update { grow_to, config: config_change(&spec.config, observed) })
}

fn config_change(desired: &BTreeMap<String, String>, observed: &ObservedTopic) -> Option<ConfigChange> {
    let changed: Vec<String> = desired
        .iter()
        .filter(|(key, value)| match observed.config.get(*key) {
            // Kafka hides sensitive values; an override that is present is taken as ours.
            Some(entry) if entry.value.is_none() => !entry.is_topic_override,
            Some(entry) => entry.value.as_deref() != Some(value.as_str()),
            // Unknown to the broker: send it and let Kafka judge it.
            None => true,
        })
        .map(|(key, _)| key.clone())
        .collect();
    let reverted: Vec<String> = observed
        .config
        .iter()
        .filter(|(key, entry)| entry.is_topic_override && !desired.contains_key(*key))
        .map(|(key, _)| key.clone())
        .collect();
    if changed.is_empty() && reverted.is_empty() {
        None
    } else {
        Some(ConfigChange { desired: desired.clone(), changed, reverted })
    }
}

/// Identifies a Kafka cluster for conflict detection: the bootstrap list, normalised so that
/// `B:9092,a:9092` and `a:9092, b:9092` name the same cluster.
pub fn cluster_key(bootstrap: &str) -> String {
    let mut servers: Vec<String> =
        bootstrap.split(',').map(|s| s.trim().to_ascii_lowercase()).filter(|s| !s.is_empty()).collect();
    servers.sort();
    servers.dedup();
    servers.join(",")
}

/// A resource that names a topic, as far as ownership is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub namespace: String,
    pub name: String,
    pub created: Option<Time>,
    pub cluster: String,
    pub topic: String,
}

impl Claim {
    fn seniority(&self) -> (bool, Option<&Time>, &str, &str) {
        // A claim without a creation time (never the case from the API server) ranks last.
        (self.created.is_none(), self.created.as_ref(), &self.namespace, &self.name)
    }

    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// The claim that owns `me`'s topic: the oldest by creation time, then namespace/name, among
/// every claim on the same topic of the same cluster. `Ok` when it is `me`.
pub fn owner<'a>(me: &Claim, claims: impl IntoIterator<Item = &'a Claim>) -> Result<(), Claim> {
    let oldest = claims
        .into_iter()
        .filter(|c| c.cluster == me.cluster && c.topic == me.topic)
        .filter(|c| !(c.namespace == me.namespace && c.name == me.name))
        .min_by(|a, b| a.seniority().cmp(&b.seniority()));
    match oldest {
        Some(other) if other.seniority() < me.seniority() => Err(other.clone()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka_admin::ObservedConfig;

    /// A fixture: the resource and what Kafka reports (absent: the topic does not exist).
    #[derive(serde::Deserialize)]
    struct Case {
        resource: KafkaTopic,
        #[serde(default)]
        observed: Option<Observed>,
    }

    #[derive(serde::Deserialize)]
    struct Observed {
        partitions: i32,
        replicas: i32,
        #[serde(default)]
        overrides: BTreeMap<String, String>,
        #[serde(default)]
        defaults: BTreeMap<String, String>,
    }

    fn case(yaml: &str) -> (KafkaTopic, Option<ObservedTopic>) {
        let case: Case = serde_saphyr::from_str(yaml).expect("fixture parses");
        let observed = case.observed.map(|o| {
            let mut config = BTreeMap::new();
            for (k, v) in o.defaults {
                config.insert(k, ObservedConfig { value: Some(v), is_topic_override: false });
            }
            for (k, v) in o.overrides {
                config.insert(k, ObservedConfig { value: Some(v), is_topic_override: true });
            }
            ObservedTopic { name: "t".into(), partitions: o.partitions, replicas: o.replicas, config }
        });
        (case.resource, observed)
    }

    #[test]
    fn a_missing_topic_is_created_with_the_whole_spec() {
        let (topic, observed) = case(include_str!("../../tests/fixtures/plan/create.yaml"));
        assert_eq!(
            plan(&topic, observed.as_ref()),
            Ok(Plan::Create {
                partitions: 3,
                replicas: None,
                config: BTreeMap::from([("retention.ms".into(), "60000".into())])
            })
        );
    }

    #[test]
    fn an_existing_topic_that_matches_is_adopted_without_changes() {
        let (topic, observed) = case(include_str!("../../tests/fixtures/plan/adopt-in-sync.yaml"));
        let plan = plan(&topic, observed.as_ref()).expect("no refusal");
        assert!(plan.is_noop(), "{plan:?}");
    }

    #[test]
    fn growth_config_change_and_drift_are_planned_together() {
        let (topic, observed) = case(include_str!("../../tests/fixtures/plan/grow-and-drift.yaml"));
        assert_eq!(
            plan(&topic, observed.as_ref()),
            Ok(Plan::Update {
                grow_to: Some(6),
                config: Some(ConfigChange {
                    desired: BTreeMap::from([
                        ("cleanup.policy".into(), "compact".into()),
                        ("retention.ms".into(), "60000".into()),
                    ]),
                    changed: vec!["cleanup.policy".into(), "retention.ms".into()],
                    reverted: vec!["segment.bytes".into()],
                })
            })
        );
    }

    #[test]
    fn a_decrease_and_a_replicas_change_refuse_the_whole_plan() {
        let (topic, observed) = case(include_str!("../../tests/fixtures/plan/refused.yaml"));
        let refusals = plan(&topic, observed.as_ref()).expect_err("refused");
        assert_eq!(
            refusals,
            vec![
                Refusal::PartitionDecrease { observed: 4, requested: 2 },
                Refusal::ReplicasChange { observed: 1, requested: 3 },
            ]
        );
        assert_eq!(refusals[0].reason(), "PartitionDecreaseRefused");
        assert_eq!(refusals[1].reason(), "ReplicasChangeRefused");
    }

    #[test]
    fn omitted_replicas_accept_whatever_the_cluster_chose() {
        let (mut topic, observed) = case(include_str!("../../tests/fixtures/plan/refused.yaml"));
        topic.spec.replicas = None;
        topic.spec.partitions = 4;
        assert!(matches!(
            plan(&topic, observed.as_ref()),
            Ok(Plan::Update { grow_to: None, config: Some(_) })
        ));
    }

    #[test]
    fn a_bound_resource_cannot_switch_topics() {
        let (mut topic, _) = case(include_str!("../../tests/fixtures/plan/adopt-in-sync.yaml"));
        assert_eq!(check_binding(&topic, "events"), Ok(()), "not bound yet");
        topic.status = Some(millrace_crds::v1alpha1::KafkaTopicStatus {
            topic_name: Some("events".into()),
            ..Default::default()
        });
        assert_eq!(check_binding(&topic, "events"), Ok(()));
        let refusal = check_binding(&topic, "events-v2").expect_err("refused");
        assert_eq!(refusal.reason(), "TopicNameChangeRefused");
    }

    fn claim(ns: &str, name: &str, created: &str, topic: &str) -> Claim {
        Claim {
            namespace: ns.into(),
            name: name.into(),
            created: Some(Time(created.parse().expect("timestamp"))),
            cluster: cluster_key("127.0.0.1:9092"),
            topic: topic.into(),
        }
    }

    #[test]
    fn the_oldest_claim_owns_a_topic_then_the_name_breaks_ties() {
        let first = claim("a", "x", "2026-01-01T00:00:00Z", "t");
        let second = claim("b", "y", "2026-01-02T00:00:00Z", "t");
        let other_topic = claim("c", "z", "2025-01-01T00:00:00Z", "u");
        let all = [first.clone(), second.clone(), other_topic];
        assert_eq!(owner(&first, &all), Ok(()));
        assert_eq!(owner(&second, &all), Err(first.clone()));

        let twin = claim("a", "w", "2026-01-01T00:00:00Z", "t");
        assert_eq!(owner(&first, [&twin]), Err(twin.clone()), "same second: a/w sorts before a/x");
        assert_eq!(owner(&twin, [&first]), Ok(()));
    }

    #[test]
    fn the_same_topic_on_another_cluster_is_no_conflict() {
        let mine = claim("a", "x", "2026-01-02T00:00:00Z", "t");
        let mut elsewhere = claim("b", "y", "2026-01-01T00:00:00Z", "t");
        elsewhere.cluster = cluster_key("kafka-b:9092");
        assert_eq!(owner(&mine, [&elsewhere]), Ok(()));
        assert_eq!(cluster_key(" B:9092,a:9092"), cluster_key("a:9092,b:9092"));
    }
}
