//! Router tests of `/v1/jobs` and `/v1/sql/validate` over the real catalog and the local
//! platform's Kubernetes API: SQL planned by the engine before anything is stored (line and
//! column on errors), tenancy rules, StreamJobs applied by server-side apply, versions,
//! suspend/resume/rescale/savepoint as spec changes, quotas on jobs and slots, status and
//! savepoints reflected from the StreamJob's status, drift repair, deletion, isolation.
//!
//! No operator runs these StreamJobs here: where a test needs the operator's report, it
//! writes the StreamJob's status itself (as the operator would) and checks that the API
//! reflects it. The operator's own behaviour is tested in e2e/.
#![cfg(feature = "platform")]

mod support;

use std::time::Duration;

use axum::http::Method;
use kube::api::{Api, Patch, PatchParams};
use millrace_api::kubernetes::stream_jobs;
use millrace_crds::v1alpha1::{JobState, StreamJob};
use serde_json::{Value, json};
use sqlx::PgPool;
use support::{ADMIN_TOKEN, platform_app, unique};

/// The seed job (examples/seed/seed-a-rolling-average.sql) over the tenant's own topics.
fn seed_sql(tenant: &str, threshold: i64) -> String {
    format!(
        "CREATE TABLE input (v BIGINT, pt AS PROCTIME()) WITH (connector = 'kafka', \
         topic = '{tenant}.input-topic', format = 'raw', group_id = '{tenant}.seed', scan_startup_mode = 'earliest');\n\
         CREATE TABLE output (avg_v DOUBLE) WITH (connector = 'kafka', topic = '{tenant}.output-topic', format = 'raw');\n\
         INSERT INTO output SELECT AVG(v) OVER (ORDER BY pt ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS avg_v \
         FROM input WHERE v >= {threshold};"
    )
}

async fn stream_job(api: &support::Api, tenant: &str, name: &str) -> StreamJob {
    stream_jobs(&api.state.kube, &format!("tenant-{tenant}")).get(name).await.expect("the StreamJob exists")
}

#[sqlx::test]
async fn sql_is_validated_with_line_and_column_and_the_plan_is_shown(pool: PgPool) {
    let api = platform_app(pool).await;
    let tenant = unique("sqlv");
    let key = api.tenant_with_key(&tenant, None).await;

    let ok = api.post("/v1/sql/validate", &key, json!({ "sql": seed_sql(&tenant, 50) })).await.expect(200);
    assert_eq!(ok.json["sink"], "output");
    assert_eq!(ok.json["outputSchema"][0]["name"], "avg_v");
    assert!(ok.json["plan"].as_str().is_some_and(|p| !p.is_empty()), "{}", ok.text);

    let bad = "CREATE TABLE input (v BIGINT) WITH (connector = 'generator');\nINSERT INTO nowhere SELECT v FROM input;";
    let refused = api.post("/v1/sql/validate", &key, json!({ "sql": bad })).await.problem(422, Some("sql"));
    assert_eq!(refused.json["type"], "https://millrace.dev/problems/invalid-sql");
    assert_eq!(refused.json["line"], 2, "{}", refused.text);
    assert!(refused.json["column"].as_u64().is_some_and(|c| c >= 1), "{}", refused.text);

    let foreign =
        seed_sql(&tenant, 50).replace(&format!("'{tenant}.input-topic'"), "'someone-else.input-topic'");
    let refused =
        api.post("/v1/sql/validate", &key, json!({ "sql": foreign })).await.problem(422, Some("sql"));
    assert!(refused.json["detail"].as_str().is_some_and(|d| d.contains("table input")), "{}", refused.text);
    api.post("/v1/sql/validate", ADMIN_TOKEN, json!({ "sql": "x" })).await.expect(403);
    api.remove_tenant(&tenant).await;
}

