//! KafkaTopic behaviour end to end: the operator runs as a Pod of the pod runner under its
//! least-privilege ServiceAccount (the Helm chart's, charts/millrace), each test in its own
//! namespace, and every outcome is checked in Kafka itself. Needs `make up` (KUBECONFIG,
//! KAFKA_BOOTSTRAP, the CRDs and a built millrace-operator).
#![cfg(feature = "platform")]

#[path = "kafka_topic/support.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use millrace_crds::v1alpha1::{ConditionStatus, SKIP_KAFKA_CLEANUP_ANNOTATION};
use serde_json::json;
use support::{DEADLINE, FIELD_MANAGER, Kafka, TestNamespace, ready_message, unique, wait_until};

fn overrides(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

#[tokio::test]
async fn a_topic_is_created_with_its_partitions_and_config() {
    let ns = TestNamespace::create("kt-create").await;
    let kafka = Kafka::connect();
    let topic = unique("kt-created");
    ns.apply(
        "orders",
        json!({ "topicName": topic, "partitions": 3, "config": { "retention.ms": "3600000" } }),
    )
    .await;

    let ready = ns.wait_ready("orders", ConditionStatus::True, Some("TopicReady")).await;
    let status = ready.status.clone().expect("status");
    assert_eq!(status.topic_name.as_deref(), Some(topic.as_str()));
    assert_eq!(status.partitions, Some(3));
    assert_eq!(status.observed_generation, ready.metadata.generation);
    assert!(ready.metadata.finalizers.iter().flatten().any(|f| f == "kafkatopics.millrace.io/cleanup"));

    let in_kafka = kafka.describe(&topic).await.expect("the topic exists in Kafka");
    assert_eq!(in_kafka.partitions, 3);
    assert_eq!(in_kafka.overrides, overrides(&[("retention.ms", "3600000")]));
    // replicas were left to the cluster (1 on the single local broker); status catches up.
    let with_replicas = wait_until("status.replicas to be reported", DEADLINE, || async {
        let t = ns.topics().get("orders").await.ok()?;
        t.status.as_ref()?.replicas.map(|_| t)
    })
    .await;
    assert_eq!(with_replicas.status.and_then(|s| s.replicas), Some(1));

    // The creation is on record as an Event, written under the operator's own identity.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(ns.client.clone(), &ns.name);
    wait_until("a TopicCreated Event", DEADLINE, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.iter().any(|e| e.reason.as_deref() == Some("TopicCreated")).then_some(())
    })
    .await;
    ns.delete().await;
    kafka.wait_for("deleted with its namespace", &topic, |t| t.is_none()).await;
}

#[tokio::test]
async fn partitions_grow_and_config_changes_are_applied() {
    let ns = TestNamespace::create("kt-grow").await;
    let kafka = Kafka::connect();
    let topic = unique("kt-grown");
    ns.apply(
        "events",
        json!({ "topicName": topic, "partitions": 2, "config": { "retention.ms": "3600000" } }),
    )
    .await;
    ns.wait_ready("events", ConditionStatus::True, None).await;

    ns.apply(
        "events",
        json!({ "topicName": topic, "partitions": 5, "config": { "retention.ms": "7200000", "cleanup.policy": "compact" } }),
    )
    .await;
    let ready = ns.wait_ready("events", ConditionStatus::True, None).await;
    assert_eq!(ready.status.and_then(|s| s.partitions), Some(5));
    let in_kafka = kafka.describe(&topic).await.expect("topic");
    assert_eq!(in_kafka.partitions, 5);
    assert_eq!(in_kafka.overrides, overrides(&[("cleanup.policy", "compact"), ("retention.ms", "7200000")]));

    // Dropping a key from the spec resets it to the broker default.
    ns.apply(
        "events",
        json!({ "topicName": topic, "partitions": 5, "config": { "cleanup.policy": "compact" } }),
    )
    .await;
    ns.wait_ready("events", ConditionStatus::True, None).await;
    kafka
        .wait_for("retention.ms override removed", &topic, |t| {
            t.is_some_and(|t| t.overrides == overrides(&[("cleanup.policy", "compact")]))
        })
        .await;
    ns.delete().await;
}

