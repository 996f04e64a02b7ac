//! Router tests over the real catalog: tenants, API keys, quotas, audit, authentication,
//! Idempotency-Key, request-body problems and the start-up schema checks. Each test gets a
//! fresh database from `#[sqlx::test]` (migrations applied) on the local platform's
//! Postgres (DATABASE_URL) and talks to its Kubernetes API (KUBECONFIG) for namespaces.
#![cfg(feature = "platform")]

mod support;

use axum::http::Method;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api as KubeApi;
use millrace_api::db;
use serde_json::json;
use sqlx::PgPool;
use support::{ADMIN_TOKEN, platform_app, unique};

#[sqlx::test]
async fn tenants_are_created_with_a_labelled_namespace_and_managed_by_the_admin(pool: PgPool) {
    let api = platform_app(pool).await;
    let name = unique("acme");
    let created = api
        .post("/v1/tenants", ADMIN_TOKEN, json!({ "name": name, "displayName": "Acme" }))
        .await
        .expect(201);
    assert_eq!(created.json["namespace"], format!("tenant-{name}"));
    assert_eq!(created.header("location"), Some(format!("/v1/tenants/{name}").as_str()));
    assert_eq!(created.json["quota"]["limits"]["maxTopics"], 20);
    let namespaces: KubeApi<Namespace> = KubeApi::all(api.state.kube.clone());
    let ns = namespaces.get(&format!("tenant-{name}")).await.expect("the tenant namespace exists");
    let labels = ns.metadata.labels.unwrap_or_default();
    assert_eq!(labels.get("millrace.io/tenant"), Some(&name));
    assert_eq!(labels.get("app.kubernetes.io/managed-by").map(String::as_str), Some("millrace-api"));

    api.post("/v1/tenants", ADMIN_TOKEN, json!({ "name": name })).await.problem(409, Some("name"));
    api.post("/v1/tenants", ADMIN_TOKEN, json!({ "name": "Bad_Name" })).await.problem(422, Some("name"));
    api.post("/v1/tenants", ADMIN_TOKEN, json!({ "name": "okay-name", "quota": { "maxTopics": -1, "maxPartitions": 1, "maxJobs": 1, "maxSlots": 1 } }))
        .await
        .problem(422, Some("quota.maxTopics"));
    let got = api.get(&format!("/v1/tenants/{name}"), ADMIN_TOKEN).await.expect(200);
    assert_eq!(got.json["displayName"], "Acme");
    api.get("/v1/tenants/does-not-exist", ADMIN_TOKEN).await.problem(404, None);

    // Authentication: no token, a wrong token, a tenant key on admin routes, the admin on tenant routes.
    api.send(api.call(Method::GET, "/v1/tenants", None)).await.problem(401, Some("Authorization"));
    api.get("/v1/tenants", "wrong-token").await.problem(401, Some("Authorization"));
    let key = api
        .post(&format!("/v1/tenants/{name}/api-keys"), ADMIN_TOKEN, json!({ "name": "ci" }))
        .await
        .expect(201);
    let key = key.json["key"].as_str().expect("key").to_owned();
    api.get("/v1/tenants", &key).await.problem(403, None);
    api.get("/v1/topics", ADMIN_TOKEN).await.problem(403, None);

    // Deleting a tenant without topics needs no force, and removes its namespace.
    api.delete(&format!("/v1/tenants/{name}"), ADMIN_TOKEN).await.expect(204);
    api.get(&format!("/v1/tenants/{name}"), ADMIN_TOKEN).await.problem(404, None);
    api.get("/v1/topics", &key).await.problem(401, Some("Authorization"));
    let ns = namespaces.get_opt(&format!("tenant-{name}")).await.expect("get namespace");
    assert!(ns.is_none_or(|ns| ns.metadata.deletion_timestamp.is_some()), "the namespace is being deleted");
}

#[sqlx::test]
async fn tenant_lists_are_paginated_by_cursor(pool: PgPool) {
    let api = platform_app(pool).await;
    let names: Vec<String> = (0..3).map(|i| unique(&format!("page{i}"))).collect();
    for name in &names {
        api.post("/v1/tenants", ADMIN_TOKEN, json!({ "name": name })).await.expect(201);
    }
    let first = api.get("/v1/tenants?limit=2", ADMIN_TOKEN).await.expect(200);
    assert_eq!(first.json["items"].as_array().map(Vec::len), Some(2));
    let cursor = first.json["nextCursor"].as_str().expect("a next page").to_owned();
    let second = api.get(&format!("/v1/tenants?limit=2&cursor={cursor}"), ADMIN_TOKEN).await.expect(200);
    assert_eq!(second.json["items"].as_array().map(Vec::len), Some(1));
    assert!(second.json.get("nextCursor").is_none(), "last page: {}", second.text);
    let seen: Vec<&str> = first.json["items"]
        .as_array()
        .into_iter()
        .chain(second.json["items"].as_array())
        .flatten()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(seen, names.iter().map(String::as_str).collect::<Vec<_>>());
    api.get("/v1/tenants?limit=0", ADMIN_TOKEN).await.problem(400, Some("limit"));
    api.get("/v1/tenants?cursor=garbage", ADMIN_TOKEN).await.problem(400, Some("cursor"));
    api.get("/v1/tenants?limit=abc", ADMIN_TOKEN).await.problem(400, Some("query"));
    for name in &names {
        api.remove_tenant(name).await;
    }
}

