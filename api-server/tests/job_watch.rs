//! The StreamJob watch and the list it feeds, over the real catalog and the local platform's
//! Kubernetes API: a status written to a StreamJob (as the operator would) reaches
//! `GET /v1/jobs` with no read of that job; a StreamJob edited or deleted by hand is repaired
//! by the watch alone; the list is a catalog read that answers (with the reflected status)
//! even when Kubernetes does not.
#![cfg(feature = "platform")]

mod support;

use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use millrace_api::jobs::watch;
use millrace_api::kubernetes::stream_jobs;
use millrace_api::metrics::HttpMetrics;
use millrace_api::{AppState, app};
use millrace_crds::v1alpha1::StreamJob;
use millrace_telemetry::OpsState;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use sqlx::PgPool;
use support::{ADMIN_TOKEN, platform_app, unique, wait_until};

const DEADLINE: Duration = Duration::from_secs(30);

fn generator_sql() -> &'static str {
    "CREATE TABLE input (v BIGINT) WITH (connector = 'generator', rows_per_second = '10');\n\
     CREATE TABLE output (k BIGINT, n BIGINT, PRIMARY KEY (k) NOT ENFORCED) WITH (connector = 'stdout', format = 'json');\n\
     INSERT INTO output SELECT v % 10 AS k, COUNT(*) AS n FROM input GROUP BY v % 10;"
}

/// The list's item for `name`, if it is on the first page.
async fn listed(api: &support::Api, key: &str, name: &str) -> Option<Value> {
    let page = api.get("/v1/jobs", key).await.expect(200).json;
    page["items"].as_array()?.iter().find(|j| j["name"] == name).cloned()
}