#[sqlx::test]
async fn jobs_become_stream_jobs_with_versions_and_lifecycle_actions(pool: PgPool) {
    let api = platform_app(pool).await;
    let tenant = unique("jobs");
    let key = api.tenant_with_key(&tenant, None).await;

    // Nothing is stored when the SQL is wrong.
    let broken = json!({ "name": "seed", "sql": "INSERT INTO nowhere SELECT 1", "parallelism": 1 });
    api.post("/v1/jobs", &key, broken).await.problem(422, Some("sql"));
    api.get("/v1/jobs/seed", &key).await.problem(404, None);

    let body = json!({ "name": "seed", "sql": seed_sql(&tenant, 50), "parallelism": 2, "slotsPerWorker": 2,
                       "checkpointIntervalMs": 2000 });
    let created = api.post("/v1/jobs", &key, body).await.expect(201);
    assert_eq!(created.header("etag"), Some("\"1\""));
    assert_eq!(created.header("location"), Some("/v1/jobs/seed"));
    assert_eq!(created.json["jobVersion"], 1);
    assert_eq!(created.json["status"]["phase"], "Pending");
    let sj = stream_job(&api, &tenant, "seed").await;
    assert_eq!(
        (sj.spec.parallelism, sj.spec.slots_per_worker, sj.spec.state),
        (2, Some(2), JobState::Running)
    );
    assert_eq!(sj.spec.checkpointing.as_ref().and_then(|c| c.interval_ms), Some(2000));
    assert_eq!(
        sj.metadata.labels.as_ref().and_then(|l| l.get("millrace.io/job-version")).map(String::as_str),
        Some("1")
    );
    api.post("/v1/jobs", &key, json!({ "name": "seed", "sql": seed_sql(&tenant, 50), "parallelism": 1 }))
        .await
        .problem(409, Some("name"));
    api.post("/v1/jobs", &key, json!({ "name": "wide", "sql": seed_sql(&tenant, 50), "parallelism": 200 }))
        .await
        .problem(422, Some("parallelism"));

    // An update is a new version; If-Match is honoured.
    let update = |body: Value, if_match: &str| {
        api.call(Method::PATCH, "/v1/jobs/seed", Some(&key)).json(&body).header("if-match", if_match)
    };
    api.send(update(json!({ "sql": seed_sql(&tenant, 60) }), "\"9\"")).await.problem(412, Some("If-Match"));
    let updated = api.send(update(json!({ "sql": seed_sql(&tenant, 60) }), "\"1\"")).await.expect(200);
    assert_eq!(updated.json["jobVersion"], 2);
    assert!(stream_job(&api, &tenant, "seed").await.spec.sql.contains(">= 60"));
    api.patch("/v1/jobs/seed", &key, json!({ "sql": "SELECT" })).await.problem(422, Some("sql"));
    api.patch("/v1/jobs/seed", &key, json!({ "maxParallelism": 64 }))
        .await
        .problem(422, Some("maxParallelism"));

    // Rescale, savepoint, suspend, resume: each a change of the StreamJob's spec.
    let rescaled = api.post("/v1/jobs/seed/rescale", &key, json!({ "parallelism": 4 })).await.expect(200);
    assert_eq!(rescaled.json["jobVersion"], 3);
    assert_eq!(stream_job(&api, &tenant, "seed").await.spec.parallelism, 4);
    let nonce_before = stream_job(&api, &tenant, "seed").await.spec.savepoint_trigger_nonce;
    assert_eq!(nonce_before, None, "no savepoint is asked for before the first trigger");
    api.post("/v1/jobs/seed/savepoints", &key, json!({})).await.expect(202);
    assert_eq!(stream_job(&api, &tenant, "seed").await.spec.savepoint_trigger_nonce, Some(1));
    let suspended = api.post("/v1/jobs/seed/suspend", &key, json!({})).await.expect(200);
    assert_eq!(suspended.json["state"], "suspended");
    assert_eq!(stream_job(&api, &tenant, "seed").await.spec.state, JobState::Suspended);
    api.post("/v1/jobs/seed/savepoints", &key, json!({})).await.problem(409, None);
    let listed = api.get("/v1/jobs?state=suspended", &key).await.expect(200);
    assert_eq!(listed.json["items"].as_array().map(Vec::len), Some(1), "{}", listed.text);
    api.get("/v1/jobs?state=running", &key).await.expect(200).json["items"]
        .as_array()
        .filter(|items| items.is_empty())
        .expect("no running job");
    api.post("/v1/jobs/seed/resume", &key, json!({})).await.expect(200);
    assert_eq!(stream_job(&api, &tenant, "seed").await.spec.state, JobState::Running);

    let versions = api.get("/v1/jobs/seed/versions", &key).await.expect(200);
    let causes: Vec<&str> =
        versions.json.as_array().expect("a list").iter().filter_map(|v| v["cause"].as_str()).collect();
    assert_eq!(causes, ["rescale", "update", "create"]);
    let audit = api.get("/v1/audit", &key).await.expect(200);
    let actions: Vec<&str> =
        audit.json["items"].as_array().expect("events").iter().filter_map(|e| e["action"].as_str()).collect();
    for action in ["job.create", "job.update", "job.rescale", "job.savepoint", "job.suspend", "job.resume"] {
        assert!(actions.contains(&action), "{action} audited: {actions:?}");
    }

    // Another tenant sees none of it.
    let other = unique("jobs-other");
    let other_key = api.tenant_with_key(&other, None).await;
    for (method, path) in [
        (Method::GET, "/v1/jobs/seed"),
        (Method::DELETE, "/v1/jobs/seed"),
        (Method::POST, "/v1/jobs/seed/suspend"),
        (Method::GET, "/v1/jobs/seed/versions"),
        (Method::GET, "/v1/jobs/seed/savepoints"),
    ] {
        let call = api.call(method.clone(), path, Some(&other_key)).json(&json!({}));
        api.send(call).await.problem(404, None);
    }

    // The tenant cannot be deleted while it has jobs, unless forced.
    api.delete(&format!("/v1/tenants/{tenant}"), ADMIN_TOKEN).await.problem(409, Some("force"));
    api.delete("/v1/jobs/seed", &key).await.expect(204);
    let gone = stream_jobs(&api.state.kube, &format!("tenant-{tenant}")).get_opt("seed").await.expect("read");
    assert!(gone.is_none_or(|j| j.metadata.deletion_timestamp.is_some()), "the StreamJob goes with the job");
    api.remove_tenant(&tenant).await;
    api.remove_tenant(&other).await;
}