#[sqlx::test]
async fn api_keys_are_shown_once_stored_hashed_and_revocable(pool: PgPool) {
    let api = platform_app(pool.clone()).await;
    let name = unique("keys");
    let first = api.tenant_with_key(&name, None).await;
    let created = api.post("/v1/api-keys", &first, json!({ "name": "deploy bot" })).await.expect(201);
    let second = created.json["key"].as_str().expect("the new key").to_owned();
    let prefix = created.json["prefix"].as_str().expect("prefix").to_owned();
    assert!(second.starts_with(&prefix));
    let (stored,): (Vec<u8>,) = sqlx::query_as("SELECT key_hash FROM api_keys WHERE prefix = $1")
        .bind(&prefix)
        .fetch_one(&pool)
        .await
        .expect("row");
    assert_eq!(stored, millrace_api::auth::digest(&second).to_vec(), "only the SHA-256 is stored");
    let (leaks,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM api_keys WHERE name LIKE '%' || $1 || '%' OR prefix = $1")
            .bind(&second)
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(leaks, 0);

    let list = api.get("/v1/api-keys", &second).await.expect(200);
    let items = list.json["items"].as_array().expect("items").clone();
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(|k| k.get("key").is_none()), "secrets are never listed: {}", list.text);
    api.post("/v1/api-keys", &second, json!({ "name": "" })).await.problem(422, Some("name"));

    let id = created.json["id"].as_str().expect("id");
    api.delete(&format!("/v1/api-keys/{id}"), &first).await.expect(204);
    api.get("/v1/api-keys", &second).await.problem(401, Some("Authorization"));
    api.get("/v1/api-keys", &first).await.expect(200);
    api.delete("/v1/api-keys/not-a-uuid", &first).await.problem(404, None);

    let audit = api.get("/v1/audit?action=api_key.revoke", &first).await.expect(200);
    assert_eq!(audit.json["items"][0]["resourceName"], prefix.as_str());
    assert!(audit.json["items"][0]["requestId"].is_string());
    api.remove_tenant(&name).await;
}

#[sqlx::test]
async fn quotas_are_read_and_replaced_with_etags(pool: PgPool) {
    let api = platform_app(pool).await;
    let name = unique("quota");
    let key = api
        .tenant_with_key(
            &name,
            Some(json!({ "maxTopics": 1, "maxPartitions": 4, "maxJobs": 0, "maxSlots": 0 })),
        )
        .await;
    let own = api.get("/v1/quota", &key).await.expect(200);
    assert_eq!(own.json["limits"]["maxPartitions"], 4);
    assert_eq!(own.json["usage"]["topics"], 0);
    let etag = own.header("etag").expect("an ETag").to_owned();
    let path = format!("/v1/tenants/{name}/quota");
    let limits = json!({ "maxTopics": 5, "maxPartitions": 50, "maxJobs": 1, "maxSlots": 2 });
    let stale = api
        .send(api.call(Method::PUT, &path, Some(ADMIN_TOKEN)).json(&limits).header("if-match", "\"999\""))
        .await;
    stale.problem(412, Some("If-Match"));
    let put = api
        .send(api.call(Method::PUT, &path, Some(ADMIN_TOKEN)).json(&limits).header("if-match", &etag))
        .await
        .expect(200);
    assert_eq!(put.json["limits"]["maxTopics"], 5);
    assert_ne!(put.header("etag"), Some(etag.as_str()));
    api.send(api.call(Method::PUT, &path, Some(&key)).json(&limits)).await.problem(403, None);
    api.send(api.call(Method::PUT, &path, Some(ADMIN_TOKEN)).json(&json!({ "maxTopics": 1 })))
        .await
        .problem(422, Some("maxPartitions"));
    let audit =
        api.get(&format!("/v1/audit?tenant={name}&action=quota.update"), ADMIN_TOKEN).await.expect(200);
    assert_eq!(audit.json["items"].as_array().map(Vec::len), Some(1));
    api.get(&format!("/v1/audit?tenant={name}"), &key).await.problem(400, Some("tenant"));
    api.remove_tenant(&name).await;
}