#[sqlx::test]
async fn the_watch_reflects_status_into_the_list_and_repairs_drift_without_reads(pool: PgPool) {
    let api = platform_app(pool).await;
    let watcher = tokio::spawn(watch::run(api.state.clone()));
    let tenant = unique("jobwatch");
    let key = api.tenant_with_key(&tenant, None).await;
    let body = json!({ "name": "seed", "sql": generator_sql(), "parallelism": 2, "state": "suspended" });
    api.post("/v1/jobs", &key, body).await.expect(201);
    let jobs: Api<StreamJob> = stream_jobs(&api.state.kube, &format!("tenant-{tenant}"));
    let generation = jobs.get("seed").await.expect("the StreamJob").metadata.generation;

    // What the operator would report; only the list is read from here on.
    let status = json!({ "status": {
        "phase": "Running", "parallelism": 2, "workers": "2/2",
        "observedGeneration": generation,
        "conditions": [{ "type": "Ready", "status": "True", "reason": "Running", "message": "the job runs",
                         "observedGeneration": generation, "lastTransitionTime": "2026-12-02T00:00:00Z" }],
        "lastCheckpoint": { "id": 3, "location": "file:///ckpt/chk-3", "completedAt": "2026-12-02T00:00:05Z" },
        "lastSavepoint": { "location": "file:///sp/savepoint-9", "trigger": "manual",
                           "completedAt": "2026-12-02T00:00:03Z", "parallelism": 2 },
    }});
    jobs.patch_status("seed", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("write the status");
    // The operator of the local platform reconciles this StreamJob too and may write its own
    // status over this one at any moment; what the watch must have seen either way: a
    // reflected status (observedAt) and the savepoint, which the catalog keeps once seen.
    let job = wait_until("the status in GET /v1/jobs", DEADLINE, || async {
        listed(&api, &key, "seed").await.filter(|j| {
            j["status"]["observedAt"].is_string()
                && j["status"]["lastSavepoint"]["location"] == "file:///sp/savepoint-9"
        })
    })
    .await;
    assert_eq!((job["jobVersion"].as_i64(), job["settings"]["parallelism"].as_i64()), (Some(1), Some(2)));
    assert!(job["sql"].as_str().is_some_and(|s| s.contains("GROUP BY")), "{job}");
    // And the list converges on whatever the StreamJob's status is now.
    wait_until("the list to show the StreamJob's current status", DEADLINE, || async {
        let now = jobs.get("seed").await.ok()?.status?;
        let job = listed(&api, &key, "seed").await?;
        (job["status"]["phase"] == format!("{:?}", now.phase)
            && job["status"]["workers"].as_str() == now.workers.as_deref())
        .then_some(())
    })
    .await;

    // Edited by hand: the watch re-applies the catalog's spec, no read needed.
    let edit = json!({ "spec": { "parallelism": 5 } });
    jobs.patch("seed", &PatchParams::default(), &Patch::Merge(&edit)).await.expect("edit by hand");
    wait_until("the watch to undo the edit", DEADLINE, || async {
        (jobs.get("seed").await.ok()?.spec.parallelism == 2).then_some(())
    })
    .await;
    let job = listed(&api, &key, "seed").await.expect("listed");
    assert!(job["status"]["drift"].as_str().is_some_and(|d| d.contains("parallelism 5")), "{job}");

    // Deleted by hand: the watch re-creates it.
    let uid = jobs.get("seed").await.expect("sj").metadata.uid;
    jobs.delete("seed", &Default::default()).await.expect("delete by hand");
    wait_until("the watch to re-create the StreamJob", DEADLINE, || async {
        jobs.get_opt("seed")
            .await
            .ok()
            .flatten()
            .filter(|j| j.metadata.uid != uid && j.metadata.deletion_timestamp.is_none())
    })
    .await;
    let audit = api.get("/v1/audit?action=job.drift-repaired", &key).await.expect(200);
    assert!(audit.json["items"].as_array().is_some_and(|a| a.len() >= 2), "{}", audit.text);

    watcher.abort();
    api.remove_tenant(&tenant).await;
}

#[sqlx::test]
async fn the_list_is_one_catalog_read_that_needs_no_kubernetes(pool: PgPool) {
    let api = platform_app(pool.clone()).await;
    let tenant = unique("joblist");
    let key = api.tenant_with_key(&tenant, None).await;
    for name in ["a", "b", "c"] {
        let body = json!({ "name": name, "sql": generator_sql(), "parallelism": 1, "state": "suspended" });
        api.post("/v1/jobs", &key, body).await.expect(201);
    }
    // The same catalog behind a Kubernetes API that does not answer.
    let config = kube::Config::new("http://127.0.0.1:9".parse().expect("a URL"));
    let unreachable = kube::Client::try_from(config).expect("a client");
    let mut registry = Registry::default();
    let state = AppState::new(pool, unreachable, ADMIN_TOKEN, HttpMetrics::register(&mut registry));
    let offline = support::Api { router: app(state.clone(), OpsState::new(registry)), state };

    let first = offline.get("/v1/jobs?limit=2", &key).await.expect(200);
    let names: Vec<&str> =
        first.json["items"].as_array().expect("items").iter().filter_map(|j| j["name"].as_str()).collect();
    assert_eq!(names, ["a", "b"], "{}", first.text);
    assert_eq!(first.json["items"][0]["status"]["phase"], "Pending", "as created: {}", first.text);
    assert_eq!(first.json["items"][0]["jobVersion"], 1);
    let cursor = first.json["nextCursor"].as_str().expect("a next page");
    let second = offline.get(&format!("/v1/jobs?limit=2&cursor={cursor}"), &key).await.expect(200);
    assert_eq!(second.json["items"][0]["name"], "c", "{}", second.text);
    assert!(second.json.get("nextCursor").is_none(), "{}", second.text);
    let suspended = offline.get("/v1/jobs?state=suspended&phase=Pending", &key).await.expect(200);
    assert_eq!(suspended.json["items"].as_array().map(Vec::len), Some(3), "{}", suspended.text);
    offline.get("/v1/jobs?state=paused", &key).await.problem(400, Some("state"));
    // A single job's read looks at its StreamJob live, so it reports the outage.
    assert!(offline.get("/v1/jobs/a", &key).await.status.is_server_error());

    api.remove_tenant(&tenant).await;
}