#[sqlx::test]
async fn jobs_and_slots_quotas_are_enforced_before_anything_is_created(pool: PgPool) {
    let api = platform_app(pool).await;
    let tenant = unique("jobq");
    let quota = json!({ "maxTopics": 5, "maxPartitions": 10, "maxJobs": 2, "maxSlots": 4 });
    let key = api.tenant_with_key(&tenant, Some(quota)).await;
    let job = |name: &str, parallelism: i32| json!({ "name": name, "sql": seed_sql(&tenant, 50), "parallelism": parallelism });

    api.post("/v1/jobs", &key, job("a", 3)).await.expect(201);
    api.post("/v1/jobs", &key, job("b", 2)).await.problem(403, Some("quota.maxSlots"));
    assert!(
        stream_jobs(&api.state.kube, &format!("tenant-{tenant}")).get_opt("b").await.expect("read").is_none()
    );
    api.post("/v1/jobs", &key, job("b", 1)).await.expect(201);
    api.post("/v1/jobs", &key, job("c", 1)).await.problem(403, Some("quota.maxJobs"));
    api.post("/v1/jobs/b/rescale", &key, json!({ "parallelism": 2 }))
        .await
        .problem(403, Some("quota.maxSlots"));
    // A suspended job holds no slots: suspend a, then b may grow; resuming a is refused.
    api.post("/v1/jobs/a/suspend", &key, json!({})).await.expect(200);
    api.post("/v1/jobs/b/rescale", &key, json!({ "parallelism": 2 })).await.expect(200);
    api.post("/v1/jobs/a/resume", &key, json!({})).await.problem(403, Some("quota.maxSlots"));
    let usage = api.get("/v1/quota", &key).await.expect(200);
    assert_eq!(
        (usage.json["usage"]["jobs"].clone(), usage.json["usage"]["slots"].clone()),
        (json!(2), json!(2))
    );
    api.remove_tenant(&tenant).await;
}

