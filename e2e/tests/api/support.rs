//! Fixtures of the API end-to-end test: millrace-api deployed once per test run as a Pod of
//! the pod runner (installed with the operator by the Helm chart), reached through its
//! Service address, with a small JSON client.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Secret, Service};
use kube::ResourceExt;
use kube::api::Api;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::sync::OnceCell;

use crate::support::{client, ensure_operator, replace_pods_and_wait_ready, wait_until};

const NAMESPACE: &str = "millrace-system";
const LABEL: &str = "app.kubernetes.io/name=millrace-api";

/// Where the API answers and how to be its admin.
#[derive(Clone)]
pub struct ApiServer {
    pub base: String,
    pub admin_token: String,
    http: reqwest::Client,
}

/// A response: status, headers and JSON body (`Null` when there is none).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub json: Value,
}

impl Reply {
    #[track_caller]
    pub fn expect(self, status: u16) -> Self {
        assert_eq!(self.status.as_u16(), status, "unexpected status; body: {}", self.json);
        self
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl ApiServer {
    /// `method path` with a bearer token, a JSON body and extra headers.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request =
            self.http.request(method.clone(), format!("{}{path}", self.base)).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap_or_else(|err| {
            // reqwest's top-level message hides the cause (refused, reset, timed out).
            let mut causes = String::new();
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                causes.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            panic!("{method} {path}: {err}{causes}\n{}", api_log_tail(40))
        });
        let (status, headers) = (response.status(), response.headers().clone());
        let text = response.text().await.unwrap_or_default();
        Reply { status, headers, json: serde_json::from_str(&text).unwrap_or(Value::Null) }
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.call(Method::GET, path, token, None, &[]).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call(Method::POST, path, token, Some(body), &[]).await
    }

    pub async fn raw_get(&self, path: &str) -> (StatusCode, String) {
        let response = self.http.get(format!("{}{path}", self.base)).send().await.expect("GET");
        (response.status(), response.text().await.unwrap_or_default())
    }
}

/// An HTTP client for one test. A client must not outlive the test's runtime: its pooled
/// connections are served by tasks of the runtime that opened them, and a request sent on one
/// whose runtime has ended fails ("runtime dropped the dispatch task").
fn http_client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("HTTP client")
}

/// The last `lines` lines of the newest millrace-api Pod's log, for failure messages.
fn api_log_tail(lines: usize) -> String {
    let folder = crate::common::pods_dir().join(NAMESPACE);
    let newest = std::fs::read_dir(&folder).ok().and_then(|entries| {
        entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("millrace-api-"))
            .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
    });
    let Some(pod) = newest else { return format!("(no millrace-api Pod folder in {})", folder.display()) };
    let pod = pod.file_name().to_string_lossy().into_owned();
    let log = crate::common::container_log(NAMESPACE, &pod, "api");
    let tail: Vec<&str> = log.lines().rev().take(lines).collect();
    let tail: Vec<String> = tail.into_iter().rev().map(without_colours).collect();
    format!("--- the last {lines} lines of Pod {pod}'s log ---\n{}", tail.join("\n"))
}

/// `line` without its terminal colour sequences (`ESC [ … m`).
fn without_colours(line: &str) -> String {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|c| *c == 'm');
        } else {
            plain.push(c);
        }
    }
    plain
}

static API: OnceCell<ApiServer> = OnceCell::const_new();

/// `MILLRACE_E2E_API=external`: test an API server started outside the tests (another build,
/// e.g. a worktree's, on its own port and catalog), at `MILLRACE_API_URL` with
/// `MILLRACE_ADMIN_TOKEN`, instead of the chart's Pod (which is then not restarted).
pub const EXTERNAL_API_ENV: &str = "MILLRACE_E2E_API";

fn external_api() -> Option<ApiServer> {
    if std::env::var(EXTERNAL_API_ENV).ok()? != "external" {
        return None;
    }
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| panic!("{EXTERNAL_API_ENV}=external needs {name}"))
    };
    let base = var("MILLRACE_API_URL").trim_end_matches('/').to_owned();
    eprintln!("{EXTERNAL_API_ENV}=external: testing the API server at {base}");
    Some(ApiServer { base, admin_token: var("MILLRACE_ADMIN_TOKEN"), http: http_client() })
}

/// Makes sure the operator and the API server run (the API on the binary just built), and
/// returns how to reach it. Done once per run; each call gets its own HTTP client, since each
/// `#[tokio::test]` runs on a runtime of its own (see [`http_client`]).
pub async fn ensure_api() -> ApiServer {
    let shared = API
        .get_or_init(|| async {
            if let Some(server) = external_api() {
                ensure_operator().await;
                return server;
            }
            // The chart installs the API next to the operator.
            ensure_operator().await;
            let client = client().await;
            let what = "a Ready millrace-api Pod in millrace-system (see .local/pods/millrace-system/)";
            replace_pods_and_wait_ready(&client, NAMESPACE, LABEL, what).await;
            let services: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
            let address = wait_until(
                "the pod runner to give Service millrace-api an address",
                Duration::from_secs(30),
                || async {
                    services
                        .get("millrace-api")
                        .await
                        .ok()?
                        .annotations()
                        .get("millrace.io/local-address")
                        .cloned()
                },
            )
            .await;
            let secret = Api::<Secret>::namespaced(client, NAMESPACE)
                .get("millrace-api")
                .await
                .expect("the api Secret");
            let token =
                secret.data.and_then(|d| d.get("admin-token").cloned()).expect("admin-token in the Secret");
            let server = ApiServer {
                base: format!("http://{address}:8080"),
                admin_token: String::from_utf8(token.0).expect("a UTF-8 token").trim().to_owned(),
                http: http_client(),
            };
            wait_until("millrace-api /readyz through its Service", Duration::from_secs(60), || async {
                let (status, _) = server.raw_get("/readyz").await;
                status.is_success().then_some(())
            })
            .await;
            server
        })
        .await;
    ApiServer { http: http_client(), ..shared.clone() }
}