#[tokio::test]
async fn config_drift_made_in_kafka_is_reverted() {
    let ns = TestNamespace::create("kt-drift").await;
    let kafka = Kafka::connect();
    let topic = unique("kt-drift");
    ns.apply(
        "drifting",
        json!({ "topicName": topic, "partitions": 1, "config": { "retention.ms": "3600000" } }),
    )
    .await;
    ns.wait_ready("drifting", ConditionStatus::True, None).await;

    kafka.set_overrides(&topic, &[("retention.ms", "1000"), ("segment.bytes", "1048576")]).await;
    assert_eq!(
        kafka.describe(&topic).await.expect("topic").overrides,
        overrides(&[("retention.ms", "1000"), ("segment.bytes", "1048576")]),
        "the drift took effect in Kafka"
    );
    // The operator's periodic resync (10 s in the platform manifest) puts the spec back.
    kafka
        .wait_for("the spec's configuration back", &topic, |t| {
            t.is_some_and(|t| t.overrides == overrides(&[("retention.ms", "3600000")]))
        })
        .await;
    ns.delete().await;
}

#[tokio::test]
async fn a_partition_decrease_and_a_replicas_change_are_refused_and_nothing_is_applied() {
    let ns = TestNamespace::create("kt-refuse").await;
    let kafka = Kafka::connect();
    let topic = unique("kt-refused");
    ns.apply("fixed", json!({ "topicName": topic, "partitions": 3 })).await;
    ns.wait_ready("fixed", ConditionStatus::True, None).await;

    // Three changes at once; two are impossible, so the valid config change must not land either.
    ns.apply(
        "fixed",
        json!({ "topicName": topic, "partitions": 1, "replicas": 2, "config": { "retention.ms": "1000" } }),
    )
    .await;
    let refused = ns.wait_ready("fixed", ConditionStatus::False, Some("PartitionDecreaseRefused")).await;
    let message = ready_message(&refused);
    assert!(message.contains("partitions cannot decrease from 3 to 1"), "{message}");
    assert!(message.contains("replicas cannot change from 1 to 2"), "{message}");
    assert!(message.contains("nothing was changed in Kafka"), "{message}");
    let in_kafka = kafka.describe(&topic).await.expect("topic");
    assert_eq!(in_kafka.partitions, 3);
    assert!(in_kafka.overrides.is_empty(), "no half-applied config: {:?}", in_kafka.overrides);

    // A replicas change alone has its own reason.
    ns.apply("fixed", json!({ "topicName": topic, "partitions": 3, "replicas": 2 })).await;
    ns.wait_ready("fixed", ConditionStatus::False, Some("ReplicasChangeRefused")).await;

    // Fixing the spec makes it Ready again, and the valid part is applied.
    ns.apply("fixed", json!({ "topicName": topic, "partitions": 4, "config": { "retention.ms": "1000" } }))
        .await;
    ns.wait_ready("fixed", ConditionStatus::True, None).await;
    let in_kafka = kafka.describe(&topic).await.expect("topic");
    assert_eq!(in_kafka.partitions, 4);
    assert_eq!(in_kafka.overrides, overrides(&[("retention.ms", "1000")]));
    ns.delete().await;
}

#[tokio::test]
async fn the_topic_name_cannot_change() {
    let ns = TestNamespace::create("kt-rename").await;
    let kafka = Kafka::connect();
    let topic = unique("kt-named");
    ns.apply("named", json!({ "topicName": topic, "partitions": 1 })).await;
    ns.wait_ready("named", ConditionStatus::True, None).await;

    let renamed = format!("{topic}-renamed");
    for spec in [json!({ "topicName": renamed, "partitions": 1 }), json!({ "partitions": 1 })] {
        let object = json!({
            "apiVersion": "millrace.io/v1alpha1", "kind": "KafkaTopic",
            "metadata": { "name": "named", "namespace": ns.name }, "spec": spec,
        });
        let err = ns
            .topics()
            .patch("named", &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&object))
            .await
            .expect_err("the API server refuses a topic name change");
        assert!(err.to_string().contains("topic name"), "{err}");
    }
    assert!(kafka.describe(&renamed).await.is_none(), "no topic under the new name");
    assert_eq!(kafka.describe(&topic).await.expect("original topic").partitions, 1);
    ns.delete().await;
}