#[sqlx::test]
async fn status_and_savepoints_are_reflected_and_drift_is_repaired(pool: PgPool) {
    let api = platform_app(pool).await;
    let tenant = unique("jobst");
    let key = api.tenant_with_key(&tenant, None).await;
    api.post("/v1/jobs", &key, json!({ "name": "seed", "sql": seed_sql(&tenant, 50), "parallelism": 2 }))
        .await
        .expect(201);
    let namespace = format!("tenant-{tenant}");
    let jobs: Api<StreamJob> = stream_jobs(&api.state.kube, &namespace);
    let generation = jobs.get("seed").await.expect("sj").metadata.generation;

    // What the operator would report.
    let status = json!({ "status": {
        "phase": "Running", "parallelism": 2, "workers": "1/1",
        "observedGeneration": generation,
        "conditions": [{ "type": "Ready", "status": "True", "reason": "Running", "message": "the job runs",
                         "observedGeneration": generation, "lastTransitionTime": "2026-12-02T00:00:00Z" }],
        "lastCheckpoint": { "id": 7, "location": "file:///ckpt/chk-7", "completedAt": "2026-12-02T00:00:05Z" },
        "lastSavepoint": { "location": "file:///sp/savepoint-1", "trigger": "manual",
                           "completedAt": "2026-12-02T00:00:03Z", "parallelism": 2 },
    }});
    jobs.patch_status("seed", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("write the status as the operator would");
    let got = api.get("/v1/jobs/seed", &key).await.expect(200);
    assert_eq!(got.json["status"]["phase"], "Running", "{}", got.text);
    assert_eq!(got.json["status"]["ready"], "True");
    assert_eq!(got.json["status"]["workers"], "1/1");
    assert_eq!(got.json["status"]["lastCheckpoint"]["id"], 7);
    assert_eq!(got.json["status"]["lastSavepoint"]["location"], "file:///sp/savepoint-1");
    let savepoints = api.get("/v1/jobs/seed/savepoints", &key).await.expect(200);
    assert_eq!(savepoints.json[0]["trigger"], "manual", "{}", savepoints.text);

    // kubectl scale and a hand-set image are drift: the catalog's spec comes back.
    let edit = json!({ "spec": { "parallelism": 5, "image": "someone/else:1" } });
    jobs.patch("seed", &PatchParams::default(), &Patch::Merge(&edit)).await.expect("edit by hand");
    let repaired = api.get("/v1/jobs/seed", &key).await.expect(200);
    assert!(
        repaired.json["status"]["drift"].as_str().is_some_and(|d| d.contains("parallelism 5")),
        "{}",
        repaired.text
    );
    let sj = jobs.get("seed").await.expect("sj");
    assert_eq!((sj.spec.parallelism, sj.spec.image), (2, None));

    // Deleted by hand: re-created on the next read.
    jobs.delete("seed", &Default::default()).await.expect("delete by hand");
    support::wait_until("the StreamJob to be gone or re-created", Duration::from_secs(30), || async {
        api.get("/v1/jobs/seed", &key).await.expect(200);
        jobs.get_opt("seed").await.ok().flatten().filter(|j| j.metadata.deletion_timestamp.is_none())
    })
    .await;

    // Savepoints outlive the job: a new job under the same name may start from one, and
    // only from the tenant's own.
    api.delete("/v1/jobs/seed", &key).await.expect(204);
    let after = api.get("/v1/jobs/seed/savepoints", &key).await.expect(200);
    assert_eq!(after.json[0]["location"], "file:///sp/savepoint-1");
    let restart = |savepoint: &str| json!({ "name": "seed", "sql": seed_sql(&tenant, 50), "parallelism": 4, "initialSavepoint": savepoint });
    api.post("/v1/jobs", &key, restart("file:///elsewhere")).await.problem(422, Some("initialSavepoint"));
    api.post("/v1/jobs", &key, restart("file:///sp/savepoint-1")).await.expect(201);
    assert_eq!(
        jobs.get("seed").await.expect("sj").spec.initial_savepoint.as_deref(),
        Some("file:///sp/savepoint-1")
    );
    api.remove_tenant(&tenant).await;
}
