//! Shared by the api-server's router tests: the app over a test database (from
//! `#[sqlx::test]`) and the local platform's Kubernetes API, and a one-call client that
//! drives the router with `oneshot` (no socket).

#![allow(dead_code)] // each test binary uses a different subset

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use millrace_api::metrics::HttpMetrics;
use millrace_api::{AppState, app};
use millrace_telemetry::OpsState;
use prometheus_client::registry::Registry;
use serde_json::Value;
use sqlx::PgPool;
use tower::ServiceExt;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A unique lowercase suffix, so that Kubernetes namespaces of parallel tests never collide.
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_nanos();
    format!("{prefix}-{:x}", (nanos ^ u128::from(std::process::id())) % 0xff_ffff_ffff)
}

/// The local platform's Kubernetes API from KUBECONFIG; panics saying what to do when unset.
pub async fn kube_client() -> kube::Client {
    if std::env::var_os("KUBECONFIG").is_none() {
        panic!(
            "KUBECONFIG is not set: these tests need the local platform. Run `make up` and `set -a; source .local/env`"
        );
    }
    kube::Client::try_default().await.expect("a Kubernetes client from KUBECONFIG")
}

/// The app over `pool` (already migrated by `#[sqlx::test]`) and the platform's Kubernetes.
pub async fn platform_app(pool: PgPool) -> Api {
    let mut registry = Registry::default();
    let state = AppState::new(pool, kube_client().await, ADMIN_TOKEN, HttpMetrics::register(&mut registry));
    Api { router: app(state.clone(), OpsState::new(registry)), state }
}

/// The router and the state behind it.
#[derive(Clone)]
pub struct Api {
    pub router: Router,
    pub state: AppState,
}

/// A response, its body parsed as JSON (`Value::Null` when empty or not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub json: Value,
    pub text: String,
}

impl Reply {
    /// Asserts the status (showing the body when it differs) and returns self.
    #[track_caller]
    pub fn expect(self, status: u16) -> Self {
        assert_eq!(self.status.as_u16(), status, "unexpected status; body: {}", self.text);
        self
    }

    /// Asserts a problem+json body with this status and field.
    #[track_caller]
    pub fn problem(self, status: u16, field: Option<&str>) -> Self {
        let reply = self.expect(status);
        assert_eq!(
            reply.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()),
            Some("application/problem+json"),
            "{}",
            reply.text
        );
        assert_eq!(reply.json["status"], status, "{}", reply.text);
        assert_eq!(reply.json["field"].as_str(), field, "field at fault: {}", reply.text);
        reply
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A request being built: method, path, token, body and extra headers.
pub struct Call {
    request: axum::http::request::Builder,
    body: Body,
}

impl Api {
    pub fn call(&self, method: Method, path: &str, token: Option<&str>) -> Call {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        Call { request, body: Body::empty() }
    }

    pub async fn send(&self, call: Call) -> Reply {
        let request = call.request.body(call.body).expect("a valid request");
        let response = self.router.clone().oneshot(request).await.expect("the router answers");
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.expect("the body").to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply { status: parts.status, headers: parts.headers, json, text }
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.send(self.call(Method::GET, path, Some(token))).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.send(self.call(Method::POST, path, Some(token)).json(&body)).await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Reply {
        self.send(self.call(Method::PATCH, path, Some(token)).json(&body)).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Reply {
        self.send(self.call(Method::DELETE, path, Some(token))).await
    }

    /// Creates a tenant and an API key for it (as the admin); returns the key.
    pub async fn tenant_with_key(&self, name: &str, quota: Option<Value>) -> String {
        let mut body = serde_json::json!({ "name": name });
        if let Some(quota) = quota {
            body["quota"] = quota;
        }
        self.post("/v1/tenants", ADMIN_TOKEN, body).await.expect(201);
        let key = self
            .post(&format!("/v1/tenants/{name}/api-keys"), ADMIN_TOKEN, serde_json::json!({ "name": "test" }))
            .await;
        key.expect(201).json["key"].as_str().expect("the key is returned once").to_owned()
    }

    /// Deletes a tenant with everything it owns (its namespace too).
    pub async fn remove_tenant(&self, name: &str) {
        self.delete(&format!("/v1/tenants/{name}?force=true"), ADMIN_TOKEN).await.expect(204);
    }
}

impl Call {
    pub fn json(mut self, body: &Value) -> Self {
        self.request = self.request.header(header::CONTENT_TYPE, "application/json");
        self.body = Body::from(serde_json::to_vec(body).expect("serialisable"));
        self
    }

    pub fn raw(mut self, content_type: &str, body: impl Into<Body>) -> Self {
        self.request = self.request.header(header::CONTENT_TYPE, content_type);
        self.body = body.into();
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.request = self.request.header(
            HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_str(value).expect("header value"),
        );
        self
    }
}

/// Polls `probe` every 200 ms until it yields a value; panics with `what` at the deadline.
pub async fn wait_until<T, F, Fut>(what: &str, deadline: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(start.elapsed() < deadline, "timed out after {deadline:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
