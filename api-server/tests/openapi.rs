//! The OpenAPI document is valid 3.1, lists exactly the API's routes, and every operation it
//! lists is served by the router (an unauthenticated call reaches the handler's auth check:
//! 401, never the 404/405 fallbacks). Needs no platform: the database and Kubernetes clients
//! point at closed ports and are never reached.

mod support;

use std::collections::BTreeSet;

use axum::http::Method;
use millrace_api::metrics::HttpMetrics;
use millrace_api::{AppState, app};
use millrace_telemetry::OpsState;
use prometheus_client::registry::Registry;
use serde_json::Value;
use support::Api;

/// Every operation of the `/v1` API. A route added without documenting it, or documented
/// without serving it, fails this test.
const ROUTES: &[(&str, &str)] = &[
    ("get", "/v1/api-keys"),
    ("post", "/v1/api-keys"),
    ("delete", "/v1/api-keys/{id}"),
    ("get", "/v1/audit"),
    ("get", "/v1/jobs"),
    ("post", "/v1/jobs"),
    ("delete", "/v1/jobs/{job}"),
    ("get", "/v1/jobs/{job}"),
    ("patch", "/v1/jobs/{job}"),
    ("post", "/v1/jobs/{job}/rescale"),
    ("post", "/v1/jobs/{job}/resume"),
    ("get", "/v1/jobs/{job}/savepoints"),
    ("post", "/v1/jobs/{job}/savepoints"),
    ("post", "/v1/jobs/{job}/suspend"),
    ("get", "/v1/jobs/{job}/versions"),
    ("get", "/v1/quota"),
    ("post", "/v1/sql/validate"),
    ("get", "/v1/tenants"),
    ("post", "/v1/tenants"),
    ("delete", "/v1/tenants/{tenant}"),
    ("get", "/v1/tenants/{tenant}"),
    ("post", "/v1/tenants/{tenant}/api-keys"),
    ("get", "/v1/tenants/{tenant}/quota"),
    ("put", "/v1/tenants/{tenant}/quota"),
    ("get", "/v1/topics"),
    ("post", "/v1/topics"),
    ("delete", "/v1/topics/{topic}"),
    ("get", "/v1/topics/{topic}"),
    ("patch", "/v1/topics/{topic}"),
];

fn offline_api() -> Api {
    let pool = sqlx::PgPool::connect_lazy("postgres://nobody:none@127.0.0.1:1/none").expect("a lazy pool");
    let config = kube::Config::new("http://127.0.0.1:1".parse().expect("a URL"));
    let kube = kube::Client::try_from(config).expect("a client");
    let mut registry = Registry::default();
    let state = AppState::new(pool, kube, support::ADMIN_TOKEN, HttpMetrics::register(&mut registry));
    Api { router: app(state.clone(), OpsState::new(registry)), state }
}

#[tokio::test]
async fn the_document_is_openapi_3_1_and_covers_every_route() {
    let api = offline_api();
    let reply = api.send(api.call(Method::GET, "/openapi.json", None)).await.expect(200);
    let doc = reply.json;
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "version: {}", doc["openapi"]);
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    assert!(doc["components"]["schemas"]["Problem"].is_object());

    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .into_iter()
                .flatten()
                .filter_map(move |(method, op)| op.get("responses").map(|_| (method.clone(), path.clone())))
        })
        .collect();
    let expected: BTreeSet<(String, String)> =
        ROUTES.iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())).collect();
    assert_eq!(documented, expected, "the OpenAPI document and the route list differ");

    for (method, path) in &documented {
        let operation = &doc["paths"][path][method];
        assert!(
            operation["responses"].as_object().is_some_and(|r| !r.is_empty()),
            "{method} {path} has no responses"
        );
        let concrete = path.replace("{id}", "00000000-0000-0000-0000-000000000000").replace(['{', '}'], "");
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let mut call = api.call(method.clone(), &concrete, None);
        if operation.get("requestBody").is_some() {
            call = call.json(&Value::Object(Default::default()));
        }
        api.send(call).await.problem(401, Some("Authorization"));
    }
}

#[tokio::test]
async fn fallbacks_docs_and_ops_endpoints_answer() {
    let api = offline_api();
    let unknown = api.send(api.call(Method::GET, "/v1/nothing-here", None)).await.problem(404, None);
    assert!(unknown.json["type"].as_str().is_some_and(|t| t.ends_with("/no-route")), "{}", unknown.text);
    api.send(api.call(Method::PUT, "/v1/topics", None)).await.problem(405, None);
    let docs = api.send(api.call(Method::GET, "/docs/", None)).await.expect(200);
    assert!(docs.text.contains("swagger"), "swagger-ui page: {}", &docs.text[..docs.text.len().min(200)]);
    api.send(api.call(Method::GET, "/healthz", None)).await.expect(200);
    api.send(api.call(Method::GET, "/readyz", None)).await.expect(503);
    let readiness = millrace_api::readiness::check(&api.state).await;
    assert_eq!((readiness.database, readiness.kubernetes), (false, false), "nothing listens on port 1");
    let metrics = api.send(api.call(Method::GET, "/metrics", None)).await.expect(200);
    assert!(metrics.text.contains("http_requests"), "{}", metrics.text);
    // Every response carries a request id, and a sane one from the client is kept.
    let reply = api.send(api.call(Method::GET, "/healthz", None).header("x-request-id", "abc-123")).await;
    assert_eq!(reply.header("x-request-id"), Some("abc-123"));
    let reply = api.send(api.call(Method::GET, "/v1/topics", None)).await.problem(401, Some("Authorization"));
    let id = reply.header("x-request-id").expect("a generated request id").to_owned();
    assert_eq!(reply.json["requestId"].as_str(), Some(id.as_str()), "the problem quotes the request id");
}
