//! What the api-server writes to Kubernetes: one labelled Namespace per tenant and the
//! tenant's KafkaTopic and StreamJob resources in it, all by server-side apply under
//! [`FIELD_MANAGER`] (the StreamJob manifest itself is built in `jobs::spec`).
//!
//! Pure builders ([`namespace_manifest`], [`topic_manifest`]) are separate from the calls so
//! that the shape of what is applied is unit-tested without a cluster. This module decides
//! nothing about the catalog; callers hold the transaction.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use millrace_crds::v1alpha1::{DeletionPolicy, KafkaTopic, KafkaTopicSpec, StreamJob};
use serde_json::{Value, json};

/// The field manager of every apply: the api-server owns the fields it sets.
pub const FIELD_MANAGER: &str = "millrace-api";
/// Label on every object the api-server manages, and on tenant namespaces.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "millrace-api");
/// Label naming the tenant an object belongs to.
pub const TENANT_LABEL: &str = "millrace.io/tenant";

/// The namespace a tenant's resources live in.
pub fn namespace_for(tenant: &str) -> String {
    format!("tenant-{tenant}")
}

/// The Kafka topic name of a tenant's topic: Kafka has one namespace for every tenant, so
/// names are prefixed with the tenant's.
pub fn kafka_topic_for(tenant: &str, topic: &str) -> String {
    format!("{tenant}.{topic}")
}

/// What the catalog wants a KafkaTopic to be.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredTopic {
    pub name: String,
    pub kafka_topic: String,
    pub partitions: i32,
    pub replicas: Option<i32>,
    pub config: BTreeMap<String, String>,
}

pub fn namespace_manifest(tenant: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": namespace_for(tenant),
            "labels": { MANAGED_BY.0: MANAGED_BY.1, TENANT_LABEL: tenant },
        },
    })
}

pub fn topic_manifest(tenant: &str, namespace: &str, desired: &DesiredTopic) -> Value {
    let mut spec = json!({
        "topicName": desired.kafka_topic,
        "partitions": desired.partitions,
        "config": desired.config,
    });
    if let Some(replicas) = desired.replicas {
        spec["replicas"] = json!(replicas);
    }
    json!({
        "apiVersion": "millrace.io/v1alpha1",
        "kind": "KafkaTopic",
        "metadata": {
            "name": desired.name,
            "namespace": namespace,
            "labels": { MANAGED_BY.0: MANAGED_BY.1, TENANT_LABEL: tenant },
        },
        "spec": spec,
    })
}

/// How an observed spec differs from the desired one, in words; `None` when it does not.
pub fn spec_drift(desired: &DesiredTopic, observed: &KafkaTopicSpec) -> Option<String> {
    let mut differences = Vec::new();
    if observed.topic_name.as_deref() != Some(desired.kafka_topic.as_str()) {
        differences.push(format!("topicName {:?} (want {:?})", observed.topic_name, desired.kafka_topic));
    }
    if observed.partitions != desired.partitions {
        differences.push(format!("partitions {} (want {})", observed.partitions, desired.partitions));
    }
    if desired.replicas.is_some() && observed.replicas != desired.replicas {
        differences.push(format!("replicas {:?} (want {:?})", observed.replicas, desired.replicas));
    }
    if observed.config != desired.config {
        differences.push(format!("config {:?} (want {:?})", observed.config, desired.config));
    }
    if observed.deletion_policy != DeletionPolicy::Delete {
        differences.push(format!("deletionPolicy {:?} (want Delete)", observed.deletion_policy));
    }
    if observed.connection.is_some() {
        differences.push("a connection override (want none)".into());
    }
    (!differences.is_empty()).then(|| differences.join(", "))
}

fn apply_params() -> PatchParams {
    // force: the catalog is the source of truth, so fields taken over by hand are taken back.
    PatchParams::apply(FIELD_MANAGER).force()
}

/// Creates or updates the tenant's namespace and its labels.
pub async fn apply_namespace(client: &Client, tenant: &str) -> Result<(), kube::Error> {
    let api: Api<Namespace> = Api::all(client.clone());
    api.patch(&namespace_for(tenant), &apply_params(), &Patch::Apply(namespace_manifest(tenant))).await?;
    Ok(())
}

/// Deletes a namespace (and with it every KafkaTopic, whose finalizers delete the topics in
/// Kafka). Already gone is fine.
pub async fn delete_namespace(client: &Client, namespace: &str) -> Result<(), kube::Error> {
    let api: Api<Namespace> = Api::all(client.clone());
    ignore_not_found(api.delete(namespace, &DeleteParams::background()).await.map(|_| ()))
}

pub fn topics(client: &Client, namespace: &str) -> Api<KafkaTopic> {
    Api::namespaced(client.clone(), namespace)
}

pub async fn apply_topic(
    client: &Client,
    tenant: &str,
    namespace: &str,
    desired: &DesiredTopic,
) -> Result<KafkaTopic, kube::Error> {
    let manifest = topic_manifest(tenant, namespace, desired);
    topics(client, namespace).patch(&desired.name, &apply_params(), &Patch::Apply(manifest)).await
}

