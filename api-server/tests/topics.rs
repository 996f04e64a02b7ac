//! Router tests of `/v1/topics` over the real catalog and the local platform's Kubernetes
//! API: KafkaTopics applied by server-side apply, ETags, quotas, drift repair, deletion, and
//! tenant isolation (tenant B's key on every route of tenant A's resources is 404).
//! Kafka itself is checked by the end-to-end test (e2e/tests/api.rs), with the operator.
#![cfg(feature = "platform")]

mod support;

use std::time::Duration;

use axum::http::Method;
use kube::api::{Patch, PatchParams};
use millrace_api::kubernetes::{FIELD_MANAGER, topics as kafka_topics};
use serde_json::json;
use sqlx::PgPool;
use support::{ADMIN_TOKEN, platform_app, unique, wait_until};

#[sqlx::test]
async fn topics_are_applied_as_kafka_topics_and_updated_with_etags(pool: PgPool) {
    let api = platform_app(pool).await;
    let tenant = unique("topics");
    let key = api.tenant_with_key(&tenant, None).await;
    let created = api
        .post(
            "/v1/topics",
            &key,
            json!({ "name": "orders", "partitions": 3, "config": { "retention.ms": "3600000" } }),
        )
        .await
        .expect(201);
    assert_eq!(created.json["kafkaTopic"], format!("{tenant}.orders"));
    assert_eq!(created.header("etag"), Some("\"1\""));
    assert_eq!(created.header("location"), Some("/v1/topics/orders"));

    let namespace = format!("tenant-{tenant}");
    let resources = kafka_topics(&api.state.kube, &namespace);
    let kt = resources.get("orders").await.expect("the KafkaTopic exists");
    assert_eq!(kt.spec.topic_name.as_deref(), Some(format!("{tenant}.orders").as_str()));
    assert_eq!(kt.spec.partitions, 3);
    assert_eq!(kt.spec.config.get("retention.ms").map(String::as_str), Some("3600000"));
    assert_eq!(kt.metadata.labels.as_ref().and_then(|l| l.get("millrace.io/tenant")), Some(&tenant));
    let managers: Vec<String> =
        kt.metadata.managed_fields.iter().flatten().filter_map(|m| m.manager.clone()).collect();
    assert!(managers.contains(&FIELD_MANAGER.to_owned()), "applied under {FIELD_MANAGER}: {managers:?}");

    api.post("/v1/topics", &key, json!({ "name": "orders", "partitions": 1 }))
        .await
        .problem(409, Some("name"));
    api.post("/v1/topics", &key, json!({ "name": "Orders!", "partitions": 1 }))
        .await
        .problem(422, Some("name"));
    api.post("/v1/topics", &key, json!({ "name": "zero", "partitions": 0 }))
        .await
        .problem(422, Some("partitions"));

    let got = api.get("/v1/topics/orders", &key).await.expect(200);
    assert_eq!(got.json["partitions"], 3);
    assert!(
        ["True", "False", "Unknown"].contains(&got.json["status"]["ready"].as_str().unwrap_or_default()),
        "{}",
        got.text
    );
    let list = api.get("/v1/topics", &key).await.expect(200);
    assert_eq!(list.json["items"][0]["name"], "orders");

    let patch = |body: serde_json::Value, if_match: &str| {
        api.call(Method::PATCH, "/v1/topics/orders", Some(&key)).json(&body).header("if-match", if_match)
    };
    api.send(patch(json!({ "partitions": 5 }), "\"7\"")).await.problem(412, Some("If-Match"));
    let grown = api.send(patch(json!({ "partitions": 5 }), "\"1\"")).await.expect(200);
    assert_eq!(grown.header("etag"), Some("\"2\""));
    assert_eq!(resources.get("orders").await.expect("kt").spec.partitions, 5);
    api.patch("/v1/topics/orders", &key, json!({ "partitions": 2 })).await.problem(422, Some("partitions"));
    api.patch("/v1/topics/orders", &key, json!({ "replicas": 2 })).await.problem(422, Some("replicas"));
    let reconfigured = api
        .patch("/v1/topics/orders", &key, json!({ "config": { "cleanup.policy": "compact" } }))
        .await
        .expect(200);
    assert_eq!(reconfigured.json["config"], json!({ "cleanup.policy": "compact" }));
    assert_eq!(reconfigured.json["partitions"], 5);
    let kt = resources.get("orders").await.expect("kt");
    assert_eq!(kt.spec.config.len(), 1, "config replaced as a whole: {:?}", kt.spec.config);

    // A tenant that owns topics is deleted only with force.
    api.delete(&format!("/v1/tenants/{tenant}"), ADMIN_TOKEN).await.problem(409, Some("force"));
    api.delete("/v1/topics/orders", &key).await.expect(204);
    api.get("/v1/topics/orders", &key).await.problem(404, None);
    api.delete("/v1/topics/orders", &key).await.problem(404, None);
    wait_until("the KafkaTopic to be deleted", Duration::from_secs(60), || async {
        resources.get_opt("orders").await.ok()?.is_none().then_some(())
    })
    .await;
    let audit = api.get("/v1/audit", &key).await.expect(200);
    let actions: Vec<&str> =
        audit.json["items"].as_array().into_iter().flatten().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(
        actions,
        ["tenant.create", "api_key.create", "topic.create", "topic.update", "topic.update", "topic.delete"]
    );
    api.delete(&format!("/v1/tenants/{tenant}"), ADMIN_TOKEN).await.expect(204);
}