#[tokio::test]
async fn an_existing_topic_is_adopted_and_its_overrides_follow_the_spec() {
    let ns = TestNamespace::create("kt-adopt").await;
    let kafka = Kafka::connect();
    let topic = unique("kt-adopted");
    kafka.create(&topic, 2, &[("segment.bytes", "1048576")]).await;

    ns.apply(
        "adopted",
        json!({ "topicName": topic, "partitions": 2, "config": { "retention.ms": "3600000" } }),
    )
    .await;
    let ready = ns.wait_ready("adopted", ConditionStatus::True, None).await;
    assert_eq!(ready.status.and_then(|s| s.topic_name), Some(topic.clone()));
    let in_kafka = kafka.describe(&topic).await.expect("topic");
    assert_eq!(in_kafka.partitions, 2);
    assert_eq!(in_kafka.overrides, overrides(&[("retention.ms", "3600000")]));
    ns.delete().await;
    kafka.wait_for("an adopted topic is deleted like any other", &topic, |t| t.is_none()).await;
}

#[tokio::test]
async fn a_second_resource_for_the_same_topic_is_a_conflict_and_changes_nothing() {
    let first = TestNamespace::create("kt-owner").await;
    let second = TestNamespace::create("kt-rival").await;
    let kafka = Kafka::connect();
    let topic = unique("kt-contested");
    first.apply("owner", json!({ "topicName": topic, "partitions": 2 })).await;
    first.wait_ready("owner", ConditionStatus::True, None).await;

    second
        .apply("rival", json!({ "topicName": topic, "partitions": 6, "config": { "retention.ms": "1000" } }))
        .await;
    let rival = second.wait_ready("rival", ConditionStatus::False, Some("ResourceConflict")).await;
    let message = ready_message(&rival);
    assert!(message.contains(&format!("{}/owner", first.name)), "names the owner: {message}");
    assert_eq!(rival.status.and_then(|s| s.topic_name), None, "the rival is never bound");
    let in_kafka = kafka.describe(&topic).await.expect("topic");
    assert_eq!((in_kafka.partitions, in_kafka.overrides.len()), (2, 0), "the rival changed nothing");

    // Deleting the rival must not delete the owner's topic.
    second.delete().await;
    assert_eq!(kafka.describe(&topic).await.expect("topic survives the rival").partitions, 2);
    first.wait_ready("owner", ConditionStatus::True, None).await;
    first.delete().await;
    kafka.wait_for("deleted with its owner", &topic, |t| t.is_none()).await;
}

#[tokio::test]
async fn deletion_deletes_retain_keeps_and_an_already_deleted_topic_is_fine() {
    let ns = TestNamespace::create("kt-delete").await;
    let kafka = Kafka::connect();
    let (deleted, retained, gone) = (unique("kt-del"), unique("kt-keep"), unique("kt-gone"));
    ns.apply("deleted", json!({ "topicName": deleted, "partitions": 1 })).await;
    ns.apply("retained", json!({ "topicName": retained, "partitions": 1, "deletionPolicy": "retain" })).await;
    ns.apply("gone", json!({ "topicName": gone, "partitions": 1 })).await;
    for name in ["deleted", "retained", "gone"] {
        ns.wait_ready(name, ConditionStatus::True, None).await;
    }
    kafka.delete(&gone).await;

    let api = ns.topics();
    for name in ["deleted", "retained", "gone"] {
        api.delete(name, &DeleteParams::default()).await.expect("delete KafkaTopic");
    }
    for name in ["deleted", "retained", "gone"] {
        let what = format!("KafkaTopic {name} to be gone (finalizer released)");
        wait_until(&what, DEADLINE, || async { api.get_opt(name).await.ok()?.is_none().then_some(()) }).await;
    }
    kafka.wait_for("deleted with its resource", &deleted, |t| t.is_none()).await;
    assert!(kafka.describe(&retained).await.is_some(), "deletionPolicy retain keeps the topic");
    kafka.wait_for("still gone", &gone, |t| t.is_none()).await;
    kafka.delete(&retained).await;
    ns.delete().await;
}

