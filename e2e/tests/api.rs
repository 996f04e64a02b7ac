//! The control plane end to end: millrace-api runs as a Pod of the pod runner under its
//! least-privilege ServiceAccount (the Helm chart's) next to the operator, and is
//! driven over HTTP through its Service: the admin creates a tenant and a key, the key
//! creates a topic, grows it and deletes it, and every step is checked in Kafka itself; then
//! the key runs the seed job through the API (topics, job, upgrade, suspend, resume,
//! savepoint, delete) with its output checked in Kafka.
//! Needs `make up` (KUBECONFIG, KAFKA_BOOTSTRAP, DATABASE_URL, built binaries).
#![cfg(feature = "platform")]

#[allow(dead_code)] // shared with kafka_topic.rs, which uses all of it
#[path = "kafka_topic/support.rs"]
mod support;

#[path = "api/support.rs"]
mod api_support;

// For the API Pod's log in failure messages.
mod common;

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use reqwest::Method;
use serde_json::json;
use support::{DEADLINE, Kafka, client, unique, wait_until};

/// Running a job takes Pods starting, registering and checkpointing: more than the
/// operator's own deadline.
const JOB_DEADLINE: Duration = Duration::from_secs(240);

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

/// The seed pipeline (a) of examples/seed on a tenant's own topics and consumer group.
fn tenant_seed_sql(tenant: &str, threshold: i64) -> String {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/seed/seed-a-rolling-average.sql");
    let sql = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(sql.contains("WHERE v >= 50"), "the seed job filters at 50");
    sql.replace("'input-topic-dlq'", &format!("'{tenant}.input-topic-dlq'"))
        .replace("'input-topic'", &format!("'{tenant}.input-topic'"))
        .replace("'output-topic'", &format!("'{tenant}.output-topic'"))
        .replace("group_id = 'millrace-seed-a'", &format!("group_id = '{tenant}.seed-a'"))
        .replace("WHERE v >= 50", &format!("WHERE v >= {threshold}"))
}

/// Deterministic integers in 0..100.
fn integers(n: usize, seed: i64) -> Vec<i64> {
    (0..n as i64).map(|i| (i * 37 + seed * 11) % 100).collect()
}