#[sqlx::test]
async fn quotas_refuse_before_anything_is_created(pool: PgPool) {
    let api = platform_app(pool).await;
    let tenant = unique("quotas");
    let key = api
        .tenant_with_key(
            &tenant,
            Some(json!({ "maxTopics": 1, "maxPartitions": 4, "maxJobs": 0, "maxSlots": 0 })),
        )
        .await;
    api.post("/v1/topics", &key, json!({ "name": "too-wide", "partitions": 5 }))
        .await
        .problem(403, Some("quota.maxPartitions"));
    api.post("/v1/topics", &key, json!({ "name": "first", "partitions": 3 })).await.expect(201);
    let refused = api
        .post("/v1/topics", &key, json!({ "name": "second", "partitions": 1 }))
        .await
        .problem(403, Some("quota.maxTopics"));
    assert!(refused.json["type"].as_str().is_some_and(|t| t.ends_with("/quota-exceeded")));
    api.patch("/v1/topics/first", &key, json!({ "partitions": 5 }))
        .await
        .problem(403, Some("quota.maxPartitions"));
    api.patch("/v1/topics/first", &key, json!({ "partitions": 4 })).await.expect(200);
    let resources = kafka_topics(&api.state.kube, &format!("tenant-{tenant}"));
    for refused in ["too-wide", "second"] {
        assert!(
            resources.get_opt(refused).await.expect("get").is_none(),
            "{refused} must not exist in Kubernetes"
        );
    }
    let usage = api.get("/v1/quota", &key).await.expect(200);
    assert_eq!(
        (usage.json["usage"]["topics"].as_i64(), usage.json["usage"]["partitions"].as_i64()),
        (Some(1), Some(4))
    );
    api.remove_tenant(&tenant).await;
}

#[sqlx::test]
async fn kafka_topics_deleted_or_edited_by_hand_are_repaired_and_reported(pool: PgPool) {
    let api = platform_app(pool).await;
    let tenant = unique("drift");
    let key = api.tenant_with_key(&tenant, None).await;
    api.post("/v1/topics", &key, json!({ "name": "events", "partitions": 2 })).await.expect(201);
    let resources = kafka_topics(&api.state.kube, &format!("tenant-{tenant}"));

    // Edited by hand (another field manager takes partitions and config).
    let edit = json!({
        "apiVersion": "millrace.io/v1alpha1", "kind": "KafkaTopic",
        "metadata": { "name": "events" },
        "spec": { "partitions": 9, "config": { "retention.ms": "1" } },
    });
    resources
        .patch("events", &PatchParams::apply("kubectl-by-hand").force(), &Patch::Apply(&edit))
        .await
        .expect("hand edit");
    let repaired = api.get("/v1/topics/events", &key).await.expect(200);
    let drift = repaired.json["status"]["drift"].as_str().unwrap_or_default().to_owned();
    assert!(
        drift.contains("edited outside the API") && drift.contains("partitions 9 (want 2)"),
        "{}",
        repaired.text
    );
    assert!(repaired.json["status"]["driftAt"].is_string());
    let kt = resources.get("events").await.expect("kt");
    assert_eq!(kt.spec.partitions, 2);
    assert!(kt.spec.config.is_empty(), "hand-added config removed: {:?}", kt.spec.config);

    // Deleted by hand: re-created on the next read. The operator's finalizer may hold it a moment.
    resources.delete("events", &Default::default()).await.expect("hand delete");
    let recreated = wait_until("the KafkaTopic re-created by a read", Duration::from_secs(60), || async {
        let reply = api.get("/v1/topics/events", &key).await;
        let drift = reply.json["status"]["drift"].as_str().unwrap_or_default().to_owned();
        let kt = resources.get_opt("events").await.ok()??;
        (drift.contains("missing") && kt.metadata.deletion_timestamp.is_none()).then_some(kt)
    })
    .await;
    assert_eq!(recreated.spec.partitions, 2);

    let audit = api.get("/v1/audit?action=topic.drift-repaired", &key).await.expect(200);
    let events = audit.json["items"].as_array().cloned().unwrap_or_default();
    assert!(events.len() >= 2, "both repairs are audited: {}", audit.text);
    assert!(events.iter().all(|e| e["actor"] == "millrace-api"));

    // The periodic resync repairs without a read.
    resources.delete("events", &Default::default()).await.expect("hand delete");
    wait_until("the resync to re-create the KafkaTopic", Duration::from_secs(60), || async {
        millrace_api::topics::sync::resync_once(&api.state).await.ok()?;
        resources.get_opt("events").await.ok()?.filter(|kt| kt.metadata.deletion_timestamp.is_none())
    })
    .await;
    api.remove_tenant(&tenant).await;
}

