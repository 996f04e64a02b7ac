//! The control plane end to end: millrace-api runs as a Pod of the pod runner under its
//! least-privilege ServiceAccount (the Helm chart's) next to the operator, and is
//! driven over HTTP through its Service: the admin creates a tenant and a key, the key
//! creates a topic, grows it and deletes it, and every step is checked in Kafka itself.
//! Needs `make up` (KUBECONFIG, KAFKA_BOOTSTRAP, DATABASE_URL, built binaries).
#![cfg(feature = "platform")]

#[allow(dead_code)] // shared with kafka_topic.rs, which uses all of it
#[path = "kafka_topic/support.rs"]
mod support;

#[path = "api/support.rs"]
mod api_support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use reqwest::Method;
use serde_json::json;
use support::{DEADLINE, Kafka, client, unique, wait_until};

#[tokio::test]
async fn a_tenant_creates_grows_and_deletes_a_topic_through_the_api() {
    let api = api_support::ensure_api().await;
    let kafka = Kafka::connect();
    let admin = api.admin_token.clone();
    let tenant = unique("e2e");

    let created = api
        .post("/v1/tenants", &admin, json!({ "name": tenant, "displayName": "End to end" }))
        .await
        .expect(201);
    assert!(created.header("x-request-id").is_some());
    let namespace = created.json["namespace"].as_str().expect("namespace").to_owned();
    let key = api
        .post(&format!("/v1/tenants/{tenant}/api-keys"), &admin, json!({ "name": "e2e" }))
        .await
        .expect(201);
    let key = key.json["key"].as_str().expect("the key, once").to_owned();

    let topic = api
        .post(
            "/v1/topics",
            &key,
            json!({ "name": "clicks", "partitions": 3, "config": { "retention.ms": "3600000" } }),
        )
        .await
        .expect(201);
    let kafka_topic = topic.json["kafkaTopic"].as_str().expect("kafkaTopic").to_owned();
    assert_eq!(kafka_topic, format!("{tenant}.clicks"));
    kafka.wait_for("created with 3 partitions", &kafka_topic, |t| t.is_some_and(|t| t.partitions == 3)).await;
    let in_kafka = kafka.describe(&kafka_topic).await.expect("the topic");
    assert_eq!(in_kafka.overrides.get("retention.ms").map(String::as_str), Some("3600000"));

    // The operator's status is reflected back into the catalog.
    let ready =
        wait_until("the topic Ready with 3 partitions in GET /v1/topics/clicks", DEADLINE, || async {
            let reply = api.get("/v1/topics/clicks", &key).await;
            (reply.json["status"]["ready"] == "True" && reply.json["status"]["partitions"] == 3)
                .then_some(reply)
        })
        .await;
    let etag = ready.header("etag").expect("an ETag").to_owned();

    let grown = api
        .call(
            Method::PATCH,
            "/v1/topics/clicks",
            &key,
            Some(json!({ "partitions": 6 })),
            &[("if-match", &etag)],
        )
        .await;
    grown.expect(200);
    let stale = api
        .call(
            Method::PATCH,
            "/v1/topics/clicks",
            &key,
            Some(json!({ "partitions": 7 })),
            &[("if-match", &etag)],
        )
        .await;
    assert_eq!(stale.expect(412).json["field"], "If-Match");
    kafka.wait_for("grown to 6 partitions", &kafka_topic, |t| t.is_some_and(|t| t.partitions == 6)).await;
    wait_until("GET /v1/topics/clicks to report 6 partitions, Ready", DEADLINE, || async {
        let reply = api.get("/v1/topics/clicks", &key).await;
        (reply.json["status"]["ready"] == "True" && reply.json["status"]["partitions"] == 6).then_some(())
    })
    .await;

    api.call(Method::DELETE, "/v1/topics/clicks", &key, None, &[]).await.expect(204);
    kafka.wait_for("deleted", &kafka_topic, |t| t.is_none()).await;
    api.get("/v1/topics/clicks", &key).await.expect(404);

    let audit = api.get("/v1/audit", &key).await.expect(200);
    let actions: Vec<&str> =
        audit.json["items"].as_array().into_iter().flatten().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(actions, ["tenant.create", "api_key.create", "topic.create", "topic.update", "topic.delete"]);
    let (status, metrics) = api.raw_get("/metrics").await;
    assert!(status.is_success() && metrics.contains("millrace_api_http_requests_total"), "{metrics}");
    let (status, doc) = api.raw_get("/openapi.json").await;
    assert!(status.is_success() && doc.contains("\"/v1/topics/{topic}\""));

    api.call(Method::DELETE, &format!("/v1/tenants/{tenant}"), &admin, None, &[]).await.expect(204);
    let namespaces: Api<Namespace> = Api::all(client().await);
    wait_until("the tenant namespace to be deleted", Duration::from_secs(120), || async {
        namespaces.get_opt(&namespace).await.ok()?.is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_topic_over_quota_is_refused_and_never_reaches_kafka() {
    let api = api_support::ensure_api().await;
    let kafka = Kafka::connect();
    let admin = api.admin_token.clone();
    let tenant = unique("e2e-quota");
    let quota = json!({ "maxTopics": 5, "maxPartitions": 2, "maxJobs": 0, "maxSlots": 0 });
    api.post("/v1/tenants", &admin, json!({ "name": tenant, "quota": quota })).await.expect(201);
    let key = api
        .post(&format!("/v1/tenants/{tenant}/api-keys"), &admin, json!({ "name": "e2e" }))
        .await
        .expect(201);
    let key = key.json["key"].as_str().expect("key").to_owned();
    let refused = api.post("/v1/topics", &key, json!({ "name": "wide", "partitions": 3 })).await.expect(403);
    assert_eq!(refused.json["field"], "quota.maxPartitions");
    assert_eq!(refused.header("content-type"), Some("application/problem+json"));
    assert!(kafka.describe(&format!("{tenant}.wide")).await.is_none());
    api.call(Method::DELETE, &format!("/v1/tenants/{tenant}"), &admin, None, &[]).await.expect(204);
}