#[tokio::test]
async fn the_skip_cleanup_annotation_releases_a_resource_whose_kafka_is_unreachable() {
    let ns = TestNamespace::create("kt-unreachable").await;
    let kafka = Kafka::connect();
    let topic = unique("kt-stranded");
    ns.apply("stranded", json!({ "topicName": topic, "partitions": 1 })).await;
    ns.wait_ready("stranded", ConditionStatus::True, None).await;

    // Point the resource at a cluster nobody listens on: it can neither sync nor clean up.
    let nowhere =
        json!({ "topicName": topic, "partitions": 1, "connection": { "bootstrapServers": "127.0.0.1:1" } });
    ns.apply("stranded", nowhere).await;
    ns.wait_ready("stranded", ConditionStatus::False, Some("KafkaUnavailable")).await;

    let api = ns.topics();
    api.delete("stranded", &DeleteParams::default()).await.expect("delete KafkaTopic");
    let blocked = wait_until("the failed cleanup to be reported", DEADLINE, || async {
        let t = api.get_opt("stranded").await.ok()??;
        ready_message(&t).contains(SKIP_KAFKA_CLEANUP_ANNOTATION).then_some(t)
    })
    .await;
    assert!(blocked.metadata.deletion_timestamp.is_some(), "still held by the finalizer");

    let annotate = json!({ "metadata": { "annotations": { SKIP_KAFKA_CLEANUP_ANNOTATION: "true" } } });
    api.patch("stranded", &PatchParams::default(), &Patch::Merge(&annotate)).await.expect("annotate");
    wait_until("the annotated resource to be gone", DEADLINE, || async {
        api.get_opt("stranded").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(kafka.describe(&topic).await.is_some(), "the topic was left untouched");
    kafka.delete(&topic).await;
    ns.delete().await;
}

#[tokio::test]
async fn the_operator_pod_serves_reconcile_metrics() {
    let ns = TestNamespace::create("kt-metrics").await;
    ns.apply("counted", json!({ "topicName": unique("kt-counted"), "partitions": 1 })).await;
    ns.wait_ready("counted", ConditionStatus::True, None).await;

    let url = match std::env::var("MILLRACE_E2E_OPERATOR_METRICS") {
        Ok(url) => url,
        Err(_) => {
            let pods: Api<Pod> = Api::namespaced(ns.client.clone(), "millrace-system");
            let list = pods
                .list(&ListParams::default().labels("app.kubernetes.io/name=millrace-operator"))
                .await
                .expect("list operator pods");
            let ip = list
                .items
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .find_map(|p| p.status.as_ref()?.pod_ip.clone())
                .expect("a running operator Pod with an IP");
            format!("http://{ip}:9100/metrics")
        }
    };
    let body = wait_until("the operator's /metrics", Duration::from_secs(30), || async {
        reqwest::get(&url).await.ok()?.text().await.ok()
    })
    .await;
    assert!(body.contains("millrace_operator_reconciles_total{controller=\"kafkatopic\"}"), "{body}");
    assert!(body.contains("millrace_operator_reconcile_duration_seconds_bucket"), "{body}");
    ns.delete().await;
}

#[tokio::test]
async fn two_operator_replicas_share_one_lease_and_hand_over() {
    support::ensure_operator().await;
    if std::env::var("MILLRACE_E2E_OPERATOR").is_ok_and(|v| v == "external") {
        panic!("leader election is tested on the operator Deployment; unset MILLRACE_E2E_OPERATOR");
    }
    let client = support::client().await;
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), "millrace-system");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "millrace-system");
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), "millrace-system");
    let scale = |replicas: i32| {
        let deployments = deployments.clone();
        async move {
            let patch = json!({ "spec": { "replicas": replicas } });
            deployments
                .patch("millrace-operator", &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .expect("scale the operator");
        }
    };
    let ready_pods = || async {
        let list = pods
            .list(&ListParams::default().labels("app.kubernetes.io/name=millrace-operator"))
            .await
            .ok()?;
        let ready: Vec<String> = list
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        Some(ready)
    };
    let holder = || async { leases.get_opt("millrace-operator").await.ok()??.spec?.holder_identity };

    scale(2).await;
    let both = wait_until("two Ready operator Pods", DEADLINE, || async {
        ready_pods().await.filter(|p| p.len() == 2)
    })
    .await;
    let leader = wait_until("a Lease holder", DEADLINE, || async { holder().await }).await;
    assert!(both.contains(&leader), "the Lease is held by one of the replicas: {leader} not in {both:?}");

    // Another replica takes over when the leader goes, and reconciling continues. The
    // leader releases the Lease on shutdown, so either the standby or the Pod the
    // ReplicaSet starts in the leader's place may win it: whichever is first to ask.
    pods.delete(&leader, &DeleteParams::default()).await.expect("delete the leader Pod");
    let successor = wait_until("another replica to take the Lease", DEADLINE, || async {
        holder().await.filter(|h| *h != leader)
    })
    .await;
    let alive = wait_until("the new holder among the Ready Pods", DEADLINE, || async {
        ready_pods().await.filter(|p| p.contains(&successor))
    })
    .await;
    assert!(!alive.contains(&leader), "the deleted leader is gone: {alive:?}");
    scale(1).await;
    let ns = TestNamespace::create("kt-leader").await;
    ns.apply("after-handover", json!({ "topicName": unique("kt-handover"), "partitions": 1 })).await;
    ns.wait_ready("after-handover", ConditionStatus::True, None).await;
    ns.delete().await;
}