#[sqlx::test]
async fn another_tenants_resources_are_not_found(pool: PgPool) {
    let api = platform_app(pool).await;
    let (a, b) = (unique("tenant-a"), unique("tenant-b"));
    let key_a = api.tenant_with_key(&a, None).await;
    let key_b = api.tenant_with_key(&b, None).await;
    api.post("/v1/topics", &key_a, json!({ "name": "secret", "partitions": 1 })).await.expect(201);
    let a_keys = api.get("/v1/api-keys", &key_a).await.expect(200);
    let a_key_id = a_keys.json["items"][0]["id"].as_str().expect("id").to_owned();

    // Every route that names one of A's resources: 404 with B's key, and nothing changes.
    api.get("/v1/topics/secret", &key_b).await.problem(404, None);
    api.patch("/v1/topics/secret", &key_b, json!({ "partitions": 2 })).await.problem(404, None);
    api.delete("/v1/topics/secret", &key_b).await.problem(404, None);
    api.delete(&format!("/v1/api-keys/{a_key_id}"), &key_b).await.problem(404, None);
    // Collections show B only its own.
    let topics = api.get("/v1/topics", &key_b).await.expect(200);
    assert_eq!(topics.json["items"], json!([]), "{}", topics.text);
    let keys = api.get("/v1/api-keys", &key_b).await.expect(200);
    assert!(keys.json["items"].as_array().expect("items").iter().all(|k| k["id"] != a_key_id.as_str()));
    let audit = api.get("/v1/audit", &key_b).await.expect(200);
    assert!(
        audit.json["items"].as_array().expect("items").iter().all(|e| e["tenant"] == b.as_str()),
        "{}",
        audit.text
    );
    let quota = api.get("/v1/quota", &key_b).await.expect(200);
    assert_eq!(quota.json["usage"]["topics"], 0);
    // Admin-only routes about A are refused to B outright (it is not an admin), not revealed.
    for path in [format!("/v1/tenants/{a}"), format!("/v1/tenants/{a}/quota")] {
        api.get(&path, &key_b).await.problem(403, None);
    }
    api.delete(&format!("/v1/tenants/{a}"), &key_b).await.problem(403, None);
    api.post(&format!("/v1/tenants/{a}/api-keys"), &key_b, json!({ "name": "x" })).await.problem(403, None);
    // B may use the same topic name: it is its own Kafka topic.
    let own = api.post("/v1/topics", &key_b, json!({ "name": "secret", "partitions": 1 })).await.expect(201);
    assert_eq!(own.json["kafkaTopic"], format!("{b}.secret"));
    // And A's topic is untouched.
    let still = api.get("/v1/topics/secret", &key_a).await.expect(200);
    assert_eq!((still.json["partitions"].as_i64(), still.json["version"].as_i64()), (Some(1), Some(1)));
    api.remove_tenant(&a).await;
    api.remove_tenant(&b).await;
}