#[sqlx::test]
async fn request_bodies_are_refused_with_problems_naming_the_field(pool: PgPool) {
    let api = platform_app(pool).await;
    let name = unique("bodies");
    let key = api.tenant_with_key(&name, None).await;
    let post = |body: &'static str, content_type: &'static str| {
        api.call(Method::POST, "/v1/topics", Some(&key)).raw(content_type, body)
    };
    api.send(post("{\"name\": \"t\", ", "application/json")).await.problem(400, None);
    api.send(post("{\"name\": \"t\", \"partitions\": \"three\"}", "application/json"))
        .await
        .problem(422, Some("partitions"));
    api.send(post("{\"name\": \"t\", \"partitions\": 1, \"colour\": \"red\"}", "application/json"))
        .await
        .problem(422, Some("colour"));
    api.send(post("{\"partitions\": 1}", "application/json")).await.problem(422, Some("name"));
    api.send(post(
        "{\"name\": \"t\", \"partitions\": 1, \"config\": {\"retention.ms\": 5}}",
        "application/json",
    ))
    .await
    .problem(422, Some("config.retention.ms"));
    api.send(post("{\"name\": \"t\", \"partitions\": 1}", "text/plain")).await.problem(415, None);
    let big =
        format!("{{\"name\": \"t\", \"partitions\": 1, \"config\": {{\"x\": \"{}\"}}}}", "a".repeat(100_000));
    api.send(api.call(Method::POST, "/v1/topics", Some(&key)).raw("application/json", big))
        .await
        .problem(413, None);
    // Text Postgres cannot store (NUL) is the client's mistake, never a 5xx.
    api.post("/v1/api-keys", &key, json!({ "name": "a\u{0}b" })).await.problem(422, Some("name"));
    api.get("/v1/audit?action=%00", &key).await.problem(400, None);
    api.get("/v1/topics/%00", &key).await.problem(400, None);
    api.remove_tenant(&name).await;
}

#[sqlx::test]
async fn idempotency_keys_replay_the_first_response(pool: PgPool) {
    let api = platform_app(pool.clone()).await;
    let name = unique("idem");
    let key = api.tenant_with_key(&name, None).await;
    let create = |body: serde_json::Value, idempotency: &str| {
        api.call(Method::POST, "/v1/api-keys", Some(&key)).json(&body).header("idempotency-key", idempotency)
    };
    let first = api.send(create(json!({ "name": "once" }), "k-1")).await.expect(201);
    let again = api.send(create(json!({ "name": "once" }), "k-1")).await.expect(201);
    assert_eq!(again.header("idempotency-replayed"), Some("true"));
    assert_eq!(first.json, again.json, "the same key, not a second one");
    api.send(create(json!({ "name": "other" }), "k-1")).await.problem(422, Some("Idempotency-Key"));
    let list = api.get("/v1/api-keys", &key).await.expect(200);
    assert_eq!(
        list.json["items"].as_array().map(Vec::len),
        Some(2),
        "one key from the tenant, one from the first POST"
    );
    // A first request that never finished: 409 while recent, taken over after five minutes.
    sqlx::query("UPDATE idempotency_keys SET status = NULL WHERE key = 'k-1'")
        .execute(&pool)
        .await
        .expect("update");
    api.send(create(json!({ "name": "once" }), "k-1")).await.problem(409, Some("Idempotency-Key"));
    sqlx::query("UPDATE idempotency_keys SET created_at = now() - interval '6 minutes' WHERE key = 'k-1'")
        .execute(&pool)
        .await
        .expect("update");
    let taken_over = api.send(create(json!({ "name": "once" }), "k-1")).await.expect(201);
    assert_eq!(taken_over.header("idempotency-replayed"), None);
    assert_ne!(taken_over.json["id"], first.json["id"]);
    // Refusals are replayed too: the client sees the same answer on retry.
    api.send(create(json!({ "name": "" }), "k-2")).await.problem(422, Some("name"));
    api.send(create(json!({ "name": "" }), "k-2")).await.problem(422, Some("name"));
    api.remove_tenant(&name).await;
}

#[sqlx::test]
async fn readiness_needs_the_database_and_kubernetes(pool: PgPool) {
    let api = platform_app(pool).await;
    let readiness = millrace_api::readiness::check(&api.state).await;
    assert!(readiness.ready(), "{readiness:?}");
}

#[sqlx::test]
async fn a_schema_newer_than_the_binary_is_refused(pool: PgPool) {
    assert!(db::unknown_applied_versions(&pool, &db::MIGRATOR).await.expect("query").is_empty());
    db::migrate(&pool).await.expect("re-running known migrations is a no-op");
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99990101000000, 'from the future', true, '\\x00', 1)",
    )
    .execute(&pool)
    .await
    .expect("record a migration this binary does not have");
    let err = db::migrate(&pool).await.expect_err("refused");
    assert!(
        matches!(err, db::CatalogError::SchemaNewerThanBinary { ref versions } if versions == &[99990101000000]),
        "{err}"
    );
    assert!(err.to_string().contains("newer millrace-api"), "{err}");
}

#[tokio::test]
async fn an_unreachable_database_is_reported_without_its_password() {
    let started = std::time::Instant::now();
    let err =
        db::connect("postgres://millrace:hunter2@127.0.0.1:1/millrace", std::time::Duration::from_secs(2))
            .await
            .expect_err("nothing listens on port 1");
    let message = err.to_string();
    assert!(
        message.contains("cannot reach the catalog database") && !message.contains("hunter2"),
        "{message}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}