/// The whole self-service path: a tenant's key creates its topics and the seed job over REST;
/// the operator runs it (coordinator and worker Pods) and the output in Kafka is right; an
/// update (threshold 50 → 60) is a new job version rolled out through a savepoint with the
/// rolling average's state kept; suspend, resume and a savepoint show in the job's status;
/// delete removes the StreamJob. Every status read goes through the API.
#[tokio::test]
async fn a_tenant_runs_upgrades_suspends_and_deletes_the_seed_job_through_the_api() {
    let api = api_support::ensure_api().await;
    let admin = api.admin_token.clone();
    let tenant = unique("e2e-job");
    api.post("/v1/tenants", &admin, json!({ "name": tenant })).await.expect(201);
    let key = api
        .post(&format!("/v1/tenants/{tenant}/api-keys"), &admin, json!({ "name": "e2e" }))
        .await
        .expect(201);
    let key = key.json["key"].as_str().expect("the key, once").to_owned();
    for topic in ["input-topic", "output-topic", "input-topic-dlq"] {
        api.post("/v1/topics", &key, json!({ "name": topic, "partitions": 1 })).await.expect(201);
        wait_until(&format!("topic {topic} Ready"), DEADLINE, || async {
            (api.get(&format!("/v1/topics/{topic}"), &key).await.json["status"]["ready"] == "True")
                .then_some(())
        })
        .await;
    }
    let (input, output) = (format!("{tenant}.input-topic"), format!("{tenant}.output-topic"));
    let job_status = |what: &'static str, probe: fn(&serde_json::Value) -> bool| {
        let (api, key) = (api.clone(), key.clone());
        async move {
            wait_until(what, JOB_DEADLINE, || async {
                let reply = api.get("/v1/jobs/seed", &key).await;
                probe(&reply.json).then_some(reply.json)
            })
            .await
        }
    };
    let running =
        |job: &serde_json::Value| job["status"]["phase"] == "Running" && job["status"]["ready"] == "True";

    let body = json!({ "name": "seed", "sql": tenant_seed_sql(&tenant, 50), "parallelism": 1, "checkpointIntervalMs": 1000 });
    api.post("/v1/jobs", &key, body).await.expect(201);
    job_status("the job Running (GET /v1/jobs/seed)", running).await;
    let mut kept: Vec<i64> = Vec::new();
    let mut feed = |batch: &[i64], threshold: i64| {
        support::produce_integers(&input, batch);
        kept.extend(batch.iter().copied().filter(|v| *v >= threshold));
        kept.windows(3).map(|w| w.iter().sum::<i64>() as f64 / 3.0).collect::<Vec<f64>>()
    };
    let check = |got: Vec<f64>, want: &[f64], when: &str| {
        assert_eq!(got.len(), want.len(), "{when}: got {got:?}\nwant {want:?}");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() < 1e-9, "{when}: output {i}: got {g}, want {w}");
        }
    };
    let want = feed(&integers(40, 1), 50);
    check(support::consume_floats(&output, want.len(), JOB_DEADLINE).await, &want, "first version");

    // Threshold 50 → 60: version 2, through a savepoint; the last kept values carry over.
    let updated = api
        .call(Method::PATCH, "/v1/jobs/seed", &key, Some(json!({ "sql": tenant_seed_sql(&tenant, 60) })), &[])
        .await
        .expect(200);
    assert_eq!(updated.json["jobVersion"], 2);
    job_status("version 2 Running", |job| {
        job["jobVersion"] == 2
            && job["status"]["phase"] == "Running"
            && job["status"]["ready"] == "True"
            && job["status"]["lastSavepoint"]["trigger"] == "upgrade"
    })
    .await;
    let want = feed(&integers(40, 2), 60);
    check(support::consume_floats(&output, want.len(), JOB_DEADLINE).await, &want, "after the upgrade");

    // Suspend (a savepoint, no Pods), resume from it, then a manual savepoint.
    api.post("/v1/jobs/seed/suspend", &key, json!({})).await.expect(200);
    job_status("Suspended", |job| job["status"]["phase"] == "Suspended").await;
    let want = feed(&integers(40, 3), 60);
    api.post("/v1/jobs/seed/resume", &key, json!({})).await.expect(200);
    job_status("Running again", running).await;
    check(
        support::consume_floats(&output, want.len(), JOB_DEADLINE).await,
        &want,
        "after suspend and resume",
    );
    api.post("/v1/jobs/seed/savepoints", &key, json!({})).await.expect(202);
    job_status("a manual savepoint", |job| job["status"]["lastSavepoint"]["trigger"] == "manual").await;
    let savepoints = api.get("/v1/jobs/seed/savepoints", &key).await.expect(200);
    let triggers: Vec<&str> =
        savepoints.json.as_array().expect("a list").iter().filter_map(|s| s["trigger"].as_str()).collect();
    for trigger in ["manual", "suspend", "upgrade"] {
        assert!(triggers.contains(&trigger), "{trigger} savepoint recorded: {triggers:?}");
    }

    api.call(Method::DELETE, "/v1/jobs/seed", &key, None, &[]).await.expect(204);
    let jobs: Api<millrace_crds::v1alpha1::StreamJob> =
        Api::namespaced(client().await, &format!("tenant-{tenant}"));
    wait_until("the StreamJob to be deleted", DEADLINE, || async {
        jobs.get_opt("seed").await.ok()?.is_none().then_some(())
    })
    .await;
    api.call(Method::DELETE, &format!("/v1/tenants/{tenant}?force=true"), &admin, None, &[])
        .await
        .expect(204);
}