/// Makes the KafkaTopic exactly `desired`: applies it, then removes what other field
/// managers added (config keys, a connection override, a deletion policy), which an apply
/// alone leaves in place because this manager does not own them.
pub async fn repair_topic(
    client: &Client,
    tenant: &str,
    namespace: &str,
    desired: &DesiredTopic,
) -> Result<KafkaTopic, kube::Error> {
    let applied = apply_topic(client, tenant, namespace, desired).await?;
    if spec_drift(desired, &applied.spec).is_none() {
        return Ok(applied);
    }
    let mut config = serde_json::Map::new();
    for key in applied.spec.config.keys().filter(|k| !desired.config.contains_key(*k)) {
        config.insert(key.clone(), Value::Null);
    }
    let patch = json!({ "spec": { "config": config, "connection": null, "deletionPolicy": null } });
    topics(client, namespace)
        .patch(
            &desired.name,
            &PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..PatchParams::default() },
            &Patch::Merge(patch),
        )
        .await
}

pub async fn get_topic(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<KafkaTopic>, kube::Error> {
    topics(client, namespace).get_opt(name).await
}

/// Every KafkaTopic in the namespace, by name.
pub async fn list_topics(
    client: &Client,
    namespace: &str,
) -> Result<BTreeMap<String, KafkaTopic>, kube::Error> {
    let list = topics(client, namespace).list(&ListParams::default()).await?;
    Ok(list.items.into_iter().map(|t| (t.name_any(), t)).collect())
}

/// Deletes a KafkaTopic; already gone is fine.
pub async fn delete_topic(client: &Client, namespace: &str, name: &str) -> Result<(), kube::Error> {
    ignore_not_found(topics(client, namespace).delete(name, &DeleteParams::default()).await.map(|_| ()))
}

pub fn stream_jobs(client: &Client, namespace: &str) -> Api<StreamJob> {
    Api::namespaced(client.clone(), namespace)
}

/// Applies a StreamJob manifest (from `jobs::spec::stream_job_manifest`).
pub async fn apply_job(
    client: &Client,
    namespace: &str,
    name: &str,
    manifest: Value,
) -> Result<StreamJob, kube::Error> {
    stream_jobs(client, namespace).patch(name, &apply_params(), &Patch::Apply(manifest)).await
}

pub async fn get_job(client: &Client, namespace: &str, name: &str) -> Result<Option<StreamJob>, kube::Error> {
    stream_jobs(client, namespace).get_opt(name).await
}

/// Every StreamJob in the namespace, by name.
pub async fn list_jobs(client: &Client, namespace: &str) -> Result<BTreeMap<String, StreamJob>, kube::Error> {
    let list = stream_jobs(client, namespace).list(&ListParams::default()).await?;
    Ok(list.items.into_iter().map(|j| (j.name_any(), j)).collect())
}

/// Deletes a StreamJob (its children go by owner references); already gone is fine.
pub async fn delete_job(client: &Client, namespace: &str, name: &str) -> Result<(), kube::Error> {
    ignore_not_found(stream_jobs(client, namespace).delete(name, &DeleteParams::default()).await.map(|_| ()))
}

fn ignore_not_found(result: Result<(), kube::Error>) -> Result<(), kube::Error> {
    match result {
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired() -> DesiredTopic {
        DesiredTopic {
            name: "orders".into(),
            kafka_topic: kafka_topic_for("acme", "orders"),
            partitions: 3,
            replicas: None,
            config: BTreeMap::from([("retention.ms".into(), "60000".into())]),
        }
    }

    #[test]
    fn the_topic_manifest_is_a_valid_labelled_kafka_topic() {
        let manifest = topic_manifest("acme", "tenant-acme", &desired());
        let topic: KafkaTopic = serde_json::from_value(manifest.clone()).expect("a KafkaTopic");
        assert_eq!(topic.kafka_topic_name(), Some("acme.orders"));
        assert!(millrace_crds::v1alpha1::validation::validate(&topic).is_ok());
        assert_eq!(manifest["metadata"]["labels"][TENANT_LABEL], "acme");
        assert!(manifest["spec"].get("replicas").is_none());
        assert_eq!(spec_drift(&desired(), &topic.spec), None);
    }

    #[test]
    fn drift_names_what_differs() {
        let mut spec: KafkaTopicSpec =
            serde_json::from_value(topic_manifest("acme", "tenant-acme", &desired())["spec"].clone())
                .expect("spec");
        spec.partitions = 7;
        spec.config.clear();
        let drift = spec_drift(&desired(), &spec).expect("drift");
        assert!(drift.contains("partitions 7 (want 3)") && drift.contains("config"), "{drift}");
    }

    #[test]
    fn tenant_namespaces_are_labelled() {
        let manifest = namespace_manifest("acme");
        assert_eq!(manifest["metadata"]["name"], "tenant-acme");
        assert_eq!(manifest["metadata"]["labels"][MANAGED_BY.0], MANAGED_BY.1);
    }
}