#[tokio::test]
async fn a_config_kafka_rejects_is_reported_and_nothing_is_created() {
    let ns = TestNamespace::create("kt-rejected").await;
    let kafka = Kafka::connect();
    let topic = unique("kt-rejected");
    ns.apply(
        "rejected",
        json!({ "topicName": topic, "partitions": 1, "config": { "no.such.setting": "1" } }),
    )
    .await;
    let rejected = ns.wait_ready("rejected", ConditionStatus::False, Some("KafkaRejected")).await;
    assert!(
        ready_message(&rejected).contains("InvalidConfig"),
        "Kafka's error code: {}",
        ready_message(&rejected)
    );
    assert!(kafka.describe(&topic).await.is_none(), "no topic with a half-applied config");

    ns.apply(
        "rejected",
        json!({ "topicName": topic, "partitions": 1, "config": { "retention.ms": "1000" } }),
    )
    .await;
    ns.wait_ready("rejected", ConditionStatus::True, None).await;
    assert_eq!(
        kafka.describe(&topic).await.expect("topic").overrides,
        overrides(&[("retention.ms", "1000")])
    );
    ns.delete().await;
}

#[tokio::test]
async fn a_connection_override_takes_client_properties_from_its_secret() {
    use k8s_openapi::api::core::v1::Secret;

    let ns = TestNamespace::create("kt-connection").await;
    let kafka = Kafka::connect();
    let topic = unique("kt-override");
    let spec = json!({
        "topicName": topic, "partitions": 2,
        "connection": { "bootstrapServers": support::bootstrap(), "secretRef": { "name": "kafka-client" } },
    });
    ns.apply("override", spec).await;
    let waiting =
        ns.wait_ready("override", ConditionStatus::False, Some("ConnectionSecretUnavailable")).await;
    assert!(ready_message(&waiting).contains("kafka-client: not found"), "{}", ready_message(&waiting));
    assert!(kafka.describe(&topic).await.is_none());

    // The operator reads the Secret with its own ServiceAccount (get on secrets) at the next resync.
    let secrets: Api<Secret> = Api::namespaced(ns.client.clone(), &ns.name);
    let secret = |properties: serde_json::Value| {
        serde_json::from_value::<Secret>(
            json!({ "metadata": { "name": "kafka-client" }, "stringData": properties }),
        )
        .expect("secret")
    };
    let client_properties = json!({ "security.protocol": "PLAINTEXT", "client.id": "millrace-e2e-override" });
    secrets.create(&Default::default(), &secret(client_properties)).await.expect("create Secret");
    ns.wait_ready("override", ConditionStatus::True, None).await;
    assert_eq!(kafka.describe(&topic).await.expect("created through the override").partitions, 2);

    // A property librdkafka does not know makes the connection itself invalid.
    let bad = json!({ "metadata": { "name": "kafka-client" }, "stringData": { "no.such.property": "1" } });
    secrets.patch("kafka-client", &PatchParams::default(), &Patch::Merge(&bad)).await.expect("update Secret");
    ns.wait_ready("override", ConditionStatus::False, Some("InvalidConnection")).await;
    let fixed = json!({ "data": { "no.such.property": null } });
    secrets.patch("kafka-client", &PatchParams::default(), &Patch::Merge(&fixed)).await.expect("fix Secret");
    ns.wait_ready("override", ConditionStatus::True, None).await;

    // Deleting the namespace deletes the Secret too, possibly before the KafkaTopic's cleanup
    // runs: the operator still deletes the topic with the connection it last used.
    ns.delete().await;
    kafka.wait_for("deleted through the override", &topic, |t| t.is_none()).await;
}
